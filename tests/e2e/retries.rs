//! Retry policies: 5xx retries until success (and not beyond `num_retries`), connect-failure
//! retries onto another endpoint.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_xx_is_retried_up_to_num_retries() {
    let flaky = Upstream::fail_first(2).await;
    let flakier = Upstream::fail_first(2).await;
    let config = Config::new()
        .route(route(
            "/two/",
            "flaky",
            json!({"retry_policy": {"retry_on": "5xx", "num_retries": 2}}),
        ))
        .route(route(
            "/one/",
            "flakier",
            json!({"retry_policy": {"retry_on": "5xx", "num_retries": 1}}),
        ))
        .cluster(cluster("flaky", &[flaky.port()]))
        .cluster(cluster("flakier", &[flakier.port()]))
        .render();
    let baton = Baton::start(&config).await;

    let r = get(baton.addr(), "/two/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(flaky.hits(), 3);
    baton.wait_stat("cluster.flaky.upstream_rq_retry", 2).await;
    baton
        .wait_stat("cluster.flaky.upstream_rq_retry_success", 1)
        .await;
    assert_eq!(baton.stat("cluster.flaky.upstream_rq_503").await, Some(2));

    // One retry is not enough for two failures: the second 503 reaches the client.
    let r = get(baton.addr(), "/one/x").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "try again", "the upstream's own 503 is passed on");
    assert_eq!(flakier.hits(), 2);
    baton
        .wait_stat("cluster.flakier.upstream_rq_retry", 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_another_endpoint() {
    let alive = Upstream::echo("alive").await;
    let dead = free_port();
    let config = Config::new()
        .route(route(
            "/",
            "pair",
            json!({"retry_policy": {"retry_on": "connect-failure", "num_retries": 1}}),
        ))
        .route(route("/", "pair", json!({})))
        .cluster(cluster("pair", &[dead, alive.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for i in 0..10 {
        let r = c
            .send(get_req("test.local", &format!("/r{i}")))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some("alive"));
    }
    assert_eq!(alive.hits(), 10);
    let fails = baton
        .stat("cluster.pair.upstream_cx_connect_fail")
        .await
        .unwrap_or(0);
    assert!(fails >= 1, "the dead endpoint was never tried");
    let retries = baton
        .stat("cluster.pair.upstream_rq_retry")
        .await
        .unwrap_or(0);
    assert_eq!(retries, fails, "each connect failure was retried once");
}
