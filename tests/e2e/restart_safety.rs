//! Restart safety (issue 24): back-to-back restarts under keep-alive load lose no request, a
//! connection batch in flight when a generation is told to end is settled first, silent
//! connections to a restart socket cannot hold a restart up, and the `--hot-restart-file`
//! socket is removed with the last generation of its chain.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::restart::pid_alive;
use crate::support::*;

/// Restart flags of every generation here: a short drain, a bounded parent life.
const FAST: &[&str] = &["--drain-time-s", "1", "--parent-shutdown-time-s", "5"];
/// The same with a rollback window (3 s: longer than the 0.3 s between restarts, so each
/// restart ends a generation standing by).
const FAST_WINDOW: &[&str] = &[
    "--drain-time-s",
    "1",
    "--parent-shutdown-time-s",
    "5",
    "--rollback-window-s",
    "3",
];

/// `name` from the environment, else `default`: the soak's size
/// (`BATON_SOAK_RESTARTS=50 BATON_SOAK_ROUNDS=5` is the soak; CI runs one round of 10).
fn soak_size(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Back-to-back restarts 0.3 s apart (with a rollback window: each new generation ends the
/// one standing by behind its parent) under keep-alive and new-connection load: no
/// request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn back_to_back_restarts_under_load_fail_no_request() {
    let restarts = soak_size("BATON_SOAK_RESTARTS", 10);
    let rounds = soak_size("BATON_SOAK_ROUNDS", 1);
    let bound = 60 + u64::from(restarts * rounds);
    within(bound, "back-to-back restarts", async {
        for round in 1..=rounds {
            back_to_back_round(round, restarts).await;
        }
    })
    .await;
}

async fn back_to_back_round(round: u32, restarts: u32) {
    {
        let (_up, config) = upstream_config().await;
        let mut current = Baton::start_with(&config, FAST_WINDOW).await;
        let max = Duration::from_secs(30 + u64::from(restarts));
        let load = Load::start(current.addr(), Mode::KeepAlive, 4, "/", max);
        let fresh = Load::start(current.addr(), Mode::NewConnection, 2, "/", max);
        assert!(load.progress(20, Duration::from_secs(5)).await, "no load");
        // Every generation stays held until the end (killed on drop), so none is reaped early.
        let mut chain = Vec::new();
        let started = Instant::now();
        for _ in 0..restarts {
            let mut next = current.restart(&config, FAST_WINDOW);
            next.wait_serving().await;
            // The next restart follows 0.3 s later, while this one's hand-over may still run.
            tokio::time::sleep(Duration::from_millis(300)).await;
            chain.push(std::mem::replace(&mut current, next));
        }
        assert!(
            load.progress(50, Duration::from_secs(5)).await,
            "no progress"
        );
        let report = load.stop().await;
        let fresh = fresh.stop().await;
        eprintln!(
            "round {round}: {restarts} restarts 0.3 s apart in {} ms: keep-alive {} sent, {} \
             failed; new-connection {} sent, {} failed",
            started.elapsed().as_millis(),
            report.sent(),
            report.failed,
            fresh.sent(),
            fresh.failed
        );
        let logs: Vec<String> = chain
            .iter()
            .chain(Some(&current))
            .map(|b| format!("--- epoch {} ---\n{}", b.epoch, b.stderr()))
            .collect();
        assert_eq!(
            report.failed + fresh.failed,
            0,
            "failed requests: {:?} {:?}\n{}",
            report.errors,
            fresh.errors,
            logs.join("\n")
        );
        // Every older generation is gone (the three-generation rule and the drains; the
        // newest one's parent at the end of its rollback window).
        for b in &mut chain {
            assert!(
                b.wait_exit(Duration::from_secs(15)).await.is_some(),
                "epoch {} still runs",
                b.epoch
            );
        }
    }
}

/// Cluster `up` on an in-process upstream answering 200 "up" to everything.
async fn upstream_config() -> (Upstream, String) {
    let up = Upstream::fixed(200, "up").await;
    let config = Config::new()
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]))
        .render();
    (up, config)
}

