//! `envoy.filters.http.fault` (issue 19): aborts and delays, percentages, header control,
//! `max_active_faults`, per-route configuration, stats and response flags. Expected responses
//! were taken from Envoy 1.40 on the same configurations.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const STDOUT_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const NAME: &str = "envoy.filters.http.fault";

fn per_route(prefix: &str, fault: Value) -> Value {
    let mut tc = json!({"@type": FAULT});
    tc.as_object_mut()
        .unwrap()
        .extend(fault.as_object().unwrap().clone());
    json!({"match": {"prefix": prefix}, "route": {"cluster": "up"},
           "typed_per_filter_config": {NAME: tc}})
}

fn hundred() -> Value {
    json!({"numerator": 100})
}

/// The filter (abort 503 for requests with `x-fault`), routes with their own faults, and an
/// access log of status and flags on stdout.
fn config(up: &Upstream) -> String {
    Config::new()
        .hcm(
            "http_filters",
            json!([
                {"name": NAME, "typed_config": {"@type": FAULT,
                    "abort": {"http_status": 503, "percentage": hundred()},
                    "headers": [{"name": "x-fault", "present_match": true}]}},
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
            ]),
        )
        .hcm(
            "access_log",
            json!([{"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG,
                "log_format": {"text_format_source": {"inline_string": "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}}}]),
        )
        // Clients on 127.0.0.1 are internal: their x-envoy-downstream-service-* fields stay
        // (Envoy keeps them without use_remote_address).
        .hcm(
            "internal_address_config",
            json!({"cidr_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]}),
        )
        .route(per_route(
            "/grpc",
            json!({"abort": {"grpc_status": 14, "percentage": hundred()}}),
        ))
        .route(per_route(
            "/hdr",
            json!({"abort": {"header_abort": {}, "percentage": hundred()},
                   "delay": {"header_delay": {}, "percentage": hundred()}}),
        ))
        .route(per_route(
            "/delay",
            json!({"max_active_faults": 1,
                   "delay": {"fixed_delay": "0.5s", "percentage": hundred()},
                   "abort": {"http_status": 418, "percentage": hundred()}}),
        ))
        .route(per_route(
            "/half",
            json!({"abort": {"http_status": 500,
                   "percentage": {"numerator": 5000, "denominator": "TEN_THOUSAND"}}}),
        ))
        .route(per_route(
            "/never",
            json!({"abort": {"http_status": 418}, "delay": {"fixed_delay": "5s"}}),
        ))
        .route(per_route(
            "/nodes",
            json!({"downstream_nodes": ["n1"], "abort": {"http_status": 418, "percentage": hundred()}}),
        ))
        .route(per_route(
            "/other-cluster",
            json!({"upstream_cluster": "other", "abort": {"http_status": 418, "percentage": hundred()}}),
        ))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render()
}

async fn send(baton: &Baton, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = get_req("h", path);
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    send1(baton.addr(), req).await.expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_are_answered_as_envoy_does() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up)).await;
    let r = send(&baton, "/x", &[("x-fault", "1")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "fault filter abort");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(send(&baton, "/x", &[]).await.status, 200);
    // A route's configuration replaces the filter's (its match on x-fault included).
    let r = send(&baton, "/grpc", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "fault filter abort"));
    let r = send(&baton, "/grpc", &[("content-type", "application/grpc")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("grpc-message"), Some("fault filter abort"));
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());
    // Only for the listed downstream nodes, and the route's cluster.
    assert_eq!(send(&baton, "/nodes", &[]).await.status, 200);
    let n1 = [("x-envoy-downstream-service-node", "n1")];
    assert_eq!(send(&baton, "/nodes", &n1).await.status, 418);
    assert_eq!(send(&baton, "/other-cluster", &[]).await.status, 200);
    // No percentage: never, as Envoy (protobuf's default is 0%).
    let t = Instant::now();
    assert_eq!(send(&baton, "/never", &[]).await.status, 200);
    assert!(t.elapsed() < Duration::from_secs(4));
    // Counted per downstream cluster too.
    let dsc = [
        ("x-fault", "1"),
        ("x-envoy-downstream-service-cluster", "dsc"),
    ];
    assert_eq!(send(&baton, "/x", &dsc).await.status, 503);
    let p = "http.ingress_http.fault";
    assert_eq!(baton.stat(&format!("{p}.aborts_injected")).await, Some(5));
    assert_eq!(
        baton.stat(&format!("{p}.dsc.aborts_injected")).await,
        Some(1)
    );
    assert_eq!(baton.stat(&format!("{p}.delays_injected")).await, Some(0));
    assert_eq!(baton.stat(&format!("{p}.active_faults")).await, Some(0));
    assert_eq!(baton.stat(&format!("{p}.faults_overflow")).await, Some(0));
    assert_eq!(
        baton.stat(&format!("{p}.response_rl_injected")).await,
        Some(0)
    );
    let log = baton.stdout();
    assert!(log.contains("/x 503 FI\n"), "{log}");
    assert!(log.contains("/x 200 -\n"), "{log}");
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_control_faults_within_the_configured_percentage() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up)).await;
    let abort = |v: &'static str| [("x-envoy-fault-abort-request", v)];
    assert_eq!(send(&baton, "/hdr", &abort("429")).await.status, 429);
    // Out of [200, 600): no abort.
    assert_eq!(send(&baton, "/hdr", &abort("700")).await.status, 200);
    let none = [
        ("x-envoy-fault-abort-request", "429"),
        ("x-envoy-fault-abort-request-percentage", "0"),
    ];
    assert_eq!(send(&baton, "/hdr", &none).await.status, 200);
    let grpc = [
        ("x-envoy-fault-abort-grpc-request", "5"),
        ("content-type", "application/grpc"),
    ];
    let r = send(&baton, "/hdr", &grpc).await;
    assert_eq!((r.status, r.header("grpc-status")), (200, Some("5")));
    let r = send(&baton, "/hdr", &[("x-envoy-fault-abort-grpc-request", "5")]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "fault filter abort"));
    let t = Instant::now();
    let r = send(&baton, "/hdr", &[("x-envoy-fault-delay-request", "300")]).await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // The header reaches the upstream, as Envoy passes it on.
    assert_eq!(up.last().header("x-envoy-fault-delay-request"), Some("300"));
    let log = baton.stdout();
    assert!(log.contains("/hdr 200 DI\n"), "{log}");
    assert!(log.contains("/hdr 429 FI\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_active_faults_lets_the_overflow_through() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up)).await;
    let addr = baton.addr();
    let first = tokio::spawn(async move {
        let t = Instant::now();
        let r = send1(addr, get_req("h", "/delay"))
            .await
            .expect("a response");
        (r.status, t.elapsed())
    });
    let p = "http.ingress_http.fault";
    let until = Instant::now() + Duration::from_secs(5);
    while baton.stat(&format!("{p}.active_faults")).await != Some(1) {
        assert!(
            Instant::now() < until,
            "the first fault never became active"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The delay and the abort each count their overflow, as Envoy's do.
    assert_eq!(send(&baton, "/delay", &[]).await.status, 200);
    let (status, took) = first.await.expect("first");
    assert_eq!(status, 418);
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert_eq!(baton.stat(&format!("{p}.faults_overflow")).await, Some(2));
    assert_eq!(baton.stat(&format!("{p}.delays_injected")).await, Some(1));
    assert_eq!(baton.stat(&format!("{p}.aborts_injected")).await, Some(1));
    assert_eq!(baton.stat(&format!("{p}.active_faults")).await, Some(0));
    let log = baton.stdout();
    assert!(log.contains("/delay 418 DI,FI\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fractional_percentage_faults_about_that_share() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up)).await;
    let mut c = H1::connect(baton.addr()).await.expect("connect");
    let mut aborted = 0;
    for _ in 0..200 {
        let r = c.send(get_req("h", "/half")).await.expect("send");
        assert!(r.status == 500 || r.status == 200, "{}", r.status);
        aborted += usize::from(r.status == 500);
    }
    // 5000 out of 10 000: half, give or take (this bound fails once in about 10^11 runs).
    assert!((40..=160).contains(&aborted), "{aborted} of 200");
}

#[test]
fn fault_configs_are_checked() {
    let check = |fault: Value| {
        let mut tc = json!({"@type": FAULT});
        tc.as_object_mut()
            .unwrap()
            .extend(fault.as_object().unwrap().clone());
        let text = Config::new()
            .hcm(
                "http_filters",
                json!([{"name": NAME, "typed_config": tc},
                       {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]),
            )
            .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}))
            .render();
        let (status, err) = validate_config(&text);
        assert!(!status.success(), "accepted {fault}");
        err
    };
    let p = "http_filters[0].typed_config";
    let err = check(json!({"abort": {"http_status": 700}}));
    assert!(err.contains(&format!("{p}.abort.http_status")), "{err}");
    let err = check(json!({"abort": {"http_status": 500, "grpc_status": 1}}));
    assert!(
        err.contains(&format!("{p}.abort: needs exactly one")),
        "{err}"
    );
    let err = check(json!({"response_rate_limit": {"fixed_limit": {"limit_kbps": 1}}}));
    assert!(err.contains("response_rate_limit"), "{err}");
    let err = check(
        json!({"delay": {"fixed_delay": "1s", "percentage": {"numerator": 1, "denominator": "BILLION"}}}),
    );
    assert!(
        err.contains(&format!("{p}.delay.percentage.denominator")),
        "{err}"
    );
}

/// An active fault counts until its stream ends, not only until the response head: Envoy
/// releases it when the filter is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_fault_lasts_until_the_response_body_ends() {
    use http_body_util::BodyExt as _;
    let up = Upstream::echo("a").await;
    let config = Config::new()
        .hcm(
            "http_filters",
            json!([
                {"name": NAME, "typed_config": {"@type": FAULT,
                    "delay": {"fixed_delay": "0.001s", "percentage": hundred()}}},
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
            ]),
        )
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let gauge = "http.ingress_http.fault.active_faults";
    let mut c = H1::connect(baton.addr()).await.unwrap();
    // Five chunks, 50 ms apart.
    let resp = c.send_streaming(get_req("h", "/slow/5")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(baton.stat(gauge).await, Some(1), "the body is still coming");
    let body = within(10, "the body", resp.into_body().collect())
        .await
        .unwrap();
    assert_eq!(body.to_bytes().len(), 5 * "chunk 0\n".len());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while baton.stat(gauge).await != Some(0) && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(baton.stat(gauge).await, Some(0));
}
