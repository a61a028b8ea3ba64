//! `baton restarter`, `baton reload`, `baton status` and sd_notify, with real processes: restarts
//! under load, failed restarts that leave the serving generation alone, a killed new epoch, a
//! bounded SIGTERM, an Envoy-style restarter script driving `baton` unchanged, and the
//! notifications a fake `NOTIFY_SOCKET` receives. Every process is killed by pid on drop and
//! every stats region removed.

use std::collections::HashSet;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::support::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Base ids apart from the harness's (which uses +1..+1000 of the same block).
fn base_id() -> u32 {
    (std::process::id() % 4_000) * 1_000 + 4_000_000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A base id whose successor no other test takes: `--use-dynamic-base-id` picks the next free
/// id after a taken one, and must not land on another test's chain running in parallel.
fn isolated_base_id() -> u32 {
    base_id() + 500
}

fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(i32::try_from(pid).unwrap_or(0)), sig);
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); /proc/<pid>/stat says Z for it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn shm_path(base_id: u32) -> PathBuf {
    PathBuf::from(format!("/dev/shm/baton_{base_id}"))
}

fn config(echo: &Upstream) -> String {
    Config::new()
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[echo.port()]))
        .render()
}

/// A running `baton restarter` and the chain it supervises.
struct Chain {
    child: Option<Child>,
    dir: TempDir,
    listen: u16,
    admin: u16,
    config_path: PathBuf,
    base_id: u32,
    /// Every generation pid seen, killed on drop.
    pids: Mutex<HashSet<u32>>,
}

impl Chain {
    /// `baton restarter <restarter_args> -- -c <config> --base-id <id> --concurrency 1
    /// --drain-time-s 1 <baton_args>` with `env` added.
    fn start(
        config: &str,
        restarter_args: &[&str],
        baton_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_id(config, restarter_args, baton_args, env, |_| {})
    }

