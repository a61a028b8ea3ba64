//! `envoy.filters.listener.proxy_protocol` against real sockets: PROXY v1 and v2 headers give
//! the client's address to `x-forwarded-for` (with `use_remote_address`) and the access log, a
//! connection without one is refused (or, with `allow_requests_without_proxy_protocol`,
//! served with its own address), and the stats are those Envoy 1.40 showed on the same
//! configuration and connections.

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{cluster, route, Config};
use crate::support::upstream::Upstream;
use crate::support::{within, Baton, TempDir};

const PROXY_PROTOCOL: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

/// The echo configuration with `use_remote_address`, an access log of the downstream
/// addresses to `log`, and the PROXY protocol filter with `pp` fields.
fn config(up: &Upstream, log: &std::path::Path, pp: Value) -> String {
    let text = Config::new()
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[up.port()]))
        .hcm("use_remote_address", json!(true))
        .hcm("access_log", json!([{"name": "log", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": log,
            "log_format": {"text_format_source": {"inline_string": "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS%\n"}},
        }}]))
        .render()
        .replace("{{ADMIN}}", "\"{{ADMIN}}\"")
        .replace("{{LISTEN}}", "\"{{LISTEN}}\"");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let mut tc = json!({"@type": PROXY_PROTOCOL});
    tc.as_object_mut()
        .unwrap()
        .extend(pp.as_object().unwrap().clone());
    v["static_resources"]["listeners"][0]["listener_filters"] =
        json!([{"name": "envoy.filters.listener.proxy_protocol", "typed_config": tc}]);
    serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
}

/// Send `pre` then a GET on a new connection; the response, empty when the connection was
/// closed without one.
async fn get_after(b: &Baton, pre: &[u8]) -> String {
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    let _ = s.write_all(&[pre, REQUEST].concat()).await;
    let mut got = Vec::new();
    let _ = within(5, "response", s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

fn v2_header(src: [u8; 4], dst: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&ports.0.to_be_bytes());
    h.extend_from_slice(&ports.1.to_be_bytes());
    h
}

#[tokio::test]
async fn v1_and_v2_headers_give_the_client_address_and_a_missing_one_is_refused() {
    let up = Upstream::echo("up").await;
    let dir = TempDir::new("pp");
    let log = dir.file("access.log");
    let b = Baton::start(&config(&up, &log, json!({}))).await;

    let got = get_after(&b, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().header("x-forwarded-for"), Some("1.2.3.4"));
    let got = get_after(&b, &v2_header([9, 9, 9, 9], [5, 6, 7, 8], (3333, 80))).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().header("x-forwarded-for"), Some("9.9.9.9"));
    // v1 UNKNOWN: the connection's own address stands.
    let got = get_after(&b, b"PROXY UNKNOWN\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));
    // No header, or a bad one: closed unanswered.
    assert_eq!(get_after(&b, b"").await, "");
    assert_eq!(
        get_after(&b, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n").await,
        ""
    );

    // Envoy 1.40 on the same five connections.
    b.wait_stat("proxy_proto.versions.v1.found", 2).await;
    b.wait_stat("proxy_proto.versions.v2.found", 1).await;
    b.wait_stat("proxy_proto.versions.v1.error", 1).await;
    b.wait_stat("proxy_proto.not_found_disallowed", 1).await;
    b.wait_stat("downstream_cx_proxy_proto_error", 2).await;
    // Refused connections never count on the listener (nor on the connection manager).
    let listener = format!("listener.127.0.0.1_{}", b.listen);
    b.wait_stat(&format!("{listener}.downstream_cx_total"), 3)
        .await;
    b.wait_stat("http.ingress_http.downstream_cx_total", 3)
        .await;
    b.wait_stat(&format!("{listener}.downstream_pre_cx_active"), 0)
        .await;

    let text = within(5, "the access log", async {
        loop {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            if t.lines().count() >= 3 {
                return t;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1.2.3.4:1111 5.6.7.8:2222");
    assert_eq!(lines[1], "9.9.9.9:3333 5.6.7.8:80");
    assert!(lines[2].starts_with("127.0.0.1:"), "{}", lines[2]);
}

#[tokio::test]
async fn allow_requests_without_proxy_protocol_serves_them_as_they_are() {
    let up = Upstream::echo("up").await;
    let dir = TempDir::new("pp-allow");
    let pp = json!({"allow_requests_without_proxy_protocol": true, "stat_prefix": "sp"});
    let b = Baton::start(&config(&up, &dir.file("access.log"), pp)).await;
    let got = get_after(&b, b"").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));
    let got = get_after(&b, b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().header("x-forwarded-for"), Some("2001:db8::1"));
    b.wait_stat("proxy_proto.sp.not_found_allowed", 1).await;
    b.wait_stat("proxy_proto.sp.versions.v1.found", 1).await;
    assert_eq!(b.stat("downstream_cx_proxy_proto_error").await, Some(0));
}
