//! Retry policies beyond the conditions (issue 23), as Envoy 1.40 runs them on the same
//! routes: the jittered exponential back-off between tries (`retry_back_off`, 25 ms base by
//! default; `upstream_rq_retry_backoff_exponential`), `previous_hosts` with
//! `host_selection_retry_max_attempts`, `retriable-headers`, `envoy-ratelimited`,
//! `retriable_request_headers`, and an internal client's `x-envoy-retry-on`,
//! `x-envoy-max-retries`, `x-envoy-upstream-rq-timeout-ms` (taken off the request).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn weighted_random(name: &str, ports: &[u16]) -> Value {
    with(cluster(name, ports), "lb_policy", json!("RANDOM"))
}

const PREVIOUS_HOSTS: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_hosts_sends_the_retry_elsewhere() {
    let bad = Upstream::fixed(503, "bad").await;
    let good = Upstream::echo("good").await;
    let one_retry = json!({"retry_on": "5xx", "num_retries": 1});
    let mut avoiding = one_retry.clone();
    avoiding["retry_host_predicate"] = json!([{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}]);
    avoiding["host_selection_retry_max_attempts"] = json!(30);
    let config = Config::new()
        .route(route("/avoid/", "c", json!({"retry_policy": avoiding})))
        .route(route("/plain/", "c", json!({"retry_policy": one_retry})))
        .cluster(weighted_random("c", &[bad.port(), good.port()]))
        .render();
    let baton = Baton::start(&config).await;
    // One retry, away from the host that failed: every request ends on the good host (a
    // retry picking the bad host again 30 times in a row: 2^-30).
    for i in 0..40 {
        let r = get(baton.addr(), &format!("/avoid/{i}")).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    // Without the predicate a random retry lands on the bad host again a quarter of the time
    // (no 503 in 40: 0.75^40, about 1e-5).
    let mut failed = 0;
    for i in 0..40 {
        if get(baton.addr(), &format!("/plain/{i}")).await.status == 503 {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "the control route retried onto the bad host sometimes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_between_tries() {
    let bad = Upstream::fixed(503, "bad").await;
    let config = Config::new()
        .route(route(
            "/",
            "bad",
            json!({"retry_policy": {"retry_on": "5xx", "num_retries": 1,
                "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"}}}),
        ))
        .cluster(cluster("bad", &[bad.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let started = Instant::now();
    for i in 0..10 {
        assert_eq!(get(baton.addr(), &format!("/{i}")).await.status, 503);
    }
    // Each retry waits a uniform time below 200 ms (the first retry's ceiling is the base):
    // ten of them add up to under 300 ms with a chance of about 1.6e-5.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "backed off: {took:?}");
    baton
        .wait_stat("cluster.bad.upstream_rq_retry_backoff_exponential", 10)
        .await;
    baton
        .wait_stat("cluster.bad.upstream_rq_retry_limit_exceeded", 10)
        .await;
    assert_eq!(bad.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_headers_ratelimited_and_request_headers() {
    let up = Upstream::echo("up").await;
    let bad = Upstream::fixed(503, "bad").await;
    let config = Config::new()
        .route(route(
            "/hdr",
            "up",
            json!({"retry_policy": {"retry_on": "retriable-headers", "num_retries": 2,
                "retriable_headers": [{"name": "x-retry", "string_match": {"exact": "1"}}]}}),
        ))
        .route(route(
            "/rl",
            "up",
            json!({"retry_policy": {"retry_on": "envoy-ratelimited", "num_retries": 2}}),
        ))
        .route(route(
            "/rq",
            "bad",
            json!({"retry_policy": {"retry_on": "5xx", "num_retries": 2,
                "retriable_request_headers": [{"name": "x-may-retry", "present_match": true}]}}),
        ))
        .cluster(cluster("up", &[up.port()]))
        .cluster(cluster("bad", &[bad.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let send = |path: &'static str, hdr: Option<(&'static str, &'static str)>| {
        let mut req = get_req("h", path);
        if let Some((n, v)) = hdr {
            req.headers_mut().insert(n, v.parse().expect("value"));
        }
        send1(baton.addr(), req)
    };
    // A matching field in the response: retried until the retries run out; the last answer
    // goes to the client.
    let r = send("/hdr", Some(("x-reply-header", "x-retry=1")))
        .await
        .unwrap();
    assert_eq!((r.status, r.header("x-retry")), (200, Some("1")));
    assert_eq!(up.hits(), 3);
    let r = send("/hdr", Some(("x-reply-header", "x-retry=2")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 4, "no match, no retry");
    let r = send("/rl", Some(("x-reply-header", "x-envoy-ratelimited=true")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 7);
    // retriable_request_headers: only a request that matches is retried.
    assert_eq!(send("/rq", None).await.unwrap().status, 503);
    assert_eq!(bad.hits(), 1);
    assert_eq!(
        send("/rq", Some(("x-may-retry", "1")))
            .await
            .unwrap()
            .status,
        503
    );
    assert_eq!(bad.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_client_asks_for_retries_and_timeouts() {
    let bad = Upstream::fixed(503, "bad").await;
    let up = Upstream::echo("up").await;
    let config = |internal: bool| {
        let mut c = Config::new()
            .route(route("/bad", "bad", json!({})))
            .route(route("/", "up", json!({})))
            .cluster(cluster("bad", &[bad.port()]))
            .cluster(cluster("up", &[up.port()]));
        if internal {
            c = c.hcm(
                "internal_address_config",
                json!({"cidr_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]}),
            );
        }
        c.render()
    };
    let ask = |path: &'static str| {
        let mut req = get_req("h", path);
        for (n, v) in [
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-max-retries", "2"),
            ("x-envoy-upstream-rq-timeout-ms", "3000"),
        ] {
            req.headers_mut().insert(n, v.parse().expect("value"));
        }
        req
    };
    let baton = Baton::start(&config(true)).await;
    assert_eq!(send1(baton.addr(), ask("/bad")).await.unwrap().status, 503);
    assert_eq!(bad.hits(), 3, "two retries asked for");
    send1(baton.addr(), ask("/x")).await.unwrap();
    let seen = up.last();
    assert_eq!(seen.header("x-envoy-expected-rq-timeout-ms"), Some("3000"));
    for gone in [
        "x-envoy-retry-on",
        "x-envoy-max-retries",
        "x-envoy-upstream-rq-timeout-ms",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} is taken off");
    }
    drop(baton);
    // An external client's are stripped before anything reads them.
    let baton = Baton::start(&config(false)).await;
    assert_eq!(send1(baton.addr(), ask("/bad")).await.unwrap().status, 503);
    assert_eq!(bad.hits(), 4);
    send1(baton.addr(), ask("/x")).await.unwrap();
    assert_eq!(
        up.last().header("x-envoy-expected-rq-timeout-ms"),
        Some("15000")
    );
}

#[test]
fn what_baton_does_not_do_is_refused_with_its_path() {
    for (policy, path, words) in [
        (
            json!({"retry_on": "reset-before-request"}),
            "retry_policy.retry_on",
            "unsupported retry condition `reset-before-request`",
        ),
        (
            json!({"retry_host_predicate": [{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]}),
            "retry_policy.retry_host_predicate[0]",
            "previous_hosts",
        ),
        (
            json!({"retry_back_off": {"max_interval": "1s"}}),
            "retry_policy.retry_back_off.base_interval",
            "required",
        ),
        (
            json!({"retry_back_off": {"base_interval": "2s", "max_interval": "1s"}}),
            "retry_policy.retry_back_off.max_interval",
            "greater than or equal",
        ),
        (
            json!({"retry_priority": {"name": "envoy.retry_priorities.previous_priorities"}}),
            "retry_priority",
            "",
        ),
    ] {
        let config = Config::new()
            .route(route("/", "up", json!({"retry_policy": policy.clone()})))
            .cluster(cluster("up", &[1]))
            .render();
        let (status, out) = validate_config(&config);
        assert!(!status.success(), "{policy}: refused");
        assert!(out.contains(path), "{policy}: {out}");
        assert!(out.contains(words), "{policy}: {out}");
    }
}
