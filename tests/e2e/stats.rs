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

/// `upstream_cx_rx_bytes_total` / `upstream_cx_tx_bytes_total` count what crosses upstream
/// connections: Baton's own HTTP/1.1 client (requests with no body), hyper's (a streamed
/// upload) and HTTP/2 upstreams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connection_bytes_are_counted() {
    let fixed = Upstream::fixed(200, "0123456789").await;
    let h2 = Upstream::echo_h2("h2").await;
    let echo = Upstream::echo("e").await;
    let config = Config::new()
        .route(route("/h2", "h2", json!({})))
        .route(route("/upload", "echo", json!({})))
        .cluster(cluster("echo", &[echo.port()]))
        .route(route("/", "fixed", json!({})))
        .cluster(cluster("fixed", &[fixed.port()]))
        .cluster(with(
            cluster("h2", &[h2.port()]),
            "typed_extension_protocol_options",
            http2_options(),
        ))
        .render();
    let baton = Baton::start(&config).await;
    const N: i64 = 5;
    for _ in 0..N {
        assert_eq!(get(baton.addr(), "/a").await.status, 200);
        assert_eq!(get(baton.addr(), "/h2").await.status, 200);
    }
    baton
        .wait_stat("cluster.fixed.upstream_rq_completed", N)
        .await;
    baton.wait_stat("cluster.h2.upstream_rq_completed", N).await;
    let stat = |name: &'static str| {
        let baton = &baton;
        async move { baton.stat(name).await.unwrap_or(0) }
    };
    // At least the request and status lines and the body; at most a few KiB per request.
    let tx = stat("cluster.fixed.upstream_cx_tx_bytes_total").await;
    let rx = stat("cluster.fixed.upstream_cx_rx_bytes_total").await;
    let line = "GET /a HTTP/1.1\r\n\r\n".len() as i64;
    let status = "HTTP/1.1 200 OK\r\n\r\n0123456789".len() as i64;
    assert!((N * line..N * 4096).contains(&tx), "tx {tx}");
    assert!((N * status..N * 4096).contains(&rx), "rx {rx}");
    let h2_tx = stat("cluster.h2.upstream_cx_tx_bytes_total").await;
    let h2_rx = stat("cluster.h2.upstream_cx_rx_bytes_total").await;
    assert!(h2_tx > 0 && h2_rx > 0, "h2 tx {h2_tx} rx {h2_rx}");

    // A streamed upload goes through hyper's client: its bytes count too.
    let (mut tx_body, streamed) = channel_body(4);
    let sender = tokio::spawn(async move {
        for _ in 0..5 {
            if tx_body
                .send_data(bytes::Bytes::from(vec![b'x'; 10_000]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let resp = send1(
        baton.addr(),
        request("POST", "test.local", "/upload", streamed),
    )
    .await
    .expect("upload");
    let _ = sender.await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body.len(),
        50_000,
        "the echo upstream got the whole body"
    );
    baton
        .wait_stat("cluster.echo.upstream_rq_completed", 1)
        .await;
    let echo_tx = stat("cluster.echo.upstream_cx_tx_bytes_total").await;
    let echo_rx = stat("cluster.echo.upstream_cx_rx_bytes_total").await;
    assert!((50_000..60_000).contains(&echo_tx), "echo tx {echo_tx}");
    assert!((50_000..60_000).contains(&echo_rx), "echo rx {echo_rx}");
}
