//! The restarter's state machine: the generations it runs, the one restart attempt in progress
//! (at most one: requests arriving meanwhile are queued and coalesced), signals, control
//! requests, service manager notifications, and the exit status.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::SystemTime;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::control::{self, Command, ControlListener, ReloadReply};
use super::generation::{self, ChildEvent, ChildPhase, Generation};
use super::notify::{self, Notifier};
use super::Settings;

type Waiter = oneshot::Sender<ReloadReply>;

/// The generation being started and who waits for it.
#[derive(Debug)]
struct Attempt {
    epoch: u32,
    pid: u32,
    deadline: Instant,
    waiters: Vec<Waiter>,
    /// Set when the start timeout killed it: the reason to report instead of its exit.
    timed_out: Option<String>,
}

/// A serving generation that died without being asked to stop: the reason of a rollback, if
/// its parent serves again.
#[derive(Debug)]
struct Died {
    epoch: u32,
    pid: u32,
    how: String,
}

#[derive(Debug)]
struct Failure {
    epoch: u32,
    pid: Option<u32>,
    reason: String,
    at: SystemTime,
}

#[derive(Debug)]
struct Supervisor {
    s: Settings,
    gens: Vec<Generation>,
    attempt: Option<Attempt>,
    /// A restart asked for while another was in progress, with everyone waiting for it.
    queued: Option<Vec<Waiter>>,
    next_epoch: u32,
    served_once: bool,
    succeeded: u64,
    failed: u64,
    last_failure: Option<Failure>,
    /// Times a draining generation served again because its successor died.
    rollbacks: u64,
    /// The last serving generation that died, until its parent rolls back (or not).
    died: Option<Died>,
    /// A generation that rolled back before its successor's exit was seen: (epoch, pid).
    rolled_back: Option<(u32, u32)>,
    /// When SIGKILL follows the SIGTERM sent to every generation.
    stopping: Option<Instant>,
    killed: bool,
    /// A serving generation died with a failure status (not asked to stop).
    unclean: bool,
    last_exit_clean: bool,
    notify: Notifier,
    events: mpsc::UnboundedSender<ChildEvent>,
    commands: mpsc::UnboundedSender<Command>,
    control_bound: bool,
}

/// Run the chain until no generation is left.
pub fn run(settings: Settings) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton restarter: error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run_async(settings))
}

