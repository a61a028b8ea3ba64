//! Hot restart end to end: a load client through 20 restarts that each change the
//! configuration, every failure point of a restart injected while epoch K serves, the parent
//! killed mid-drain, and no file descriptor of one generation leaking into the next.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::restart::{fds, pid_alive, socket_inodes};
use crate::support::*;

/// Restart flags of every generation in these tests: a short drain, a bounded parent life.
const FAST: &[&str] = &["--drain-time-s", "1", "--parent-shutdown-time-s", "5"];

/// Every path to cluster `up` on `port`.
fn to(port: u16) -> String {
    Config::new()
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[port]))
        .render()
}

/// `config` with a second listener on `port`.
fn with_second_listener(config: &str, port: u16) -> String {
    let text = config
        .replace("{{LISTEN}}", "\"{{LISTEN}}\"")
        .replace("{{ADMIN}}", "\"{{ADMIN}}\"");
    let mut v: Value = serde_json::from_str(&text).expect("config json");
    let listeners = v["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners");
    let mut second = listeners[0].clone();
    second["name"] = json!("listener_1");
    second["address"]["socket_address"]["port_value"] = json!(port);
    listeners.push(second);
    serde_json::to_string(&v)
        .expect("config")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
}

/// Wait until `pid` is gone; how long that took, or None after `within`.
async fn gone(b: &mut Baton, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    b.wait_exit(within).await.map(|_| start.elapsed())
}