    /// As [`Chain::start`], calling `before` with the base id before spawning.
    fn start_with_id(
        config: &str,
        restarter_args: &[&str],
        baton_args: &[&str],
        env: &[(&str, &str)],
        before: impl FnOnce(u32),
    ) -> Self {
        let dir = TempDir::new("restarter");
        let listen = free_port();
        let admin = free_port();
        let config_path = dir.file("baton.yaml");
        let text = config
            .replace("{{LISTEN}}", &listen.to_string())
            .replace("{{ADMIN}}", &admin.to_string());
        std::fs::write(&config_path, text).expect("write config");
        let base_id = if baton_args.contains(&"--use-dynamic-base-id") {
            isolated_base_id()
        } else {
            base_id()
        };
        before(base_id);
        let out = std::fs::File::create(dir.file("stdout")).expect("stdout");
        let err = std::fs::File::create(dir.file("stderr")).expect("stderr");
        let child = Command::new(BATON)
            .arg("restarter")
            .args(restarter_args)
            .arg("--")
            .arg("-c")
            .arg(&config_path)
            .args(["--base-id", &base_id.to_string()])
            .args(["--concurrency", "1", "--drain-time-s", "1"])
            .args(no_rollback_window_unless_given(baton_args))
            .args(baton_args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn baton restarter");
        Self {
            child: Some(child),
            dir,
            listen,
            admin,
            config_path,
            base_id,
            pids: Mutex::new(HashSet::new()),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.file("stderr")).unwrap_or_default()
    }

    fn write_config(&self, text: &str) {
        let text = text
            .replace("{{LISTEN}}", &self.listen.to_string())
            .replace("{{ADMIN}}", &self.admin.to_string());
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// `baton status --format json`: (exit code, document or Null).
    fn status(&self) -> (Option<i32>, Value) {
        let (st, out, _) = run_baton(&[
            "status",
            "--base-id",
            &self.base_id.to_string(),
            "--format",
            "json",
        ]);
        let doc: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        for g in doc["generations"].as_array().into_iter().flatten() {
            if let Some(p) = g["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                pids.insert(p);
            }
        }
        (st.code(), doc)
    }

    /// Poll `status` (≤ `secs`) until `pred` holds; panic with the last document otherwise.
    async fn wait_status(&self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let (_, doc) = self.status();
            if pred(&doc) {
                return doc;
            }
            if Instant::now() >= until {
                panic!(
                    "{what}: not within {secs} s; last status {doc}\nrestarter stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_serving_epoch(&self, epoch: u64, alone: bool) -> Value {
        self.wait_status(&format!("epoch {epoch} serving"), 15, |d| {
            let gens = d["generations"].as_array().cloned().unwrap_or_default();
            d["restarter"]["state"] == "serving"
                && gens
                    .iter()
                    .any(|g| g["epoch"] == epoch && g["phase"] == "serving")
                && (!alone || gens.len() == 1)
        })
        .await
    }

    fn reload(&self) -> (Option<i32>, String, String) {
        let (st, out, err) = run_baton(&[
            "reload",
            "--base-id",
            &self.base_id.to_string(),
            "--timeout",
            "8",
        ]);
        (st.code(), out, err)
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(Child::try_wait) {
                return Some(s);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn seen_pids(&self) -> Vec<u32> {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// The restarter's children right now, from /proc (also those `status` never reported).
    fn child_pids(&self) -> Vec<u32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let mut pids = self.seen_pids();
        pids.extend(self.child_pids());
        for pid in pids {
            signal(pid, Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(shm_path(self.base_id));
    }
}

/// Requests on fresh connections from `tasks` loops until `stop`: (ok, failed, first errors).
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, tasks: usize) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|_| {
                let (ok, failed, errors, stop) =
                    (ok.clone(), failed.clone(), errors.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = tokio::time::timeout(
                            Duration::from_secs(5),
                            send1(addr, get_req("load.local", "/load")),
                        )
                        .await;
                        match r {
                            Ok(Ok(resp)) if resp.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let mut e = errors.lock().unwrap_or_else(|e| e.into_inner());
                                if e.len() < 5 {
                                    e.push(match other {
                                        Ok(Ok(resp)) => format!("status {}", resp.status),
                                        Ok(Err(err)) => err.to_string(),
                                        Err(_) => "timed out".to_owned(),
                                    });
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            ok,
            failed,
            errors,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sighups_under_load_lose_no_request() {
    let echo = Upstream::echo("e").await;
    let mut chain = Chain::start(&config(&echo), &[], &[], &[]);
    chain.wait_serving_epoch(0, true).await;
    let load = Load::start(local(chain.listen), 4);
    for i in 1..=20u64 {
        signal(chain.pid(), Signal::SIGHUP);
        // The previous generation has drained and gone before the next restart, so none is
        // cut short by the three-generation limit.
        chain.wait_serving_epoch(i, true).await;
    }
    let (ok, failed, errors) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {errors:?} ({ok} ok)");
    assert!(ok > 20, "only {ok} requests");
    let (code, doc) = chain.status();
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["restarter"]["restarts"]["succeeded"], 20, "{doc}");
    assert_eq!(doc["restarter"]["restarts"]["failed"], 0, "{doc}");
    signal(chain.pid(), Signal::SIGTERM);
    let st = chain.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", chain.stderr());
    assert!(!shm_path(chain.base_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_reload_fails_with_the_field_path_and_the_old_generation_serves() {
    let echo = Upstream::echo("e").await;
    let good = config(&echo);
    let mut chain = Chain::start(&good, &[], &[], &[]);
    chain.wait_serving_epoch(0, true).await;

    chain.write_config(&good.replace("\"cluster_name\"", "\"cluster_nam\""));
    let (code, _, err) = chain.reload();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("static_resources.clusters[0].load_assignment.cluster_nam"),
        "{err}"
    );
    assert!(err.contains("epoch 1"), "{err}");
    assert_eq!(get(local(chain.listen), "/still").await.status, 200);
    let (code, doc) = chain.status();
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["restarter"]["restarts"]["failed"], 1, "{doc}");
    assert_eq!(doc["generations"][0]["epoch"], 0, "{doc}");
    assert!(
        doc["restarter"]["last_failure"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cluster_nam")),
        "{doc}"
    );

    // The failed epoch number is used again by the next attempt.
    chain.write_config(&good);
    let (code, out, err) = chain.reload();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("epoch 1"), "{out}");
    assert_eq!(get(local(chain.listen), "/new").await.status, 200);

    signal(chain.pid(), Signal::SIGTERM);
    let st = chain.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", chain.stderr());
    let (code, _) = chain.status();
    assert_eq!(code, Some(3), "status after the chain ended");
    assert!(!shm_path(chain.base_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_killed_mid_start_then_a_good_reload_succeeds() {
    let echo = Upstream::echo("e").await;
    let chain = Chain::start(&config(&echo), &[], &[], &[]);
    let doc = chain.wait_serving_epoch(0, true).await;
    let parent = u32::try_from(doc["generations"][0]["pid"].as_u64().unwrap_or(0)).unwrap_or(0);

    // With the parent stopped, the new epoch hangs in its hand-over: kill it there.
    signal(parent, Signal::SIGSTOP);
    signal(chain.pid(), Signal::SIGHUP);
    let doc = chain
        .wait_status("epoch 1 starting", 10, |d| {
            d["generations"].as_array().is_some_and(|g| {
                g.iter()
                    .any(|g| g["epoch"] == 1 && g["phase"] == "starting")
            })
        })
        .await;
    let starting = doc["generations"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["epoch"] == 1))
        .and_then(|g| g["pid"].as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(starting, Signal::SIGKILL);
    signal(parent, Signal::SIGCONT);
    let doc = chain
        .wait_status("the failure counted", 10, |d| {
            d["restarter"]["restarts"]["failed"] == 1
        })
        .await;
    let reason = doc["restarter"]["last_failure"]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("killed by signal 9"), "{doc}");
    assert_eq!(get(local(chain.listen), "/old").await.status, 200);

    let (code, out, err) = chain.reload();
    assert_eq!(code, Some(0), "{err}\n{}", chain.stderr());
    assert!(out.contains("epoch 1"), "{out}");
    chain.wait_serving_epoch(1, true).await;
    assert_eq!(get(local(chain.listen), "/new").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_every_generation_within_the_bound() {
    let echo = Upstream::echo("e").await;
    let mut chain = Chain::start(&config(&echo), &["--term-timeout", "2"], &[], &[]);
    chain.wait_serving_epoch(0, true).await;
    let (code, _, err) = chain.reload();
    assert_eq!(code, Some(0), "{err}");
    let doc = chain.wait_serving_epoch(1, true).await;
    let serving = u32::try_from(doc["generations"][0]["pid"].as_u64().unwrap_or(0)).unwrap_or(0);
    // A generation that ignores SIGTERM (stopped) is killed once --term-timeout passes.
    signal(serving, Signal::SIGSTOP);
    let started = Instant::now();
    signal(chain.pid(), Signal::SIGTERM);
    let st = chain.wait_exit(Duration::from_secs(10)).await;
    assert!(st.is_some(), "restarter still running\n{}", chain.stderr());
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(1),
        "a SIGKILL is not a clean end"
    );
    for pid in chain.seen_pids() {
        assert!(!alive(pid), "pid {pid} still alive");
    }
    assert!(
        !shm_path(chain.base_id).exists(),
        "the stats region of the killed chain is left"
    );
    assert!(chain.stderr().contains("SIGKILL"), "{}", chain.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_reports_ready_reloading_and_stopping() {
    let name = format!("baton_e2e_notify_{}_{}", std::process::id(), base_id());
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let recv = move || -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let echo = Upstream::echo("e").await;
    let notify = format!("@{name}");
    let mut chain = Chain::start(&config(&echo), &[], &[], &[("NOTIFY_SOCKET", &notify)]);
    let me = chain.pid();
    let recv = Arc::new(Mutex::new(recv));
    let next = || {
        let r = recv.clone();
        async move {
            tokio::task::spawn_blocking(move || (r.lock().unwrap_or_else(|e| e.into_inner()))())
                .await
                .expect("join")
        }
    };
    let first = next().await;
    assert_eq!(first, format!("MAINPID={me}\nSTATUS=starting epoch 0\n"));
    let ready = next().await;
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving epoch 0 (pid "),
        "{ready}"
    );
    assert!(ready.ends_with(&format!("MAINPID={me}\n")), "{ready}");

    let (code, _, err) = chain.reload();
    assert_eq!(code, Some(0), "{err}");
    let reloading = next().await;
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines[0], "RELOADING=1", "{reloading}");
    let usec: u64 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(usec > 0, "{reloading}");
    assert_eq!(lines[2], "STATUS=restarting: starting epoch 1");
    let ready = next().await;
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving epoch 1 (pid "),
        "{ready}"
    );

    // A failed restart reports READY=1 again, with the failure in STATUS.
    chain.write_config("{not: [valid");
    let (code, _, _) = chain.reload();
    assert_eq!(code, Some(1));
    assert!(next().await.starts_with("RELOADING=1\n"));
    let after = next().await;
    assert!(
        after.starts_with("READY=1\nSTATUS=serving epoch 1 (pid ") && after.contains("failed"),
        "{after}"
    );

    signal(me, Signal::SIGTERM);
    assert_eq!(next().await, "STOPPING=1\nSTATUS=stopping\n");
    let st = chain.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", chain.stderr());
}

/// A restarter written from the behaviour Envoy documents for its `hot-restarter.py`: it runs a
/// start script with `RESTART_EPOCH` set, starts the next epoch on SIGHUP, and on SIGTERM sends
/// SIGTERM to every child and exits once they have.
const ENVOY_STYLE_RESTARTER: &str = r#"
import os, signal, subprocess, sys, time
script = sys.argv[1]
epoch = 0
children = []
hups = 0
def start():
    global epoch
    env = dict(os.environ, RESTART_EPOCH=str(epoch))
    children.append(subprocess.Popen([script], env=env))
    epoch += 1
def on_hup(signum, frame):
    # Counted here, started by the main loop: a handler that started a child itself could run
    # again inside its own Popen and give two children the same epoch.
    global hups
    hups += 1
def on_term(signum, frame):
    for c in children:
        if c.poll() is None:
            c.terminate()
    for c in children:
        c.wait()
    sys.exit(0)
signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, on_term)
start()
while True:
    time.sleep(0.02)
    while hups > 0:
        hups -= 1
        start()
    for c in list(children):
        if c.poll() is not None:
            children.remove(c)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_style_restarter_script_drives_baton() {
    let echo = Upstream::echo("e").await;
    let dir = TempDir::new("envoy-restarter");
    let listen = free_port();
    let admin = free_port();
    let cfg = dir.file("baton.yaml");
    std::fs::write(
        &cfg,
        config(&echo)
            .replace("{{LISTEN}}", &listen.to_string())
            .replace("{{ADMIN}}", &admin.to_string()),
    )
    .expect("config");
    let id = base_id();
    let start = dir.file("start_baton.sh");
    std::fs::write(
        &start,
        format!(
            "#!/bin/sh\nexec {BATON} -c {} --base-id {id} --concurrency 1 --drain-time-s 1 \
             --restart-epoch \"$RESTART_EPOCH\"\n",
            cfg.display()
        ),
    )
    .expect("start script");
    let chmod = Command::new("chmod").arg("+x").arg(&start).status();
    assert!(chmod.is_ok_and(|s| s.success()));
    let restarter = dir.file("hot-restarter.py");
    std::fs::write(&restarter, ENVOY_STYLE_RESTARTER).expect("restarter");
    let err = std::fs::File::create(dir.file("stderr")).expect("stderr");
    let child = Command::new("python3")
        .arg(&restarter)
        .arg(&start)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("python3");
    struct Guard(Option<Child>, Vec<u32>, u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            for pid in &self.1 {
                signal(*pid, Signal::SIGKILL);
            }
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_file(shm_path(self.2));
        }
    }
    let mut guard = Guard(Some(child), Vec::new(), id);
    let py = guard.0.as_ref().map_or(0, Child::id);
    let stderr = || std::fs::read_to_string(dir.file("stderr")).unwrap_or_default();

    for epoch in 0..4u64 {
        if epoch > 0 {
            signal(py, Signal::SIGHUP);
        }
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((200, body)) = try_get(local(admin), "/hot_restart_status").await {
                let doc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if let Some(pid) = doc["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                    if !guard.1.contains(&pid) {
                        guard.1.push(pid);
                    }
                }
                if doc["epoch"] == epoch && doc["phase"] == "serving" {
                    break;
                }
            }
            assert!(
                Instant::now() < until,
                "epoch {epoch} not serving\n{}",
                stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(get(local(listen), "/x").await.status, 200);
    }
    signal(py, Signal::SIGTERM);
    let st = guard
        .0
        .as_mut()
        .and_then(|c| wait_exit(c, Duration::from_secs(15)));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", stderr());
    for pid in &guard.1 {
        assert!(!alive(*pid), "pid {pid} still alive");
    }
    assert!(!shm_path(id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_base_id_is_passed_to_later_epochs() {
    let echo = Upstream::echo("e").await;
    let id_file = TempDir::new("dynamic-id");
    let path = id_file.file("base_id");
    let path_arg = path.display().to_string();
    let mut chain = Chain::start_with_id(
        &config(&echo),
        &[],
        &["--use-dynamic-base-id", "--base-id-path", &path_arg],
        &[],
        |id| {
            // Taken: the chain must choose another id, and later epochs must be told it.
            std::fs::write(shm_path(id), b"").expect("placeholder region");
        },
    );
    let taken = chain.base_id;
    struct Placeholder(u32);
    impl Drop for Placeholder {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(shm_path(self.0));
        }
    }
    let _placeholder = Placeholder(taken);
    let until = Instant::now() + Duration::from_secs(15);
    let chosen: u32 = loop {
        if let Some(id) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break id;
        }
        assert!(
            Instant::now() < until,
            "no base id written\n{}",
            chain.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The harness addresses the chain by the id it was started from; the chosen one is what
    // names the region and the sockets.
    assert_ne!(chosen, taken);
    chain.base_id = chosen;
    chain.wait_serving_epoch(0, true).await;
    for epoch in 1..=2 {
        let (code, _, err) = chain.reload();
        assert_eq!(code, Some(0), "{err}\n{}", chain.stderr());
        chain.wait_serving_epoch(epoch, true).await;
    }
    assert_eq!(get(local(chain.listen), "/x").await.status, 200);
    signal(chain.pid(), Signal::SIGTERM);
    let st = chain.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", chain.stderr());
    assert!(!shm_path(chosen).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_does_not_depend_on_the_log_level() {
    // With `-l error` the child never logs "baton is serving": readiness comes from its
    // READY=1 datagram to the socket the restarter names in BATON_READY_SOCKET.
    let echo = Upstream::echo("e").await;
    let chain = Chain::start(&config(&echo), &[], &["-l", "error"], &[]);
    chain.wait_serving_epoch(0, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_killed_inside_the_rollback_window_rolls_back_then_a_reload_succeeds() {
    let echo = Upstream::echo("e").await;
    let chain = Chain::start(&config(&echo), &[], &["--rollback-window-s", "30"], &[]);
    chain.wait_serving_epoch(0, true).await;
    let (code, _, err) = chain.reload();
    assert_eq!(code, Some(0), "{err}\n{}", chain.stderr());
    let doc = chain.wait_serving_epoch(1, false).await;
    let new = doc["generations"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["epoch"] == 1))
        .and_then(|g| g["pid"].as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    signal(new, Signal::SIGKILL);
    let doc = chain
        .wait_status("the rollback reported", 15, |d| {
            d["restarter"]["restarts"]["rolled_back"] == 1
                && d["restarter"]["last_failure"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("rolled back: "))
        })
        .await;
    let reason = doc["restarter"]["last_failure"]["reason"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("killed by signal 9"), "{doc}");
    assert_eq!(doc["restarter"]["next_epoch"], 1, "{doc}");
    chain.wait_serving_epoch(0, true).await;
    assert_eq!(get(local(chain.listen), "/again").await.status, 200);

    // The next restart takes over from epoch 0 again, as epoch 1.
    let (code, out, err) = chain.reload();
    assert_eq!(code, Some(0), "{err}\n{}", chain.stderr());
    assert!(out.contains("epoch 1"), "{out}");
    chain.wait_serving_epoch(1, false).await;
    assert_eq!(get(local(chain.listen), "/next").await.status, 200);
}

/// An operator rollback under the restarter (`baton rollback`, which signals the newest
/// generation): epoch 1 gives way and exits 1, epoch 0 serves again, and the restarter counts
/// the rollback with the reason the generation gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rollback_through_the_restarter_is_counted() {
    let echo = Upstream::echo("e").await;
    let chain = Chain::start(&config(&echo), &[], &["--rollback-window-s", "30"], &[]);
    chain.wait_serving_epoch(0, true).await;
    let (code, _, err) = chain.reload();
    assert_eq!(code, Some(0), "{err}\n{}", chain.stderr());
    chain.wait_serving_epoch(1, false).await;
    let (st, out, err) = run_baton(&["rollback", "--base-id", &chain.base_id.to_string()]);
    assert_eq!(st.code(), Some(0), "{out}{err}\n{}", chain.stderr());
    let doc = chain
        .wait_status("the rollback", 15, |d| {
            d["restarter"]["restarts"]["rolled_back"] == 1
                && d["restarter"]["last_failure"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("exited with status 1"))
        })
        .await;
    let reason = doc["restarter"]["last_failure"]["reason"].to_string();
    assert!(
        reason.contains("gave way (SIGUSR2 (baton rollback)) and exited with status 1"),
        "{reason}"
    );
    assert_eq!(doc["restarter"]["next_epoch"], 1, "{doc}");
}
