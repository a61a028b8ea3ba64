//! `split_external_local_origin_errors`: local failures (here connect failures to a closed
//! port) are counted apart from the upstream's 5xx, by `consecutive_local_origin_failure` and
//! the local-origin success rate, with the stats and `/clusters` numbers Envoy 1.40 gives on the
//! same config (measured).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Cluster `name` on `ports`, split local errors, `od` on top; 30 s ejections, at most half.
fn split(name: &str, ports: &[u16], od: Value) -> Value {
    let mut settings = json!({
        "split_external_local_origin_errors": true,
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    });
    if let (Some(s), Value::Object(extra)) = (settings.as_object_mut(), od) {
        s.extend(extra);
    }
    with(cluster(name, ports), "outlier_detection", settings)
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

async fn stat(baton: &Baton, cluster: &str, name: &str) -> i64 {
    let full = format!("cluster.{cluster}.outlier_detection.{name}");
    baton
        .stat(&full)
        .await
        .unwrap_or_else(|| panic!("no stat {full}"))
}

async fn requests(baton: &Baton, prefix: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(get(baton.addr(), &format!("/{prefix}{i}")).await.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_count_as_local_origin_failures_only() {
    let a = Upstream::checked("a").await;
    let b = Upstream::checked("b").await;
    let dead = free_port();
    let config = Config::new()
        .route(route("/a", "a", json!({})))
        .route(route("/b", "b", json!({})))
        // Consecutive 5xx would eject after 3, but connect failures are not 5xx here.
        .cluster(split(
            "a",
            &[a.port(), dead],
            json!({"consecutive_5xx": 3, "consecutive_local_origin_failure": 1000}),
        ))
        .cluster(split(
            "b",
            &[b.port(), dead],
            json!({"consecutive_5xx": 1000, "consecutive_local_origin_failure": 3}),
        ))
        .render();
    let baton = Baton::start(&config).await;
    let got = requests(&baton, "a", 12).await;
    assert!(got.iter().filter(|s| **s == 503).count() >= 3, "{got:?}");
    let got = requests(&baton, "b", 12).await;
    assert!(got.iter().filter(|s| **s == 503).count() >= 3, "{got:?}");
    wait_line(
        &baton,
        &format!("b::127.0.0.1:{dead}::health_flags::/failed_outlier_check"),
    )
    .await;
    for (name, want) in [
        ("ejections_active", 1),
        ("ejections_detected_consecutive_local_origin_failure", 1),
        ("ejections_enforced_consecutive_local_origin_failure", 1),
        ("ejections_enforced_total", 1),
        // As Envoy: the deprecated total leaves local-origin kinds out.
        ("ejections_total", 0),
        ("ejections_detected_consecutive_5xx", 0),
    ] {
        assert_eq!(stat(&baton, "b", name).await, want, "b {name}");
    }
    assert!(requests(&baton, "b", 10).await.iter().all(|s| *s == 200));
    // Cluster a's connect failures detected nothing: they are not 5xx with the split (the
    // same requests without it eject: `outlier::connect_failures_count_as_5xx`).
    for name in [
        "ejections_detected_consecutive_5xx",
        "ejections_detected_consecutive_gateway_failure",
        "ejections_active",
    ] {
        assert_eq!(stat(&baton, "a", name).await, 0, "a {name}");
    }
    let (_, clusters) = baton.admin_get("/clusters").await;
    assert!(clusters.contains(&format!("a::127.0.0.1:{dead}::health_flags::healthy")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_far_below_the_others_local_origin_success_rate_is_ejected() {
    let a = Upstream::checked("a").await;
    let b = Upstream::checked("b").await;
    let dead = free_port();
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(split(
            "web",
            &[a.port(), b.port(), dead],
            json!({
                "consecutive_5xx": 1000,
                "consecutive_local_origin_failure": 1000,
                "interval": "1s",
                "success_rate_minimum_hosts": 3,
                "success_rate_request_volume": 5,
                "success_rate_stdev_factor": 1000,
            }),
        ))
        .render();
    let baton = Baton::start(&config).await;
    requests(&baton, "r", 60).await;
    let clusters = wait_line(
        &baton,
        &format!("web::127.0.0.1:{dead}::health_flags::/failed_outlier_check"),
    )
    .await;
    // Local rates 100, 100, 0: mean 66.6667, one standard deviation below it 19.5262. The
    // dead host has no upstream answers: the external success rate has two hosts, too few.
    for line in [
        "web::outlier::local_origin_success_rate_average::66.6667".to_owned(),
        "web::outlier::local_origin_success_rate_ejection_threshold::19.5262".to_owned(),
        "web::outlier::success_rate_average::-1".to_owned(),
        format!("web::127.0.0.1:{dead}::local_origin_success_rate::0"),
        format!(
            "web::127.0.0.1:{}::local_origin_success_rate::100",
            a.port()
        ),
        format!("web::127.0.0.1:{}::success_rate::100", a.port()),
    ] {
        assert!(
            clusters.lines().any(|l| l == line),
            "no {line} in:\n{clusters}"
        );
    }
    for (name, want) in [
        ("ejections_active", 1),
        ("ejections_detected_local_origin_success_rate", 1),
        ("ejections_enforced_local_origin_success_rate", 1),
        ("ejections_success_rate", 1),
        ("ejections_detected_success_rate", 0),
        ("ejections_enforced_total", 1),
        ("ejections_total", 0),
    ] {
        assert_eq!(stat(&baton, "web", name).await, want, "{name}");
    }
}
