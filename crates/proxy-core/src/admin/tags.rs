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
mod tests;
