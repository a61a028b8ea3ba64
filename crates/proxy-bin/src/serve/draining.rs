//! The drain step: stop accepting, ask connections to close (or move) over the drain time, and
//! return once the last one is gone, at the deadline, or when told to end now.

use std::time::{Duration, SystemTime};

use proxy_core::lifecycle::Phase;
use proxy_core::worker::Workers;

use super::{Drains, Generation, Inputs, Stop};
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
    /// soon as the last one has gone (or at the deadline, or when told to end now).
    pub(super) async fn drain(
        &self,
        stop: Stop,
        drains: Drains,
        inputs: &mut Inputs,
        workers: Workers,
    ) {
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
            Some(drain::Outcome::Released) => {
                // Every connection has closed: the workers are finishing.
                tokio::task::spawn_blocking(move || workers.join())
                    .await
                    .ok();
                tracing::info!(
                    lived_ms = started.elapsed().map_or(0, |d| d.as_millis()),
                    "drained; exiting"
                );
            }
            Some(drain::Outcome::TimedOut { remaining }) => {
                tracing::warn!(
                    remaining,
                    "drain deadline passed with connections open; closing them"
                );
            }
            None => tracing::info!(
                remaining = control.counts().remaining,
                "ending now; closing the connections left"
            ),
        }
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

    /// Wait for every release token to go (or the deadline), refreshing the drain progress;
    /// `None` when told to end now (a second SIGTERM/SIGINT, or the next generation).
    async fn wait_drained(
        &self,
        signal: &drain::Signal,
        control: &drain::Control,
        window: DrainWindow,
        inputs: &mut Inputs,
    ) -> Option<drain::Outcome> {
        let released = signal.wait_released(window.deadline);
        tokio::pin!(released);
        let mut tick = tokio::time::interval(DRAIN_STATUS_PERIOD);
        loop {
            tokio::select! {
                o = &mut released => return Some(o),
                Some(ev) = inputs.events.recv() => if ev == ParentEvent::Terminate {
                    tracing::info!("asked to terminate by the next generation while draining");
                    return None;
                },
                Some(sig) = inputs.signals.recv() => match sig {
                    ProcessSignal::Terminate | ProcessSignal::Interrupt => return None,
                    ProcessSignal::ReopenLogs => self.reopen_logs(),
                    ProcessSignal::Hangup => {}
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

/// How long a drain may take: a restart gives the old generation `--parent-shutdown-time-s`;
/// a shutdown, the drain time but at least [`MIN_SHUTDOWN_GRACE`].
pub(super) fn drain_budget(stop: Stop, opts: &Options) -> Duration {
    if stop == Stop::Restart {
        opts.parent_shutdown_time
    } else {
        opts.drain_time.max(MIN_SHUTDOWN_GRACE)
    }
}
