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
