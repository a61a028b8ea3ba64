//! Drain per protocol across a hot restart, with `--drain-strategy gradual` and `immediate`
//! (`--drain-time-s 1`): HTTP/1.1 keep-alive load and HTTP/2 streams, a WebSocket session, 50 MB
//! each way, a slow reader, and an idle keep-alive client racing the old generation's idle close;
//! then the drains that are not restarts: SIGTERM, `/healthcheck/fail`, `/drain_listeners`.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::restart::pid_alive;
use crate::support::*;

const STRATEGIES: [&str; 2] = ["gradual", "immediate"];
const BIG: usize = 50 * 1024 * 1024;

fn flags(strategy: &'static str) -> Vec<&'static str> {
    vec![
        "--drain-strategy",
        strategy,
        "--drain-time-s",
        "1",
        "--parent-shutdown-time-s",
        "20",
    ]
}

/// `/ws` to a WebSocket upstream (upgrades allowed), everything else to the echo upstream.
fn config(echo: &Upstream, ws: Option<&Upstream>) -> String {
    let mut c = Config::new().hcm("upgrade_configs", json!([{"upgrade_type": "websocket"}]));
    if let Some(ws) = ws {
        c = c
            .route(route("/ws", "ws", json!({})))
            .cluster(cluster("ws", &[ws.port()]));
    }
    c.route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[echo.port()]))
        .render()
}

