//! `route.request_mirror_policies` (issue 23). Envoy 1.40 on the same routes: the mirror
//! cluster gets the request as the main cluster does, its host with `-shadow` before the port
//! (`foo.com:8080` → `foo.com-shadow:8080`, `bar` → `bar-shadow`; unchanged with
//! `disable_shadow_host_suffix_append`), plus `x-envoy-internal: true` and
//! `x-forwarded-for: 192.0.2.2`; the body too; a `runtime_fraction` of 0 mirrors nothing; the
//! mirror's responses count in its cluster's `upstream_rq_*` (`upstream_rq_200`,
//! `upstream_rq_completed`), and never reach the client.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

async fn send(baton: &Baton, method: &str, host: &str, path: &str, body: &'static str) -> Resp {
    let req = request(method, host, path, full(body));
    send1(baton.addr(), req).await.expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_mirrored_as_envoy() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let c = Upstream::echo("c").await;
    let config = Config::new()
        .route(route(
            "/ms",
            "a",
            json!({"request_mirror_policies": [{"cluster": "b", "disable_shadow_host_suffix_append": true}]}),
        ))
        .route(route(
            "/m",
            "a",
            json!({"request_mirror_policies": [
                {"cluster": "b"},
                {"cluster": "c", "runtime_fraction": {"default_value": {"numerator": 0}, "runtime_key": "k"}},
            ]}),
        ))
        .cluster(cluster("a", &[a.port()]))
        .cluster(cluster("b", &[b.port()]))
        .cluster(cluster("c", &[c.port()]))
        .render();
    let baton = Baton::start(&config).await;

    let r = send(&baton, "GET", "foo.com:8080", "/m/x?q=1", "").await;
    assert_eq!((r.status, r.header("x-upstream")), (200, Some("a")));
    baton.wait_stat("cluster.b.upstream_rq_completed", 1).await;
    let main = a.last();
    let shadow = b.last();
    assert_eq!(main.header("host"), Some("foo.com:8080"));
    assert_eq!(shadow.header("host"), Some("foo.com-shadow:8080"));
    assert_eq!(shadow.uri.to_string(), "/m/x?q=1");
    assert_eq!(shadow.header("x-envoy-internal"), Some("true"));
    assert_eq!(shadow.header("x-forwarded-for"), Some("192.0.2.2"));
    assert_eq!(main.header("x-envoy-internal"), None);
    assert_eq!(
        shadow.header("x-request-id"),
        main.header("x-request-id"),
        "the same request id"
    );
    assert_eq!(
        shadow.header("x-envoy-expected-rq-timeout-ms"),
        Some("15000")
    );

    let r = send(&baton, "POST", "1.2.3.4", "/m/y", "hello body").await;
    assert_eq!(r.status, 200);
    baton.wait_stat("cluster.b.upstream_rq_completed", 2).await;
    let shadow = b.last();
    assert_eq!(shadow.method, http::Method::POST);
    assert_eq!(shadow.header("host"), Some("1.2.3.4-shadow"));
    assert_eq!(shadow.header("content-length"), Some("10"));

    let r = send(&baton, "GET", "bar", "/ms", "").await;
    assert_eq!(r.status, 200);
    baton.wait_stat("cluster.b.upstream_rq_completed", 3).await;
    assert_eq!(b.last().header("host"), Some("bar"));

    assert_eq!(baton.stat("cluster.b.upstream_rq_200").await, Some(3));
    assert_eq!(baton.stat("cluster.b.upstream_rq_2xx").await, Some(3));
    assert_eq!(baton.stat("cluster.a.upstream_rq_total").await, Some(3));
    assert_eq!(baton.stat("cluster.c.upstream_rq_total").await, Some(0));
    assert_eq!((a.hits(), b.hits(), c.hits()), (3, 3, 0));
    assert_eq!(
        baton.stat("cluster.a.retry_or_shadow_abandoned").await,
        Some(0)
    );
}

/// A mirror that never answers, or cannot be reached, changes nothing for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_or_dead_mirror_never_delays_the_request() {
    let a = Upstream::echo("a").await;
    let stuck = Upstream::silent().await;
    let config = Config::new()
        .route(route(
            "/",
            "a",
            json!({"timeout": "30s", "request_mirror_policies": [{"cluster": "stuck"}, {"cluster": "dead"}]}),
        ))
        .cluster(cluster("a", &[a.port()]))
        .cluster(cluster("stuck", &[stuck.port()]))
        .cluster(cluster("dead", &[free_port()]))
        .render();
    let baton = Baton::start(&config).await;
    let started = Instant::now();
    for _ in 0..3 {
        let r = send(&baton, "POST", "h", "/x", "abc").await;
        assert_eq!(r.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    baton
        .wait_stat("cluster.dead.upstream_cx_connect_fail", 3)
        .await;
    assert_eq!(baton.stat("cluster.stuck.upstream_rq_total").await, Some(3));
    assert_eq!(baton.stat("cluster.a.upstream_rq_200").await, Some(3));
}

/// A body that is streamed (its length unknown) is not held for the mirror: the request goes
/// to the main cluster alone and the main cluster's `retry_or_shadow_abandoned` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_not_mirrored() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let config = Config::new()
        .route(route(
            "/",
            "a",
            json!({"request_mirror_policies": [{"cluster": "b"}]}),
        ))
        .cluster(cluster("a", &[a.port()]))
        .cluster(cluster("b", &[b.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let (mut tx, body) = channel_body(2);
    let req = request("POST", "h", "/up", body);
    let sending = tokio::spawn(async move {
        tx.send_data(bytes::Bytes::from_static(b"part one "))
            .await
            .expect("send");
        tx.send_data(bytes::Bytes::from_static(b"part two"))
            .await
            .expect("send");
    });
    let r = send1(baton.addr(), req).await.expect("a response");
    sending.await.expect("sender");
    assert_eq!(r.status, 200);
    baton
        .wait_stat("cluster.a.retry_or_shadow_abandoned", 1)
        .await;
    assert_eq!(baton.stat("cluster.b.upstream_rq_total").await, Some(0));
    assert_eq!(b.hits(), 0);
}

#[test]
fn bad_mirror_policies_are_refused_with_their_path() {
    for (policy, path, words) in [
        (
            json!({"cluster": "nope"}),
            "request_mirror_policies[0].cluster",
            "unknown cluster",
        ),
        (
            json!({"cluster": "up", "trace_sampled": true}),
            "request_mirror_policies[0]",
            "trace_sampled",
        ),
        (
            json!({"cluster": "up", "runtime_fraction": {"runtime_key": "k"}}),
            "request_mirror_policies[0].runtime_fraction.default_value",
            "required",
        ),
        (
            json!({"cluster_header": "x-c"}),
            "request_mirror_policies[0]",
            "cluster_header",
        ),
    ] {
        let config = Config::new()
            .route(route(
                "/",
                "up",
                json!({"request_mirror_policies": [policy.clone()]}),
            ))
            .cluster(cluster("up", &[1]))
            .render();
        let (status, out) = validate_config(&config);
        assert!(!status.success(), "{policy}: refused");
        assert!(out.contains(path), "{policy}: {out}");
        assert!(out.contains(words), "{policy}: {out}");
    }
}
