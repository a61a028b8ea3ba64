//! A cluster's upstream protocol and connection options, each value taken into the model; the
//! deprecated cluster-level forms Envoy 1.40 still accepts (with a warning) give the same.

use proxy_core::config::{ConnectionLimits, H2Keepalive, TcpKeepalive};
use serde_json::json;

use super::*;

fn http_options(v: Value) -> Value {
    json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
        merge(json!({"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"}), v)})
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn cluster0(v: &Value) -> proxy_core::config::Cluster {
    let loaded = parse_value(v).unwrap_or_else(|e| panic!("{e}"));
    loaded.bootstrap.clusters[0].clone()
}

#[test]
fn typed_options_are_all_taken() {
    let v = set(
        base(),
        &format!("{CLUSTER0}/typed_extension_protocol_options"),
        http_options(json!({
            "explicit_http_config": {"http2_protocol_options": {
                "initial_stream_window_size": 65536,
                "initial_connection_window_size": "1048576",
                "max_concurrent_streams": 7,
                "connection_keepalive": {"interval": "2s", "timeout": "0.5s"},
            }},
            "common_http_protocol_options": {
                "idle_timeout": "3s",
                "max_requests_per_connection": 4,
                "max_connection_duration": "5s",
            },
        })),
    );
    let v = set(
        v,
        &format!("{CLUSTER0}/upstream_connection_options"),
        json!({"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 10, "keepalive_interval": 2}}),
    );
    let c = cluster0(&v);
    assert!(c.http2);
    assert!(!c.upstream.auto_http);
    let h2 = c.upstream.http2;
    assert_eq!(h2.initial_stream_window_size, Some(65536));
    assert_eq!(h2.initial_connection_window_size, Some(1_048_576));
    assert_eq!(h2.max_concurrent_streams, Some(7));
    assert_eq!(
        h2.keepalive,
        Some(H2Keepalive {
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500)
        })
    );
    assert_eq!(
        c.upstream.limits,
        ConnectionLimits {
            idle_timeout: Some(Duration::from_secs(3)),
            max_requests_per_connection: Some(4),
            max_connection_duration: Some(Duration::from_secs(5)),
        }
    );
    assert_eq!(
        c.upstream.tcp_keepalive,
        Some(TcpKeepalive {
            probes: Some(3),
            time: Some(Duration::from_secs(10)),
            interval: Some(Duration::from_secs(2)),
        })
    );
}

#[test]
fn defaults_are_envoys() {
    let v = set(
        base(),
        &format!("{CLUSTER0}/typed_extension_protocol_options"),
        http_options(json!({
            "explicit_http_config": {"http_protocol_options": {}},
            // `0s` turns the idle timeout off; no limit on requests or duration.
            "common_http_protocol_options": {"idle_timeout": "0s"},
        })),
    );
    let c = cluster0(&v);
    assert!(!c.http2);
    assert_eq!(c.upstream.limits.idle_timeout, None);
    assert_eq!(c.upstream.tcp_keepalive, None);
    let v = remove(
        base(),
        &format!("{CLUSTER0}/typed_extension_protocol_options"),
    );
    let c = cluster0(&v);
    // Envoy's upstream idle_timeout default: 1 h.
    assert_eq!(
        c.upstream.limits.idle_timeout,
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn deprecated_cluster_fields_give_the_same() {
    let v = remove(
        base(),
        &format!("{CLUSTER0}/typed_extension_protocol_options"),
    );
    let v = set(
        v,
        &format!("{CLUSTER0}/http2_protocol_options"),
        json!({"max_concurrent_streams": 9}),
    );
    let v = set(
        v,
        &format!("{CLUSTER0}/common_http_protocol_options"),
        json!({"idle_timeout": "7s"}),
    );
    let v = set(
        v,
        &format!("{CLUSTER0}/max_requests_per_connection"),
        json!(2),
    );
    let c = cluster0(&v);
    assert!(c.http2);
    assert_eq!(c.upstream.http2.max_concurrent_streams, Some(9));
    assert_eq!(c.upstream.limits.idle_timeout, Some(Duration::from_secs(7)));
    assert_eq!(c.upstream.limits.max_requests_per_connection, Some(2));
}
