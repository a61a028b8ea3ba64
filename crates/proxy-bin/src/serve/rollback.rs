//! The rollback window (`--rollback-window-s`): after a restart the old generation keeps its
//! listen sockets, configuration and stats, drains as usual, then stands by until the window
//! (counted from cutover) ends. If the successor dies inside it — seen on its pidfd — or gives
//! way (`POST /rollback` on it, see [`Generation::give_way`]), this generation accepts again on
//! the same sockets (the kernel's accept queue is shared, so no connection attempt is refused
//! meanwhile) and is the serving generation again: the next restart takes over from it with the
//! same epoch the successor had.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use proxy_core::lifecycle::Phase;

use super::{Generation, GiveWay, Inputs, Resolve, Resume, Serving, Stop, TakeBack, Window};
use crate::listen;
use crate::restart::successor::Watched;
use crate::restart::{Grandparent, OwnedSocket, ParentEvent, RollbackAnswer};
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
            kept: resume.owned.clone(),
        });
    }

    /// Drained after a restart: hold on (no connections, no workers) until the window ends;
    /// why to serve again if the successor dies or gives way meanwhile. `None` (exit) at the end of the
    /// window, when the next generation or its successor ends this one, or on SIGTERM/SIGINT.
    pub(super) async fn stand_by(&self, inputs: &mut Inputs) -> Option<TakeBack> {
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
                back = successor_died(inputs.window.as_ref()) => return Some(back),
                () = tokio::time::sleep_until(until) => {
                    tracing::info!("rollback window over; exiting");
                    return None;
                }
                Some(ev) = inputs.events.recv() => match ev {
                    ParentEvent::Terminate => {
                        tracing::info!("asked to terminate by the next generation while standing by");
                        return None;
                    }
                    ParentEvent::RollBack { reason, answer } => {
                        if let Some(back) = gave_way(inputs.window.as_ref(), &reason, answer) {
                            return Some(back);
                        }
                    }
                    ParentEvent::DrainListeners { .. } => {}
                },
                Some(sig) = inputs.signals.recv() => match sig {
                    ProcessSignal::Terminate | ProcessSignal::Interrupt => return None,
                    ProcessSignal::ReopenLogs => self.reopen_logs(),
                    ProcessSignal::Hangup | ProcessSignal::RollBack => {}
                },
                Some(_) = inputs.quit.recv() => return None,
            }
        }
    }

    /// The successor died or gave way inside the window: accept again on the kept sockets
    /// (binding again those the successor had not taken), with this generation's
    /// configuration; then tell a successor that gave way.
    pub(super) async fn roll_back(
        &self,
        resume: &Resume,
        back: TakeBack,
    ) -> anyhow::Result<Serving> {
        self.handover.resume();
        // A successor that gave way (rather than died) answers, then hands connections back.
        let gave_way = back.answer.is_some();
        // Supersede the interrupted serving first: one of its accept-stopped tasks running
        // late (it may not have run yet) must find its round over, not the sockets unkept, or
        // it would empty what this generation lends its next successor.
        resume.serving_round.fetch_add(1, Ordering::AcqRel);
        resume.keep_sockets.store(false, Ordering::Release);
        self.bind_missing(resume);
        let started = self.start_serving(resume, Resolve::Again).await;
        if let Some(answer) = back.answer {
            let _ = answer.send(started.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
        }
        let mut serving = started?;
        if gave_way {
            // The successor lives on and hands its idle connections back.
            *resume.returning.lock() = serving.workers.take_adopter();
        }
        self.rollbacks.inc();
        self.lifecycle.roll_back(back.reason.as_str());
        tracing::warn!(
            epoch = self.place.epoch,
            "rolled back: {}; this generation serves again with its own configuration",
            back.reason
        );
        super::notify_ready();
        Ok(serving)
    }

    /// `POST /rollback` on this generation, or its failed health gate: ask the previous one
    /// (still inside its rollback window) to serve again, and answer the request. Why, when it
    /// does: this generation then drains and exits non-zero.
    pub(super) async fn give_way(
        &self,
        grandparent: &Grandparent,
        give_way: Option<GiveWay>,
    ) -> Option<String> {
        let GiveWay { why, request } = give_way?;
        let parent = self.lifecycle.subscribe().borrow().parent;
        let link = grandparent.clone();
        let asked_why = why.clone();
        let asked = tokio::task::spawn_blocking(move || {
            let mut client = link.client();
            let Some(c) = client.as_mut() else {
                return Err(
                    "no previous generation to roll back to (none, or it has exited)".to_owned(),
                );
            };
            // The session stays for the hand-back (see `hand_back`), which ends it.
            c.roll_back(&asked_why)
                .map_err(|e| format!("the previous generation does not serve again: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(format!("could not ask the previous generation: {e}")));
        let answer = asked.map(|()| {
            let (epoch, pid) = parent.map_or((0, 0), |p| (p.epoch, p.pid));
            format!(
                "rolled back: generation {epoch} (pid {pid}) serves again; generation {} drains \
                 and exits",
                self.place.epoch
            )
        });
        match &answer {
            Ok(done) => tracing::warn!("{done}"),
            Err(refused) => tracing::warn!("could not roll back ({why}): {refused}"),
        }
        let gave_way = answer.is_ok();
        if let Some(request) = request {
            let _ = request.reply.send(answer);
        }
        gave_way.then_some(why)
    }

    /// After giving way: hand this generation's idle keep-alive connections (and idle
    /// tunnels and `tcp_proxy` connections) back to the previous generation over the restart session, at most
    /// [`HAND_BACK_TIME`]; the others close at their next response. Then end the session, so
    /// the next restart can talk to the previous generation.
    pub(super) fn hand_back(&self, grandparent: &Grandparent) {
        let link = grandparent.clone();
        // `tcp_proxy` connections go back only to a generation that says it takes them (an
        // older one would refuse a whole batch with a kind it does not know): else they stay
        // here until they close or this generation exits.
        let tcp_proxy = link
            .client()
            .as_ref()
            .is_some_and(|c| c.parent().takes_tcp_proxy);
        if !self.handover.activate(tcp_proxy) {
            link.client().take();
            return;
        }
        let handover = self.handover.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let (given, taken) =
                crate::restart::child::hand_back(&handover, &link, started + HAND_BACK_TIME);
            handover.end();
            link.client().take();
            tracing::info!(
                given,
                taken,
                took_ms = started.elapsed().as_millis(),
                "handed connections back to the previous generation"
            );
        });
    }

    /// Bind again the listeners (and admin) whose sockets closed at cutover because the
    /// successor did not take them; a failure leaves that listener unserved, and says so.
    fn bind_missing(&self, resume: &Resume) {
        let mut owned = resume.owned.lock();
        let wanted = self
            .bootstrap
            .listeners
            .iter()
            .flat_map(|l| l.addresses().map(|a| (a, l.name.clone(), l.freebind)))
            .chain(
                self.bootstrap
                    .admin
                    .as_ref()
                    .map(|a| (a.address, "admin".to_owned(), false)),
            );
        let missing: Vec<(SocketAddr, String, bool)> = wanted
            .filter(|(addr, _, _)| !owned.iter().any(|o| o.addr == *addr))
            .collect();
        for (addr, name, freebind) in missing {
            match listen::bind_tcp(addr, freebind) {
                Ok(socket) => owned.push(OwnedSocket { addr, name, socket }),
                Err(e) => tracing::error!(
                    listener = %name,
                    "could not listen again after the rollback: {e:#}"
                ),
            }
        }
    }
}

/// Longest a generation that gave way hands connections back.
const HAND_BACK_TIME: Duration = Duration::from_secs(2);

/// Ready with how the successor exited, if it does inside the rollback window; pending
/// otherwise (no window, or past its end).
pub(super) async fn successor_died(window: Option<&Window>) -> TakeBack {
    let Some(w) = window else {
        return std::future::pending().await;
    };
    match tokio::time::timeout_at(w.until, w.successor.exited()).await {
        Ok(how) => TakeBack {
            reason: format!("{} exited with {how}", describe(&w.successor)),
            answer: None,
        },
        Err(_) => std::future::pending().await,
    }
}

/// Ready when the rollback window ends; pending without one.
pub(super) async fn window_over(window: Option<&Window>) {
    match window {
        Some(w) => tokio::time::sleep_until(w.until).await,
        None => std::future::pending().await,
    }
}

/// The window ended while this generation still drains: no rollback any more, so the listen
/// sockets it kept close now (a connection attempt is then refused if the successor dies,
/// rather than queued for nobody).
pub(super) fn close_window(window: &mut Option<Window>) {
    if let Some(w) = window.take() {
        w.kept.lock().clear();
        tracing::info!("rollback window over while draining: closed the kept listen sockets");
    }
}

/// The successor gives way (`reason`, from it): serve again if inside the window, else refuse.
pub(super) fn gave_way(
    window: Option<&Window>,
    reason: &str,
    answer: RollbackAnswer,
) -> Option<TakeBack> {
    match window.filter(|w| tokio::time::Instant::now() < w.until) {
        Some(w) => Some(TakeBack {
            reason: format!("{} asked to roll back: {reason}", describe(&w.successor)),
            answer: Some(answer),
        }),
        None => {
            let _ = answer.send(Err("the rollback window is over".to_owned()));
            None
        }
    }
}

fn describe(successor: &Watched) -> String {
    format!("generation {} (pid {})", successor.epoch, successor.pid)
}
