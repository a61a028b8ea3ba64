//! Unit tests of [`super`]: hashing policies as written in a bootstrap, and their errors (as
//! `envoy --mode validate` 1.40 accepts or refuses them, where Envoy refuses too).

use proxy_core::config::{
    Cluster, HashKey, HashOn, HashPolicy, LbPolicy, Maglev, RingHash, RouteAction,
};

use crate::config::{parse_str, ConfigErrors, Loaded};

/// One cluster `web` (of `kind`, with `cluster_extra`) and one route to it with
/// `route_extra` (YAML at the cluster's and the route action's indentation).
fn bootstrap(kind: &str, cluster_extra: &str, route_extra: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                route:
                  cluster: web
{route_extra}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: web
    type: {kind}
    load_assignment:
      cluster_name: web
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}
{cluster_extra}
"#
    )
}

fn parse(kind: &str, cluster_extra: &str, route_extra: &str) -> Result<Loaded, ConfigErrors> {
    parse_str(&bootstrap(kind, cluster_extra, route_extra))
}

fn cluster(extra: &str) -> Cluster {
    parse("STATIC", extra, "")
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap
        .clusters[0]
        .clone()
}

fn policies(route_extra: &str) -> Vec<HashPolicy> {
    let b = parse("STATIC", "    lb_policy: RING_HASH", route_extra)
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap;
    let vh = &b.listeners[0]
        .first_http()
        .unwrap()
        .route_config
        .virtual_hosts[0];
    match &vh.routes[0].action {
        RouteAction::Forward(f) => f.hash_policy.clone(),
        other => panic!("{other:?}"),
    }
}

/// The one error: its path and message.
fn error(kind: &str, cluster_extra: &str, route_extra: &str) -> (String, String) {
    let errs = parse(kind, cluster_extra, route_extra).expect_err("an error");
    assert_eq!(errs.0.len(), 1, "{errs}");
    (errs.0[0].path.clone(), errs.0[0].message.clone())
}

#[test]
fn ring_hash_and_maglev_with_their_defaults_and_options() {
    assert_eq!(
        cluster("    lb_policy: RING_HASH").lb_policy,
        LbPolicy::RingHash(RingHash::default())
    );
    assert_eq!(
        cluster(
            "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 16, maximum_ring_size: {value: 64}, hash_function: MURMUR_HASH_2}"
        )
        .lb_policy,
        LbPolicy::RingHash(RingHash {
            minimum_ring_size: 16,
            maximum_ring_size: 64,
            murmur: true,
            key: HashKey::Address,
        })
    );
    assert_eq!(
        cluster("    lb_policy: MAGLEV").lb_policy,
        LbPolicy::Maglev(Maglev::default())
    );
    assert_eq!(
        cluster("    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 7}").lb_policy,
        LbPolicy::Maglev(Maglev {
            table_size: 7,
            key: HashKey::Address,
        })
    );
    let dns = parse(
        "STRICT_DNS",
        "    lb_policy: MAGLEV\n    common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}",
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dns.bootstrap.clusters[0].lb_policy,
        LbPolicy::Maglev(Maglev {
            table_size: 65537,
            key: HashKey::Hostname,
        })
    );
}

#[test]
fn bad_or_unsupported_cluster_fields_are_named() {
    let c0 = "static_resources.clusters[0]";
    let cases = [
        // Envoy: "ring hash: minimum_ring_size (2000) > maximum_ring_size (1000)".
        (
            "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 2000, maximum_ring_size: 1000}",
            format!("{c0}.ring_hash_lb_config"),
        ),
        // Envoy: proto validation (at most 8M).
        (
            "    lb_policy: RING_HASH\n    ring_hash_lb_config: {minimum_ring_size: 8388609}",
            format!("{c0}.ring_hash_lb_config.minimum_ring_size"),
        ),
        // Envoy: "The table size of maglev must be prime number".
        (
            "    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 65536}",
            format!("{c0}.maglev_lb_config.table_size"),
        ),
        (
            "    lb_policy: MAGLEV\n    maglev_lb_config: {table_size: 5000012}",
            format!("{c0}.maglev_lb_config.table_size"),
        ),
        // Envoy: "Cannot use hostname for consistent hashing loadbalancing for cluster of
        // type: 'envoy.cluster.static'".
        (
            "    lb_policy: RING_HASH\n    common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}",
            format!("{c0}.common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing"),
        ),
        // Envoy accepts 100 and more (bounded loads); Baton does not do them.
        (
            "    lb_policy: RING_HASH\n    common_lb_config: {consistent_hashing_lb_config: {hash_balance_factor: 150}}",
            format!("{c0}.common_lb_config.consistent_hashing_lb_config.hash_balance_factor"),
        ),
        // Envoy ignores another policy's configuration; Baton refuses what it would not use.
        (
            "    lb_policy: ROUND_ROBIN\n    ring_hash_lb_config: {minimum_ring_size: 10}",
            format!("{c0}.ring_hash_lb_config"),
        ),
        (
            "    lb_policy: RING_HASH\n    maglev_lb_config: {table_size: 7}",
            format!("{c0}.maglev_lb_config"),
        ),
        (
            "    load_balancing_policy: {policies: []}",
            format!("{c0}.load_balancing_policy"),
        ),
    ];
    for (extra, path) in cases {
        assert_eq!(error("STATIC", extra, "").0, path, "{extra}");
    }
}

