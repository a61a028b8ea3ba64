//! Priority levels (`endpoints[].priority`) with active health checks: the load spills from
//! priority 0 to priority 1 as Envoy 1.40 spreads it (measured on the same config: with one of
//! priority 0's two hosts failing its checks, 1.4 × 50% = 70% stays on priority 0 and 30% goes
//! to priority 1), all of it once priority 0 has no healthy host, and `/clusters` shows each
//! host's priority.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Cluster `web`: `p0` ports at priority 0, `p1` at priority 1, checked every 100 ms on
/// `/healthz` (out after one failure, back after one pass); `policy` is the load assignment's.
fn prioritized(p0: &[u16], p1: &[u16], policy: Option<Value>) -> Value {
    let eps = |ports: &[u16]| -> Vec<Value> {
        ports
            .iter()
            .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
            .collect()
    };
    let mut la = json!({
        "cluster_name": "web",
        "endpoints": [
            {"lb_endpoints": eps(p0)},
            {"priority": 1, "lb_endpoints": eps(p1)},
        ],
    });
    if let (Some(la), Some(policy)) = (la.as_object_mut(), policy) {
        la.insert("policy".to_owned(), policy);
    }
    json!({
        "name": "web",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": la,
        "health_checks": [{
            "timeout": "1s",
            "interval": "0.1s",
            "no_traffic_interval": "0.1s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "http_health_check": {"path": "/healthz"},
        }],
    })
}

/// Wait (≤ 5 s) until `/clusters` has `line`.
async fn wait_line(baton: &Baton, line: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = baton.admin_get("/clusters").await;
        if body.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < until, "no `{line}` in:\n{body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn all_ok(baton: &Baton, n: usize) {
    for i in 0..n {
        let r = get(baton.addr(), &format!("/p{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_spills_to_priority_1_by_the_overprovisioning_factor() {
    let ups = [
        Upstream::checked("a").await,
        Upstream::checked("b").await,
        Upstream::checked("c").await,
        Upstream::checked("d").await,
    ];
    let [a, b, c, d] = &ups;
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(prioritized(
            &[a.port(), b.port()],
            &[c.port(), d.port()],
            None,
        ))
        .render();
    let baton = Baton::start(&config).await;
    baton.wait_stat("cluster.web.health_check.healthy", 4).await;
    wait_line(&baton, &format!("web::127.0.0.1:{}::priority::1", c.port())).await;
    wait_line(&baton, &format!("web::127.0.0.1:{}::priority::0", a.port())).await;
    // All healthy: priority 0 takes everything.
    all_ok(&baton, 40).await;
    assert_eq!(c.proxied() + d.proxied(), 0);

    b.set_failing(true);
    wait_line(
        &baton,
        &format!(
            "web::127.0.0.1:{}::health_flags::/failed_active_hc",
            b.port()
        ),
    )
    .await;
    let before = (a.proxied(), b.proxied(), c.proxied() + d.proxied());
    all_ok(&baton, 400).await;
    let on_a = a.proxied() - before.0;
    let on_p1 = c.proxied() + d.proxied() - before.2;
    assert_eq!(on_a + on_p1, 400);
    assert_eq!(b.proxied(), before.1);
    // 70% / 30%, within 4.5 standard deviations (9.2 requests each).
    assert!(
        (239..=321).contains(&on_a),
        "{on_a} of 400 on priority 0 (70% expected)"
    );
    assert_eq!(baton.stat("cluster.web.lb_healthy_panic").await, Some(0));

    // Priority 0 without a healthy host: everything on priority 1, no panic.
    a.set_failing(true);
    wait_line(
        &baton,
        &format!(
            "web::127.0.0.1:{}::health_flags::/failed_active_hc",
            a.port()
        ),
    )
    .await;
    let before = a.proxied();
    all_ok(&baton, 40).await;
    assert_eq!(a.proxied(), before);
    assert_eq!(baton.stat("cluster.web.lb_healthy_panic").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overprovisioning_factor_of_100_spills_as_soon_as_a_host_fails() {
    let ups = [
        Upstream::checked("a").await,
        Upstream::checked("b").await,
        Upstream::checked("c").await,
        Upstream::checked("d").await,
        Upstream::checked("e").await,
    ];
    let [a, b, c, d, e] = &ups;
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(prioritized(
            &[a.port(), b.port(), c.port(), d.port()],
            &[e.port()],
            Some(json!({"overprovisioning_factor": 100})),
        ))
        .render();
    let baton = Baton::start(&config).await;
    baton.wait_stat("cluster.web.health_check.healthy", 5).await;
    d.set_failing(true);
    wait_line(
        &baton,
        &format!(
            "web::127.0.0.1:{}::health_flags::/failed_active_hc",
            d.port()
        ),
    )
    .await;
    // 3 of 4 healthy: 75% on priority 0, 25% on e (with 140, 105% would keep it all).
    all_ok(&baton, 400).await;
    let on_e = e.proxied();
    assert!(
        (61..=139).contains(&on_e),
        "{on_e} of 400 on priority 1 (25% expected)"
    );
}
