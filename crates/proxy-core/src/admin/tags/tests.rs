//! Unit tests of [`super`].

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
        let got_tags: Vec<(&str, &str)> = got.tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got_tags, *want_tags, "tags of {name}");
    }
}

#[test]
fn overlapping_ranges_are_merged() {
    assert_eq!(remove_ranges("abcdef", vec![(1, 4), (2, 3), (5, 6)]), "ae");
    assert_eq!(remove_ranges("abc", vec![]), "abc");
}
