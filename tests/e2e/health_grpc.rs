//! gRPC health checks (`grpc_health_check`) against a `grpc.health.v1` server that turns
//! `NOT_SERVING` on demand, with the expectations measured on Envoy 1.40 on the same config:
//! a `NOT_SERVING` answer takes the host out at the first check (as an unexpected HTTP status
//! does, whatever `unhealthy_threshold`), `healthy_threshold` passes bring it back, and a
//! service the server does not know (`grpc-status: 5`) keeps the host out.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::grpc::KNOWN_SERVICE;
use crate::support::*;

/// A STATIC HTTP/2 cluster on `ports` with a gRPC check every 100 ms, out after 10 network
/// failures, back after 2 passes.
fn grpc_checked(name: &str, ports: &[u16], grpc: Value) -> Value {
    let hc = json!({
        "timeout": "1s",
        "interval": "0.1s",
        "no_traffic_interval": "0.1s",
        "unhealthy_threshold": 10,
        "healthy_threshold": 2,
        "grpc_health_check": grpc,
    });
    with(
        with(cluster(name, ports), "health_checks", json!([hc])),
        "typed_extension_protocol_options",
        http2_options(),
    )
}

/// Wait (≤ 5 s) until `/clusters` shows `want` as the `health_flags` of the host on `port`.
async fn wait_flags(baton: &Baton, cluster: &str, port: u16, want: &str) {
    let line = format!("{cluster}::127.0.0.1:{port}::health_flags::");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = baton.admin_get("/clusters").await;
        let got = body
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map(str::to_owned);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < until, "{line}: want {want}, got {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stat(baton: &Baton, name: &str) -> i64 {
    baton
        .stat(name)
        .await
        .unwrap_or_else(|| panic!("no stat {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_takes_a_host_out_and_serving_brings_it_back() {
    let a = Upstream::grpc_health("a").await;
    let b = Upstream::grpc_health("b").await;
    let check = json!({"service_name": KNOWN_SERVICE, "authority": "hc.example"});
    let config = Config::new()
        .route(route("/", "g", json!({})))
        .cluster(grpc_checked("g", &[a.port(), b.port()], check))
        .render();
    let baton = Baton::start(&config).await;
    baton.wait_stat("cluster.g.health_check.healthy", 2).await;
    wait_flags(&baton, "g", a.port(), "healthy").await;

    let failures = stat(&baton, "cluster.g.health_check.failure").await;
    a.set_failing(true);
    wait_flags(&baton, "g", a.port(), "/failed_active_hc").await;
    // Out at the first NOT_SERVING, long before unhealthy_threshold (10) failures.
    let failed = stat(&baton, "cluster.g.health_check.failure").await - failures;
    assert!((1..10).contains(&failed), "{failed} failures");
    assert_eq!(stat(&baton, "cluster.g.membership_healthy").await, 1);
    let before = a.proxied();
    for i in 0..20 {
        let r = get(baton.addr(), &format!("/r{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(
        a.proxied(),
        before,
        "the NOT_SERVING host got proxied requests"
    );
    assert_eq!(b.proxied(), 20);

    a.set_failing(false);
    wait_flags(&baton, "g", a.port(), "healthy").await;
    baton.wait_stat("cluster.g.health_check.healthy", 2).await;
    assert_eq!(
        stat(&baton, "cluster.g.health_check.network_failure").await,
        0
    );

    // What a check looks like on the wire.
    let hc = b
        .seen()
        .into_iter()
        .rfind(|s| s.uri.path() == "/grpc.health.v1.Health/Check")
        .expect("a check");
    assert_eq!(hc.method, http::Method::POST);
    assert_eq!(hc.version, http::Version::HTTP_2);
    assert_eq!(hc.uri.authority().map(|a| a.as_str()), Some("hc.example"));
    assert_eq!(hc.header("content-type"), Some("application/grpc"));
    assert_eq!(hc.header("te"), Some("trailers"));
    assert_eq!(hc.header("user-agent"), Some("Envoy/HC"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_keeps_the_host_out() {
    let a = Upstream::grpc_health("a").await;
    let b = Upstream::grpc_health("b").await;
    let config = Config::new()
        .route(route("/", "g", json!({})))
        .cluster(grpc_checked(
            "g",
            &[a.port()],
            json!({"service_name": "svc.Other"}),
        ))
        .cluster(grpc_checked("whole", &[b.port()], json!({})))
        .render();
    let baton = Baton::start(&config).await;
    // The empty service is the server as a whole: it passes; the default authority is the
    // cluster's name.
    wait_flags(&baton, "whole", b.port(), "healthy").await;
    let hc = b.last();
    assert_eq!(hc.uri.authority().map(|a| a.as_str()), Some("whole"));
    // NOT_FOUND in a trailers-only answer: a failure, not a network failure.
    baton.wait_stat("cluster.g.health_check.failure", 3).await;
    wait_flags(&baton, "g", a.port(), "/failed_active_hc").await;
    assert_eq!(
        stat(&baton, "cluster.g.health_check.network_failure").await,
        0
    );
    // Its only host is out and panic mode (1 host, 0 healthy) routes to it anyway, as Envoy.
    let r = get(baton.addr(), "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(stat(&baton, "cluster.g.lb_healthy_panic").await, 1);
}
