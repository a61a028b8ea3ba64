//! The owner's side of a drain: the [`Signal`] held by whoever runs the generation, and the
//! [`Control`] handle for anyone else allowed to start drains or fail the health check (the
//! admin interface).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Counts, Phase, Scope, Shared, Watch};

/// Held by the owner of a generation (`proxy-bin`). Dropping it stops every listener and
/// starts a drain of everything (with the configured strategy) if none had started, so no task
/// ever waits for an owner that is gone.
#[derive(Debug)]
pub struct Signal {
    control: Control,
}

/// Starts drains, stops listeners, fails the health check and reads the drain's state. Holds
/// no token: it never keeps the generation waiting.
#[derive(Clone, Debug)]
pub struct Control {
    shared: Arc<Shared>,
}

/// How [`Signal::wait_released`] ended.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every token was released.
    Released,
    /// The deadline passed first, with this many tokens still held.
    TimedOut { remaining: u64 },
}

// === impl Signal ===

impl Signal {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            control: Control { shared },
        }
    }

    /// A handle for the admin interface and anyone else who may start drains.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Another watch (holding its own token).
    pub fn watch(&self) -> Watch {
        Watch::new(self.control.shared.clone())
    }

    /// Completes once every token has been released (at once if none is held). Bound it with
    /// the generation's deadline, or use [`Signal::wait_released`].
    pub async fn released(&self) {
        self.control.shared.released().await;
    }

    /// Wait until every token has been released or `deadline` passes, whichever is first. On
    /// the deadline the phase becomes [`Phase::Abandoned`] (if a drain had started).
    pub async fn wait_released(&self, deadline: Instant) -> Outcome {
        match tokio::time::timeout_at(deadline, self.released()).await {
            Ok(()) => Outcome::Released,
            Err(_) => {
                self.control.shared.mark_abandoned();
                Outcome::TimedOut {
                    remaining: self.control.shared.counts().remaining,
                }
            }
        }
    }

    /// Stop every listener, start a drain of everything, then wait until every token has been
    /// released. The caller bounds this with the drain deadline.
    pub async fn drain(self) {
        self.control.stop_accepting(Scope::All);
        self.control.start_drain(Scope::All);
        self.released().await;
    }

    /// Stop every listener and start a drain of everything, without waiting.
    pub fn drain_now(self) {
        self.control.stop_accepting(Scope::All);
        self.control.start_drain(Scope::All);
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.control.stop_accepting(Scope::All);
        self.control.start_drain(Scope::All);
    }
}

// === impl Control ===

impl Control {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Start asking the connections of `scope` to close, per the strategy, over the drain time
    /// from now. Listeners keep accepting (see [`Control::stop_accepting`]). False if a drain of
    /// this scope had already started (its window is not restarted).
    pub fn start_drain(&self, scope: Scope) -> bool {
        self.shared.start_drain(scope)
    }

    /// Listeners of `scope` stop accepting now. Open connections are not asked to close.
    pub fn stop_accepting(&self, scope: Scope) {
        self.shared.stop_accepting_at(scope, Instant::now());
    }

    /// Envoy's `POST /drain_listeners`: without `graceful`, listeners of `scope` stop accepting
    /// now; with it, a drain of `scope` starts now and the listeners stop accepting at the end
    /// of its window (at once for a zero drain time). `scope` is [`Scope::InboundOnly`] for
    /// `?inboundonly`.
    pub fn drain_listeners(&self, scope: Scope, graceful: bool) {
        if !graceful {
            self.stop_accepting(scope);
            return;
        }
        self.start_drain(scope);
        if let Some((_, end)) = self.shared.drain_window(scope) {
            self.shared.stop_accepting_at(scope, end);
        }
    }

    /// Envoy's `POST /healthcheck/fail` (`true`) and `/healthcheck/ok` (`false`). While failed,
    /// listeners keep accepting and every [`crate::Conn::drain_close`] answers true.
    pub fn set_health_check_failed(&self, failed: bool) {
        self.shared.set_health_check_failed(failed);
    }

    /// One atomic load: cheap enough for `/ready` and every response.
    pub fn health_check_failed(&self) -> bool {
        self.shared.health_check_failed()
    }

    /// When the drain of `scope` started and when its window ends; `None` if it has not.
    pub fn drain_window(&self, scope: Scope) -> Option<(Instant, Instant)> {
        self.shared.drain_window(scope)
    }

    /// True once any drain has started.
    pub fn is_draining(&self) -> bool {
        self.shared.any_drain()
    }

    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    /// Every change of phase, for tests (`wait_for`) and the admin interface.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.shared.subscribe_phase()
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Completes once every token has been released (at once if none is held).
    pub async fn released(&self) {
        self.shared.released().await;
    }
}
