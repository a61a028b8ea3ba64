//! The end-to-end harness: free ports, the [`Baton`] process guard (config file, spawn, readiness,
//! kill by pid on drop), configuration builders, HTTP clients and in-process upstreams.

pub mod client;
pub mod config;
pub mod grpc;
pub mod load;
pub mod restart;
pub mod tcp;
pub mod upstream;
pub mod ws;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use client::*;
pub use config::*;
pub use load::*;
pub use upstream::*;
pub use ws::*;

/// The baton binary Cargo built for this test target.
pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// How long a Baton may take to report LIVE.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A port on 127.0.0.1 nothing listens on right now (bind port 0, read it, drop the socket),
/// and never one this test process has handed out before: the kernel may give a just-dropped
/// port again, and two of them in one config (admin and listener) make Baton refuse it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..64 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no port on 127.0.0.1 that was not handed out before in 64 tries");
}

/// `127.0.0.1:<port>`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("baton-e2e-{}-{n}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A base ID no other Baton of this test run uses.
fn unique_base_id() -> u32 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (std::process::id() % 10_000) * 1_000 + n % 1_000 + 1
}

/// Run `baton` to completion with `args` (bounded by 10 s): exit status, stdout, stderr.
/// `baton --mode validate` on a rendered test configuration (placeholders filled with free
/// ports): its exit status and stderr.
pub fn validate_config(rendered: &str) -> (ExitStatus, String) {
    let text = rendered
        .replace("{{LISTEN}}", &free_port().to_string())
        .replace("{{ADMIN}}", &free_port().to_string());
    let dir = TempDir::new("validate");
    let path = dir.file("c.json");
    std::fs::write(&path, text).expect("write the configuration");
    let path = path.to_str().expect("a UTF-8 temp path");
    let (status, _, err) = run_baton(&["--mode", "validate", "-c", path]);
    (status, err)
}

