//! Active health checking against origins that fail on demand: a host whose health endpoint
//! answers 503, a closed check port, a check that never gets an answer. Traffic avoids the bad
//! host once it is detected, comes back to it once it recovers, and spreads over every host in
//! panic mode, with Envoy's stats and `/clusters` words (measured on Envoy 1.40).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// A STATIC cluster on `ports` checked every 100 ms (traffic or not), out after 2 failures,
/// back after 2 passes; `check` holds the check's kind (`http_health_check`, …) and any other
/// field of the health check.
fn checked(name: &str, ports: &[u16], check: Value) -> Value {
    let mut hc = json!({
        "timeout": "1s",
        "interval": "0.1s",
        "no_traffic_interval": "0.1s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
    });
    if let (Some(h), Value::Object(extra)) = (hc.as_object_mut(), check) {
        h.extend(extra);
    }
    with(cluster(name, ports), "health_checks", json!([hc]))
}

fn http_check() -> Value {
    json!({"http_health_check": {
        "path": "/healthz",
        "request_headers_to_add": [{"header": {"key": "x-hc", "value": "1"}}],
    }})
}

/// Wait (≤ 5 s) until `/clusters` shows `want` as the `health_flags` of `cluster`'s host on
/// 127.0.0.1:`port`.
async fn wait_flags(baton: &Baton, cluster: &str, port: u16, want: &str) {
    let line = format!("{cluster}::127.0.0.1:{port}::health_flags::");
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

/// `n` GETs, each on a new connection; every one must be a 200.
async fn all_ok(baton: &Baton, n: usize) {
    for i in 0..n {
        let r = get(baton.addr(), &format!("/r{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}

async fn stat(baton: &Baton, name: &str) -> i64 {
    baton
        .stat(name)
        .await
        .unwrap_or_else(|| panic!("no stat {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_is_avoided_then_brought_back() {
    let a = Upstream::checked("a").await;
    let b = Upstream::checked("b").await;
    let c = Upstream::checked("c").await;
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(checked(
            "web",
            &[a.port(), b.port(), c.port()],
            http_check(),
        ))
        .render();
    let baton = Baton::start(&config).await;
    baton.wait_stat("cluster.web.health_check.healthy", 3).await;
    wait_flags(&baton, "web", b.port(), "healthy").await;

    b.set_failing(true);
    baton.wait_stat("cluster.web.health_check.healthy", 2).await;
    wait_flags(&baton, "web", b.port(), "/failed_active_hc").await;
    assert_eq!(stat(&baton, "cluster.web.membership_healthy").await, 2);
    assert_eq!(stat(&baton, "cluster.web.membership_total").await, 3);
    let before = b.proxied();
    all_ok(&baton, 30).await;
    assert_eq!(b.proxied(), before, "the failed host got proxied requests");
    assert_eq!(a.proxied() + c.proxied(), 30);
    assert_eq!(stat(&baton, "cluster.web.lb_healthy_panic").await, 0);

    b.set_failing(false);
    baton.wait_stat("cluster.web.health_check.healthy", 3).await;
    wait_flags(&baton, "web", b.port(), "healthy").await;
    all_ok(&baton, 30).await;
    assert!(b.proxied() > before, "the recovered host got no request");

    // The counters add up, as Envoy's do: a failed check is a failure, and a 503 is not a
    // network failure. (One 503 took b out: as Envoy, a status is not held to the threshold.)
    let attempt = stat(&baton, "cluster.web.health_check.attempt").await;
    let success = stat(&baton, "cluster.web.health_check.success").await;
    let failure = stat(&baton, "cluster.web.health_check.failure").await;
    assert!(failure >= 1 && success >= 3 && success + failure <= attempt);
    assert_eq!(
        stat(&baton, "cluster.web.health_check.network_failure").await,
        0
    );
    for zero in ["passive_failure", "verify_cluster", "degraded"] {
        assert_eq!(
            stat(&baton, &format!("cluster.web.health_check.{zero}")).await,
            0
        );
    }
    // What a check looks like on the wire.
    let hc = b
        .seen()
        .into_iter()
        .rfind(|s| s.uri.path() == "/healthz")
        .expect("a health check");
    assert_eq!(hc.header("host"), Some("web"));
    assert_eq!(hc.header("user-agent"), Some("Envoy/HC"));
    assert_eq!(hc.header("x-hc"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_checks_with_prior_knowledge() {
    let a = Upstream::checked_h2("a").await;
    let b = Upstream::checked_h2("b").await;
    let check = json!({"http_health_check": {
        "path": "/healthz",
        "host": "hc.example",
        "codec_client_type": "HTTP2",
    }});
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(with(
            checked("web", &[a.port(), b.port()], check),
            "typed_extension_protocol_options",
            http2_options(),
        ))
        .render();
    let baton = Baton::start(&config).await;
    baton.wait_stat("cluster.web.health_check.healthy", 2).await;
    a.set_failing(true);
    wait_flags(&baton, "web", a.port(), "/failed_active_hc").await;
    all_ok(&baton, 10).await;
    assert_eq!((a.proxied(), b.proxied()), (0, 10));
    let hc = b
        .seen()
        .into_iter()
        .rfind(|s| s.uri.path() == "/healthz")
        .expect("a check");
    assert_eq!(hc.version, http::Version::HTTP_2);
    assert_eq!(hc.uri.authority().map(|a| a.as_str()), Some("hc.example"));
    assert_eq!(hc.header("user-agent"), Some("Envoy/HC"));
    // Checks share a connection: one per host, not one per check.
    let until = Instant::now() + Duration::from_secs(5);
    while b
        .state
        .health_hits
        .load(std::sync::atomic::Ordering::SeqCst)
        < 4
    {
        assert!(Instant::now() < until, "fewer than 4 checks of b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.conns() <= 3, "{} connections", b.conns());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_panic_threshold_every_host_is_used() {
    let ups = [
        Upstream::checked("a").await,
        Upstream::checked("b").await,
        Upstream::checked("c").await,
    ];
    // 1 of 3 healthy: 33% is below Envoy's default 50%.
    ups[1].set_failing(true);
    ups[2].set_failing(true);
    let ports: Vec<u16> = ups.iter().map(Upstream::port).collect();
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(checked("web", &ports, http_check()))
        .render();
    let baton = Baton::start(&config).await;
    baton.wait_stat("cluster.web.health_check.healthy", 1).await;
    all_ok(&baton, 30).await;
    for u in &ups {
        assert!(u.proxied() > 0, "panic mode skipped a host");
    }
    assert_eq!(stat(&baton, "cluster.web.lb_healthy_panic").await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_threshold_zero_answers_503_when_no_host_is_healthy() {
    let a = Upstream::checked("a").await;
    let b = Upstream::checked("b").await;
    a.set_failing(true);
    b.set_failing(true);
    let web = with(
        checked("web", &[a.port(), b.port()], http_check()),
        "common_lb_config",
        json!({"healthy_panic_threshold": {"value": 0}}),
    );
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(web)
        .render();
    let baton = Baton::start(&config).await;
    wait_flags(&baton, "web", b.port(), "/failed_active_hc").await;
    let r = get(baton.addr(), "/").await;
    assert_eq!((r.status, r.text().as_str()), (503, "no healthy upstream"));
    assert_eq!(
        stat(&baton, "cluster.web.upstream_cx_none_healthy").await,
        1
    );
    assert_eq!(a.proxied() + b.proxied(), 0);

    // One comes back (two passes): it alone gets the traffic.
    b.set_failing(false);
    baton.wait_stat("cluster.web.health_check.healthy", 1).await;
    all_ok(&baton, 10).await;
    assert_eq!((a.proxied(), b.proxied()), (0, 10));
    assert_eq!(stat(&baton, "cluster.web.lb_healthy_panic").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_on_the_endpoints_check_ports() {
    let ok = Upstream::echo("ok").await;
    let closed = Upstream::echo("closed").await;
    let hangs = Upstream::echo("hangs").await;
    let pong = Upstream::ping_pong(b"PING", b"PONG").await;
    let silent = Upstream::silent().await;
    let endpoint = |port: u16, check_port: u16| {
        json!({"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "health_check_config": {"port_value": check_port},
        }})
    };
    let mut web = checked(
        "web",
        &[],
        json!({
            "timeout": "0.3s",
            "always_log_health_check_failures": true,
            "tcp_health_check": {"send": {"text": "50494e47"}, "receive": [{"text": "504f4e47"}]},
        }),
    );
    web["load_assignment"]["endpoints"][0]["lb_endpoints"] = json!([
        endpoint(ok.port(), pong.port()),
        endpoint(closed.port(), free_port()),
        endpoint(hangs.port(), silent.port()),
    ]);
    web["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 0}});
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(web)
        .render();
    let baton = Baton::start(&config).await;
    wait_flags(&baton, "web", ok.port(), "healthy").await;
    wait_flags(&baton, "web", closed.port(), "/failed_active_hc").await;
    wait_flags(
        &baton,
        "web",
        hangs.port(),
        "/failed_active_hc/active_hc_timeout",
    )
    .await;
    assert!(stat(&baton, "cluster.web.health_check.network_failure").await >= 2);
    all_ok(&baton, 10).await;
    assert_eq!(ok.hits(), 10);
    assert_eq!(closed.hits() + hangs.hits(), 0);
    // Checks reuse their connection (Envoy's default): many pongs, one connection.
    let until = Instant::now() + Duration::from_secs(5);
    while pong.hits() < 5 {
        assert!(Instant::now() < until, "{} pongs", pong.hits());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pong.conns(), 1);
    // Every failed check is logged, not only the one that took the host out.
    let logged = baton.stderr().matches("health check failed").count();
    assert!(logged >= 3, "{logged} failures logged");
    // The JSON form says the same.
    let (_, json) = baton.admin_get("/clusters?format=json").await;
    let v: Value = serde_json::from_str(&json).expect("JSON");
    let hosts = v["cluster_statuses"][0]["host_statuses"]
        .as_array()
        .expect("hosts")
        .clone();
    let health = |port: u16| {
        hosts
            .iter()
            .find(|h| h["address"]["socket_address"]["port_value"] == port)
            .map(|h| h["health_status"].clone())
            .expect("host")
    };
    assert_eq!(health(ok.port()), json!({"eds_health_status": "HEALTHY"}));
    assert_eq!(
        health(hangs.port()),
        json!({"eds_health_status": "HEALTHY", "failed_active_health_check": true, "active_hc_timeout": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_host_is_out_before_the_first_request() {
    let live = Upstream::checked("live").await;
    let dead = free_port();
    // One check per host, at start: the rest are a minute away.
    let check = json!({
        "interval": "60s",
        "no_traffic_interval": "60s",
        "http_health_check": {"path": "/healthz"},
    });
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(checked("web", &[live.port(), dead], check))
        .render();
    let baton = Baton::start(&config).await;
    all_ok(&baton, 20).await;
    assert_eq!(live.proxied(), 20);
    assert_eq!(
        stat(&baton, "cluster.web.upstream_cx_connect_fail").await,
        0
    );
    assert_eq!(stat(&baton, "cluster.web.health_check.attempt").await, 2);
    assert_eq!(
        stat(&baton, "cluster.web.health_check.network_failure").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_under_load_sends_nothing_to_a_host_that_is_down() {
    let fast = ["--drain-time-s", "1", "--parent-shutdown-time-s", "5"];
    let up = Upstream::checked("up").await;
    let down = Upstream::checked("down").await;
    down.set_failing(true);
    // One check per host per generation: whatever the child knows, its own first round told it.
    let check = json!({
        "interval": "60s",
        "no_traffic_interval": "60s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/healthz"},
    });
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(checked("web", &[up.port(), down.port()], check))
        .render();
    let parent = Baton::start_with(&config, &fast).await;
    let load = Load::start(
        parent.addr(),
        Mode::KeepAlive,
        4,
        "/",
        Duration::from_secs(60),
    );
    assert!(load.progress(50, Duration::from_secs(5)).await, "no load");
    let mut child = parent.restart(&config, &fast);
    child.wait_serving().await;
    // Each generation checked each host once, before serving.
    child.wait_stat("cluster.web.health_check.attempt", 4).await;
    assert!(
        load.progress(50, Duration::from_secs(5)).await,
        "no load after the restart"
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(
        report.statuses.keys().copied().collect::<Vec<_>>(),
        vec![200]
    );
    assert_eq!(
        down.proxied(),
        0,
        "the host that is down got proxied requests"
    );
    assert_eq!(up.proxied() as u64, report.ok);
}

/// A host whose checks time out holds a fresh generation's first round up to the check's
/// timeout; a restarted generation takes the parent's verdict instead, serves at once with the
/// host out, and runs its own first round in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_takes_the_parent_s_health_and_does_not_wait_for_a_first_round() {
    let fast = ["--drain-time-s", "1", "--parent-shutdown-time-s", "5"];
    let up = Upstream::checked("up").await;
    let silent = Upstream::silent().await;
    let check = json!({
        "timeout": "3s",
        "interval": "60s",
        "no_traffic_interval": "60s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/healthz"},
    });
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(checked("web", &[up.port(), silent.port()], check))
        .render();
    let started = Instant::now();
    let parent = Baton::start_with(&config, &fast).await;
    let fresh = started.elapsed();
    let started = Instant::now();
    let mut child = parent.restart(&config, &fast);
    child.wait_serving().await;
    let restarted = started.elapsed();
    eprintln!(
        "time to serve with a check timing out: fresh {} ms, restarted with the parent's health \
         {} ms",
        fresh.as_millis(),
        restarted.as_millis()
    );
    assert!(fresh >= Duration::from_secs(3), "{fresh:?}");
    assert!(
        child
            .stderr()
            .contains("first health-check round runs in the background"),
        "{}",
        child.stderr()
    );
    let (_, clusters) = child.admin_get("/clusters").await;
    let line = format!(
        "web::127.0.0.1:{}::health_flags::/failed_active_hc",
        silent.port()
    );
    assert!(clusters.contains(&line), "{clusters}");
    for i in 0..20 {
        assert_eq!(get(child.addr(), &format!("/r{i}")).await.status, 200);
    }
    assert_eq!(up.proxied(), 20);
}
