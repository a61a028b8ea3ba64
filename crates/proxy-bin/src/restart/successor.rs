//! Watching the next generation through the rollback window: a pidfd, readable once that
//! process has exited (whoever its parent is, and whether or not it has been reaped), so the
//! old generation learns of the death at once and without polling its pid.
//!
//! The pidfd is opened by the parent side when the child asks this generation to drain: the
//! child is then blocked on that request, so its pid (from SO_PEERCRED, not from what it says)
//! names it. The old generation is not the child's parent and cannot `waitid` it; its exit
//! status is read, best effort, from `/proc/<pid>/stat` while it is a zombie.
//!
//! The one module of the binary allowed `unsafe` code: registering the pidfd with tokio's
//! reactor (`AsyncFd::register_with_interest`) is an `unsafe fn` whose contract is about fd
//! ownership, upheld here by moving the `OwnedFd` into it.

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// The next generation, identified by a pidfd. Holds the fd until dropped.
#[derive(Debug)]
pub struct Successor {
    pub pid: u32,
    pub epoch: u32,
    pidfd: OwnedFd,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`), to tell its zombie from a
    /// later process given the same pid.
    start_ticks: Option<u64>,
}

/// A [`Successor`] registered with the runtime, waited on by the main loop.
#[derive(Debug)]
pub struct Watched {
    pub pid: u32,
    pub epoch: u32,
    fd: AsyncFd<OwnedFd>,
    start_ticks: Option<u64>,
}

// === impl Successor ===

impl Successor {
    /// Open a pidfd on `pid`, the child of generation `epoch`.
    pub fn open(pid: u32, epoch: u32) -> std::io::Result<Self> {
        let raw = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| std::io::Error::other(format!("not a process id: {pid}")))?;
        let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())?;
        Ok(Self {
            pid,
            epoch,
            pidfd,
            start_ticks: proc_stat(pid).and_then(|s| s.start_ticks),
        })
    }

    /// Register the pidfd with the current tokio runtime.
    pub fn watch(self) -> std::io::Result<Watched> {
        Ok(Watched {
            pid: self.pid,
            epoch: self.epoch,
            // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which owns it from here on:
            // nothing else can close it, and its `as_raw_fd` returns that same open pidfd until
            // the `AsyncFd` is dropped (which deregisters, then closes it).
            fd: unsafe {
                AsyncFd::register_with_interest(self.pidfd, tokio::io::Interest::READABLE)
            }
            .map_err(std::io::Error::from)?,
            start_ticks: self.start_ticks,
        })
    }
}

// === impl Watched ===

impl Watched {
    /// Wait until the process has exited; how it did, as far as can be told
    /// (`status 1`, `signal 9 (SIGKILL)`, or unknown once its own parent has reaped it).
    pub async fn exited(&self) -> String {
        match self.fd.readable().await {
            // The pidfd stays readable: the guard is dropped without clearing readiness.
            Ok(_guard) => self.describe(),
            Err(e) => format!("an unknown status (could not wait on its pidfd: {e})"),
        }
    }

    fn describe(&self) -> String {
        let stat = proc_stat(self.pid)
            .filter(|s| s.zombie && s.start_ticks.is_some() && s.start_ticks == self.start_ticks);
        match stat.and_then(|s| s.exit_code) {
            Some(code) => describe_wait_status(code),
            None => "an unknown status (already reaped by its parent)".to_owned(),
        }
    }
}

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcStat {
    zombie: bool,
    start_ticks: Option<u64>,
    /// The wait status of a zombie (field 52).
    exit_code: Option<i32>,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat(&text))
}

/// Parses a `/proc/<pid>/stat` line: the fields after the parenthesised command name start at
/// field 3 (the state).
fn parse_stat(text: &str) -> ProcStat {
    let rest: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| rest.get(n - 3).copied();
    ProcStat {
        zombie: field(3) == Some("Z"),
        start_ticks: field(22).and_then(|v| v.parse().ok()),
        exit_code: field(52).and_then(|v| v.parse().ok()),
    }
}

/// A wait status as people read it.
fn describe_wait_status(code: i32) -> String {
    let signal = code & 0x7f;
    if signal == 0 {
        return format!("status {}", (code >> 8) & 0xff);
    }
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("signal {signal} ({})", s.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_and_wait_statuses_read_as_people_say_them() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "Z".to_owned();
        fields[22 - 3] = "4242".to_owned();
        fields[52 - 3] = "9".to_owned();
        let line = format!("77 (baton (x) y) {}", fields.join(" "));
        assert_eq!(
            parse_stat(&line),
            ProcStat {
                zombie: true,
                start_ticks: Some(4242),
                exit_code: Some(9),
            }
        );
        assert!(!parse_stat("77 (baton) S 1").zombie);
        assert_eq!(describe_wait_status(9), "signal 9 (SIGKILL)");
        assert_eq!(describe_wait_status(1 << 8), "status 1");
        assert_eq!(describe_wait_status(0), "status 0");
    }

    #[tokio::test]
    async fn a_child_that_exits_is_seen_through_its_pidfd() -> std::io::Result<()> {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()?;
        let watched = Successor::open(child.id(), 1)?.watch()?;
        // Not reaped yet: its zombie tells the status.
        let how = tokio::time::timeout(std::time::Duration::from_secs(10), watched.exited())
            .await
            .map_err(std::io::Error::other)?;
        assert_eq!(how, "status 3");
        child.wait()?;
        assert!(watched.describe().contains("already reaped"));
        Ok(())
    }
}