/// Restart `k` onto the same configuration and wait until the new generation serves.
async fn restart(k: &Baton, config: &str, strategy: &'static str) -> Baton {
    let mut next = k.restart(config, &flags(strategy));
    next.wait_serving().await;
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http1_keep_alive_and_http2_streams_across_restarts() {
    let echo = Upstream::echo("e").await;
    let cfg = config(&echo, None);
    for strategy in STRATEGIES {
        within(20, strategy, async {
            let mut k = Baton::start_with(&cfg, &flags(strategy)).await;
            let h1 = Load::start(k.addr(), Mode::KeepAlive, 4, "/", Duration::from_secs(30));
            let h2 = Load::start(
                k.addr(),
                Mode::H2 { streams: 50 },
                1,
                "/",
                Duration::from_secs(30),
            );
            for _ in 0..3 {
                assert!(h2.progress(100, Duration::from_secs(5)).await);
                let mut next = restart(&k, &cfg, strategy).await;
                assert!(h1.progress(50, Duration::from_secs(5)).await);
                assert!(h2.progress(100, Duration::from_secs(5)).await);
                assert!(
                    k.wait_exit(Duration::from_secs(5)).await.is_some(),
                    "{strategy}: the old generation outlived its drain"
                );
                std::mem::swap(&mut k, &mut next);
            }
            let (r1, r2) = (h1.stop().await, h2.stop().await);
            eprintln!("{strategy}: http/1.1 {r1:?}\n{strategy}: h2 {r2:?}");
            assert_eq!(r1.failed, 0, "{strategy} http/1.1: {:?}", r1.errors);
            assert_eq!(r2.failed, 0, "{strategy} h2: {:?}", r2.errors);
            assert!(r2.connects >= 4, "the h2 client never moved on: {r2:?}");
            eprintln!(
                "{strategy}: {} h2 streams were not sent on a connection going away and went \
                 again on a new one; {} http/1.1 requests likewise",
                r2.unsent_retries, r1.unsent_retries
            );
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_session_spans_a_restart_and_its_end_lets_the_old_generation_go() {
    let echo = Upstream::echo("e").await;
    let ws = Upstream::websocket().await;
    let cfg = config(&echo, Some(&ws));
    for strategy in STRATEGIES {
        within(20, strategy, async {
            let mut k = Baton::start_with(&cfg, &flags(strategy)).await;
            let mut s = TcpStream::connect(k.addr()).await.expect("connect");
            s.write_all(UPGRADE.as_bytes()).await.expect("upgrade");
            let head = within(5, "101", read_head(&mut s)).await;
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            echo_through(&mut s, "before").await;
            // Drained, not handed over (tests/e2e/handover.rs moves tunnels).
            let mut drain_only = flags(strategy);
            drain_only.push("--disable-connection-handover");
            let mut next = k.restart(&cfg, &drain_only);
            next.wait_serving().await;
            // Past the drain time the tunnel still works and its generation lives.
            let until = Instant::now() + Duration::from_millis(1500);
            let mut i = 0;
            while Instant::now() < until {
                echo_through(&mut s, &format!("message {i} {}", "x".repeat(i * 10))).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                pid_alive(k.pid()),
                "{strategy}: the tunnel's generation is gone"
            );
            assert_eq!(get(next.addr(), "/").await.status, 200);
            drop(s);
            assert!(
                k.wait_exit(Duration::from_secs(5)).await.is_some(),
                "{strategy}: the old generation did not exit after the tunnel closed"
            );
            drop(k);
            drop(next);
        })
        .await;
    }
}

/// Read `body` checking [`pattern`] from offset `from`; the offset reached. Stops after
/// `upto` bytes if given.
async fn check_pattern(
    body: &mut hyper::body::Incoming,
    from: usize,
    upto: Option<usize>,
) -> usize {
    let mut off = from;
    while upto.is_none_or(|u| off < u) {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame.expect("body frame").into_data() {
            for (i, b) in data.iter().enumerate() {
                assert_eq!(*b, pattern_byte(off + i), "byte {} differs", off + i);
            }
            off += data.len();
        }
    }
    off
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_megabytes_each_way_span_a_restart_byte_exact() {
    let echo = Upstream::echo("e").await;
    let cfg = config(&echo, None);
    for strategy in STRATEGIES {
        within(30, strategy, async {
            let mut k = Baton::start_with(&cfg, &flags(strategy)).await;
            // Download: read 4 MB, restart, read the rest.
            let mut c = H1::connect(k.addr()).await.expect("connect");
            let resp = c
                .send_streaming(get_req("test.local", &format!("/download/{BIG}")))
                .await
                .expect("download");
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            let got = check_pattern(&mut body, 0, Some(4 << 20)).await;
            let next = restart(&k, &cfg, strategy).await;
            let got = within(15, "download rest", check_pattern(&mut body, got, None)).await;
            assert_eq!(got, BIG, "{strategy}: download cut short");

            // Upload: a streaming body, half sent before the restart.
            let mut c = H1::connect(next.addr()).await.expect("connect");
            let (mut tx, req_body) = channel_body(4);
            let req = request("POST", "test.local", "/upload", req_body);
            let sender = tokio::spawn(async move {
                let resp = c.send_streaming(req).await.expect("upload");
                assert_eq!(resp.status(), 200);
                let mut body = resp.into_body();
                within(20, "upload echo", check_pattern(&mut body, 0, None)).await
            });
            let mut off = 0;
            let chunk = 256 * 1024;
            while off < BIG / 2 {
                tx.send_data(pattern(off, chunk)).await.expect("send");
                off += chunk;
            }
            let third = restart(&next, &cfg, strategy).await;
            while off < BIG {
                tx.send_data(pattern(off, chunk)).await.expect("send");
                off += chunk;
            }
            drop(tx);
            let echoed = sender.await.expect("upload task");
            assert_eq!(echoed, BIG, "{strategy}: upload echo cut short");
            assert!(k.wait_exit(Duration::from_secs(5)).await.is_some());
            drop(k);
            drop(next);
            drop(third);
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_reader_spans_a_restart() {
    let echo = Upstream::echo("e").await;
    let cfg = config(&echo, None);
    for strategy in STRATEGIES {
        within(20, strategy, async {
            let k = Baton::start_with(&cfg, &flags(strategy)).await;
            let mut c = H1::connect(k.addr()).await.expect("connect");
            // 40 chunks 50 ms apart: 2 s, past the 1 s drain time.
            let resp = c
                .send_streaming(get_req("test.local", "/slow/40"))
                .await
                .expect("slow");
            let mut body = resp.into_body();
            let first = body.frame().await.expect("a frame").expect("frame");
            assert!(first.is_data());
            let next = restart(&k, &cfg, strategy).await;
            let rest = within(10, "slow body", body.collect())
                .await
                .expect("slow body")
                .to_bytes();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(first.data_ref().expect("data")),
                String::from_utf8_lossy(&rest)
            );
            assert_eq!(text.lines().count(), 40, "{strategy}: {text}");
            assert!(text.ends_with("chunk 39\n"));
            drop(k);
            drop(next);
        })
        .await;
    }
}

/// A tiny xorshift for jittered pauses.
fn jitter(state: &mut u64, max_ms: u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(*state % (max_ms + 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_keep_alive_client_across_restarts_loses_nothing() {
    let echo = Upstream::echo("e").await;
    let cfg = config(&echo, None);
    within(40, "idle client", async {
        let mut k = Baton::start_with(&cfg, &flags("immediate")).await;
        let addr = k.addr();
        let mut c = H1::connect(addr).await.expect("connect");
        let (mut closes, mut unsent, mut lost, mut rescued_like) = (0u32, 0u32, 0u32, 0u32);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let requests = 200;
        let mut restarts = 0;
        let mut pending: Option<Baton> = None;
        for i in 0..requests {
            // Pauses of 0–300 ms straddle the old generation's 100 ms idle grace.
            tokio::time::sleep(jitter(&mut seed, 300)).await;
            if i % 20 == 10 {
                // A restart between requests, every 20 requests.
                let next = k.restart(&cfg, &flags("immediate"));
                pending = Some(next);
            }
            if let Some(mut next) = pending.take() {
                if i % 20 == 12 {
                    next.wait_serving().await;
                    restarts += 1;
                    std::mem::swap(&mut k, &mut next);
                    // The old one goes away by itself; keep it until then.
                    tokio::spawn(async move {
                        let _ = next.wait_exit(Duration::from_secs(10)).await;
                        drop(next);
                    });
                } else {
                    pending = Some(next);
                }
            }
            if c.sender.is_closed() {
                closes += 1;
                c = H1::connect(addr).await.expect("reconnect");
            }
            let mut req = get_req("test.local", "/");
            let mut tries = 0;
            loop {
                tries += 1;
                let ready = tokio::time::timeout(Duration::from_secs(5), c.sender.ready()).await;
                if !matches!(ready, Ok(Ok(()))) {
                    closes += 1;
                    c = H1::connect(addr).await.expect("reconnect");
                    continue;
                }
                let sent =
                    tokio::time::timeout(Duration::from_secs(10), c.sender.try_send_request(req))
                        .await;
                match sent {
                    Ok(Ok(resp)) => {
                        if resp
                            .headers()
                            .get("connection")
                            .is_some_and(|v| v == "close")
                        {
                            rescued_like += 1;
                        }
                        let r = Resp::read(resp).await;
                        if !matches!(&r, Ok(r) if r.status == 200) {
                            lost += 1;
                            eprintln!("request {i}: {r:?}");
                        }
                        break;
                    }
                    Ok(Err(mut e)) => match e.take_message() {
                        Some(back) if tries < 3 => {
                            unsent += 1;
                            req = back;
                            closes += 1;
                            c = H1::connect(addr).await.expect("reconnect");
                        }
                        _ => {
                            lost += 1;
                            eprintln!("request {i} lost: {:?}", e.error());
                            closes += 1;
                            c = H1::connect(addr).await.expect("reconnect");
                            break;
                        }
                    },
                    Err(_) => {
                        lost += 1;
                        eprintln!("request {i} timed out");
                        c = H1::connect(addr).await.expect("reconnect");
                        break;
                    }
                }
            }
        }
        eprintln!(
            "idle keep-alive client: {requests} requests, {restarts} restarts, {closes} \
             connection closes seen before sending, {unsent} requests hyper had not written \
             (retried), {rescued_like} answered with Connection: close, {lost} lost"
        );
        let rescued = k
            .stat("http.ingress_http.downstream_cx_drain_rescued")
            .await
            .unwrap_or(0);
        eprintln!("downstream_cx_drain_rescued (chain total): {rescued}");
        assert_eq!(lost, 0, "requests lost across restarts");
        // With the connection hand-over (the default) its TCP connection simply moves: never
        // closed, never asked to close.
        assert_eq!((closes, rescued_like), (0, 0), "the connection was closed");
        assert!(restarts >= 9);
        drop(pending);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let echo = Upstream::echo("e").await;
    let mut k = Baton::start_with(&config(&echo, None), &["--drain-time-s", "1"]).await;
    let addr = k.addr();
    let inflight =
        tokio::spawn(async move { send1(addr, get_req("test.local", "/delay/800")).await });
    let until = Instant::now() + Duration::from_secs(5);
    while echo.hits() == 0 {
        assert!(
            Instant::now() < until,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    k.signal("TERM");
    let r = within(10, "in-flight request", inflight)
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(r.status, 200);
    let status = k.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(status.success(), "{status}\n{}", k.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_fail_asks_clients_to_close_and_fails_ready() {
    let echo = Upstream::echo("e").await;
    let k = Baton::start(&config(&echo, None)).await;
    let before = get(k.addr(), "/").await;
    assert_eq!(before.header("connection"), None);
    assert_eq!(k.admin_post("/healthcheck/fail").await.0, 200);
    assert_eq!(k.admin_get("/ready").await.0, 503);
    let r = get(k.addr(), "/").await;
    assert_eq!(r.status, 200, "listeners keep accepting");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(k.admin_post("/healthcheck/ok").await.0, 200);
    assert_eq!(k.admin_get("/ready").await.0, 200);
    let mut c = H1::connect(k.addr()).await.expect("connect");
    for _ in 0..3 {
        let r = c
            .send(get_req("test.local", "/"))
            .await
            .expect("keep-alive again");
        assert_eq!(r.header("connection"), None);
    }
}

// After `POST /drain_listeners` nothing accepts on the listener: its sockets are closed (the
// restart side's copy included), so clients are refused rather than left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_listeners_stops_accepting_while_admin_answers() {
    let echo = Upstream::echo("e").await;
    let k = Baton::start(&config(&echo, None)).await;
    assert_eq!(get(k.addr(), "/").await.status, 200);
    assert_eq!(k.admin_post("/drain_listeners").await.0, 200);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(k.addr()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(Instant::now() < until, "still accepting: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let (status, stats) = k.admin_get("/stats").await;
    assert_eq!(status, 200);
    assert!(
        stats.contains("listener_manager.total_listeners_draining"),
        "{stats}"
    );
}
