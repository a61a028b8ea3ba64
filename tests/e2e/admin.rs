//! The admin interface of a running Baton: readiness, server info, stats (text and Prometheus),
//! clusters, listeners, config dump and `/quitquitquit`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

async fn start() -> (Upstream, Baton) {
    let up = Upstream::echo("e").await;
    let config = Config::new()
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    (up, baton)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_server_info() {
    let (_up, baton) = start().await;
    assert_eq!(baton.admin_get("/ready").await, (200, "LIVE\n".to_owned()));
    let (status, body) = baton.admin_get("/server_info").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "LIVE");
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert!(v["hot_restart_version"].is_string(), "{v}");
    assert!(v["uptime_current_epoch"]
        .as_str()
        .is_some_and(|s| s.ends_with('s')));
    assert!(v["uptime_all_epochs"].is_string());
    let opts = &v["command_line_options"];
    assert_eq!(opts["concurrency"], 2);
    assert_eq!(opts["mode"], "Serve");
    assert_eq!(
        opts["config_path"].as_str(),
        Some(baton.config_path.to_str().unwrap())
    );
    assert!(opts["base_id"]
        .as_str()
        .is_some_and(|s| s.parse::<u32>().is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_requests_in_text_and_prometheus() {
    let (up, baton) = start().await;
    const N: i64 = 7;
    for i in 0..N {
        assert_eq!(get(baton.addr(), &format!("/s{i}")).await.status, 200);
    }
    baton
        .wait_stat("http.ingress_http.downstream_rq_total", N)
        .await;
    baton.wait_stat("cluster.echo.upstream_rq_200", N).await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_2xx", N)
        .await;
    let (_, text) = baton.admin_get("/stats").await;
    assert!(text.contains(&format!("http.ingress_http.downstream_rq_total: {N}\n")));

    let (status, prom) = baton.admin_get("/stats/prometheus").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(prom.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text parses");
    let sample = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "envoy_cluster_upstream_rq_total"
                && s.labels.get("envoy_cluster_name") == Some("echo")
        })
        .expect("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"echo\"}");
    match sample.value {
        prometheus_parse::Value::Counter(v) => assert_eq!(v, N as f64),
        ref other => panic!("not a counter: {other:?}"),
    }
    assert!(scrape.samples.iter().any(|s| {
        s.metric == "envoy_http_downstream_rq_total"
            && s.labels.get("envoy_http_conn_manager_prefix") == Some("ingress_http")
    }));

    let (_, clusters) = baton.admin_get("/clusters").await;
    let host = format!("echo::127.0.0.1:{}", up.port());
    assert!(
        clusters.contains(&format!("{host}::health_flags::healthy")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("{host}::rq_total::{N}")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("{host}::rq_success::{N}")),
        "{clusters}"
    );

    let (_, listeners) = baton.admin_get("/listeners").await;
    assert_eq!(
        listeners.trim(),
        format!("listener_0::127.0.0.1:{}", baton.listen)
    );

    let (status, dump) = baton.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&dump).unwrap();
    let boot = &v["configs"][0]["bootstrap"];
    assert_eq!(
        boot["static_resources"]["clusters"][0]["name"], "echo",
        "{dump}"
    );
    assert_eq!(
        boot["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
        baton.listen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_exits_zero() {
    let (_up, mut baton) = start().await;
    // Mutating endpoints are POST only.
    let (status, _) = baton.admin_get("/quitquitquit").await;
    assert_eq!(status, 405);
    assert_eq!(baton.admin_get("/ready").await.0, 200);
    let (status, _) = baton.admin_post("/quitquitquit").await;
    assert_eq!(status, 200);
    let exit = baton.wait_exit(Duration::from_secs(5)).await;
    let exit = exit.unwrap_or_else(|| panic!("still running 5 s after /quitquitquit"));
    assert_eq!(exit.code(), Some(0), "stderr:\n{}", baton.stderr());
}
