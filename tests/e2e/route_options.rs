//! Per-route options over the HTTP connection manager's (issue 23): `idle_timeout` (the
//! route's stream idle timeout; `0s` disables the HCM's `stream_idle_timeout` for the route)
//! and `upgrade_configs[].{upgrade_type,enabled}` (the route's entry for an upgrade type wins
//! over the HCM's list, either way), as Envoy documents and its router decides.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Answers every request with headers promising 100 bytes, sends 10, then stalls.
async fn stalling_upstream() -> Upstream {
    Upstream::raw(|mut s, _st| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

/// Send `GET path` and read until the connection ends or `limit` passes: the bytes, and whether
/// it ended.
async fn read_for(baton: &Baton, path: &str, limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut got = Vec::new();
    let ended = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_idle_timeout_overrides_the_stream_idle_timeout() {
    let up = stalling_upstream().await;
    let config = Config::new()
        .hcm("stream_idle_timeout", json!("0.3s"))
        .route(route("/short", "stall", json!({"idle_timeout": "0.2s"})))
        .route(route("/off", "stall", json!({"idle_timeout": "0s"})))
        .route(route("/", "stall", json!({})))
        .cluster(cluster("stall", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;

    let started = Instant::now();
    let (text, ended) = read_for(&baton, "/short", Duration::from_secs(5)).await;
    assert!(ended && text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("0123456789"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    baton
        .wait_stat("http.ingress_http.downstream_rq_idle_timeout", 1)
        .await;

    // The HCM's 0.3 s is off for this route: still open well after it.
    let (text, ended) = read_for(&baton, "/off", Duration::from_millis(1200)).await;
    assert!(!ended, "the stream was cut: {text}");
    assert!(text.ends_with("0123456789"), "{text}");
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_rq_idle_timeout")
            .await,
        Some(1)
    );

    // Other routes keep the HCM's.
    let (text, ended) = read_for(&baton, "/x", Duration::from_secs(5)).await;
    assert!(ended, "{text}");
    baton
        .wait_stat("http.ingress_http.downstream_rq_idle_timeout", 2)
        .await;
}

async fn upgrade(baton: &Baton, path: &str) -> String {
    let mut s = TcpStream::connect(baton.addr()).await.unwrap();
    let req = UPGRADE.replacen("GET /ws ", &format!("GET {path} "), 1);
    s.write_all(req.as_bytes()).await.unwrap();
    within(5, "upgrade answer", read_head(&mut s)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_upgrade_configs_win_over_the_hcm() {
    let ws = Upstream::websocket().await;
    let on_route = |enabled: bool| json!({"upgrade_configs": [{"upgrade_type": "WebSocket", "enabled": enabled}]});
    // The HCM allows none: a route enables it.
    let config = Config::new()
        .route(route("/on", "ws", on_route(true)))
        .route(route("/", "ws", json!({})))
        .cluster(cluster("ws", &[ws.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let head = upgrade(&baton, "/on").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let head = upgrade(&baton, "/other").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    drop(baton);

    // The HCM allows it: a route disables it.
    let config = Config::new()
        .hcm("upgrade_configs", json!([{"upgrade_type": "websocket"}]))
        .route(route("/off", "ws", on_route(false)))
        .route(route(
            "/",
            "ws",
            json!({"upgrade_configs": [{"upgrade_type": "websocket"}]}),
        ))
        .cluster(cluster("ws", &[ws.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let head = upgrade(&baton, "/off").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let head = upgrade(&baton, "/other").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        baton.stat("http.ingress_http.upgrade_failed").await,
        Some(1)
    );
}

#[test]
fn unsupported_route_options_are_refused_with_their_path() {
    for (action, path, words) in [
        (
            json!({"upgrade_configs": [{"upgrade_type": "CONNECT"}]}),
            "route.upgrade_configs[0].upgrade_type",
            "CONNECT",
        ),
        (
            json!({"upgrade_configs": [{"upgrade_type": "websocket"}, {"upgrade_type": "WEBSOCKET"}]}),
            "route.upgrade_configs[1].upgrade_type",
            "duplicate",
        ),
        (
            json!({"upgrade_configs": [{"upgrade_type": "websocket", "connect_config": {}}]}),
            "route.upgrade_configs[0]",
            "connect_config",
        ),
        (
            json!({"max_stream_duration": {"max_stream_duration": "1s"}}),
            "route",
            "max_stream_duration",
        ),
    ] {
        let config = Config::new()
            .route(route("/", "up", action.clone()))
            .cluster(cluster("up", &[1]))
            .render();
        let (status, out) = validate_config(&config);
        assert!(!status.success(), "{action}: refused");
        assert!(out.contains(path), "{action}: {out}");
        assert!(out.contains(words), "{action}: {out}");
    }
}
