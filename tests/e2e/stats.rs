//! `baton stats`: the live values of a running chain read from its shared region, from outside
//! the processes, equal to what the admin interface shows.

use std::io::BufRead as _;

use serde_json::json;

use crate::support::*;

/// `baton stats --base-id <id> <extra>`: exit code and stdout.
fn baton_stats(base_id: u32, extra: &[&str]) -> (Option<i32>, String, String) {
    let id = base_id.to_string();
    let mut args = vec!["stats", "--base-id", id.as_str()];
    args.extend_from_slice(extra);
    let (status, out, err) = run_baton(&args);
    (status.code(), out, err)
}

/// Lines of a `/stats` text body, without the ones that move by themselves.
fn steady(text: &str) -> Vec<String> {
    text.as_bytes()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.starts_with("server.uptime"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_stats_reads_the_region_as_the_admin_shows_it() {
    let up = Upstream::echo("e").await;
    let config = Config::new()
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    for _ in 0..3 {
        assert_eq!(get(baton.addr(), "/").await.status, 200);
    }
    baton
        .wait_stat("cluster.echo.upstream_rq_completed", 3)
        .await;

    let (code, text, err) = baton_stats(baton.base_id, &[]);
    assert_eq!(code, Some(0), "{err}");
    let (status, admin) = baton.admin_get("/stats").await;
    assert_eq!(status, 200);
    assert_eq!(steady(&text), steady(&admin), "baton stats vs admin /stats");
    assert!(text.contains("cluster.echo.upstream_rq_total: 3"), "{text}");

    let (code, prom, err) = baton_stats(baton.base_id, &["--format", "prometheus"]);
    assert_eq!(code, Some(0), "{err}");
    let scrape = prometheus_parse::Scrape::parse(prom.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus text parses");
    assert!(scrape.samples.iter().any(|s| {
        s.metric == "envoy_cluster_upstream_rq_total"
            && s.labels.get("envoy_cluster_name") == Some("echo")
            && matches!(s.value, prometheus_parse::Value::Counter(v) if v == 3.0)
    }));

    let (code, filtered, _) = baton_stats(baton.base_id, &["--filter", "^cluster\\.echo\\."]);
    assert_eq!(code, Some(0));
    assert!(
        filtered.lines().all(|l| l.starts_with("cluster.echo.")),
        "{filtered}"
    );
}

#[test]
fn baton_stats_without_a_chain_exits_3() {
    let (code, _, err) = baton_stats(4_123_456_789 % 1_000_000 + 3_900_000_000, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}