pub fn run_baton(args: &[&str]) -> (ExitStatus, String, String) {
    let dir = TempDir::new("run");
    let out = std::fs::File::create(dir.file("stdout")).expect("stdout file");
    let err = std::fs::File::create(dir.file("stderr")).expect("stderr file");
    let mut child = Command::new(BATON)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn baton");
    let status = wait_exit(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("baton {args:?} did not exit within 10 s");
    });
    let stdout = std::fs::read_to_string(dir.file("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.file("stderr")).unwrap_or_default();
    (status, stdout, stderr)
}

/// Poll `child` until it exits or `within` passes.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `baton` serving a configuration written to its own temp dir. Killed (SIGKILL, by
/// pid) and reaped on drop.
#[derive(Debug)]
pub struct Baton {
    child: Option<Child>,
    dir: TempDir,
    /// The first listener's port (`{{LISTEN}}`).
    pub listen: u16,
    /// The admin port (`{{ADMIN}}`).
    pub admin: u16,
    pub config_path: PathBuf,
    /// Its `--base-id`: names its stats region, removed on drop after a SIGKILL.
    pub base_id: u32,
    /// Its `--restart-epoch` (0 unless started by [`Baton::restart`]).
    pub epoch: u32,
    /// Shared by every generation of one chain: the last one dropped removes the stats region.
    chain: std::sync::Arc<()>,
}

impl Baton {
    /// Start baton on `config` (see [`Baton::start_with`]) and wait until it is LIVE.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, &[]).await
    }

    /// Replace `{{LISTEN}}`, `{{ADMIN}}` (fresh free ports) and `{{DIR}}` (the temp dir) in
    /// `config`, write it, run `baton -c <file> --concurrency 2 --base-id <unique> <extra>`, and
    /// wait (≤ 10 s) until the admin's `/ready` says LIVE.
    pub async fn start_with(config: &str, extra: &[&str]) -> Self {
        let mut b = Self::spawn(config, extra);
        b.wait_ready().await;
        b
    }

    /// As [`Baton::start_with`] without waiting for readiness.
    pub fn spawn(config: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new("baton");
        let listen = free_port();
        let admin = free_port();
        let text = config
            .replace("{{LISTEN}}", &listen.to_string())
            .replace("{{ADMIN}}", &admin.to_string())
            .replace("{{DIR}}", &dir.path().display().to_string());
        let config_path = dir.file("baton.yaml");
        std::fs::write(&config_path, text).expect("write config");
        let out = std::fs::File::create(dir.file("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.file("stderr")).expect("stderr file");
        let base_id = unique_base_id();
        let child = Command::new(BATON)
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "2", "--base-id", &base_id.to_string()])
            .args(no_rollback_window_unless_given(extra))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn baton");
        Self {
            base_id,
            child: Some(child),
            dir,
            listen,
            admin,
            config_path,
            epoch: 0,
            chain: std::sync::Arc::new(()),
        }
    }

    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        local(self.listen)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.file("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.file("stderr")).unwrap_or_default()
    }

    /// Poll `/ready` until LIVE; panic with stderr if baton exits or 10 s pass.
    pub async fn wait_ready(&mut self) {
        let until = Instant::now() + READY_WITHIN;
        loop {
            if let Ok((200, body)) = try_get(local(self.admin), "/ready").await {
                if body.trim() == "LIVE" {
                    return;
                }
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                panic!(
                    "baton exited before becoming ready\nstderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= until {
                panic!("baton not ready within 10 s\nstderr:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET `path` on the admin interface: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        try_get(local(self.admin), path)
            .await
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// POST `path` on the admin interface: (status, body).
    pub async fn admin_post(&self, path: &str) -> (u16, String) {
        let req = http::Request::post(path)
            .header("host", "admin")
            .body(empty())
            .expect("request");
        let resp = send1(local(self.admin), req)
            .await
            .unwrap_or_else(|e| panic!("admin POST {path}: {e}"));
        (resp.status, resp.text())
    }

    /// The value of the counter or gauge `name` in `/stats`, if present.
    /// A stat as the admin interface shows it. A failed GET is tried again (≤ 2 s): right
    /// after a restart the shared admin socket may hand a connection to the generation that is
    /// closing its admin interface.
    pub async fn stat(&self, name: &str) -> Option<i64> {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            match try_get(local(self.admin), "/stats").await {
                Ok((_, body)) => return parse_stat(&body, name),
                Err(e) if Instant::now() >= until => panic!("admin GET /stats: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// This generation's `/hot_restart_status` (≤ 5 s): while its parent still accepts on the
    /// shared admin socket, an answer may come from the parent; asked again until this
    /// process answers.
    pub async fn own_status(&self) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok((200, body)) = try_get(local(self.admin), "/hot_restart_status").await {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if v["pid"] == self.pid() {
                    return v;
                }
            }
            assert!(
                Instant::now() < until,
                "epoch {} never answered its own /hot_restart_status",
                self.epoch
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait (≤ 5 s) until stat `name` equals `want`; panic with the last value otherwise. A
    /// failed GET is tried again: right after a restart the shared admin socket may still
    /// hand a connection to the generation that is closing its admin interface.
    pub async fn wait_stat(&self, name: &str, want: i64) {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let got = match try_get(local(self.admin), "/stats").await {
                Ok((_, body)) => parse_stat(&body, name),
                Err(_) => None,
            };
            if got == Some(want) {
                return;
            }
            if Instant::now() >= until {
                panic!("stat {name}: want {want}, got {got:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Send `sig` (e.g. "TERM", "USR1") to baton with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Wait (≤ `within`) for baton to exit; its status.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(s)) = child.try_wait() {
                    return Some(s);
                }
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed chain cannot remove its stats region itself; while another generation of the
        // chain is still held by the test, the region is its.
        if std::sync::Arc::strong_count(&self.chain) > 1 {
            return;
        }
        let _ = std::fs::remove_file(format!("/dev/shm/baton_{}", self.base_id));
    }
}

/// `--rollback-window-s 0` unless `extra` sets a window: most tests time the old generation's
/// exit after a restart (drain, hand-over, restart tests), which a rollback window (10 s by
/// default) would hold back; the rollback tests give theirs.
pub fn no_rollback_window_unless_given(extra: &[&str]) -> &'static [&'static str] {
    if extra.contains(&"--rollback-window-s") {
        &[]
    } else {
        &["--rollback-window-s", "0"]
    }
}

/// The value of `name` in `/stats` text (`name: value` lines).
pub fn parse_stat(body: &str, name: &str) -> Option<i64> {
    body.lines().find_map(|l| {
        let (k, v) = l.split_once(": ")?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Run `f` within `secs` seconds or panic naming `what`.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {secs} s"),
    }
}