/// Restart `n` times, each generation on `config(k)` whose responses carry `expect(k)`, under
/// a load client in `mode`; zero failures, each change seen, each parent gone quickly, counters
/// continued.
async fn restarts_under_load(
    mode: Mode,
    n: u32,
    config: impl Fn(u32) -> String,
    expect: impl Fn(u32) -> String,
) {
    let mut current = Baton::start_with(&config(0), FAST).await;
    let load = Load::start(current.addr(), mode, 4, "/", Duration::from_secs(60));
    assert!(
        load.wait_body(&expect(0), Duration::from_secs(5)).await,
        "the first generation's body was never seen"
    );
    let mut serve_ms = Vec::new();
    let mut parent_ms = Vec::new();
    // Each generation's log, for the failure message.
    let mut logs = Vec::new();
    for k in 1..=n {
        let started = Instant::now();
        let mut next = current.restart(&config(k), FAST);
        next.wait_serving().await;
        serve_ms.push(started.elapsed().as_millis());
        assert!(
            load.wait_body(&expect(k), Duration::from_secs(5)).await,
            "epoch {k}: its configuration was never seen (last body {:?})",
            load.last_body()
        );
        let old_pid = current.pid();
        let lived = gone(&mut current, Duration::from_secs(5)).await;
        let lived = lived.unwrap_or_else(|| {
            panic!(
                "epoch {} (pid {old_pid}) still alive 5 s after its successor served\nstderr:\n{}",
                k - 1,
                current.stderr()
            )
        });
        assert!(!pid_alive(old_pid));
        logs.push(format!("--- epoch {} ---\n{}", k - 1, current.stderr()));
        parent_ms.push(lived.as_millis());
        assert!(
            load.progress(20, Duration::from_secs(5)).await,
            "epoch {k}: no progress"
        );
        current = next;
    }
    let report = load.stop().await;
    eprintln!(
        "{mode:?}: {n} restarts; report {report:?}; time to serve (ms) {serve_ms:?}; parent \
         lived after (ms) {parent_ms:?}"
    );
    logs.push(format!("--- epoch {n} ---\n{}", current.stderr()));
    assert_eq!(
        report.failed,
        0,
        "failed requests: {:?}\n{}",
        report.errors,
        logs.join("\n")
    );
    assert!(report.ok > u64::from(n) * 20);
    assert_eq!(
        report.statuses.keys().copied().collect::<Vec<_>>(),
        vec![200]
    );
    for k in 0..=n {
        assert!(
            report.bodies.contains_key(&expect(k)),
            "epoch {k} never answered"
        );
    }
    // The counters continued across every generation.
    let total = current
        .stat("http.ingress_http.downstream_rq_total")
        .await
        .unwrap_or(0);
    assert!(
        total >= i64::try_from(report.sent()).unwrap_or(i64::MAX),
        "downstream_rq_total {total} < {} requests sent",
        report.sent()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_restarts_keep_alive_changing_the_cluster_endpoint() {
    let a = Upstream::fixed(200, "alpha").await;
    let b = Upstream::fixed(200, "beta").await;
    let (pa, pb) = (a.port(), b.port());
    within(40, "20 restarts", async {
        restarts_under_load(
            Mode::KeepAlive,
            20,
            |k| to(if k % 2 == 0 { pa } else { pb }),
            |k| if k % 2 == 0 { "alpha" } else { "beta" }.to_owned(),
        )
        .await;
    })
    .await;
    assert!(a.hits() > 0 && b.hits() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_restarts_new_connections_changing_a_direct_response() {
    within(40, "20 restarts", async {
        restarts_under_load(
            Mode::NewConnection,
            20,
            |k| direct(&format!("generation-{k}")),
            |k| format!("generation-{k}"),
        )
        .await;
    })
    .await;
}

/// Start a would-be epoch 1 next to `k`, expect it to exit non-zero with `reason` in stderr.
async fn refused(k: &Baton, config: &str, extra: &[&str], reason: &str) {
    let mut next = k.restart(config, extra);
    let status = next.wait_exit(Duration::from_secs(10)).await;
    let status =
        status.unwrap_or_else(|| panic!("the refused epoch did not exit: {}", next.stderr()));
    let stderr = next.stderr();
    eprintln!(
        "refused ({status}): {}",
        stderr.lines().last().unwrap_or("")
    );
    assert!(!status.success(), "exit {status}\n{stderr}");
    assert!(
        stderr.contains(reason),
        "stderr lacks {reason:?}:\n{stderr}"
    );
}

/// Epoch K still serving its own configuration, its admin answered by itself.
async fn still_serving(k: &mut Baton, load: &Load, body: &str) {
    assert!(k.exited().is_none(), "epoch K exited: {}", k.stderr());
    assert!(
        load.progress(20, Duration::from_secs(5)).await,
        "no progress"
    );
    assert_eq!(load.last_body(), body);
    let (status, text) = k.admin_get("/hot_restart_status").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).expect("status json");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(k.pid())), "{v}");
    assert_eq!(v["phase"], "serving", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_failed_restart_leaves_epoch_k_serving() {
    within(40, "failure injection", async {
        let mut k = Baton::start_with(&direct("k"), FAST).await;
        let load = Load::start(k.addr(), Mode::KeepAlive, 4, "/", Duration::from_secs(60));
        assert!(load.wait_body("k", Duration::from_secs(5)).await);

        // A syntax error.
        refused(&k, "static_resources: [", FAST, "YAML").await;
        still_serving(&mut k, &load, "k").await;
        // A route to a cluster that does not exist.
        let unknown = Config::new().route(route("/", "nope", json!({}))).render();
        refused(&k, &unknown, FAST, "nope").await;
        still_serving(&mut k, &load, "k").await;
        // A new listener on an address someone else holds.
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let clash = with_second_listener(&direct("k1"), port);
        refused(&k, &clash, FAST, "listener_1").await;
        still_serving(&mut k, &load, "k").await;
        // Another hot restart version (--max-stats is part of it).
        let mut extra = FAST.to_vec();
        extra.extend(["--max-stats", "12345"]);
        refused(&k, &direct("k1"), &extra, "version").await;
        still_serving(&mut k, &load, "k").await;
        // SIGKILLed at once, and 50 ms into its start. A new epoch serves within a few
        // milliseconds, so for the second case epoch K is stopped (SIGSTOP) meanwhile: the
        // child is then certainly killed mid-exchange, before it could tell K to drain.
        for delay in [0, 50] {
            if delay > 0 {
                k.signal("STOP");
            }
            let mut next = k.restart(&direct("k1"), FAST);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            next.kill();
            if delay > 0 {
                k.signal("CONT");
            }
            still_serving(&mut k, &load, "k").await;
        }

        // After all that, epoch 1 still takes over.
        let mut next = k.restart(&direct("k1"), FAST);
        next.wait_serving().await;
        assert!(load.wait_body("k1", Duration::from_secs(5)).await);
        assert!(gone(&mut k, Duration::from_secs(5)).await.is_some());
        let report = load.stop().await;
        eprintln!("failure injection: {report:?}");
        assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);
        drop(held);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_epoch_without_a_parent_is_an_error_unless_skipped() {
    let mut lone = Baton::spawn(&direct("x"), &["--restart-epoch", "1"]);
    let status = lone
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(1), "{}", lone.stderr());
    // The chain's stats region is looked up first; either way the error names the chain.
    let err = lone.stderr();
    assert!(
        err.contains("could not find a running epoch 0")
            || err.contains("no Baton chain runs with this base id"),
        "{err}"
    );
    assert!(!std::path::Path::new(&format!("/dev/shm/baton_{}", lone.base_id)).exists());

    let mut cold = Baton::spawn(
        &direct("cold"),
        &["--restart-epoch", "1", "--skip-hot-restart-on-no-parent"],
    );
    cold.wait_ready().await;
    assert_eq!(get(cold.addr(), "/").await.text(), "cold");
}

/// Restart flags that keep connections with the draining parent (as Envoy): for tests of the
/// parent's side of a drain.
const DRAIN_ONLY: &[&str] = &["--disable-connection-handover"];

/// Hold a connection to `addr` open on epoch K (keep-alive, idle).
async fn hold_idle(addr: std::net::SocketAddr) -> H1 {
    let mut c = H1::connect(addr).await.expect("connect");
    let r = c.send(get_req("test.local", "/")).await.expect("request");
    assert_eq!(r.status, 200);
    c
}

/// Wait until the process's log says it drains.
async fn wait_draining(b: &Baton) {
    let until = Instant::now() + Duration::from_secs(5);
    while !b.stderr().contains("draining") {
        assert!(Instant::now() < until, "never drained:\n{}", b.stderr());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parent_killed_mid_drain_leaves_the_child_serving() {
    within(30, "parent killed mid-drain", async {
        // Gradual over 600 s: the idle connection is not asked to close for a long while.
        let mut k = Baton::start(&direct("k")).await;
        let _held = hold_idle(k.addr()).await;
        let mut next = k.restart(&direct("k1"), DRAIN_ONLY);
        next.wait_serving().await;
        wait_draining(&k).await;
        let load = Load::start(
            next.addr(),
            Mode::KeepAlive,
            4,
            "/",
            Duration::from_secs(20),
        );
        assert!(load.wait_body("k1", Duration::from_secs(5)).await);
        k.kill();
        assert!(load.progress(200, Duration::from_secs(5)).await);
        assert_eq!(next.admin_get("/ready").await, (200, "LIVE\n".to_owned()));
        let (status, text) = next.admin_get("/hot_restart_status").await;
        assert_eq!(status, 200);
        assert!(text.contains("\"serving\""), "{text}");
        assert!(
            next.stat("http.ingress_http.downstream_rq_total")
                .await
                .unwrap_or(0)
                > 0
        );
        // The chain goes on: the next generation's attempt to end the dead one is harmless.
        let mut third = next.restart(&direct("k2"), FAST);
        third.wait_serving().await;
        assert!(load.wait_body("k2", Duration::from_secs(5)).await);
        let report = load.stop().await;
        assert_eq!(report.failed, 0, "failed requests: {:?}", report.errors);
        drop(next);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_descriptor_of_a_generation_leaks_into_the_next() {
    within(30, "fd leak check", async {
        let mut k = Baton::start(&direct("k")).await;
        // Traffic, so that connections exist in K when it is restarted.
        let _held = hold_idle(k.addr()).await;
        // K's sockets before the restart: once it drains it closes its copies.
        let theirs: BTreeSet<u64> = socket_inodes(k.pid()).into_iter().collect();
        let base = theirs.len();
        // Without the hand-over (which shares the moved connection's socket on purpose).
        let mut next = k.restart(&direct("k1"), DRAIN_ONLY);
        next.wait_serving().await;
        let ours: BTreeSet<u64> = socket_inodes(next.pid()).into_iter().collect();
        let shared: Vec<_> = ours.intersection(&theirs).collect();
        let fd_list = fds(next.pid());
        eprintln!("epoch 0 sockets {base}; epoch 1 fds {fd_list:?}; shared {shared:?}");
        // Exactly the listener and the admin socket are the same kernel sockets.
        assert_eq!(shared.len(), 2, "shared sockets: {shared:?}\n{fd_list:?}");
        // Its own sockets: listener (+ worker duplicates), admin, restart socket, the link
        // to its parent; nothing like the parent's connections.
        // (Distinct kernel sockets: workers hold duplicates of each listen socket.)
        let sockets = ours.len();
        assert!(
            sockets <= base + 2,
            "{sockets} sockets vs {base}: {fd_list:?}"
        );
        // Every socket is close-on-exec (other descriptors without it came from the test
        // runner, e.g. cargo's jobserver pipe, and are checked against it).
        let runner: Vec<String> = fds(std::process::id())
            .into_iter()
            .filter(|f| !f.cloexec())
            .map(|f| f.target)
            .collect();
        for f in &fd_list {
            if f.is_socket() || (f.fd > 2 && !runner.contains(&f.target)) {
                assert!(
                    f.cloexec(),
                    "fd {} ({}) is not CLOEXEC: {fd_list:?}",
                    f.fd,
                    f.target
                );
            }
        }
        k.kill();
        drop(k);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_restart_file_chain_takes_epochs_in_turn_and_never_overlaps_three() {
    within(30, "--hot-restart-file chain", async {
        let dir = TempDir::new("hrfile");
        let file = dir.file("restart.sock").display().to_string();
        let extra = ["--hot-restart-file", file.as_str()];
        let mut g0 = Baton::start_with(&direct("g0"), &extra).await;
        // An idle client keeps g0 draining (gradual over the default 600 s).
        let _held = hold_idle(g0.addr()).await;
        let drain_only = [extra[0], extra[1], DRAIN_ONLY[0]];
        let mut g1 = g0.restart(&direct("g1"), &drain_only);
        g1.wait_serving().await;
        let v = g1.own_status().await;
        assert_eq!(v["epoch"], 1, "the epoch comes from the chain: {v}");
        assert_eq!(
            v["parent"]["pid"].as_u64(),
            Some(u64::from(g0.pid())),
            "{v}"
        );
        wait_draining(&g0).await;
        assert!(g0.exited().is_none(), "g0 still drains its idle client");
        assert!(
            std::path::Path::new(&format!("{file}.stats")).exists(),
            "stats live beside the socket"
        );
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file)
                .expect("socket file")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "--socket-mode's default applies to the file"
            );
        }
        // A third generation ends the one still draining first.
        let mut g2 = g1.restart(&direct("g2"), &extra);
        g2.wait_serving().await;
        assert!(
            gone(&mut g0, Duration::from_secs(5)).await.is_some(),
            "g0 was not ended when g2 started:\n{}",
            g0.stderr()
        );
        // g1 shares the admin socket until it stops accepting: ask until g2 answers.
        let v = g2.own_status().await;
        assert_eq!(v["epoch"], 2, "{v}");
        assert_eq!(get(g2.addr(), "/").await.text(), "g2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_generation_counts_its_parents_connections() {
    within(20, "parent connections", async {
        let mut k = Baton::start(&direct("k")).await;
        // Gradual over 600 s: the idle connection stays with the draining parent.
        let _held = hold_idle(k.addr()).await;
        let mut next = k.restart(&direct("k1"), DRAIN_ONLY);
        next.wait_serving().await;
        wait_draining(&k).await;
        assert!(k.exited().is_none());
        assert_eq!(next.stat("server.hot_restart_generation").await, Some(1));
        assert_eq!(next.stat("server.parent_connections").await, Some(1));
        assert_eq!(next.stat("server.total_connections").await, Some(1));
        // Once the parent is gone, so are its connections.
        k.kill();
        next.wait_stat("server.parent_connections", 0).await;
    })
    .await;
}
