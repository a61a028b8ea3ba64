//! Outlier detection against origins that answer 500 on demand: a host is ejected after
//! `consecutive_5xx` errors in a row and comes back after its ejection time, a second
//! ejection past `max_ejection_percent` is counted as an overflow instead, with Envoy's stats
//! and `/clusters` words (measured on Envoy 1.40).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// Wait (≤ 5 s) until `/clusters` shows `want` as the `health_flags` of the host on `port`.
async fn wait_flags(baton: &Baton, port: u16, want: &str) {
    let line = format!("web::127.0.0.1:{port}::health_flags::");
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

/// Statuses of `n` sequential GETs.
async fn statuses(baton: &Baton, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(get(baton.addr(), &format!("/o{i}")).await.status);
    }
    out
}

async fn stat(baton: &Baton, name: &str) -> i64 {
    let full = format!("cluster.web.outlier_detection.{name}");
    baton
        .stat(&full)
        .await
        .unwrap_or_else(|| panic!("no stat {full}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_a_host_until_its_time_is_up() {
    let ups = [
        Upstream::checked("a").await,
        Upstream::checked("b").await,
        Upstream::checked("c").await,
    ];
    let ports: Vec<u16> = ups.iter().map(Upstream::port).collect();
    let web = with(
        cluster("web", &ports),
        "outlier_detection",
        json!({
            "consecutive_5xx": 3,
            "interval": "0.2s",
            "base_ejection_time": "1s",
            "max_ejection_percent": 50,
            "enforcing_success_rate": 0,
        }),
    );
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(web)
        .render();
    let baton = Baton::start(&config).await;
    let (_, clusters) = baton.admin_get("/clusters").await;
    assert!(clusters.contains("web::outlier::success_rate_average::-1"));

    ups[1].set_broken(true);
    // Round robin brings b its three 500s within a dozen requests.
    let got = statuses(&baton, 12).await;
    assert!(got.iter().filter(|s| **s == 500).count() >= 3, "{got:?}");
    wait_flags(&baton, ports[1], "/failed_outlier_check").await;
    assert_eq!(stat(&baton, "ejections_active").await, 1);
    assert_eq!(stat(&baton, "ejections_enforced_consecutive_5xx").await, 1);
    assert_eq!(stat(&baton, "ejections_enforced_total").await, 1);
    assert_eq!(stat(&baton, "ejections_total").await, 1);
    assert!(stat(&baton, "ejections_detected_consecutive_5xx").await >= 1);
    let before = ups[1].proxied();
    assert!(statuses(&baton, 20).await.iter().all(|s| *s == 200));
    assert_eq!(ups[1].proxied(), before, "the ejected host got requests");

    // A second ejection would leave 2 of 3 (66% > 50%) out: an overflow, c stays in.
    ups[2].set_broken(true);
    let got = statuses(&baton, 12).await;
    let errors = got.iter().filter(|s| **s == 500).count();
    assert!(errors >= 3, "{got:?}");
    // Every third 500 in a row from c is a detection, each one over the limit.
    baton
        .wait_stat(
            "cluster.web.outlier_detection.ejections_overflow",
            (errors / 3) as i64,
        )
        .await;
    wait_flags(&baton, ports[2], "healthy").await;
    ups[2].set_broken(false);

    // b's second of ejection ends; fixed, it gets traffic again.
    ups[1].set_broken(false);
    wait_flags(&baton, ports[1], "healthy").await;
    assert_eq!(stat(&baton, "ejections_active").await, 0);
    assert!(statuses(&baton, 20).await.iter().all(|s| *s == 200));
    assert!(ups[1].proxied() > before, "b did not come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_count_as_5xx() {
    let a = Upstream::checked("a").await;
    let dead = free_port();
    let web = with(
        cluster("web", &[a.port(), dead]),
        "outlier_detection",
        json!({
            "consecutive_5xx": 2,
            "base_ejection_time": "60s",
            "max_ejection_percent": 50,
            "enforcing_success_rate": 0,
        }),
    );
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(web)
        .render();
    let baton = Baton::start(&config).await;
    // Two connect failures (answered 503) on the dead host, then only the live one.
    let mut failed = 0;
    for i in 0..20 {
        if get(baton.addr(), &format!("/c{i}")).await.status == 503 {
            failed += 1;
        }
        if failed == 2 {
            break;
        }
    }
    assert_eq!(failed, 2);
    wait_flags(&baton, dead, "/failed_outlier_check").await;
    assert!(statuses(&baton, 10).await.iter().all(|s| *s == 200));
    assert_eq!(stat(&baton, "ejections_enforced_consecutive_5xx").await, 1);
    // 503s are gateway failures too, but Envoy does not enforce those by default.
    assert_eq!(
        stat(&baton, "ejections_enforced_consecutive_gateway_failure").await,
        0
    );
}

/// A restart keeps the parent's ejections: the new generation starts with the host the parent
/// ejected still out (for the time it had left) and sends it no request; a chain started
/// afresh with the same configuration, which knows nothing, sends it some before ejecting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_parent_s_ejections() {
    let fast = ["--drain-time-s", "1", "--parent-shutdown-time-s", "5"];
    let ups = [
        Upstream::checked("a").await,
        Upstream::checked("b").await,
        Upstream::checked("c").await,
    ];
    let ports: Vec<u16> = ups.iter().map(Upstream::port).collect();
    let web = with(
        cluster("web", &ports),
        "outlier_detection",
        json!({
            "consecutive_5xx": 3,
            "interval": "0.2s",
            "base_ejection_time": "60s",
            "max_ejection_percent": 50,
            "enforcing_success_rate": 0,
        }),
    );
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(web)
        .render();
    let mut parent = Baton::start_with(&config, &fast).await;
    ups[1].set_broken(true);
    let got = statuses(&parent, 12).await;
    assert!(got.iter().filter(|s| **s == 500).count() >= 3, "{got:?}");
    wait_flags(&parent, ports[1], "/failed_outlier_check").await;

    let before = ups[1].proxied();
    let mut child = parent.restart(&config, &fast);
    child.wait_serving().await;
    assert!(
        child
            .stderr()
            .contains("took the previous generation's host health"),
        "{}",
        child.stderr()
    );
    assert!(parent.wait_exit(Duration::from_secs(10)).await.is_some());
    wait_flags(&child, ports[1], "/failed_outlier_check").await;
    assert_eq!(stat(&child, "ejections_active").await, 1);
    assert!(statuses(&child, 20).await.iter().all(|s| *s == 200));
    assert_eq!(
        ups[1].proxied(),
        before,
        "the new generation sent the ejected host requests"
    );

    // Without the parent's state: a fresh chain learns the hard way.
    let fresh = Baton::start(&config).await;
    let got = statuses(&fresh, 12).await;
    eprintln!(
        "a fresh chain sent the failing host {} requests before ejecting it; the restarted one 0",
        ups[1].proxied() - before
    );
    assert!(got.iter().filter(|s| **s == 500).count() >= 3, "{got:?}");
}
