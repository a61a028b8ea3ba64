//! One generation as the restarter sees it: the `baton` child process it started, its stderr
//! (forwarded line by line to the restarter's own stderr, with the last lines kept for failure
//! reports), readiness, and its exit.
//!
//! Readiness arrives as a `READY=1` datagram on a socket the restarter binds for each child and
//! names in the child's environment ([`READY_SOCKET_ENV`]): the child sends it when its
//! lifecycle phase becomes `serving`, whatever its log level or log file. Log lines are only
//! forwarded, never interpreted.
//!
//! Each child has one task that reads its stderr to the end and only then reaps it, so the
//! supervisor always sees `Serving` before `Exited` for the same child.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// The environment variable naming the abstract datagram socket a child sends `READY=1` to
/// once its phase is `serving` (see `serve`).
pub const READY_SOCKET_ENV: &str = "BATON_READY_SOCKET";
/// Lines of a child's stderr kept for its failure report.
const TAIL_LINES: usize = 40;
/// Longest line kept in the tail (a line is still forwarded whole).
const TAIL_LINE_BYTES: usize = 4096;

/// The last lines a child wrote to stderr.
pub type Tail = Arc<Mutex<VecDeque<String>>>;

/// What happened to a child.
#[derive(Debug)]
pub enum ChildEvent {
    /// It reported that it serves (first, or again after a rollback).
    Serving { pid: u32 },
    /// It exited (`status` describes how).
    Exited { pid: u32, status: ExitStatus },
}

/// A generation the restarter started and has not yet seen exit.
/// Where a child is, as the restarter sees it from outside (its own view, which it may not have
/// reported yet, is its lifecycle phase at `/hot_restart_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildPhase {
    /// Started, not yet reported serving.
    Starting,
    /// Reported `READY=1`.
    Serving,
    /// A newer generation serves; this one drains.
    Draining,
    /// Sent SIGTERM by a stopping restarter.
    Stopping,
}

#[derive(Debug)]
pub struct Generation {
    pub epoch: u32,
    pub pid: u32,
    /// Each phase it went through, oldest first.
    pub phases: Vec<(ChildPhase, SystemTime)>,
    pub tail: Tail,
    /// When a newer generation took over and this one started draining.
    pub drain_started: Option<SystemTime>,
}

// === impl ChildPhase ===

impl ChildPhase {
    /// The name `baton status` shows.
    pub fn name(self) -> &'static str {
        match self {
            ChildPhase::Starting => "starting",
            ChildPhase::Serving => "serving",
            ChildPhase::Draining => "draining",
            ChildPhase::Stopping => "stopping",
        }
    }
}

// === impl Generation ===

impl Generation {
    pub fn phase(&self) -> ChildPhase {
        self.phases.last().map_or(ChildPhase::Starting, |p| p.0)
    }

    pub fn enter(&mut self, phase: ChildPhase) {
        if self.phase() != phase || self.phases.is_empty() {
            self.phases.push((phase, SystemTime::now()));
        }
    }
}

/// Starts `program args...` as generation `epoch` (`--restart-epoch` and `RESTART_EPOCH` set),
/// stdin closed, stdout shared, stderr watched. Events about it arrive on `events`.
pub fn spawn(
    program: &OsString,
    args: &[OsString],
    epoch: u32,
    events: mpsc::UnboundedSender<ChildEvent>,
) -> std::io::Result<Generation> {
    let ready_name = format!(
        "baton_ready_{}_{epoch}_{}",
        std::process::id(),
        READY_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let ready = {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(ready_name.as_bytes())?;
        let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        sock.set_nonblocking(true)?;
        tokio::net::UnixDatagram::from_std(sock)?
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg("--restart-epoch")
        .arg(epoch.to_string())
        .env("RESTART_EPOCH", epoch.to_string())
        .env(READY_SOCKET_ENV, &ready_name)
        // The restarter is the service's main process: children must not talk to systemd.
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the child exited before its pid was known"))?;
    let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let stderr = child.stderr.take();
    let task_tail = tail.clone();
    tokio::spawn(async move {
        if let Some(stderr) = stderr {
            watch_stderr(stderr, ready, pid, &task_tail, &events).await;
        }
        let status = match child.wait().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(pid, "could not wait for the child: {e}");
                return;
            }
        };
        let _ = events.send(ChildEvent::Exited { pid, status });
    });
    Ok(Generation {
        epoch,
        pid,
        phases: vec![(ChildPhase::Starting, SystemTime::now())],
        tail,
        drain_started: None,
    })
}

