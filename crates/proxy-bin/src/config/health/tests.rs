//! Unit tests of [`super`]: health checks as written in a bootstrap, and their errors.

use std::time::Duration;

use proxy_core::config::{CheckKind, Cluster};

use super::decode_hex;
use crate::config::{parse_str, ConfigErrors};

/// A bootstrap with one STATIC cluster `web`, its endpoint's extra fields `endpoint_extra`
/// and the cluster's extra fields `cluster_extra` (YAML at the cluster's indentation).
fn bootstrap(cluster_extra: &str, endpoint_extra: &str) -> String {
    format!(
        r#"
static_resources:
  clusters:
  - name: web
    type: STATIC
    load_assignment:
      cluster_name: web
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}
{endpoint_extra}
{cluster_extra}
"#
    )
}

fn cluster(extra: &str) -> Result<Cluster, ConfigErrors> {
    parse_str(&bootstrap(extra, "")).map(|l| l.bootstrap.clusters[0].clone())
}

/// The one error `extra` gives: its path and message.
fn error(extra: &str, endpoint_extra: &str) -> (String, String) {
    let errs = parse_str(&bootstrap(extra, endpoint_extra)).expect_err("an error");
    assert_eq!(errs.0.len(), 1, "{errs}");
    (errs.0[0].path.clone(), errs.0[0].message.clone())
}

const HTTP: &str = r#"
    health_checks:
    - timeout: 1s
      interval: 2s
      interval_jitter: 0.5s
      unhealthy_threshold: 3
      healthy_threshold: 2
      no_traffic_interval: 7s
      no_traffic_healthy_interval: 8s
      interval_jitter_percent: 20
      reuse_connection: false
      unhealthy_interval: 4s
      healthy_edge_interval: 1.5s
      always_log_health_check_failures: true
      http_health_check:
        path: /healthz
        host: hc.example
        codec_client_type: HTTP1
        expected_statuses: [{start: 200, end: 300}]
        request_headers_to_add: [{header: {key: x-hc, value: "1"}}]
    common_lb_config: {healthy_panic_threshold: {value: 25}}
"#;

#[test]
fn an_http_check_with_every_field() {
    let c = cluster(HTTP).unwrap_or_else(|e| panic!("{e}"));
    let hc = c.health_check.expect("a health check");
    let s = Duration::from_secs;
    assert_eq!((hc.timeout, hc.interval), (s(1), s(2)));
    assert_eq!(hc.interval_jitter, Duration::from_millis(500));
    assert_eq!((hc.unhealthy_threshold, hc.healthy_threshold), (3, 2));
    assert_eq!(hc.no_traffic_interval, s(7));
    assert_eq!(hc.no_traffic_healthy_interval, s(8));
    assert_eq!(hc.interval_jitter_percent, 20);
    assert!(!hc.reuse_connection);
    assert_eq!(hc.unhealthy_interval, s(4));
    // Unset: the unhealthy interval.
    assert_eq!(hc.unhealthy_edge_interval, s(4));
    assert_eq!(hc.healthy_edge_interval, Duration::from_millis(1500));
    assert!(hc.always_log_failures);
    let CheckKind::Http(h) = hc.kind else {
        panic!("an HTTP check")
    };
    assert_eq!(
        (h.path.as_str(), h.host.as_str()),
        ("/healthz", "hc.example")
    );
    assert!(h.expects(204) && !h.expects(300));
    assert_eq!(h.headers.len(), 1);
    assert_eq!(c.panic_threshold, 25.0);
}

