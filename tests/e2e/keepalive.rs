//! Upstream keep-alive connections closing under the proxy never surface to the client: closes
//! announced with `Connection: close`, silent closes after N requests, and idle closes.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn fifty_sequential(up: &Upstream, pause: Duration) {
    let config = Config::new()
        .route(route("/", "ka", json!({})))
        .cluster(cluster("ka", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..50 {
        let r = c
            .send(get_req("test.local", &format!("/k{i}")))
            .await
            .unwrap();
        statuses.push(r.status);
        tokio::time::sleep(pause).await;
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "statuses: {statuses:?}\nstderr:\n{}",
        baton.stderr()
    );
    assert_eq!(up.hits(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_announcing_close_every_third_request() {
    let up = Upstream::close_after(3, true).await;
    fifty_sequential(&up, Duration::from_millis(2)).await;
    assert!(up.conns() >= 17, "connections: {}", up.conns());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_silently_closing_every_third_request() {
    let up = Upstream::close_after(3, false).await;
    fifty_sequential(&up, Duration::from_millis(2)).await;
    assert!(up.conns() >= 17, "connections: {}", up.conns());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_silently_closing_without_pause() {
    let up = Upstream::close_after(3, false).await;
    fifty_sequential(&up, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_idle_connections() {
    let up = Upstream::idle_closer(Duration::from_millis(50)).await;
    fifty_sequential(&up, Duration::from_millis(60)).await;
    assert!(
        up.conns() >= 25,
        "idle connections were reused: {}",
        up.conns()
    );
}