/// Distinguishes the ready sockets of one restarter's children.
static READY_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why a generation gave way to its predecessor (`POST /rollback`, `baton rollback`, its health
/// gate), from its last log lines.
pub fn gave_way_reason(tail: &[String]) -> Option<String> {
    const SAID: &str = "gave way to the previous one (";
    tail.iter().rev().find_map(|line| {
        let (_, rest) = line.split_once(SAID)?;
        let end = rest.rfind(')')?;
        Some(rest[..end].to_owned())
    })
}

fn is_ready_datagram(d: &[u8]) -> bool {
    d.split(|b| *b == b'\n' || *b == b' ')
        .any(|f| f == b"READY=1")
}

async fn watch_stderr(
    stderr: tokio::process::ChildStderr,
    ready: tokio::net::UnixDatagram,
    pid: u32,
    tail: &Tail,
    events: &mpsc::UnboundedSender<ChildEvent>,
) {
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut out = tokio::io::stderr();
    let mut buf = Vec::new();
    let mut dgram = [0u8; 256];
    let mut serving = false;
    loop {
        buf.clear();
        tokio::select! {
            r = reader.read_until(b'\n', &mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            // Again after the first: a generation that rolled back (its successor died inside
            // its rollback window) serves again.
            r = ready.recv(&mut dgram) => {
                if let Ok(n) = r {
                    if is_ready_datagram(&dgram[..n]) {
                        serving = true;
                        let _ = events.send(ChildEvent::Serving { pid });
                    }
                }
                continue;
            }
        }
        // Forwarding is best effort: a closed stderr must not stop the watch.
        let _ = out.write_all(&buf).await;
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        let mut kept = tail.lock();
        if kept.len() == TAIL_LINES {
            kept.pop_front();
        }
        kept.push_back(truncate(line, TAIL_LINE_BYTES));
    }
    // A child that served and exited at once: its datagram is still queued.
    if !serving {
        if let Ok(n) = ready.try_recv(&mut dgram) {
            if is_ready_datagram(&dgram[..n]) {
                let _ = events.send(ChildEvent::Serving { pid });
            }
        }
    }
    let _ = out.flush().await;
}

fn truncate(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

/// Why a child that never served stopped: its `baton: error:` lines (the reason `main`
/// prints), or else its last few lines, after how it exited.
pub fn failure_reason(epoch: u32, pid: u32, status: &ExitStatus, tail: &[String]) -> String {
    let errors: Vec<&str> = tail
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("baton: error:"))
        .collect();
    let shown: Vec<&str> = if errors.is_empty() {
        let from = tail.len().saturating_sub(5);
        tail[from..].iter().map(String::as_str).collect()
    } else {
        errors
    };
    let mut reason = format!(
        "epoch {epoch} (pid {pid}) {} before serving",
        describe(status)
    );
    if shown.is_empty() {
        reason.push_str(" (it wrote nothing to stderr)");
    } else {
        reason.push_str(":\n");
        reason.push_str(&shown.join("\n"));
    }
    reason
}

/// "exited with status 1", "was killed by signal 9".
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "exited".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn a_generation_that_gave_way_says_why() {
        let tail = vec![
            "... INFO draining".to_owned(),
            "... ERROR rolled back: this generation gave way to the previous one (health gate: \
             90.0% of the 30 requests answered (x))"
                .to_owned(),
        ];
        assert_eq!(
            gave_way_reason(&tail).as_deref(),
            Some("health gate: 90.0% of the 30 requests answered (x)")
        );
        assert_eq!(gave_way_reason(&["exited".to_owned()]), None);
    }

    #[test]
    fn reasons_prefer_the_error_lines() {
        let tail = vec![
            "2026-01-01T00:00:00Z  INFO baton: restart phase".to_owned(),
            "baton: error: static_resources.clusters[0].name: missing field".to_owned(),
        ];
        let r = failure_reason(3, 99, &ExitStatus::from_raw(1 << 8), &tail);
        assert_eq!(
            r,
            "epoch 3 (pid 99) exited with status 1 before serving:\n\
             baton: error: static_resources.clusters[0].name: missing field"
        );
        let r = failure_reason(3, 99, &ExitStatus::from_raw(9), &[]);
        assert_eq!(
            r,
            "epoch 3 (pid 99) was killed by signal 9 before serving (it wrote nothing to stderr)"
        );
        assert_eq!(truncate("ééé", 3), "é...");
    }
}
