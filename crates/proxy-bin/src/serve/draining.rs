//! The drain step: stop accepting, ask connections to close (or move) over the drain time, and
//! return once the last one is gone, at the deadline, or when told to end now.

use std::time::{Duration, SystemTime};

use proxy_core::lifecycle::Phase;
use proxy_core::worker::Workers;

use super::{DrainEnd, Drains, Generation, Inputs, Serving, Stop, TakeBack};
use crate::cli::Options;
use crate::restart::ParentEvent;
use crate::signals::ProcessSignal;

/// On SIGTERM/SIGINT with a short `--drain-time-s`, requests already in flight still get this
/// long to finish.
pub(super) const MIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Longest a generation about to exit waits for the next one to answer a batch of connections
/// already sent to it.
const IN_FLIGHT_SETTLE: Duration = Duration::from_secs(3);
/// How often the restart status refreshes the count of connections left while draining.
const DRAIN_STATUS_PERIOD: Duration = Duration::from_secs(1);

/// When a drain started and how long it may take.
#[derive(Clone, Copy, Debug)]
struct DrainWindow {
    started: SystemTime,
    budget: Duration,
    deadline: tokio::time::Instant,
}

// === impl Generation ===

impl Generation {
    /// Drain: stop accepting, ask connections to close over the drain time, and return as
    /// soon as the last one has gone (or at the deadline, when told to end now, or when the
    /// successor dies inside the rollback window: the connections left then finish draining
    /// in the background).
    pub(super) async fn drain(
        &self,
        stop: Stop,
        serving: Serving,
        inputs: &mut Inputs,
    ) -> DrainEnd {
        let Serving { drains, workers } = serving;
        let started = SystemTime::now();
        let budget = drain_budget(stop, &self.opts);
        tracing::info!(
            ?stop,
            drain_time_s = self.opts.drain_time.as_secs(),
            deadline_s = budget.as_secs(),
            "draining: no new connections, finishing open ones"
        );
        self.lifecycle.enter(Phase::Draining);
        if self.handover.mode() == proxy_core::handover::Mode::Active {
            // Every worker knows its connections move before any is asked to close.
            self.handover
                .workers_see_active(self.opts.concurrency.max(1), Duration::from_millis(200))
                .await;
        }
        let Drains {
            signal,
            control,
            admin,
        } = drains;
        control.stop_accepting(drain::Scope::All);
        control.start_drain(drain::Scope::All);
        admin.drain_now();
        let window = DrainWindow {
            started,
            budget,
            deadline: tokio::time::Instant::now() + budget,
        };
        match self.wait_drained(&signal, &control, window, inputs).await {
            Waited::Drained(drain::Outcome::Released) => {
                // Every connection has closed: the workers are finishing.
                tokio::task::spawn_blocking(move || workers.join())
                    .await
                    .ok();
                tracing::info!(
                    lived_ms = started.elapsed().map_or(0, |d| d.as_millis()),
                    "drained; exiting"
                );
            }
            Waited::Drained(drain::Outcome::TimedOut { remaining }) => {
                tracing::warn!(
                    remaining,
                    "drain deadline passed with connections open; closing them"
                );
            }
            Waited::EndNow => {
                tracing::info!(
                    remaining = control.counts().remaining,
                    "ending now; closing the connections left"
                );
                return DrainEnd::EndNow;
            }
            Waited::TakeBack(back) => {
                finish_in_background(signal, workers, window.deadline);
                return DrainEnd::TakeBack(back);
            }
        }
        DrainEnd::Done
    }

    /// Before exiting (drained, past the deadline, or told to end now): wait (bounded) until
    /// every batch of connections sent to the next generation is answered. Each of them is then
    /// either the successor's (its copy keeps the socket open; ours closes without a FIN) or
    /// ours again; otherwise the successor, whose acknowledgement would find this generation
    /// gone, would drop them too.
    pub(super) async fn settle_handover(&self) {
        let in_flight = self.handover.in_flight();
        if in_flight == 0 {
            return;
        }
        tracing::info!(
            in_flight,
            "waiting for the next generation to answer the connections sent to it"
        );
        if !self.handover.settled(IN_FLIGHT_SETTLE).await {
            tracing::warn!(
                in_flight = self.handover.in_flight(),
                waited_ms = IN_FLIGHT_SETTLE.as_millis(),
                "the next generation did not answer; exiting with connections unanswered"
            );
        }
    }

    /// Wait for every release token to go (or the deadline), refreshing the drain progress,
    /// unless told to end now (a second SIGTERM/SIGINT, or the next generation) or the
    /// successor dies inside the rollback window.
    async fn wait_drained(
        &self,
        signal: &drain::Signal,
        control: &drain::Control,
        window: DrainWindow,
        inputs: &mut Inputs,
    ) -> Waited {
        let released = signal.wait_released(window.deadline);
        tokio::pin!(released);
        let mut tick = tokio::time::interval(DRAIN_STATUS_PERIOD);
        loop {
            tokio::select! {
                o = &mut released => return Waited::Drained(o),
                back = super::rollback::successor_died(inputs.window.as_ref()) => {
                    return Waited::TakeBack(back);
                }
                () = super::rollback::window_over(inputs.window.as_ref()) => {
                    super::rollback::close_window(&mut inputs.window);
                }
                Some(ev) = inputs.events.recv() => match ev {
                    ParentEvent::Terminate => {
                        tracing::info!("asked to terminate by the next generation while draining");
                        return Waited::EndNow;
                    }
                    ParentEvent::RollBack { reason, answer } => {
                        if let Some(back) = super::rollback::gave_way(inputs.window.as_ref(), &reason, answer) {
                            return Waited::TakeBack(back);
                        }
                    }
                    ParentEvent::DrainListeners { .. } => {}
                },
                Some(sig) = inputs.signals.recv() => match sig {
                    ProcessSignal::Terminate | ProcessSignal::Interrupt => return Waited::EndNow,
                    ProcessSignal::ReopenLogs => self.reopen_logs(),
                    ProcessSignal::Hangup | ProcessSignal::RollBack => {}
                },
                _ = tick.tick() => {
                    self.lifecycle.set_drain(
                        window.started,
                        window.started + window.budget,
                        control.counts().remaining,
                    );
                }
            }
        }
    }
}

/// How [`Generation::wait_drained`] returned.
#[derive(Debug)]
enum Waited {
    Drained(drain::Outcome),
    EndNow,
    TakeBack(TakeBack),
}

/// After a rollback, the connections of the interrupted drain go on draining (bounded by its
/// deadline) while this generation serves again; their workers are then joined.
fn finish_in_background(signal: drain::Signal, workers: Workers, deadline: tokio::time::Instant) {
    tokio::spawn(async move {
        let outcome = signal.wait_released(deadline).await;
        if outcome == drain::Outcome::Released {
            tokio::task::spawn_blocking(move || workers.join())
                .await
                .ok();
        }
        tracing::info!(
            ?outcome,
            "the connections drained before the rollback are done"
        );
    });
}

/// How long a drain may take: a restart gives the old generation `--parent-shutdown-time-s`;
/// giving way to it after a restart, [`MIN_SHUTDOWN_GRACE`]; a shutdown, the drain time but at
/// least [`MIN_SHUTDOWN_GRACE`].
pub(super) fn drain_budget(stop: Stop, opts: &Options) -> Duration {
    match stop {
        Stop::Restart => opts.parent_shutdown_time,
        // The previous generation serves again: requests in flight get the grace, no more.
        Stop::GiveWay => MIN_SHUTDOWN_GRACE,
        _ => opts.drain_time.max(MIN_SHUTDOWN_GRACE),
    }
}
