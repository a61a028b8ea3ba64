//! The rollback window (issue 24): after a restart the old generation stands by with its listen
//! sockets and configuration; if the new generation dies inside the window, the old one serves
//! again on the same sockets (no connection attempt refused), counts the rollback, and the next
//! restart takes over from it. The window's end, or a third generation, ends it.

use std::time::{Duration, Instant};

use crate::support::restart::fds;
use crate::support::*;

/// A short drain and a long window: every kill below falls inside it.
const WINDOW: &[&str] = &[
    "--drain-time-s",
    "1",
    "--parent-shutdown-time-s",
    "5",
    "--rollback-window-s",
    "30",
];

/// When the new generation is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// As soon as it serves (the old one is still draining or handing over).
    Serving,
    /// While the old generation hands its idle connections over (slowed down).
    MidHandover,
    /// Once the old generation has drained and stands by.
    StandingBy,
}

/// Wait (bounded) until `b`'s log says `what`.
async fn logged(b: &Baton, what: &str) {
    logged_times(b, what, 1).await;
}

/// Wait (bounded) until `b`'s log has said `what` `n` times.
async fn logged_times(b: &Baton, what: &str, n: usize) {
    let until = Instant::now() + Duration::from_secs(15);
    while b.stderr().matches(what).count() < n {
        assert!(
            Instant::now() < until,
            "epoch {} never logged {what:?}:\n{}",
            b.epoch,
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// When (seconds into the day, from its RFC 3339 timestamp) the first log line saying `what`
/// was written.
fn logged_at(log: &str, what: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(what))?;
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let mut parts = time.trim_end_matches('Z').split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The resident set of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Until a request on a new connection is answered with `body`; how long that took.
async fn first_answer(b: &Baton, body: &str) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok((200, got)) = try_get(b.addr(), "/").await {
            if got == body {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never answered {body:?}\n{}",
            b.stderr()
        );
    }
}

/// The targets of `pid`'s file descriptors that are not sockets (epolls, eventfds, pidfds,
/// files), sorted.
fn non_socket_fds(pid: u32) -> Vec<String> {
    let mut t: Vec<String> = fds(pid)
        .into_iter()
        .filter(|f| !f.is_socket())
        .map(|f| f.target)
        .collect();
    t.sort();
    t
}

/// Failures of `after` not already in `before`, and whether any is a refused connection.
fn new_failures(before: &Report, after: &Report) -> (u64, bool) {
    let refused = after
        .errors
        .iter()
        .any(|e| e.contains("ConnectionRefused") || e.contains("refused"));
    (after.failed - before.failed, refused)
}

/// `n` keep-alive connections to `b`, each after one request answered `body`.
async fn idle_connections(b: &Baton, n: usize, body: &str) -> Vec<H1> {
    let mut idle = Vec::new();
    for _ in 0..n {
        let mut h = H1::connect(b.addr()).await.expect("connect");
        let r = h.send(get_req("test.local", "/")).await.expect("request");
        assert_eq!(r.text(), body);
        idle.push(h);
    }
    idle
}

/// Keep-alive and new-connection load on one address.
struct Loads {
    keep_alive: Load,
    fresh: Load,
}

impl Loads {
    fn start(b: &Baton) -> Self {
        let max = Duration::from_secs(50);
        Self {
            keep_alive: Load::start(b.addr(), Mode::KeepAlive, 4, "/", max),
            fresh: Load::start(b.addr(), Mode::NewConnection, 4, "/", max),
        }
    }

    fn reports(&self) -> (Report, Report) {
        (self.keep_alive.report(), self.fresh.report())
    }
}

/// Kill B at `at` under load, and check that A serves again with no refused connection, the
/// failures bounded by what B held, and counts and shows its rollback.
async fn kill_the_new_generation(at: KillAt) {
    let a = Baton::start_with(&direct("old"), WINDOW).await;
    let n_idle = if at == KillAt::MidHandover { 6 } else { 0 };
    let mut idle = idle_connections(&a, n_idle, "old").await;
    let loads = Loads::start(&a);
    assert!(
        loads.fresh.progress(20, Duration::from_secs(5)).await,
        "no load"
    );
    let fds_before = non_socket_fds(a.pid());
    // B acknowledges each batch of two fds 300 ms late: the hand-over of six idle
    // connections takes a second or so.
    let slow: &[(&str, &str)] = if at == KillAt::MidHandover {
        &[
            ("BATON_HANDOVER_ACK_DELAY_MS", "300"),
            ("BATON_HANDOVER_MAX_FDS", "2"),
        ]
    } else {
        &[]
    };
    let mut b = a.restart_env(&direct("new"), WINDOW, slow);
    b.wait_serving().await;
    assert!(loads.fresh.wait_body("new", Duration::from_secs(10)).await);
    match at {
        // Right after cutover: A has been asked to drain.
        KillAt::Serving => logged(&a, "child asks this generation to drain").await,
        KillAt::MidHandover => logged(&b, "holding the acknowledgement").await,
        KillAt::StandingBy => logged(&a, "standing by until the rollback window ends").await,
    }
    let before = loads.reports();
    // SIGKILL without reaping it yet, so that A can read how it died.
    b.signal("KILL");
    let took = first_answer(&a, "old").await;
    logged(&a, "rolled back: generation 1").await;
    // Requests B had in flight may fail; from here on nothing does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mid = loads.reports();
    assert!(loads.fresh.wait_body("old", Duration::from_secs(5)).await);
    assert!(loads.keep_alive.progress(50, Duration::from_secs(5)).await);
    assert!(loads.fresh.progress(50, Duration::from_secs(5)).await);
    let after = (loads.keep_alive.stop().await, loads.fresh.stop().await);
    let logs = format!("--- A\n{}\n--- B\n{}", a.stderr(), b.stderr());
    let mut idle_failed = 0;
    for h in &mut idle {
        if h.send(get_req("test.local", "/")).await.is_err() {
            idle_failed += 1;
        }
    }
    eprintln!(
        "kill at {at:?}: old generation answering a new connection {} ms after the kill; \
         idle handed-over connections lost {idle_failed}/{n_idle}",
        took.as_millis()
    );
    failures_after_kill(&before, &mid, &after, &logs);
    assert!(
        a.stderr().contains("exited with signal 9 (SIGKILL)"),
        "{logs}"
    );
    // Serving again leaks nothing: the same epolls and eventfds as before the restart (once
    // the workers of an interrupted drain are done), and no pidfd.
    if at == KillAt::StandingBy {
        assert_eq!(non_socket_fds(a.pid()), fds_before, "{logs}");
    }
    serves_again(&a).await;
    b.kill();
    next_restart_from(&a).await;
}

/// Before cutover the old generation never stopped serving: a new generation killed before it
/// reaches its parent, or after taking its listen sockets but before serving, costs nothing.
async fn kill_before_cutover(hold: bool) {
    let a = Baton::start_with(&direct("old"), WINDOW).await;
    let loads = Loads::start(&a);
    assert!(
        loads.fresh.progress(20, Duration::from_secs(5)).await,
        "no load"
    );
    let env: &[(&str, &str)] = if hold {
        &[("BATON_TEST_HOLD_AFTER_SOCKETS_MS", "5000")]
    } else {
        &[]
    };
    let b = a.restart_env(&direct("new"), WINDOW, env);
    if hold {
        logged(&b, "holding after taking the listen sockets").await;
    }
    b.signal("KILL");
    assert!(loads.keep_alive.progress(50, Duration::from_secs(5)).await);
    assert!(loads.fresh.progress(50, Duration::from_secs(5)).await);
    let (ka, fresh) = (loads.keep_alive.stop().await, loads.fresh.stop().await);
    eprintln!(
        "kill {}: failed keep-alive {} of {}, new-connection {} of {}",
        if hold {
            "with sockets taken"
        } else {
            "before connecting"
        },
        ka.failed,
        ka.sent(),
        fresh.failed,
        fresh.sent()
    );
    assert_eq!(
        ka.failed + fresh.failed,
        0,
        "{:?} {:?}",
        ka.errors,
        fresh.errors
    );
    assert!(!a.stderr().contains("draining"), "{}", a.stderr());
    assert_eq!(fresh.bodies.get("new"), None, "{:?}", fresh.bodies);
    next_restart_from(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_new_generation_before_it_connects_changes_nothing() {
    within(60, "kill before connecting", kill_before_cutover(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_new_generation_with_sockets_taken_changes_nothing() {
    within(60, "kill with sockets taken", kill_before_cutover(true)).await;
}

/// Between `before` (the kill) and `mid` (A serves again), at most the requests in flight on
/// B's connections failed, none refused; from `mid` to `after`, none.
fn failures_after_kill(
    before: &(Report, Report),
    mid: &(Report, Report),
    after: &(Report, Report),
    logs: &str,
) {
    let (ka_failed, ka_refused) = new_failures(&before.0, &mid.0);
    let (fresh_failed, fresh_refused) = new_failures(&before.1, &mid.1);
    eprintln!(
        "failed after the kill: keep-alive {ka_failed}, new-connection {fresh_failed}; \
         errors {:?} {:?}",
        mid.0.errors, mid.1.errors
    );
    assert!(!ka_refused && !fresh_refused, "refused: {mid:?}");
    assert!(fresh_failed <= 4 && ka_failed <= 4, "{mid:?}\n{logs}");
    assert_eq!(after.0.failed, mid.0.failed, "{:?}\n{logs}", after.0.errors);
    assert_eq!(after.1.failed, mid.1.failed, "{:?}\n{logs}", after.1.errors);
}

/// A serves again, as its restart status and the stats say, and holds no pidfd.
async fn serves_again(a: &Baton) {
    a.wait_stat("server.hot_restart_rollbacks", 1).await;
    let (_, status) = a.admin_get("/hot_restart_status").await;
    let v: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(v["pid"], a.pid(), "{status}");
    assert_eq!(v["phase"], "serving", "{status}");
    assert_eq!(v["rollback"]["rollbacks"], 1, "{status}");
    assert_eq!(v["rollback"]["window_s"], 30, "{status}");
    let fds = non_socket_fds(a.pid());
    assert!(!fds.iter().any(|t| t.contains("pidfd")), "{fds:?}");
}

/// The next restart takes over from A, with the epoch the dead generation had; A then stands
/// by again.
async fn next_restart_from(a: &Baton) {
    let n_standing_by = a.stderr().matches("standing by until").count();
    let mut c = a.restart(&direct("next"), WINDOW);
    assert_eq!(c.epoch, 1);
    c.wait_serving().await;
    // Once A has stopped accepting again, only C answers.
    first_answer(&c, "next").await;
    logged_times(
        a,
        "standing by until the rollback window ends",
        n_standing_by + 1,
    )
    .await;
    assert_eq!(get(c.addr(), "/").await.text(), "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_new_generation_right_after_it_serves_rolls_back() {
    within(
        90,
        "rollback right after serving",
        kill_the_new_generation(KillAt::Serving),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_new_generation_mid_handover_rolls_back() {
    within(
        90,
        "rollback mid-handover",
        kill_the_new_generation(KillAt::MidHandover),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_new_generation_while_the_old_stands_by_rolls_back() {
    within(
        90,
        "rollback from stand-by",
        kill_the_new_generation(KillAt::StandingBy),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_end_makes_the_standing_by_generation_exit_0() {
    within(60, "window end", async {
        let flags = [
            "--drain-time-s",
            "1",
            "--parent-shutdown-time-s",
            "5",
            "--rollback-window-s",
            "3",
        ];
        let mut a = Baton::start_with(&direct("old"), &flags).await;
        let serving_rss = rss_kib(a.pid());
        let (_, info) = a.admin_get("/server_info").await;
        let v: serde_json::Value = serde_json::from_str(&info).expect("server_info JSON");
        assert_eq!(v["command_line_options"]["rollback_window"], "3s", "{info}");
        assert_eq!(v["hot_restart"]["rollback"]["window_s"], 3, "{info}");
        // Idle keep-alive connections move to B at cutover.
        let mut idle = idle_connections(&a, 4, "old").await;
        let mut b = a.restart(&direct("new"), &flags);
        b.wait_serving().await;
        let served = Instant::now();
        logged(&a, "standing by until the rollback window ends").await;
        let standing_rss = rss_kib(a.pid());
        let log = a.stderr();
        let cutover = logged_at(&log, "child asks this generation to drain");
        let standing = logged_at(&log, "standing by until the rollback window ends");
        eprintln!(
            "the old generation stands by (no connection, not accepting) {:?} ms after cutover \
             (seen by the test {} ms after the new generation serves)",
            cutover
                .zip(standing)
                .map(|(c, s)| ((s - c) * 1000.0).round()),
            served.elapsed().as_millis()
        );
        eprintln!("RSS of the old generation: serving {serving_rss:?} KiB, standing by {standing_rss:?} KiB");
        // Nothing of A's accepts: B answers.
        assert_eq!(get(b.addr(), "/").await.text(), "new");
        let status = a.wait_exit(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}", a.stderr());
        assert!(a.stderr().contains("rollback window over; exiting"), "{}", a.stderr());
        assert!(!a.stderr().contains("rolled back"), "{}", a.stderr());
        assert_eq!(get(b.addr(), "/").await.text(), "new");
        for h in &mut idle {
            let r = h.send(get_req("test.local", "/")).await.expect("moved connection");
            assert_eq!(r.text(), "new");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn window_zero_exits_once_drained_and_closes_its_sockets() {
    within(60, "window 0", async {
        let flags = ["--drain-time-s", "1", "--rollback-window-s", "0"];
        let mut a = Baton::start_with(&direct("old"), &flags).await;
        let mut b = a.restart(&direct("new"), &flags);
        b.wait_serving().await;
        let status = a.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{status:?}\n{}",
            a.stderr()
        );
        assert!(a.stderr().contains("drained; exiting"), "{}", a.stderr());
        assert!(!a.stderr().contains("rollback window"), "{}", a.stderr());
        assert!(!a.stderr().contains("standing by"), "{}", a.stderr());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_third_generation_ends_the_standing_by_one() {
    within(60, "third generation", async {
        let mut a = Baton::start_with(&direct("a"), WINDOW).await;
        let mut b = a.restart(&direct("b"), WINDOW);
        b.wait_serving().await;
        logged(&a, "standing by until the rollback window ends").await;
        let mut c = b.restart(&direct("c"), WINDOW);
        c.wait_serving().await;
        // Well before A's 30 s window ends.
        let status = a.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{status:?}\n{}",
            a.stderr()
        );
        assert!(
            a.stderr()
                .contains("asked to terminate by the next generation while standing by"),
            "{}",
            a.stderr()
        );
        // B stands by in turn; C serves.
        logged(&b, "standing by until the rollback window ends").await;
        assert_eq!(get(c.addr(), "/").await.text(), "c");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_rollback_on_the_new_generation_hands_the_service_back() {
    within(60, "POST /rollback", async {
        let a = Baton::start_with(&direct("old"), WINDOW).await;
        let fresh = Load::start(
            a.addr(),
            Mode::NewConnection,
            4,
            "/",
            Duration::from_secs(40),
        );
        let keep_alive = Load::start(a.addr(), Mode::KeepAlive, 4, "/", Duration::from_secs(40));
        let mut b = a.restart(&direct("new"), WINDOW);
        b.wait_serving().await;
        assert!(fresh.wait_body("new", Duration::from_secs(10)).await);
        logged(&a, "standing by until the rollback window ends").await;
        // A stands by: B answers the shared admin socket.
        let (code, body) = b.admin_post("/rollback").await;
        assert_eq!(code, 200, "{body}\n{}", b.stderr());
        assert!(body.starts_with("rolled back: generation 0"), "{body}");
        logged(&a, "rolled back: generation 1").await;
        assert!(a.stderr().contains("asked to roll back: POST /rollback"), "{}", a.stderr());
        assert!(fresh.wait_body("old", Duration::from_secs(5)).await);
        let status = b.wait_exit(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{}", b.stderr());
        assert!(fresh.progress(50, Duration::from_secs(5)).await);
        assert!(keep_alive.progress(50, Duration::from_secs(5)).await);
        let (ka, fr) = (keep_alive.stop().await, fresh.stop().await);
        eprintln!(
            "POST /rollback: failed requests keep-alive {} of {}, new-connection {} of {}; {:?} {:?}",
            ka.failed,
            ka.sent(),
            fr.failed,
            fr.sent(),
            ka.errors,
            fr.errors
        );
        let logs = format!("--- A\n{}\n--- B\n{}", a.stderr(), b.stderr());
        // A accepted again before B stopped: no connection attempt failed.
        assert_eq!(fr.failed, 0, "{:?}\n{logs}", fr.errors);
        a.wait_stat("server.hot_restart_rollbacks", 1).await;
        // The next restart takes over from A as epoch 1 again.
        let mut c = a.restart(&direct("next"), WINDOW);
        c.wait_serving().await;
        first_answer(&c, "next").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_rollback_without_a_standing_by_generation_is_refused() {
    within(60, "POST /rollback refused", async {
        // Epoch 0 has nothing to roll back to.
        let flags = ["--drain-time-s", "1", "--rollback-window-s", "0"];
        let mut a = Baton::start_with(&direct("old"), &flags).await;
        let (code, body) = a.admin_post("/rollback").await;
        assert_eq!(code, 409, "{body}");
        // Window 0: the old generation is gone once drained; the new one keeps serving.
        let mut b = a.restart(&direct("new"), &flags);
        b.wait_serving().await;
        assert!(a.wait_exit(Duration::from_secs(10)).await.is_some());
        let (code, body) = b.admin_post("/rollback").await;
        assert_eq!(code, 409, "{body}");
        assert!(b.exited().is_none(), "{}", b.stderr());
        assert_eq!(get(b.addr(), "/").await.text(), "new");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_that_ends_mid_drain_closes_the_kept_sockets() {
    within(60, "window over mid-drain", async {
        // Gradual over the default 600 s, no hand-over: the idle connection keeps A draining
        // well past its 1 s window.
        let flags = ["--rollback-window-s", "1", "--disable-connection-handover"];
        let mut a = Baton::start_with(&direct("old"), &flags).await;
        let _held = idle_connections(&a, 1, "old").await;
        let mut b = a.restart(&direct("new"), &flags);
        b.wait_serving().await;
        logged(&a, "rollback window over while draining").await;
        assert!(a.exited().is_none(), "A still drains its idle client");
        // Without A's copies, B's death leaves nobody on the port: refused, not queued.
        b.kill();
        let refused = tokio::net::TcpStream::connect(a.addr()).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{refused:?}\n{}",
            a.stderr()
        );
        assert!(!a.stderr().contains("rolled back"), "{}", a.stderr());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_the_new_generation_dropped_is_bound_again_on_rollback() {
    within(60, "rebind on rollback", async {
        let a = Baton::start_with(&direct("old"), WINDOW).await;
        // B listens elsewhere: A's listener is not taken and closes at cutover.
        let elsewhere = free_port();
        let config = direct("new").replace("{{LISTEN}}", &elsewhere.to_string());
        let mut b = a.restart(&config, WINDOW);
        b.wait_serving().await;
        logged(&a, "standing by until the rollback window ends").await;
        assert_eq!(get(local(elsewhere), "/").await.text(), "new");
        let closed = tokio::net::TcpStream::connect(a.addr()).await;
        assert!(closed.is_err(), "A's listener is closed while it stands by");
        b.signal("KILL");
        logged(&a, "rolled back: generation 1").await;
        assert_eq!(get(a.addr(), "/").await.text(), "old");
        b.kill();
    })
    .await;
}

/// Until `load` has sent `n` requests, answered or not (bounded).
async fn sent_past(load: &Load, n: u64) {
    let until = Instant::now() + Duration::from_secs(15);
    while load.report().sent() < n {
        assert!(Instant::now() < until, "no load: {:?}", load.report());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The restart's new configuration is valid but wrong: its one cluster points at a port nobody
/// listens on, so it answers every request 503 (`UF`) itself. Its health gate fails within the
/// window; it gives way and the old generation serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_configuration_is_rolled_back_by_the_health_gate() {
    within(60, "health gate rollback", async {
        let a = Baton::start_with(&direct("old"), WINDOW).await;
        let fresh = Load::start(
            a.addr(),
            Mode::NewConnection,
            4,
            "/",
            Duration::from_secs(40),
        );
        assert!(fresh.progress(20, Duration::from_secs(5)).await, "no load");
        let broken = Config::new()
            .route(route("/", "dead", serde_json::json!({})))
            .cluster(cluster("dead", &[free_port()]))
            .render();
        let mut b = a.restart(&broken, WINDOW);
        b.wait_serving().await;
        let before = fresh.report();
        logged(&a, "rolled back: generation 1").await;
        let gate_line = a.stderr();
        assert!(
            gate_line.contains("asked to roll back: health gate: 100.0% of the"),
            "{gate_line}"
        );
        assert!(fresh.wait_body("old", Duration::from_secs(5)).await);
        let status = b.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|s| s.code() == Some(1)),
            "{status:?}\n{}",
            b.stderr()
        );
        assert!(b
            .stderr()
            .contains("gave way to the previous one (health gate:"));
        let mid = fresh.report();
        assert!(fresh.progress(50, Duration::from_secs(5)).await);
        let after = fresh.stop().await;
        let served_503 = after.statuses.get(&503).copied().unwrap_or(0);
        eprintln!(
            "health gate: {served_503} requests answered 503 by the broken generation before the \
             rollback (of {} sent since it served)",
            mid.sent() - before.sent(),
        );
        // The gate judges from cutover, every 25 ms, once 20 are answered.
        assert!(
            (20..1000).contains(&served_503),
            "{:?}\n{}",
            after.statuses,
            b.stderr()
        );
        // Every failure is one of those 503s: no connection attempt failed.
        assert_eq!(after.failed, served_503, "{:?}", after.errors);
        // After the rollback, only the old configuration answers.
        assert_eq!(
            after.statuses.get(&503).copied(),
            mid.statuses.get(&503).copied()
        );
        a.wait_stat("server.hot_restart_rollbacks", 1).await;
    })
    .await;
}

/// An upstream that fails as much before the restart as after it is no reason to roll back:
/// the gate compares with the old generation's last minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_does_not_blame_a_new_generation_for_an_upstream_already_failing() {
    within(60, "health gate baseline", async {
        let dead = free_port();
        let failing = Config::new()
            .route(route("/", "dead", serde_json::json!({})))
            .cluster(cluster("dead", &[dead]))
            .render();
        let a = Baton::start_with(&failing, WINDOW).await;
        let fresh = Load::start(
            a.addr(),
            Mode::NewConnection,
            4,
            "/",
            Duration::from_secs(40),
        );
        sent_past(&fresh, 100).await;
        let mut b = a.restart(&failing, WINDOW);
        b.wait_serving().await;
        logged(&a, "standing by until the rollback window ends").await;
        // Well past the gate's minimum count, all of them failures, as before.
        sent_past(&fresh, fresh.report().sent() + 200).await;
        let after = fresh.stop().await;
        assert!(!a.stderr().contains("rolled back"), "{}", a.stderr());
        assert!(!b.stderr().contains("health gate:"), "{}", b.stderr());
        assert_eq!(after.statuses.get(&200), None, "{:?}", after.statuses);
    })
    .await;
}

/// `baton rollback --base-id N`: the operator's rollback without the admin address; refused
/// with nothing to roll back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baton_rollback_hands_the_service_back_from_the_command_line() {
    within(60, "baton rollback", async {
        let a = Baton::start_with(&direct("old"), WINDOW).await;
        let base = a.base_id.to_string();
        let (st, _, err) = run_baton(&["rollback", "--base-id", &base]);
        assert_eq!(st.code(), Some(1), "{err}");
        assert!(err.contains("nothing to roll back to: epoch 0"), "{err}");
        let fresh = Load::start(
            a.addr(),
            Mode::NewConnection,
            4,
            "/",
            Duration::from_secs(40),
        );
        let mut b = a.restart(&direct("new"), WINDOW);
        b.wait_serving().await;
        assert!(fresh.wait_body("new", Duration::from_secs(10)).await);
        let (st, out, err) = run_baton(&["rollback", "--base-id", &base]);
        assert_eq!(st.code(), Some(0), "{out}{err}\n{}", b.stderr());
        assert!(
            out.contains("epoch 0") && out.contains("serves again; epoch 1"),
            "{out}"
        );
        assert!(a
            .stderr()
            .contains("asked to roll back: SIGUSR2 (baton rollback)"));
        let status = b.wait_exit(Duration::from_secs(5)).await;
        assert!(status.is_some_and(|s| s.code() == Some(1)), "{status:?}");
        assert!(fresh.wait_body("old", Duration::from_secs(5)).await);
        assert!(fresh.progress(50, Duration::from_secs(5)).await);
        let report = fresh.stop().await;
        assert_eq!(report.failed, 0, "{:?}", report.errors);
        let (st, _, err) = run_baton(&["rollback", "--base-id", "4000000000"]);
        assert_eq!(st.code(), Some(3), "{err}");
    })
    .await;
}

/// A generation that gives way hands its idle keep-alive connections back to the previous one
/// (the hand-over in the other direction): their next requests are answered by the old
/// configuration on the same TCP connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_that_gives_way_hands_its_idle_connections_back() {
    within(60, "hand-back", async {
        let a = Baton::start_with(&direct("old"), WINDOW).await;
        let mut b = a.restart(&direct("new"), WINDOW);
        b.wait_serving().await;
        logged(&a, "standing by until the rollback window ends").await;
        let mut idle = idle_connections(&b, 6, "new").await;
        let (code, body) = b.admin_post("/rollback").await;
        assert_eq!(code, 200, "{body}\n{}", b.stderr());
        logged(&b, "handed connections back to the previous generation").await;
        let status = b.wait_exit(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.code() == Some(1)), "{status:?}");
        let logs = format!("--- A\n{}\n--- B\n{}", a.stderr(), b.stderr());
        assert!(logs.contains("given=6 taken=6"), "{logs}");
        for h in &mut idle {
            let r = h
                .send(get_req("test.local", "/"))
                .await
                .unwrap_or_else(|e| panic!("a handed-back connection failed: {e}\n{logs}"));
            assert_eq!(r.text(), "old");
        }
        a.wait_stat("server.connections_received", 6).await;
    })
    .await;
}
