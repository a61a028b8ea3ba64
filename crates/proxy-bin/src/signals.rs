//! Process signals as values on a channel: the generation's main loop reads
//! [`ProcessSignal`]s from a [`Signals`] receiver, fed by the OS ([`unix`]) in the binary and by
//! a plain sender in tests.

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// A signal the generation acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessSignal {
    /// SIGTERM: drain and exit (a second one ends the drain at once).
    Terminate,
    /// SIGINT: as SIGTERM.
    Interrupt,
    /// SIGUSR1: reopen the log and access log files.
    ReopenLogs,
    /// SIGHUP: logged and ignored (restarts are started with `--restart-epoch`).
    Hangup,
    /// SIGUSR2 (Baton only; `baton rollback` sends it): give way to the previous generation if
    /// it stands by in its rollback window, as `POST /rollback` does.
    RollBack,
}

/// Where the main loop reads signals from. The sender side is the task [`unix`] spawns, which
/// lives as long as the runtime; a test holds its own sender.
pub type Signals = mpsc::UnboundedReceiver<ProcessSignal>;

/// Take over SIGTERM, SIGINT, SIGUSR1, SIGUSR2 and SIGHUP (their default actions no longer apply) and
/// forward each as it arrives. Must run inside a tokio runtime.
pub fn unix() -> anyhow::Result<Signals> {
    let mut term = signal(SignalKind::terminate()).context("could not handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("could not handle SIGINT")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("could not handle SIGUSR1")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("could not handle SIGUSR2")?;
    let mut hup = signal(SignalKind::hangup()).context("could not handle SIGHUP")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                Some(()) = term.recv() => ProcessSignal::Terminate,
                Some(()) = int.recv() => ProcessSignal::Interrupt,
                Some(()) = usr1.recv() => ProcessSignal::ReopenLogs,
                Some(()) = usr2.recv() => ProcessSignal::RollBack,
                Some(()) = hup.recv() => ProcessSignal::Hangup,
                else => break,
            };
            if tx.send(sig).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
