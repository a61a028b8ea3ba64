//! Every local reply as Envoy makes it: no route, connect failure, reset, protocol error,
//! timeout, circuit breaker overflow, malformed downstream request, direct responses and
//! redirects.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const PREFIX: &str = "upstream connect error or disconnect/reset before headers";

struct Fixture {
    baton: Baton,
    slow: Upstream,
    _ups: Vec<Upstream>,
    refused_port: u16,
}

async fn start() -> Fixture {
    let reset = Upstream::close_immediately().await;
    let garbage = Upstream::garbage().await;
    let silent = Upstream::silent().await;
    let slow = Upstream::echo("slow").await;
    let refused_port = free_port();
    let config = Config::new()
        .route(route("/refused", "refused", json!({})))
        .route(route("/reset", "reset", json!({})))
        .route(route("/garbage", "garbage", json!({})))
        .route(route("/timeout", "silent", json!({"timeout": "0.5s"})))
        .route(route("/cb/", "cb", json!({"prefix_rewrite": "/"})))
        .route(json!({"match": {"path": "/direct"}, "direct_response": {"status": 202, "body": {"inline_string": "accepted here"}}}))
        .route(json!({"match": {"path": "/empty-direct"}, "direct_response": {"status": 503}}))
        .route(json!({"match": {"prefix": "/old"}, "redirect": {"path_redirect": "/new", "strip_query": true}}))
        .route(json!({"match": {"prefix": "/keep"}, "redirect": {"path_redirect": "/kept", "response_code": "FOUND"}}))
        .route(json!({"match": {"prefix": "/elsewhere"}, "redirect": {"host_redirect": "other.example", "scheme_redirect": "https"}}))
        .cluster(cluster("refused", &[refused_port]))
        .cluster(cluster("reset", &[reset.port()]))
        .cluster(cluster("garbage", &[garbage.port()]))
        .cluster(cluster("silent", &[silent.port()]))
        .cluster(with(
            cluster("cb", &[slow.port()]),
            "circuit_breakers",
            json!({"thresholds": [{"max_requests": 1}]}),
        ))
        .render();
    let baton = Baton::start(&config).await;
    Fixture {
        baton,
        slow,
        _ups: vec![reset, garbage, silent],
        refused_port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_and_counted() {
    let f = start().await;
    let resp = get(f.baton.addr(), "/nowhere").await;
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty());
    f.baton.wait_stat("http.ingress_http.no_route", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_503_connection_failure() {
    let f = start().await;
    let resp = get(f.baton.addr(), "/refused").await;
    assert_eq!(resp.status, 503);
    let body = resp.text();
    assert!(body.contains(PREFIX), "{body}");
    assert!(body.contains("connection failure"), "{body}");
    assert!(resp.header("x-envoy-upstream-service-time").is_none());
    assert!(
        f.baton
            .stat("cluster.refused.upstream_cx_connect_fail")
            .await
            >= Some(1)
    );
    // As Envoy 1.40: every connection opened counts, one that fails to connect too.
    let total = f.baton.stat("cluster.refused.upstream_cx_total").await;
    let failed = f
        .baton
        .stat("cluster.refused.upstream_cx_connect_fail")
        .await;
    assert_eq!(total, failed);
    let _ = f.refused_port;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_headers_is_503() {
    let f = start().await;
    let resp = get(f.baton.addr(), "/reset").await;
    assert_eq!(resp.status, 503);
    let body = resp.text();
    assert!(body.contains(PREFIX), "{body}");
    assert!(!body.contains("connection failure"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_upstream_response_is_502() {
    let f = start().await;
    let resp = get(f.baton.addr(), "/garbage").await;
    assert_eq!(resp.status, 502);
    assert!(resp.text().contains(PREFIX), "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_504() {
    let f = start().await;
    let started = Instant::now();
    let resp = get(f.baton.addr(), "/timeout").await;
    let took = started.elapsed();
    assert_eq!(resp.status, 504);
    assert_eq!(resp.text(), "upstream request timeout");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "504 after {took:?}"
    );
    f.baton
        .wait_stat("cluster.silent.upstream_rq_timeout", 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflow_is_503() {
    let f = start().await;
    let addr = f.baton.addr();
    let first = tokio::spawn(async move { get(addr, "/cb/delay/700").await });
    // Wait until the first request is at the upstream, so it holds the only slot.
    within(5, "first request upstream", async {
        while f.slow.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let second = get(addr, "/cb/x").await;
    assert_eq!(second.status, 503);
    let body = second.text();
    assert!(body.contains(PREFIX) && body.contains("overflow"), "{body}");
    let first = within(5, "first request", first).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(
        f.slow.hits(),
        1,
        "the overflowing request reached the upstream"
    );
    f.baton
        .wait_stat("cluster.cb.upstream_rq_pending_overflow", 1)
        .await;
    // Once the slot is free, requests pass again.
    assert_eq!(get(addr, "/cb/y").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_is_400_and_closes() {
    let f = start().await;
    let mut s = TcpStream::connect(f.baton.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    // Reading to EOF proves the connection is closed.
    within(5, "400 and close", s.read_to_end(&mut all))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_responses_and_redirects() {
    let f = start().await;
    let addr = f.baton.addr();
    let r = get(addr, "/direct").await;
    assert_eq!((r.status, r.text().as_str()), (202, "accepted here"));
    let r = get(addr, "/empty-direct").await;
    assert_eq!(r.status, 503);
    assert!(r.body.is_empty());

    let r = get(addr, "/old/path?x=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://test.local/new"));
    let r = get(addr, "/keep?x=1").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://test.local/kept?x=1"));
    let r = get(addr, "/elsewhere/a?b=c").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://other.example/elsewhere/a?b=c")
    );
    f.baton.wait_stat("http.ingress_http.rq_redirect", 3).await;
    f.baton
        .wait_stat("http.ingress_http.rq_direct_response", 2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_responses_pass_through_unchanged() {
    let up = Upstream::fixed(500, "upstream's own error").await;
    let config = Config::new()
        .route(route("/", "err", json!({})))
        .cluster(cluster("err", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let r = get(baton.addr(), "/x").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "upstream's own error");
    assert!(r.header("x-envoy-upstream-service-time").is_some());
    baton.wait_stat("cluster.err.upstream_rq_500", 1).await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_5xx", 1)
        .await;
}
