//! One generation's life as a type: the [`Phase`] it is in, broadcast on a tokio `watch` on
//! every transition as a [`GenerationStatus`] (the phase, when each phase began, the parent it
//! took over from, drain progress, connections received, its rollback window).
//!
//! The owner of the process (`proxy-bin`) is the only producer: it holds the [`Lifecycle`] and
//! enters each phase as its steps complete. Everything else reads: the admin interface derives
//! its Envoy state (`/ready`, `/server_info`, the `server.state` gauge) and
//! `/hot_restart_status` from the status, and the binary derives its readiness report to a
//! supervising restarter from the phase. Nothing here decides when a phase changes.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::sync::watch;

/// Where a generation is in its life. Moves forward: starting, validating, taking sockets,
/// serving, draining, (standing by,) then terminated — or failed from any of them. The one way
/// back is a rollback: a draining or standing-by generation whose successor died inside the
/// rollback window serves again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The process has parsed its command line.
    Starting,
    /// Building the stats store and the data plane from the validated configuration.
    Validating,
    /// Taking listen sockets from the parent generation or binding them, starting workers.
    TakingSockets,
    /// Every listener accepts.
    Serving,
    /// No longer accepting; open connections are finishing or moving to the next generation.
    Draining,
    /// Drained after a restart, holding its listen sockets and configuration until the rollback
    /// window ends, ready to serve again if the next generation dies.
    StandingBy,
    /// Done: drained, or ended by the next generation.
    Terminated,
    /// A step failed; the process exits non-zero.
    Failed(Failure),
}

/// Why a generation failed: the step that failed and its error, as the process reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct Failure {
    /// The step that failed.
    pub step: Step,
    /// The error with its causes (`could not …: …`).
    pub message: String,
}

/// A step of a generation's life that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Opening or creating the chain's stats region.
    OpenStats,
    /// Building the data plane from the configuration.
    BuildDataplane,
    /// Finding the parent generation and taking its listen sockets.
    TakeOver,
    /// Binding listen sockets and the hot restart socket.
    Bind,
    /// Starting the runtime, the admin interface and the workers.
    Start,
    /// Serving and draining.
    Serve,
}

/// A generation's restart status: what `/hot_restart_status` shows and `/server_info` embeds.
/// Serialized with its field names; the admin prints JSON objects with sorted keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GenerationStatus {
    /// This generation's hot restart epoch.
    pub epoch: u32,
    /// This process.
    pub pid: u32,
    /// The current phase, by name.
    pub phase: Phase,
    /// Every phase entered, oldest first.
    pub phases: Vec<Transition>,
    /// The generation this one took over from.
    pub parent: Option<Peer>,
    /// Drain progress, refreshed while draining.
    pub drain: Option<DrainProgress>,
    /// Connections taken from the parent generation.
    pub handover: Option<HandoverCounts>,
    /// The reason of the last failure.
    pub last_failure: Option<Failure>,
    /// The rollback window after a restart of this generation, and the rollbacks it made.
    pub rollback: RollbackStatus,
}

/// A generation's rollback window (`--rollback-window-s`): how long after handing over to a
/// successor it stands by to serve again, until when it does now, and its rollbacks so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RollbackStatus {
    pub window_s: u64,
    /// When the current window ends (set at cutover, cleared by a rollback).
    pub until_unix_ms: Option<u64>,
    /// Times this generation served again after its successor died.
    pub rollbacks: u64,
    /// Why the last rollback happened (`generation N exited with …`).
    pub last_reason: Option<String>,
}

/// A phase entered at a wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub phase: Phase,
    pub at_unix_ms: u64,
}

/// Another generation of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub pid: u32,
    pub epoch: u32,
}

/// How far a drain has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DrainProgress {
    pub started_unix_ms: u64,
    pub deadline_unix_ms: u64,
    pub connections_left: u64,
}

/// Connections taken from the previous generation (received) and left with it (refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HandoverCounts {
    pub connections_received: usize,
    pub connections_refused: usize,
}

