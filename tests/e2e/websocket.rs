//! WebSocket upgrades: allowed by `upgrade_configs` they become a byte tunnel; otherwise 403.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn config(ws: &Upstream, allow: bool) -> String {
    let mut c = Config::new()
        .route(route("/", "ws", json!({})))
        .cluster(cluster("ws", &[ws.port()]));
    if allow {
        c = c.hcm("upgrade_configs", json!([{"upgrade_type": "websocket"}]));
    }
    c.render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_bytes_both_ways() {
    let ws = Upstream::websocket().await;
    let baton = Baton::start(&config(&ws, true)).await;
    let mut s = TcpStream::connect(baton.addr()).await.unwrap();
    s.write_all(UPGRADE.as_bytes()).await.unwrap();
    let head = within(5, "101 head", read_head(&mut s)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(ws.last().header("upgrade") == Some("websocket"));
    for i in 0..5 {
        let msg = format!("frame-{i}-{}", "x".repeat(i * 100));
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        within(5, "echo through the tunnel", s.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    baton
        .wait_stat("http.ingress_http.downstream_cx_upgrades_total", 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_without_upgrade_configs_is_403() {
    let ws = Upstream::websocket().await;
    let baton = Baton::start(&config(&ws, false)).await;
    let mut s = TcpStream::connect(baton.addr()).await.unwrap();
    s.write_all(UPGRADE.as_bytes()).await.unwrap();
    let head = within(5, "403 head", read_head(&mut s)).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(ws.hits(), 0, "the upstream saw the refused upgrade");
    assert_eq!(
        baton.stat("http.ingress_http.downstream_rq_total").await,
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_after_the_stream_idle_timeout_and_a_busy_one_is_not() {
    let ws = Upstream::websocket().await;
    let config = Config::new()
        .route(route("/", "ws", json!({})))
        .cluster(cluster("ws", &[ws.port()]))
        .hcm("upgrade_configs", json!([{"upgrade_type": "websocket"}]))
        .hcm("stream_idle_timeout", json!("0.6s"))
        .render();
    let baton = Baton::start(&config).await;
    let mut s = TcpStream::connect(baton.addr()).await.unwrap();
    s.write_all(UPGRADE.as_bytes()).await.unwrap();
    let head = within(5, "101 head", read_head(&mut s)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Busy for twice the timeout: a message every 200 ms keeps it open.
    let started = std::time::Instant::now();
    for i in 0..6 {
        let msg = format!("ping-{i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        within(5, "echo", s.read_exact(&mut back)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Then silence: closed once the timeout has passed with no byte either way.
    let idle_from = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = within(5, "the idle tunnel to close", s.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "closed, not answered");
    assert!(idle_from.elapsed() >= std::time::Duration::from_millis(350));
    assert!(started.elapsed() >= std::time::Duration::from_millis(1200));
    baton
        .wait_stat("http.ingress_http.downstream_rq_idle_timeout", 1)
        .await;
}