#[test]
fn defaults_follow_envoy() {
    let c = cluster(
        r#"
    health_checks:
    - {timeout: 1s, interval: 3s, unhealthy_threshold: 2, healthy_threshold: 2, http_health_check: {path: /}}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let hc = c.health_check.expect("a health check");
    assert_eq!(hc.no_traffic_interval, Duration::from_secs(60));
    assert_eq!(hc.no_traffic_healthy_interval, Duration::from_secs(60));
    assert!(hc.reuse_connection);
    assert_eq!(hc.unhealthy_interval, Duration::from_secs(3));
    assert_eq!(hc.healthy_edge_interval, Duration::from_secs(3));
    let CheckKind::Http(h) = hc.kind else {
        panic!("an HTTP check")
    };
    assert!(h.expects(200) && !h.expects(201) && !h.expects(204));
    assert_eq!(c.panic_threshold, 50.0);
    assert_eq!(cluster("").unwrap().panic_threshold, 50.0);
}

#[test]
fn a_tcp_check_and_the_endpoint_check_port() {
    let text = bootstrap(
        r#"
    health_checks:
    - timeout: 1s
      interval: 1s
      unhealthy_threshold: 1
      healthy_threshold: 1
      tcp_health_check: {send: {text: "50494e47"}, receive: [{text: "504f"}, {text: "4e47"}]}
"#,
        "            health_check_config: {port_value: 9000}",
    );
    let l = parse_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let c = &l.bootstrap.clusters[0];
    assert_eq!(c.endpoints[0].health_check_port, Some(9000));
    let Some(CheckKind::Tcp(t)) = c.health_check.as_ref().map(|h| &h.kind) else {
        panic!("a TCP check")
    };
    assert_eq!(t.send, b"PING");
    assert_eq!(t.receive, vec![b"PO".to_vec(), b"NG".to_vec()]);
}

#[test]
fn unsupported_and_bad_fields_are_named() {
    let hc = "static_resources.clusters[0].health_checks[0]";
    let check = |body: &str| {
        format!("\n    health_checks:\n    - {{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, {body}}}\n")
    };
    let cases = [
        (check("http_health_check: {path: /, codec_client_type: HTTP3}"), format!("{hc}.http_health_check.codec_client_type")),
        (check("http_health_check: {path: /, method: POST}"), format!("{hc}.http_health_check.method")),
        (check("http_health_check: {host: x}"), format!("{hc}.http_health_check.path")),
        (check("http_health_check: {path: /, expected_statuses: [{start: 300, end: 200}]}"), format!("{hc}.http_health_check.expected_statuses[0]")),
        (check("http_health_check: {path: /, request_headers_to_add: [{header: {key: host, value: a}}]}"), format!("{hc}.http_health_check.request_headers_to_add[0].header.key")),
        (check("grpc_health_check: {}"), format!("{hc}.grpc_health_check")),
        (check("tcp_health_check: {send: {binary: AAAA}}"), format!("{hc}.tcp_health_check.send.binary")),
        (check("tcp_health_check: {send: {text: xyz}}"), format!("{hc}.tcp_health_check.send.text")),
        (check("tcp_health_check: {}, initial_jitter: 1s"), format!("{hc}.initial_jitter")),
        (check("tcp_health_check: {}, unhealthy_interval: 0s"), format!("{hc}.unhealthy_interval")),
        ("\n    health_checks:\n    - {interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}\n".to_owned(), format!("{hc}.timeout")),
        ("\n    health_checks:\n    - {timeout: 1s, interval: 1s, healthy_threshold: 1, tcp_health_check: {}}\n".to_owned(), format!("{hc}.unhealthy_threshold")),
        ("\n    common_lb_config: {healthy_panic_threshold: {value: 150}}\n".to_owned(), "static_resources.clusters[0].common_lb_config.healthy_panic_threshold.value".to_owned()),
        ("\n    common_lb_config: {zone_aware_lb_config: {}}\n".to_owned(), "static_resources.clusters[0].common_lb_config.zone_aware_lb_config".to_owned()),
    ];
    for (extra, path) in cases {
        let (p, msg) = error(&extra, "");
        assert_eq!(p, path, "{extra}: {msg}");
    }
    let (p, _) = error("", "            health_check_config: {port_value: 70000}");
    assert_eq!(
        p,
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.health_check_config.port_value"
    );
    let two = format!("{}{}", check("tcp_health_check: {}"), "    - {timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}\n");
    assert_eq!(
        error(&two, "").0,
        "static_resources.clusters[0].health_checks[1]"
    );
}

const H2: &str = r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"#;

#[test]
fn a_grpc_check_on_an_http2_cluster() {
    let grpc = |body: &str| {
        format!("\n    health_checks:\n    - {{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {body}}}\n")
    };
    let c = cluster(&format!(
        "{}{H2}",
        grpc("{service_name: svc.A, authority: hc.example}")
    ))
    .unwrap();
    let CheckKind::Grpc(g) = &c.health_check.unwrap().kind else {
        panic!("a gRPC check");
    };
    assert_eq!(
        (g.service_name.as_str(), g.authority.as_str()),
        ("svc.A", "hc.example")
    );
    let hc = "static_resources.clusters[0].health_checks[0].grpc_health_check";
    // As Envoy 1.40: "cluster must support HTTP/2 for gRPC healthchecking".
    let (p, msg) = error(&grpc("{}"), "");
    assert_eq!(p, hc);
    assert!(msg.contains("HTTP/2"), "{msg}");
    let (p, _) = error(&format!("{}{H2}", grpc("{authority: 'a b'}")), "");
    assert_eq!(p, format!("{hc}.authority"));
    let (p, _) = error(&format!("{}{H2}", grpc("{initial_metadata: []}")), "");
    assert_eq!(p, format!("{hc}.initial_metadata"));
}

#[test]
fn outlier_detection_consecutive_errors() {
    let c = cluster(
        r#"
    outlier_detection:
      consecutive_5xx: 3
      consecutive_gateway_failure: 2
      enforcing_consecutive_gateway_failure: 100
      interval: 0.5s
      base_ejection_time: 1s
      max_ejection_time: 4s
      max_ejection_percent: 50
      enforcing_success_rate: 0
      successful_active_health_check_uneject_host: false
      success_rate_minimum_hosts: 3
      success_rate_request_volume: 10
      success_rate_stdev_factor: 1000
      failure_percentage_threshold: 40
      failure_percentage_minimum_hosts: 2
      failure_percentage_request_volume: 20
      enforcing_failure_percentage: 100
      split_external_local_origin_errors: true
      consecutive_local_origin_failure: 4
      enforcing_consecutive_local_origin_failure: 50
      enforcing_local_origin_success_rate: 60
      enforcing_failure_percentage_local_origin: 70
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let od = c.outlier.expect("outlier detection");
    assert_eq!((od.consecutive_5xx, od.consecutive_gateway_failure), (3, 2));
    assert_eq!(od.enforcing_consecutive_5xx, 100);
    assert_eq!(od.enforcing_consecutive_gateway_failure, 100);
    assert_eq!(od.interval, Duration::from_millis(500));
    assert_eq!(od.max_ejection_time, Duration::from_secs(4));
    assert_eq!(od.max_ejection_percent, 50);
    assert!(!od.uneject_on_health_check);
    assert_eq!(
        (
            od.success_rate_minimum_hosts,
            od.success_rate_request_volume,
            od.success_rate_stdev_factor,
            od.enforcing_success_rate
        ),
        (3, 10, 1000, 0)
    );
    assert_eq!(
        (
            od.failure_percentage_threshold,
            od.failure_percentage_minimum_hosts,
            od.failure_percentage_request_volume,
            od.enforcing_failure_percentage
        ),
        (40, 2, 20, 100)
    );
    assert!(od.split_external_local_origin_errors);
    assert_eq!(
        (
            od.consecutive_local_origin_failure,
            od.enforcing_consecutive_local_origin_failure,
            od.enforcing_local_origin_success_rate,
            od.enforcing_failure_percentage_local_origin
        ),
        (4, 50, 60, 70)
    );
    // Envoy's defaults.
    let d = cluster("\n    outlier_detection: {}\n").unwrap();
    let d = d.outlier.unwrap();
    assert_eq!(
        (
            d.success_rate_minimum_hosts,
            d.success_rate_request_volume,
            d.success_rate_stdev_factor,
            d.enforcing_success_rate
        ),
        (5, 100, 1900, 100)
    );
    assert_eq!(
        (
            d.failure_percentage_threshold,
            d.failure_percentage_minimum_hosts,
            d.failure_percentage_request_volume,
            d.enforcing_failure_percentage
        ),
        (85, 5, 50, 0)
    );
    assert!(!d.split_external_local_origin_errors);
    assert_eq!(
        (
            d.consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
            d.enforcing_local_origin_success_rate,
            d.enforcing_failure_percentage_local_origin
        ),
        (5, 100, 100, 0)
    );
    let od = "static_resources.clusters[0].outlier_detection";
    for (extra, path) in [
        (
            "{enforcing_success_rate: 101}",
            format!("{od}.enforcing_success_rate"),
        ),
        (
            "{enforcing_success_rate: 0, max_ejection_percent: 101}",
            format!("{od}.max_ejection_percent"),
        ),
        (
            "{failure_percentage_threshold: 200}",
            format!("{od}.failure_percentage_threshold"),
        ),
        (
            "{enforcing_failure_percentage: 101}",
            format!("{od}.enforcing_failure_percentage"),
        ),
        (
            "{enforcing_local_origin_success_rate: 101}",
            format!("{od}.enforcing_local_origin_success_rate"),
        ),
        (
            "{detect_degraded_hosts: true}",
            format!("{od}.detect_degraded_hosts"),
        ),
        (
            "{enforcing_success_rate: 0, interval: 0s}",
            format!("{od}.interval"),
        ),
    ] {
        let (p, msg) = error(&format!("\n    outlier_detection: {extra}\n"), "");
        assert_eq!(p, path, "{extra}: {msg}");
    }
}

#[test]
fn hex_payloads() {
    assert_eq!(decode_hex("50494e47").unwrap(), b"PING");
    assert_eq!(decode_hex("0aFF").unwrap(), vec![10, 255]);
    assert!(decode_hex("abc").is_err());
    assert!(decode_hex("zz").is_err());
    assert_eq!(decode_hex("").unwrap(), Vec::<u8>::new());
}