/// The producer side of a generation's status: held by the process's owner (shared with the
/// threads that report progress); every change is sent to the receivers of [`Self::subscribe`].
/// The channel closes when the `Lifecycle` is dropped, at the end of the process.
#[derive(Debug)]
pub struct Lifecycle {
    tx: watch::Sender<GenerationStatus>,
}

// === impl Phase ===

impl Phase {
    /// The phase's name as `/hot_restart_status` and the logs show it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Validating => "validating",
            Phase::TakingSockets => "taking_sockets",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::StandingBy => "standing_by",
            Phase::Terminated => "terminated",
            Phase::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Phase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

// === impl Failure ===

impl Failure {
    pub fn new(step: Step, message: impl Into<String>) -> Self {
        Self {
            step,
            message: message.into(),
        }
    }
}

impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.message)
    }
}

// === impl Step ===

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::OpenStats => "open_stats",
            Step::BuildDataplane => "build_dataplane",
            Step::TakeOver => "take_over",
            Step::Bind => "bind",
            Step::Start => "start",
            Step::Serve => "serve",
        }
    }
}

// === impl GenerationStatus ===

impl GenerationStatus {
    /// A generation of `epoch` in process `pid` that has just started at `at`.
    pub fn new(epoch: u32, pid: u32, at: SystemTime) -> Self {
        Self {
            epoch,
            pid,
            phase: Phase::Starting,
            phases: vec![Transition {
                phase: Phase::Starting,
                at_unix_ms: unix_ms(at),
            }],
            parent: None,
            drain: None,
            handover: None,
            last_failure: None,
            rollback: RollbackStatus::default(),
        }
    }

    /// Enter `phase` at `at`.
    pub fn enter(&mut self, phase: Phase, at: SystemTime) {
        if let Phase::Failed(failure) = &phase {
            self.last_failure = Some(failure.clone());
        }
        self.phases.push(Transition {
            phase: phase.clone(),
            at_unix_ms: unix_ms(at),
        });
        self.phase = phase;
    }

    /// Whether the generation has served at some point (it may be draining by now).
    pub fn has_served(&self) -> bool {
        self.phases.iter().any(|t| t.phase == Phase::Serving)
    }
}

// === impl Lifecycle ===

impl Lifecycle {
    /// A generation of `epoch` in this process, in phase [`Phase::Starting`].
    pub fn new(epoch: u32) -> Self {
        let (tx, _) = watch::channel(GenerationStatus::new(
            epoch,
            std::process::id(),
            SystemTime::now(),
        ));
        Self { tx }
    }

    /// A receiver of every change from now on (the current status is already seen).
    pub fn subscribe(&self) -> watch::Receiver<GenerationStatus> {
        self.tx.subscribe()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.tx.borrow().phase.clone()
    }

    /// Enter `phase` now, and log it.
    pub fn enter(&self, phase: Phase) {
        self.tx.send_modify(|s| {
            tracing::info!(epoch = s.epoch, phase = phase.name(), "restart phase");
            s.enter(phase, SystemTime::now());
        });
    }

    /// The generation failed at `step` with `message`.
    pub fn fail(&self, step: Step, message: impl Into<String>) {
        self.enter(Phase::Failed(Failure::new(step, message)));
    }

    /// The generation this one took over from.
    pub fn set_parent(&self, parent: Peer) {
        self.tx.send_modify(|s| s.parent = Some(parent));
    }

    /// Drain progress (started and deadline are wall-clock times).
    pub fn set_drain(&self, started: SystemTime, deadline: SystemTime, connections_left: u64) {
        self.tx.send_modify(|s| {
            s.drain = Some(DrainProgress {
                started_unix_ms: unix_ms(started),
                deadline_unix_ms: unix_ms(deadline),
                connections_left,
            });
        });
    }

    /// The rollback window of this generation (`--rollback-window-s`).
    pub fn set_rollback_window(&self, window_s: u64) {
        self.tx.send_modify(|s| s.rollback.window_s = window_s);
    }

    /// A successor serves: this generation may serve again until `until` if it dies.
    pub fn open_rollback_window(&self, until: SystemTime) {
        self.tx
            .send_modify(|s| s.rollback.until_unix_ms = Some(unix_ms(until)));
    }