async fn run_async(s: Settings) -> ExitCode {
    let mut sigs = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("could not handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    let mut sup = Supervisor {
        s,
        gens: Vec::new(),
        attempt: None,
        queued: None,
        next_epoch: 0,
        served_once: false,
        succeeded: 0,
        failed: 0,
        last_failure: None,
        rollbacks: 0,
        died: None,
        rolled_back: None,
        stopping: None,
        killed: false,
        unclean: false,
        last_exit_clean: false,
        notify: Notifier::from_env(),
        events: events_tx,
        commands: commands_tx,
        control_bound: false,
    };
    // A second restarter for the same chain fails here, before starting anything.
    if sup.s.base_id.is_some() || sup.s.socket_path.is_some() {
        if let Err(e) = sup.bind_control() {
            tracing::error!("{e}");
            eprintln!("baton restarter: error: {e}");
            return ExitCode::FAILURE;
        }
    }
    if sup.notify.enabled() {
        tracing::info!("NOTIFY_SOCKET is set: reporting to the service manager");
    }
    sup.notify.send(&[
        ("MAINPID", std::process::id().to_string()),
        ("STATUS", "starting epoch 0".to_owned()),
    ]);
    sup.start_next(Vec::new());
    while !sup.gens.is_empty() {
        let attempt_deadline = sup
            .attempt
            .as_ref()
            .filter(|a| a.timed_out.is_none())
            .map(|a| a.deadline);
        let kill_deadline = sup.stopping.filter(|_| !sup.killed);
        tokio::select! {
            Some(ev) = events.recv() => sup.on_child(ev),
            Some(cmd) = commands.recv() => match cmd {
                Command::Reload(w) => sup.request_restart(Some(w), "baton reload"),
                Command::Status(r) => { let _ = r.send(sup.status()); }
            },
            _ = sigs.hup.recv() => sup.request_restart(None, "SIGHUP"),
            _ = sigs.term.recv() => sup.stop("SIGTERM"),
            _ = sigs.int.recv() => sup.stop("SIGINT"),
            _ = sigs.usr1.recv() => sup.signal_all(Signal::SIGUSR1),
            _ = sleep_until(attempt_deadline) => sup.attempt_timed_out(),
            _ = sleep_until(kill_deadline) => sup.kill_all(),
        }
    }
    sup.finish()
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn send_signal(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(e) = kill(Pid::from_raw(raw), sig) {
        tracing::debug!(pid, ?sig, "could not signal: {e}");
    }
}

impl Supervisor {
    fn bind_control(&mut self) -> Result<(), control::ControlError> {
        let base_id = self.s.base_id.unwrap_or(0);
        let address = control::address(self.s.socket_path.as_deref(), base_id);
        let listener = ControlListener::bind(&address)?;
        tracing::info!(address = listener.address(), "control socket listening");
        tokio::spawn(listener.serve(self.commands.clone()));
        self.control_bound = true;
        Ok(())
    }

    fn serving(&self) -> Option<&Generation> {
        self.gens
            .iter()
            .rev()
            .find(|g| g.phase() == ChildPhase::Serving)
    }

    /// Start generation `next_epoch` for `waiters`.
    fn start_next(&mut self, waiters: Vec<Waiter>) {
        if self.stopping.is_some() {
            reply_all(waiters, &ReloadReply::failed("the restarter is stopping"));
            return;
        }
        let epoch = self.next_epoch;
        let mut args = match self.s.args_for(epoch) {
            Ok(a) => a,
            Err(reason) => return self.fail(epoch, None, reason, waiters),
        };
        if epoch > 0 && !self.gens.iter().any(|g| g.epoch + 1 == epoch) {
            // The generation to take over from has gone: start this one cold rather than fail.
            args.push("--skip-hot-restart-on-no-parent".into());
        }
        if self.served_once {
            self.notify.send(&[
                ("RELOADING", "1".to_owned()),
                ("MONOTONIC_USEC", notify::monotonic_usec().to_string()),
                ("STATUS", format!("restarting: starting epoch {epoch}")),
            ]);
        }
        match generation::spawn(&self.s.program, &args, epoch, self.events.clone()) {
            Ok(g) => {
                tracing::info!(epoch, pid = g.pid, "starting a new generation");
                self.attempt = Some(Attempt {
                    epoch,
                    pid: g.pid,
                    deadline: Instant::now() + self.s.start_timeout,
                    waiters,
                    timed_out: None,
                });
                self.gens.push(g);
            }
            Err(e) => {
                let reason = format!(
                    "could not run {}: {e}",
                    std::path::Path::new(&self.s.program).display()
                );
                self.fail(epoch, None, reason, waiters);
            }
        }
    }

    /// A restart attempt failed: the serving generation (if any) carries on.
    fn fail(&mut self, epoch: u32, pid: Option<u32>, reason: String, waiters: Vec<Waiter>) {
        self.failed += 1;
        tracing::error!(epoch, failures = self.failed, "restart failed: {reason}");
        reply_all(waiters, &ReloadReply::failed(reason.clone()));
        let status = match self.serving() {
            Some(g) => format!(
                "serving epoch {} (pid {}); starting epoch {epoch} failed",
                g.epoch, g.pid
            ),
            None => format!("not serving; starting epoch {epoch} failed"),
        };
        if self.served_once {
            self.notify
                .send(&[("READY", "1".to_owned()), ("STATUS", status)]);
        }
        self.last_failure = Some(Failure {
            epoch,
            pid,
            reason,
            at: SystemTime::now(),
        });
        if let Some(q) = self.queued.take() {
            self.start_next(q);
        }
    }

    fn request_restart(&mut self, waiter: Option<Waiter>, by: &str) {
        if self.stopping.is_some() {
            if let Some(w) = waiter {
                let _ = w.send(ReloadReply::failed("the restarter is stopping"));
            }
            tracing::info!("{by} ignored: stopping");
            return;
        }
        if let Some(a) = &self.attempt {
            tracing::info!(
                starting = a.epoch,
                "{by}: queued behind the restart in progress"
            );
            self.queued.get_or_insert_with(Vec::new).extend(waiter);
            return;
        }
        tracing::info!(epoch = self.next_epoch, "{by}: restarting");
        self.start_next(waiter.into_iter().collect());
    }

    fn on_child(&mut self, ev: ChildEvent) {
        match ev {
            ChildEvent::Serving { pid } => self.on_serving(pid),
            ChildEvent::Exited { pid, status } => self.on_exit(pid, status),
        }
    }

    fn on_serving(&mut self, pid: u32) {
        let mut again = false;
        if let Some(g) = self.gens.iter_mut().find(|g| g.pid == pid) {
            again = g.phase() == ChildPhase::Draining;
            g.enter(ChildPhase::Serving);
        }
        if again {
            return self.on_rolled_back(pid);
        }
        let Some(a) = self.attempt.take_if(|a| a.pid == pid) else {
            return;
        };
        let now = SystemTime::now();
        for g in self.gens.iter_mut().filter(|g| g.pid != pid) {
            if g.phase() == ChildPhase::Serving {
                g.enter(ChildPhase::Draining);
                g.drain_started = Some(now);
            }
        }
        if self.served_once {
            self.succeeded += 1;
        }
        self.next_epoch = a.epoch.saturating_add(1);
        if self.s.base_id.is_none() {
            self.learn_base_id();
        }
        tracing::info!(epoch = a.epoch, pid, "the new generation serves");
        reply_all(a.waiters, &ReloadReply::served(a.epoch, pid));
        let mut fields = vec![
            ("READY", "1".to_owned()),
            ("STATUS", format!("serving epoch {} (pid {pid})", a.epoch)),
        ];
        if !self.served_once {
            fields.push(("MAINPID", std::process::id().to_string()));
        }
        self.served_once = true;
        self.notify.send(&fields);
        if let Some(q) = self.queued.take() {
            self.start_next(q);
        }
    }

    /// A draining generation serves again: its successor died inside its rollback window. The
    /// next restart takes over from it, with the epoch the dead one had.
    fn on_rolled_back(&mut self, pid: u32) {
        let Some(g) = self.gens.iter_mut().find(|g| g.pid == pid) else {
            return;
        };
        g.drain_started = None;
        let epoch = g.epoch;
        self.next_epoch = epoch.saturating_add(1);
        self.rollbacks += 1;
        match self.died.take() {
            Some(d) if d.epoch == epoch.saturating_add(1) => self.report_rollback(epoch, pid, &d),
            _ => self.rolled_back = Some((epoch, pid)),
        }
    }

    /// Say why generation `epoch` (`pid`) serves again: `d` died.
    fn report_rollback(&mut self, epoch: u32, pid: u32, d: &Died) {
        let reason = format!(
            "rolled back: epoch {} (pid {}) {}; epoch {epoch} (pid {pid}) serves again",
            d.epoch, d.pid, d.how
        );
        tracing::warn!("{reason}");
        self.notify.send(&[
            ("READY", "1".to_owned()),
            (
                "STATUS",
                format!("serving epoch {epoch} (pid {pid}) after a rollback"),
            ),
        ]);
        self.last_failure = Some(Failure {
            epoch: d.epoch,
            pid: Some(d.pid),
            reason,
            at: SystemTime::now(),
        });
    }

    /// With `--use-dynamic-base-id`: read the id epoch 0 chose, and open the control socket
    /// named from it.
    fn learn_base_id(&mut self) {
        let Some(path) = self.s.dynamic_base_id_path.clone() else {
            return;
        };
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| t.trim().parse::<u32>().map_err(|e| e.to_string()))
        {
            Ok(id) => {
                tracing::info!(base_id = id, "epoch 0 chose its base id");
                self.s.base_id = Some(id);
                if !self.control_bound {
                    if let Err(e) = self.bind_control() {
                        tracing::error!("{e}");
                    }
                }
            }
            Err(e) => tracing::error!(
                path = %path.display(),
                "could not read the base id epoch 0 chose; restarts are impossible: {e}"
            ),
        }
    }

    fn on_exit(&mut self, pid: u32, status: std::process::ExitStatus) {
        let Some(i) = self.gens.iter().position(|g| g.pid == pid) else {
            return;
        };
        let g = self.gens.remove(i);
        self.last_exit_clean = status.success();
        if let Some(a) = self.attempt.take_if(|a| a.pid == pid) {
            let tail: Vec<String> = g.tail.lock().iter().cloned().collect();
            let reason = a
                .timed_out
                .unwrap_or_else(|| generation::failure_reason(a.epoch, pid, &status, &tail));
            self.fail(a.epoch, Some(pid), reason, a.waiters);
            return;
        }
        let how = generation::describe(&status);
        if self.stopping.is_none() && g.phase() == ChildPhase::Serving {
            let tail: Vec<String> = g.tail.lock().iter().cloned().collect();
            let d = Died {
                epoch: g.epoch,
                pid,
                how: match generation::gave_way_reason(&tail) {
                    Some(why) => format!("gave way ({why}) and {how}"),
                    None => how.clone(),
                },
            };
            match self.rolled_back.take() {
                Some((e, p)) if e.saturating_add(1) == g.epoch => self.report_rollback(e, p, &d),
                other => {
                    self.rolled_back = other;
                    self.died = Some(d);
                }
            }
        }
        if self.stopping.is_none() && !status.success() && g.phase() == ChildPhase::Serving {
            self.unclean = true;
            tracing::error!(epoch = g.epoch, pid, "the serving generation {how}");
            self.notify
                .send(&[("STATUS", format!("not serving: epoch {} {how}", g.epoch))]);
        } else {
            tracing::info!(
                epoch = g.epoch,
                pid,
                phase = g.phase().name(),
                "generation {how}"
            );
        }
    }

    fn attempt_timed_out(&mut self) {
        let timeout = self.s.start_timeout;
        if let Some(a) = self.attempt.as_mut() {
            let reason = format!(
                "epoch {} (pid {}) did not serve within {} s (--start-timeout); killed it",
                a.epoch,
                a.pid,
                timeout.as_secs()
            );
            tracing::warn!("{reason}");
            a.timed_out = Some(reason);
            send_signal(a.pid, Signal::SIGKILL);
        }
    }

    fn stop(&mut self, by: &str) {
        if self.stopping.is_some() {
            tracing::info!("{by}: already stopping");
            return;
        }
        tracing::info!(
            generations = self.gens.len(),
            term_timeout_s = self.s.term_timeout.as_secs(),
            "{by}: stopping every generation"
        );
        self.stopping = Some(Instant::now() + self.s.term_timeout);
        self.notify.send(&[
            ("STOPPING", "1".to_owned()),
            ("STATUS", "stopping".to_owned()),
        ]);
        if let Some(a) = self.attempt.as_mut() {
            reply_all(
                std::mem::take(&mut a.waiters),
                &ReloadReply::failed("the restarter is stopping"),
            );
        }
        if let Some(q) = self.queued.take() {
            reply_all(q, &ReloadReply::failed("the restarter is stopping"));
        }
        for g in &mut self.gens {
            g.enter(ChildPhase::Stopping);
        }
        self.signal_all(Signal::SIGTERM);
    }

    fn kill_all(&mut self) {
        self.killed = true;
        for g in &self.gens {
            tracing::warn!(
                epoch = g.epoch,
                pid = g.pid,
                "still running after --term-timeout: SIGKILL"
            );
            send_signal(g.pid, Signal::SIGKILL);
        }
    }

    fn signal_all(&self, sig: Signal) {
        for g in &self.gens {
            send_signal(g.pid, sig);
        }
    }

    /// The restarter's view of the chain (`baton status`).
    fn status(&self) -> Value {
        let conns = self.connections_by_epoch();
        let state = if self.stopping.is_some() {
            "stopping"
        } else if self.attempt.is_some() && !self.served_once {
            "starting"
        } else if self.attempt.is_some() {
            "restarting"
        } else if self.serving().is_some() {
            "serving"
        } else {
            "not_serving"
        };
        let generations: Vec<Value> = self
            .gens
            .iter()
            .map(|g| {
                json!({
                    "epoch": g.epoch,
                    "pid": g.pid,
                    "phase": g.phase().name(),
                    "phases": g.phases.iter()
                        .map(|(p, at)| json!({"phase": p.name(), "at_unix_ms": unix_ms(*at)}))
                        .collect::<Vec<_>>(),
                    "connections_left": conns.get(&g.epoch),
                    "drain": g.drain_started.map(|at| json!({
                        "started_unix_ms": unix_ms(at),
                        "deadline_unix_ms": unix_ms(at + self.s.parent_shutdown_time),
                    })),
                    "last_failure": self.last_failure.as_ref()
                        .filter(|f| f.epoch == g.epoch && f.pid == Some(g.pid))
                        .map(|f| f.reason.clone()),
                })
            })
            .collect();
        json!({
            "source": "restarter",
            "serving": self.serving().is_some(),
            "restarter": {
                "pid": std::process::id(),
                "base_id": self.s.base_id,
                "state": state,
                "next_epoch": self.next_epoch,
                "restart_queued": self.queued.is_some(),
                "restarts": {
                    "succeeded": self.succeeded,
                    "failed": self.failed,
                    "rolled_back": self.rollbacks,
                },
                "last_failure": self.last_failure.as_ref().map(|f| json!({
                    "epoch": f.epoch,
                    "pid": f.pid,
                    "reason": f.reason,
                    "at_unix_ms": unix_ms(f.at),
                })),
            },
            "generations": generations,
        })
    }

    /// Open data-plane connections per epoch, from the stats region's per-generation shares of
    /// `listener.<address>.downstream_cx_active`.
    fn connections_by_epoch(&self) -> HashMap<u32, i64> {
        let mut out = HashMap::new();
        let Some(view) = self
            .s
            .backing()
            .and_then(|b| shm_stats::RegionView::open(&b).ok())
        else {
            return out;
        };
        for stat in view.read().stats {
            if stat.name.starts_with("listener.") && stat.name.ends_with(".downstream_cx_active") {
                for (epoch, v) in stat.shares {
                    *out.entry(epoch).or_insert(0) += v;
                }
            }
        }
        out
    }

    /// Every generation has exited: clean up and say how it went.
    fn finish(self) -> ExitCode {
        if let Some(backing) = self.s.backing() {
            remove_dead_region(&backing);
        }
        let clean = self.served_once && !self.unclean && !self.killed && self.last_exit_clean;
        tracing::info!(
            clean,
            restarts_succeeded = self.succeeded,
            restarts_failed = self.failed,
            "no generation left; exiting"
        );
        if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn reply_all(waiters: Vec<Waiter>, reply: &ReloadReply) {
    for w in waiters {
        let _ = w.send(reply.clone());
    }
}

/// A generation killed with SIGKILL cannot remove the chain's stats region: once none of its
/// generations is alive, the restarter removes it.
fn remove_dead_region(backing: &shm_stats::Backing) {
    let Ok(view) = shm_stats::RegionView::open(backing) else {
        return;
    };
    if view.read().generations.iter().any(|g| g.live) {
        return;
    }
    drop(view);
    let path = backing.display();
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(region = %path, "removed the stats region left by a killed generation")
        }
        Err(e) => tracing::warn!(region = %path, "could not remove the stats region: {e}"),
    }
}
