//! HTTP filters in front of the router (issue 19). `envoy.filters.http.health_check`, with
//! Envoy 1.40's answers on the same configuration: a matched health check answered 200 (or
//! forwarded in pass-through mode) with `x-envoy-upstream-healthchecked-cluster`; 503 with
//! `x-envoy-immediate-health-check-fail: true` and a close while the server fails health checks,
//! and that header on every other response then; its `health_check.*` stats.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const HEALTH_CHECK: &str =
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck";

fn config(up: &Upstream, pass_through: bool) -> String {
    Config::new()
        .hcm(
            "http_filters",
            json!([
                {"name": "envoy.filters.http.health_check", "typed_config": {
                    "@type": HEALTH_CHECK,
                    "pass_through_mode": pass_through,
                    "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}],
                }},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                }},
            ]),
        )
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]))
        .render()
}

/// The response head to `GET path` on a new connection.
async fn head(baton: &Baton, path: &str) -> String {
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within(5, "a response head", async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a response");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&got).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_filter_answers_as_envoy_does() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up, false)).await;
    let h = head(&baton, "/healthz").await;
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains("x-envoy-upstream-healthchecked-cluster: \r\n"),
        "{h}"
    );
    assert!(h.contains("content-length: 0"), "{h}");
    // `:path` is the target as sent: a query makes it another request.
    let h = head(&baton, "/healthz?x=1").await;
    assert!(h.contains("x-upstream: a"), "{h}");
    assert!(!h.contains("healthchecked"), "{h}");
    assert_eq!(up.hits(), 1);
    let (status, _) = baton.admin_post("/healthcheck/fail").await;
    assert_eq!(status, 200);
    let h = head(&baton, "/healthz").await;
    assert!(h.starts_with("http/1.1 503"), "{h}");
    assert!(
        h.contains("x-envoy-immediate-health-check-fail: true"),
        "{h}"
    );
    assert!(h.contains("connection: close"), "{h}");
    let h = head(&baton, "/other").await;
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains("x-envoy-immediate-health-check-fail: true"),
        "{h}"
    );
    assert_eq!(up.hits(), 2);
    let p = "http.ingress_http.health_check";
    assert_eq!(baton.stat(&format!("{p}.request_total")).await, Some(2));
    assert_eq!(baton.stat(&format!("{p}.ok")).await, Some(1));
    assert_eq!(baton.stat(&format!("{p}.failed")).await, Some(1));
    assert_eq!(baton.stat(&format!("{p}.cached_response")).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_health_checks_reach_the_origin_until_the_server_fails() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up, true)).await;
    let h = head(&baton, "/healthz").await;
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(h.contains("x-upstream: a"), "{h}");
    assert!(
        h.contains("x-envoy-upstream-healthchecked-cluster: \r\n"),
        "{h}"
    );
    assert_eq!(up.hits(), 1);
    baton.admin_post("/healthcheck/fail").await;
    let h = head(&baton, "/healthz").await;
    assert!(h.starts_with("http/1.1 503"), "{h}");
    assert_eq!(up.hits(), 1);
    let p = "http.ingress_http.health_check";
    assert_eq!(baton.stat(&format!("{p}.request_total")).await, Some(1));
    assert_eq!(baton.stat(&format!("{p}.failed")).await, Some(1));
    // Healthy again: passed through again.
    baton.admin_post("/healthcheck/ok").await;
    let h = head(&baton, "/healthz").await;
    assert!(h.contains("x-upstream: a"), "{h}");
}

#[test]
fn http_filter_lists_are_checked() {
    let validate = |filters: serde_json::Value| {
        let text = Config::new()
            .hcm("http_filters", filters)
            .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}))
            .render();
        let (status, err) = validate_config(&text);
        assert!(!status.success());
        err
    };
    let router = json!({"name": "envoy.filters.http.router"});
    let hc = |fields: serde_json::Value| {
        let mut tc = json!({"@type": HEALTH_CHECK});
        tc.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        json!({"name": "envoy.filters.http.health_check", "typed_config": tc})
    };
    let err = validate(json!([router, hc(json!({"pass_through_mode": false}))]));
    assert!(
        err.contains("http_filters[0]: the router must be the last HTTP filter"),
        "{err}"
    );
    let err = validate(json!([hc(json!({})), router]));
    assert!(
        err.contains("typed_config.pass_through_mode: is required"),
        "{err}"
    );
    let err = validate(json!([
        hc(json!({"pass_through_mode": true, "cache_time": "1s"})),
        router
    ]));
    assert!(err.contains("typed_config.cache_time"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_fails_its_health_checks() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up, false)).await;
    let mut c = H1::connect(baton.addr()).await.expect("connect");
    let r = c.send(get_req("h", "/healthz")).await.expect("send");
    assert_eq!(r.status, 200);
    // A drain (here SIGTERM's): a load balancer in front must stop sending at once.
    baton.signal("TERM");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = c.send(get_req("h", "/healthz")).await.expect("send");
        if r.status == 503 {
            assert_eq!(
                r.header("x-envoy-immediate-health-check-fail"),
                Some("true")
            );
            break;
        }
        assert!(std::time::Instant::now() < until, "still {}", r.status);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
