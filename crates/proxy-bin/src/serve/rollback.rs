//! The rollback window (`--rollback-window-s`): after a restart the old generation keeps its
//! listen sockets, configuration and stats, drains as usual, then stands by until the window
//! (counted from cutover) ends. If the successor dies inside it — seen on its pidfd — this
//! generation accepts again on the same sockets (the kernel's accept queue is shared, so no
//! connection attempt is refused meanwhile) and is the serving generation again: the next
//! restart takes over from it with the same epoch the dead successor had.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use proxy_core::lifecycle::Phase;

use super::{Generation, Inputs, Resolve, Resume, Serving, Stop, Window};
use crate::listen;
use crate::restart::successor::Watched;
use crate::restart::OwnedSocket;
use crate::signals::ProcessSignal;

// === impl Generation ===

impl Generation {
    /// At cutover (a successor serves and asked this generation to drain): with a rollback
    /// window and a watchable successor, keep the listen sockets the successor took (the
    /// others close, as they would without a window) and start watching it.
    pub(super) fn open_window(&self, stop: Stop, inputs: &mut Inputs, resume: &Resume) {
        let Some((successor, taken)) = inputs.cutover.take() else {
            return;
        };
        if stop != Stop::Restart || self.rollback_window.is_zero() {
            return;
        }
        let Some(successor) = successor else { return };
        let (pid, epoch) = (successor.pid, successor.epoch);
        let watched = match successor.watch() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(pid, error = %e, "could not watch the next generation; no rollback");
                return;
            }
        };
        resume.keep_sockets.store(true, Ordering::Release);
        resume.owned.lock().retain(|o| taken.contains(&o.addr));
        self.lifecycle
            .open_rollback_window(SystemTime::now() + self.rollback_window);
        tracing::info!(
            successor_pid = pid,
            successor_epoch = epoch,
            window_s = self.rollback_window.as_secs(),
            "rollback window open: keeping the listen sockets until it ends"
        );
        inputs.window = Some(Window {
            successor: watched,
            until: tokio::time::Instant::now() + self.rollback_window,
        });
    }

    /// Drained after a restart: hold on (no connections, no workers) until the window ends;
    /// why to serve again if the successor dies meanwhile. `None` (exit) at the end of the
    /// window, when the next generation or its successor ends this one, or on SIGTERM/SIGINT.
    pub(super) async fn stand_by(&self, inputs: &mut Inputs) -> Option<String> {
        let until = inputs.window.as_ref()?.until;
        if tokio::time::Instant::now() >= until {
            tracing::info!("the rollback window ended while draining; exiting");
            return None;
        }
        self.lifecycle.enter(Phase::StandingBy);
        tracing::info!(
            left_ms = until
                .saturating_duration_since(tokio::time::Instant::now())
                .as_millis(),
            "standing by until the rollback window ends"
        );
        loop {
            tokio::select! {
                reason = successor_died(inputs.window.as_ref()) => return Some(reason),
                () = tokio::time::sleep_until(until) => {
                    tracing::info!("rollback window over; exiting");
                    return None;
                }
                Some(ev) = inputs.events.recv() => if matches!(ev, crate::restart::ParentEvent::Terminate) {
                    tracing::info!("asked to terminate by the next generation while standing by");
                    return None;
                },
                Some(sig) = inputs.signals.recv() => match sig {
                    ProcessSignal::Terminate | ProcessSignal::Interrupt => return None,
                    ProcessSignal::ReopenLogs => self.reopen_logs(),
                    ProcessSignal::Hangup => {}
                },
                Some(_) = inputs.quit.recv() => return None,
            }
        }
    }

    /// The successor died inside the window: accept again on the kept sockets (binding again
    /// those the successor had not taken), with this generation's configuration.
    pub(super) async fn roll_back(&self, resume: &Resume, reason: &str) -> anyhow::Result<Serving> {
        self.handover.resume();
        resume.keep_sockets.store(false, Ordering::Release);
        self.bind_missing(resume);
        let serving = self.start_serving(resume, Resolve::Again).await?;
        self.rollbacks.inc();
        self.lifecycle.roll_back(reason);
        tracing::warn!(
            epoch = self.place.epoch,
            "rolled back: {reason}; this generation serves again with its own configuration"
        );
        super::notify_ready();
        Ok(serving)
    }

    /// Bind again the listeners (and admin) whose sockets closed at cutover because the
    /// successor did not take them; a failure leaves that listener unserved, and says so.
    fn bind_missing(&self, resume: &Resume) {
        let mut owned = resume.owned.lock();
        let wanted = self
            .bootstrap
            .listeners
            .iter()
            .map(|l| (l.address, l.name.clone()))
            .chain(
                self.bootstrap
                    .admin
                    .as_ref()
                    .map(|a| (a.address, "admin".to_owned())),
            );
        let missing: Vec<(SocketAddr, String)> = wanted
            .filter(|(addr, _)| !owned.iter().any(|o| o.addr == *addr))
            .collect();
        for (addr, name) in missing {
            match listen::bind_tcp(addr) {
                Ok(socket) => owned.push(OwnedSocket { addr, name, socket }),
                Err(e) => tracing::error!(
                    listener = %name,
                    "could not listen again after the rollback: {e:#}"
                ),
            }
        }
    }
}

/// Ready with how the successor exited, if it does inside the rollback window; pending
/// otherwise (no window, or past its end).
pub(super) async fn successor_died(window: Option<&Window>) -> String {
    let Some(w) = window else {
        return std::future::pending().await;
    };
    match tokio::time::timeout_at(w.until, w.successor.exited()).await {
        Ok(how) => describe(&w.successor, &how),
        Err(_) => std::future::pending().await,
    }
}

fn describe(successor: &Watched, how: &str) -> String {
    format!(
        "generation {} (pid {}) exited with {how}",
        successor.epoch, successor.pid
    )
}