    /// The successor died inside the window: serve again (back to [`Phase::Serving`]), and
    /// record why.
    pub fn roll_back(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.tx.send_modify(|s| {
            s.rollback.rollbacks += 1;
            s.rollback.until_unix_ms = None;
            s.rollback.last_reason = Some(reason);
            s.drain = None;
            tracing::info!(epoch = s.epoch, phase = "serving", "restart phase");
            s.enter(Phase::Serving, SystemTime::now());
        });
    }

    /// Connections taken from the previous generation (moved) and left with it (refused).
    pub fn set_handover(&self, moved: usize, refused: usize) {
        self.tx.send_modify(|s| {
            s.handover = Some(HandoverCounts {
                connections_received: moved,
                connections_refused: refused,
            });
        });
    }
}

/// Milliseconds since the Unix epoch (0 before it, saturated far after it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn status_json_has_the_published_shape() -> Result<(), serde_json::Error> {
        let mut s = GenerationStatus::new(2, 77, at(1_000));
        assert_eq!(
            serde_json::to_value(&s)?,
            json!({
                "epoch": 2, "pid": 77, "phase": "starting",
                "phases": [{"phase": "starting", "at_unix_ms": 1_000}],
                "parent": null, "drain": null, "handover": null, "last_failure": null,
                "rollback": {"window_s": 0, "until_unix_ms": null, "rollbacks": 0,
                             "last_reason": null},
            })
        );
        s.enter(Phase::Validating, at(1_001));
        s.enter(Phase::TakingSockets, at(1_002));
        s.enter(Phase::Serving, at(1_003));
        s.parent = Some(Peer { pid: 66, epoch: 1 });
        s.handover = Some(HandoverCounts {
            connections_received: 3,
            connections_refused: 1,
        });
        s.enter(Phase::Draining, at(1_004));
        s.drain = Some(DrainProgress {
            started_unix_ms: 1_004,
            deadline_unix_ms: 2_004,
            connections_left: 5,
        });
        s.enter(
            Phase::Failed(Failure::new(Step::Serve, "could not x: y")),
            at(1_005),
        );
        let v = serde_json::to_value(&s)?;
        assert_eq!(v["phase"], "failed");
        assert_eq!(v["last_failure"], "could not x: y");
        assert_eq!(v["parent"], json!({"pid": 66, "epoch": 1}));
        assert_eq!(
            v["handover"],
            json!({"connections_received": 3, "connections_refused": 1})
        );
        assert_eq!(
            v["drain"],
            json!({"started_unix_ms": 1_004, "deadline_unix_ms": 2_004, "connections_left": 5})
        );
        let names: Vec<_> = v["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["phase"].clone())
            .collect();
        assert_eq!(
            names,
            [
                "starting",
                "validating",
                "taking_sockets",
                "serving",
                "draining",
                "failed"
            ]
        );
        assert_eq!(v["phases"][5]["at_unix_ms"], 1_005);
        assert!(s.has_served());
        Ok(())
    }

    #[tokio::test]
    async fn every_transition_reaches_subscribers() {
        let lifecycle = Lifecycle::new(4);
        let mut rx = lifecycle.subscribe();
        assert_eq!(rx.borrow().phase, Phase::Starting);
        lifecycle.enter(Phase::Validating);
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(rx.borrow_and_update().phase, Phase::Validating);
        lifecycle.enter(Phase::Serving);
        lifecycle.enter(Phase::Draining);
        // A subscriber that looks late still sees that the generation served.
        let s = rx
            .wait_for(GenerationStatus::has_served)
            .await
            .map(|s| s.clone());
        assert!(s.is_ok_and(|s| s.phase == Phase::Draining && s.epoch == 4));
        lifecycle.fail(Step::Serve, "boom");
        assert_eq!(
            lifecycle.phase(),
            Phase::Failed(Failure::new(Step::Serve, "boom"))
        );
        assert!(!GenerationStatus::new(0, 1, at(0)).has_served());
    }
}
