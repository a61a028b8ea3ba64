//! Envoy's default tag extraction: turning a flat stat name such as
//! `cluster.backend.upstream_rq_200` into a tag-extracted name (`cluster.upstream_rq`) and tags
//! (`envoy.cluster_name=backend`, `envoy.response_code=200`), as the Prometheus output needs.
//!
//! Each extractor is a regex applied to the original name: its first capture group is the part
//! removed from the name, its second (or, if it has only one, its first) the tag's value. Every extractor sees the full original
//! name (not the output of the previous one), so their order only decides the order of the
//! tags. Envoy writes some of its patterns with look-aheads; the `regex` crate has none, so the
//! patterns below are rewritten into equivalents (`x(?=\.).*?` becomes `x(?:\..*?)??`).

use std::sync::LazyLock;

use regex::Regex;

/// A stat name split into its tag-extracted name and its tags, in extractor order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedName {
    /// The name with every tag's part removed (`cluster.upstream_rq_total`).
    pub name: String,
    /// `(tag name, value)`, tag names as Envoy's (`envoy.cluster_name`).
    pub tags: Vec<(&'static str, String)>,
}

struct Extractor {
    tag: &'static str,
    regex: Regex,
}

/// Envoy's default tag names and their patterns, in Envoy's order (most specific first),
/// limited to the stats Baton's features produce.
const DEFAULT_TAGS: &[(&str, &str)] = &[
    // *_rq(_<code>)
    ("envoy.response_code", r"_rq(_(\d{3}))$"),
    // *_rq_(<class>)xx
    ("envoy.response_code_class", r"_rq_(\d)xx$"),
    // http.[<prefix>.]user_agent.(<user agent>.)<stat>
    (
        "envoy.http_user_agent",
        r"^http(?:\..*?)??\.user_agent\.((.*?)\.)\w+?$",
    ),
    // vhost.[<virtual host>.]vcluster.(<virtual cluster>.)<stat>
    (
        "envoy.virtual_cluster",
        r"^vhost(?:\..*?)??\.vcluster\.((.*?)\.)\w+?$",
    ),
    // listener.[<address>.]ssl.cipher.(<cipher>)
    (
        "envoy.ssl_cipher",
        r"^listener(?:\..*?)??\.ssl\.cipher(\.(.*?))$",
    ),
    // cluster.[<cluster>.]ssl.ciphers.(<cipher>)
    (
        "envoy.ssl_cipher_suite",
        r"^cluster(?:\..*?)??\.ssl\.ciphers(\.(.*?))$",
    ),
    // tcp.(<prefix>.)<stat>
    ("envoy.tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    // cluster.(<cluster>.)*
    ("envoy.cluster_name", r"^cluster\.((.*?)\.)"),
    // http.(<prefix>.)* or listener.[<address>.]http.(<prefix>.)*
    (
        "envoy.http_conn_manager_prefix",
        r"^(?:|listener(?:\..*?)??\.)http\.((.*?)\.)",
    ),
    // listener.(<address>.)* where the address is `1.2.3.4_80` or `[__1]_80`
    (
        "envoy.listener_address",
        r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    // vhost.(<virtual host>.)*
    ("envoy.virtual_host", r"^vhost\.((.*?)\.)"),
    // listener_manager.(worker_<n>.)*
    ("envoy.worker_id", r"^listener_manager\.((worker_\d+)\.)"),
];

/// The compiled extractors. The patterns are constants checked by a unit test, so none is
/// ever dropped here in practice.
static EXTRACTORS: LazyLock<Vec<Extractor>> = LazyLock::new(|| {
    DEFAULT_TAGS
        .iter()
        .filter_map(|(tag, pattern)| {
            Regex::new(pattern)
                .ok()
                .map(|regex| Extractor { tag, regex })
        })
        .collect()
});

/// Apply Envoy's default tag extractors to `name`.
pub fn extract_tags(name: &str) -> TaggedName {
    let mut tags = Vec::new();
    let mut removed: Vec<(usize, usize)> = Vec::new();
    for ex in EXTRACTORS.iter() {
        let Some(caps) = ex.regex.captures(name) else {
            continue;
        };
        // With a single group, the removed part is also the value (`_rq_(5)xx`).
        let Some(whole) = caps.get(1) else {
            continue;
        };
        let value = caps.get(2).unwrap_or(whole);
        tags.push((ex.tag, value.as_str().to_owned()));
        removed.push((whole.start(), whole.end()));
    }
    TaggedName {
        name: remove_ranges(name, removed),
        tags,
    }
}

/// `s` without the byte ranges in `ranges` (which may overlap). Every range comes from a regex
/// match on `s`, so it lies on char boundaries.
fn remove_ranges(s: &str, mut ranges: Vec<(usize, usize)>) -> String {
    if ranges.is_empty() {
        return s.to_owned();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for (start, end) in ranges {
        if start > pos {
            out.push_str(s.get(pos..start).unwrap_or_default());
        }
        pos = pos.max(end);
    }
    out.push_str(s.get(pos..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(EXTRACTORS.len(), DEFAULT_TAGS.len());
    }

    /// Expected tags as (tag name, value).
    type Tags<'a> = &'a [(&'a str, &'a str)];

    #[test]
    fn extraction_table() {
        let table: &[(&str, &str, Tags<'_>)] = &[
            (
                "cluster.backend.upstream_rq_total",
                "cluster.upstream_rq_total",
                &[("envoy.cluster_name", "backend")],
            ),
            (
                "cluster.backend.upstream_rq_200",
                "cluster.upstream_rq",
                &[
                    ("envoy.response_code", "200"),
                    ("envoy.cluster_name", "backend"),
                ],
            ),
            (
                "cluster.backend.upstream_rq_5xx",
                "cluster.upstream_rq_xx",
                &[
                    ("envoy.response_code_class", "5"),
                    ("envoy.cluster_name", "backend"),
                ],
            ),
            (
                "http.ingress_http.downstream_rq_2xx",
                "http.downstream_rq_xx",
                &[
                    ("envoy.response_code_class", "2"),
                    ("envoy.http_conn_manager_prefix", "ingress_http"),
                ],
            ),
            (
                "http.ingress_http.downstream_cx_active",
                "http.downstream_cx_active",
                &[("envoy.http_conn_manager_prefix", "ingress_http")],
            ),
            (
                "listener.127.0.0.1_10000.downstream_cx_total",
                "listener.downstream_cx_total",
                &[("envoy.listener_address", "127.0.0.1_10000")],
            ),
            (
                "listener.[__1]_10000.downstream_cx_active",
                "listener.downstream_cx_active",
                &[("envoy.listener_address", "[__1]_10000")],
            ),
            (
                "listener.0.0.0.0_80.http.ingress_http.downstream_rq_4xx",
                "listener.http.downstream_rq_xx",
                &[
                    ("envoy.response_code_class", "4"),
                    ("envoy.http_conn_manager_prefix", "ingress_http"),
                    ("envoy.listener_address", "0.0.0.0_80"),
                ],
            ),
            // A listener stat prefix that is not an address is not a tag.
            (
                "listener.admin.downstream_cx_total",
                "listener.admin.downstream_cx_total",
                &[],
            ),
            (
                "vhost.local_service.vcluster.api.upstream_rq_503",
                "vhost.vcluster.upstream_rq",
                &[
                    ("envoy.response_code", "503"),
                    ("envoy.virtual_cluster", "api"),
                    ("envoy.virtual_host", "local_service"),
                ],
            ),
            (
                "vhost.local_service.vcluster.other.upstream_rq_2xx",
                "vhost.vcluster.upstream_rq_xx",
                &[
                    ("envoy.response_code_class", "2"),
                    ("envoy.virtual_cluster", "other"),
                    ("envoy.virtual_host", "local_service"),
                ],
            ),
            (
                "cluster.backend.ssl.ciphers.ECDHE-RSA-AES128-GCM-SHA256",
                "cluster.ssl.ciphers",
                &[
                    ("envoy.ssl_cipher_suite", "ECDHE-RSA-AES128-GCM-SHA256"),
                    ("envoy.cluster_name", "backend"),
                ],
            ),
            (
                "tcp.db_proxy.downstream_cx_total",
                "tcp.downstream_cx_total",
                &[("envoy.tcp_prefix", "db_proxy")],
            ),
            (
                "listener_manager.worker_1.downstream_cx_active",
                "listener_manager.downstream_cx_active",
                &[("envoy.worker_id", "worker_1")],
            ),
            ("server.live", "server.live", &[]),
            // Not a three-digit code: no tag.
            (
                "cluster.b.upstream_rq_20",
                "cluster.upstream_rq_20",
                &[("envoy.cluster_name", "b")],
            ),
        ];
        for (name, want_name, want_tags) in table {
            let got = extract_tags(name);
            assert_eq!(got.name, *want_name, "name of {name}");
            let got_tags: Vec<(&str, &str)> =
                got.tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(got_tags, *want_tags, "tags of {name}");
        }
    }

    #[test]
    fn overlapping_ranges_are_merged() {
        assert_eq!(remove_ranges("abcdef", vec![(1, 4), (2, 3), (5, 6)]), "ae");
        assert_eq!(remove_ranges("abc", vec![]), "abc");
    }
}