/// Wait (bounded) until `b`'s log says `what`.
async fn logged(b: &Baton, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !b.stderr().contains(what) {
        assert!(
            Instant::now() < until,
            "epoch {} never logged {what:?}:\n{}",
            b.epoch,
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_third_generation_arriving_mid_handover_ends_the_first_only_after_it() {
    within(60, "third generation mid-handover", async {
        let (_up, config) = upstream_config().await;
        let a = Baton::start_with(&config, FAST).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            let mut h = H1::connect(a.addr()).await.expect("connect");
            let r = h
                .send(get_req("test.local", "/"))
                .await
                .expect("first request");
            assert_eq!(r.status, 200);
            idle.push(h);
        }
        // B takes two connections per batch (2 fds asked, the least: a tunnel needs two) and
        // holds each batch 300 ms before acknowledging it: the third generation arrives while A
        // still has connections stopped at an idle point, waiting for B. Before the fix B ended
        // A at once and A closed them.
        let mut b = a.restart_env(
            &config,
            FAST,
            &[
                ("BATON_HANDOVER_ACK_DELAY_MS", "300"),
                ("BATON_HANDOVER_MAX_FDS", "2"),
            ],
        );
        b.wait_serving().await;
        logged(&b, "holding the acknowledgement").await;
        let mut c = b.restart(&config, FAST);
        c.wait_serving().await;
        let logs = || {
            format!(
                "--- A\n{}\n--- B\n{}\n--- C\n{}",
                a.stderr(),
                b.stderr(),
                c.stderr()
            )
        };
        for h in &mut idle {
            let r = h.send(get_req("test.local", "/")).await;
            assert_eq!(r.map(|r| r.status).ok(), Some(200), "{}", logs());
        }
        // A was ended once it had handed everything over.
        assert!(!b.stderr().contains("ending it anyway"), "{}", logs());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_told_to_end_mid_batch_waits_for_the_answer() {
    within(60, "end mid-batch", async {
        let (_up, config) = upstream_config().await;
        let mut a = Baton::start_with(&config, FAST).await;
        // One idle keep-alive connection: the whole of the first batch.
        let mut idle = H1::connect(a.addr()).await.expect("connect");
        let r = idle
            .send(get_req("test.local", "/"))
            .await
            .expect("first request");
        assert_eq!(r.status, 200);
        // B holds the batch 1 s before acknowledging it; A is told to end meanwhile (SIGTERM
        // while draining: end now).
        let mut b = a.restart_env(&config, FAST, &[("BATON_HANDOVER_ACK_DELAY_MS", "1000")]);
        b.wait_serving().await;
        logged(&b, "holding the acknowledgement").await;
        a.signal("TERM");
        logged(&a, "waiting for the next generation to answer").await;
        assert!(
            a.wait_exit(Duration::from_secs(10)).await.is_some(),
            "A still runs"
        );
        let logs = format!("--- A\n{}\n--- B\n{}", a.stderr(), b.stderr());
        assert!(!b.stderr().contains("could not acknowledge"), "{logs}");
        // The batch was B's: the connection is answered by B, on the same TCP connection
        // (before the fix A exited at once, B's acknowledgement failed and both closed it).
        let r = idle.send(get_req("test.local", "/")).await;
        assert_eq!(r.map(|r| r.status).ok(), Some(200), "{logs}");
        assert!(b.stderr().contains("moved=1"), "{logs}");
    })
    .await;
}

/// A connection to the abstract restart socket of `b` that never says anything.
fn silent_connection(b: &Baton) -> std::os::unix::net::UnixStream {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("baton_hotrestart_{}_{}", b.base_id, b.epoch);
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect to the restart socket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_connections_to_the_restart_socket_do_not_block_a_restart() {
    within(60, "silent restart peers", async {
        let mut a = Baton::start(&direct("g0")).await;
        // Twelve local processes of the same user connect and say nothing (served one after
        // another with a 500 ms deadline each, they would make the child's 5 s handshake fail;
        // held open side by side, they cost it nothing).
        let _silent: Vec<_> = (0..12).map(|_| silent_connection(&a)).collect();
        let started = Instant::now();
        let mut b = a.restart(&direct("g1"), &[]);
        b.wait_serving().await;
        let took = started.elapsed();
        eprintln!(
            "restart with twelve silent peers served after {} ms",
            took.as_millis()
        );
        assert!(
            took < Duration::from_secs(4),
            "took {took:?}\n{}",
            b.stderr()
        );
        // (Until A has stopped accepting, the shared listen queue may still hand it a
        // connection.)
        assert!(
            a.wait_exit(Duration::from_secs(10)).await.is_some(),
            "A still runs"
        );
        assert_eq!(get(b.addr(), "/").await.text(), "g1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_generation_of_a_hot_restart_file_chain_removes_the_socket_file() {
    within(60, "--hot-restart-file cleanup", async {
        let dir = TempDir::new("hrfile-cleanup");
        let file = dir.file("restart.sock");
        let stats = dir.file("restart.sock.stats");
        let path = file.display().to_string();
        let extra = ["--hot-restart-file", path.as_str()];
        let mut g0 = Baton::start_with(&direct("g0"), &extra).await;
        assert!(file.exists() && stats.exists());
        let mut g1 = g0.restart(&direct("g1"), &extra);
        g1.wait_serving().await;
        assert!(
            g0.wait_exit(Duration::from_secs(10)).await.is_some(),
            "g0 still runs"
        );
        // g0 left g1's socket (renamed over its own) in place.
        assert!(file.exists(), "g0 removed its successor's socket");
        assert_eq!(get(g1.addr(), "/").await.text(), "g1");
        g1.signal("TERM");
        let status = g1.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", g1.stderr());
        assert!(!stats.exists(), "the stats region is removed");
        assert!(!file.exists(), "the socket file is left behind");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_hello_does_not_end_the_generation_still_draining() {
    within(60, "refused hello", async {
        let a = Baton::start(&direct("g0")).await;
        // An idle client keeps A draining (no hand-over: gradual over the default 600 s).
        let mut held = H1::connect(a.addr()).await.expect("connect");
        let r = held
            .send(get_req("test.local", "/"))
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        let mut b = a.restart(&direct("g1"), &["--disable-connection-handover"]);
        b.wait_serving().await;
        logged(&a, "draining").await;
        // Something says hello to B with another hot restart version: refused, and A stays.
        let endpoint = hotrestart_rpc::Endpoint::for_epoch(u64::from(b.base_id), b.epoch);
        let conn = hotrestart_rpc::connect(&endpoint, Duration::from_secs(5)).expect("connect");
        let hello = hotrestart_rpc::negotiate::hello("not-this-version", b.epoch + 1, 1);
        let refused = hotrestart_rpc::Client::handshake(conn, hello, Duration::from_secs(5));
        assert!(refused.is_err(), "a foreign version was accepted");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            pid_alive(a.pid()),
            "A was ended by a refused hello:\n{}",
            b.stderr()
        );
        // A real third generation still ends it.
        let mut c = b.restart(&direct("g2"), &[]);
        c.wait_serving().await;
        let mut a = a;
        assert!(
            a.wait_exit(Duration::from_secs(10)).await.is_some(),
            "A not ended by the third generation"
        );
    })
    .await;
}