#[test]
fn route_hash_policies_in_order() {
    let got = policies(
        r#"
                  hash_policy:
                  - header: {header_name: X-Key}
                    terminal: true
                  - cookie: {name: sticky, ttl: 60s, path: /a}
                  - cookie: {name: plain}
                  - connection_properties: {source_ip: true}
                  - connection_properties: {source_ip: false}
                  - query_parameter: {name: q}"#,
    );
    assert_eq!(
        got,
        [
            HashPolicy {
                kind: HashOn::Header(http::HeaderName::from_static("x-key")),
                terminal: true
            },
            HashPolicy {
                kind: HashOn::Cookie {
                    name: "sticky".into(),
                    ttl: Some(60),
                    path: "/a".into()
                },
                terminal: false
            },
            HashPolicy {
                kind: HashOn::Cookie {
                    name: "plain".into(),
                    ttl: None,
                    path: String::new()
                },
                terminal: false
            },
            HashPolicy {
                kind: HashOn::SourceIp,
                terminal: false
            },
            HashPolicy {
                kind: HashOn::QueryParameter("q".into()),
                terminal: false
            },
        ]
    );
}

#[test]
fn unsupported_hash_policies_are_named() {
    let hp = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.hash_policy[0]";
    let cases = [
        ("- filter_state: {key: k}", format!("{hp}.filter_state")),
        (
            "- header: {header_name: x, regex_rewrite: {pattern: {regex: a}, substitution: b}}",
            format!("{hp}.header.regex_rewrite"),
        ),
        (
            "- cookie: {name: c, attributes: [{name: SameSite, value: Lax}]}",
            format!("{hp}.cookie.attributes"),
        ),
        (
            "- header: {header_name: ':path'}",
            format!("{hp}.header.header_name"),
        ),
        ("- terminal: true", hp.to_owned()),
        (
            "- query_parameter: {name: q}\n  header: {header_name: x}",
            hp.to_owned(),
        ),
    ];
    for (policy, path) in cases {
        let extra = policy
            .lines()
            .map(|l| format!("                  {l}"))
            .collect::<Vec<_>>()
            .join("\n");
        let extra = format!("                  hash_policy:\n{extra}");
        let (got, msg) = error("STATIC", "    lb_policy: RING_HASH", &extra);
        assert_eq!(got, path, "{policy}: {msg}");
    }
}

#[test]
fn tcp_proxy_hash_policy_source_ip_only() {
    let tcp = |hash_policy: &str| {
        format!(
            r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: web
          hash_policy: {hash_policy}
"#
        )
    };
    let b = parse_str(&tcp("[{source_ip: {}}]")).unwrap_or_else(|e| panic!("{e}"));
    match &b.bootstrap.listeners[0].filter_chains[0].filter {
        proxy_core::config::NetworkFilter::TcpProxy(t) => assert!(t.hash_source_ip),
        other => panic!("{other:?}"),
    }
    let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.hash_policy";
    for (policy, path) in [
        (
            "[{filter_state: {key: k}}]",
            format!("{at}[0].filter_state"),
        ),
        ("[{source_ip: {}}, {source_ip: {}}]", at.to_owned()),
        ("[{}]", format!("{at}[0]")),
    ] {
        let errs = parse_str(&tcp(policy)).expect_err(policy);
        assert_eq!(errs.0[0].path, path, "{policy}: {errs}");
    }
}
