//! Success-rate and failure-percentage outlier detection against four origins, one of which
//! answers 500 to everything, with the numbers and stats Envoy 1.40 gives on the same config
//! (measured): success rates 100/100/100/0 make `success_rate_average::75` and
//! `success_rate_ejection_threshold::31.6987` (the mean minus one population standard
//! deviation); the 0% host is detected by both kinds and ejected by the enforced one.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Four upstreams, the last one broken (500 to everything), behind cluster `web` with
/// outlier detection `od` added to the shared settings; consecutive errors never detect.
async fn four_hosts(od: Value) -> (Vec<Upstream>, Baton) {
    let ups = vec![
        Upstream::checked("a").await,
        Upstream::checked("b").await,
        Upstream::checked("c").await,
        Upstream::checked("d").await,
    ];
    ups[3].set_broken(true);
    let ports: Vec<u16> = ups.iter().map(Upstream::port).collect();
    let mut settings = json!({
        "consecutive_5xx": 1000,
        "consecutive_gateway_failure": 1000,
        "interval": "1s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
        "success_rate_minimum_hosts": 4,
        "success_rate_request_volume": 10,
        "success_rate_stdev_factor": 1000,
        "failure_percentage_threshold": 40,
        "failure_percentage_minimum_hosts": 4,
        "failure_percentage_request_volume": 10,
    });
    if let (Some(s), Value::Object(extra)) = (settings.as_object_mut(), od) {
        s.extend(extra);
    }
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(with(cluster("web", &ports), "outlier_detection", settings))
        .render();
    let baton = Baton::start(&config).await;
    (ups, baton)
}

/// 200 GETs in a row: within at most two intervals, so one of them gives every host at least
/// 10 requests (round robin).
async fn burst(baton: &Baton) {
    for i in 0..200 {
        get(baton.addr(), &format!("/s{i}")).await;
    }
}

/// Wait (≤ 5 s) until `/clusters` has `line`; the whole text then.
async fn wait_line(baton: &Baton, line: &str) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = baton.admin_get("/clusters").await;
        if body.lines().any(|l| l == line) {
            return body;
        }
        assert!(Instant::now() < until, "no `{line}` in:\n{body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stat(baton: &Baton, name: &str) -> i64 {
    let full = format!("cluster.web.outlier_detection.{name}");
    baton
        .stat(&full)
        .await
        .unwrap_or_else(|| panic!("no stat {full}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_far_below_the_others_success_rate_is_ejected() {
    let (ups, baton) = four_hosts(json!({})).await;
    let (_, clusters) = baton.admin_get("/clusters").await;
    assert!(clusters.contains("web::outlier::success_rate_average::-1"));
    burst(&baton).await;
    let d = ups[3].port();
    let clusters = wait_line(
        &baton,
        &format!("web::127.0.0.1:{d}::health_flags::/failed_outlier_check"),
    )
    .await;
    // The numbers of the interval that ejected it, shown until the next one (1 s later).
    let a = ups[0].port();
    for line in [
        "web::outlier::success_rate_average::75".to_owned(),
        "web::outlier::success_rate_ejection_threshold::31.6987".to_owned(),
        format!("web::127.0.0.1:{d}::success_rate::0"),
        format!("web::127.0.0.1:{a}::success_rate::100"),
    ] {
        assert!(
            clusters.lines().any(|l| l == line),
            "no {line} in:\n{clusters}"
        );
    }
    for (name, want) in [
        ("ejections_active", 1),
        ("ejections_enforced_total", 1),
        ("ejections_total", 1),
        ("ejections_enforced_success_rate", 1),
        ("ejections_enforced_failure_percentage", 0),
        ("ejections_detected_consecutive_5xx", 0),
    ] {
        assert_eq!(stat(&baton, name).await, want, "{name}");
    }
    // Detected by both kinds (failure percentage is not enforced by default).
    assert_eq!(stat(&baton, "ejections_detected_success_rate").await, 1);
    assert_eq!(stat(&baton, "ejections_success_rate").await, 1);
    assert_eq!(
        stat(&baton, "ejections_detected_failure_percentage").await,
        1
    );
    // Out of balancing: every request now succeeds.
    let before = ups[3].proxied();
    for i in 0..20 {
        assert_eq!(get(baton.addr(), &format!("/t{i}")).await.status, 200);
    }
    assert_eq!(ups[3].proxied(), before);
    // The next interval without traffic has no numbers.
    wait_line(&baton, "web::outlier::success_rate_average::-1").await;
    wait_line(&baton, &format!("web::127.0.0.1:{d}::success_rate::-1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_percentage_ejects_when_it_is_the_enforced_kind() {
    let (ups, baton) = four_hosts(json!({
        "enforcing_success_rate": 0,
        "enforcing_failure_percentage": 100,
    }))
    .await;
    burst(&baton).await;
    let d = ups[3].port();
    wait_line(
        &baton,
        &format!("web::127.0.0.1:{d}::health_flags::/failed_outlier_check"),
    )
    .await;
    // As Envoy 1.40: the success-rate detection, not enforced, still counts in the deprecated
    // total; the failure-percentage ejection does not.
    for (name, want) in [
        ("ejections_active", 1),
        ("ejections_detected_success_rate", 1),
        ("ejections_success_rate", 1),
        ("ejections_enforced_success_rate", 0),
        ("ejections_detected_failure_percentage", 1),
        ("ejections_enforced_failure_percentage", 1),
        ("ejections_enforced_total", 1),
        ("ejections_total", 1),
    ] {
        assert_eq!(stat(&baton, name).await, want, "{name}");
    }
}
