//! What the data plane holds: a [`Watch`] per task (accept loops, background tasks), which
//! tells it when to stop accepting and hands out a [`Conn`] per connection, and [`Release`]
//! tokens for any other work the generation must wait for.

use std::sync::Arc;

use tokio::sync::watch;

use crate::{Conn, Control, Counts, Direction, Phase, Shared};

/// Cloned into every task that must finish before the generation is done: each clone holds a
/// release token until it is dropped.
#[derive(Debug)]
pub struct Watch {
    shared: Arc<Shared>,
    /// Wakes [`Watch::signaled`] and [`Watch::accept_stopped`]; the sender is in `shared`.
    changes: watch::Receiver<()>,
    _token: Release,
}

/// Keeps the generation's drain waiting until it is dropped: [`crate::Signal::released`]
/// completes only once every token (every [`Watch`], every [`Conn`], every `Release`) is gone.
/// Take one for work that outlives its connection, e.g. an upgraded tunnel or a transfer
/// handed to another task.
#[must_use = "dropping a release token releases it at once"]
#[derive(Debug)]
pub struct Release {
    shared: Arc<Shared>,
}

// === impl Watch ===

impl Watch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            changes: shared.subscribe_changes(),
            _token: Release::new(shared.clone()),
            shared,
        }
    }

    /// Register a connection accepted on a listener with `direction`. The connection counts
    /// as open, and the generation waits for it, until every clone of the returned handle is
    /// dropped.
    pub fn connection(&self, direction: Direction) -> Conn {
        Conn::new(self.shared.clone(), direction)
    }

    /// A token that keeps the generation's drain waiting until it is dropped.
    pub fn token(&self) -> Release {
        Release::new(self.shared.clone())
    }

    /// Completes once a drain (of any scope) has started. Dropping the [`crate::Signal`]
    /// starts one, so this never waits for an owner that is gone.
    pub async fn signaled(&mut self) {
        loop {
            self.changes.borrow_and_update();
            if self.shared.any_drain() {
                return;
            }
            if self.changes.changed().await.is_err() {
                // The sender lives in `shared`, which this watch holds: unreachable, but do
                // not spin if it ever happens.
                return;
            }
        }
    }

    /// True once a drain (of any scope) has started.
    pub fn is_draining(&self) -> bool {
        self.shared.any_drain()
    }

    /// Completes when listeners with `direction` must stop accepting: at once after
    /// [`Control::stop_accepting`], or at the end of the window after a graceful
    /// [`Control::drain_listeners`]. Never on a failed health check.
    pub async fn accept_stopped(&mut self, direction: Direction) {
        loop {
            self.changes.borrow_and_update();
            match self.shared.stop_at(direction) {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => return,
                    // An earlier stop may be set while waiting for this one.
                    r = self.changes.changed() => if r.is_err() { return },
                },
                None => {
                    if self.changes.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// False once listeners with `direction` must stop accepting.
    pub fn is_accepting(&self, direction: Direction) -> bool {
        self.shared
            .stop_at(direction)
            .is_none_or(|at| tokio::time::Instant::now() < at)
    }

    /// Envoy's `/healthcheck/fail` state: one atomic load, cheap enough for every response.
    pub fn health_check_failed(&self) -> bool {
        self.shared.health_check_failed()
    }

    /// A handle to start drains and read state, holding no token.
    pub fn control(&self) -> Control {
        Control::new(self.shared.clone())
    }

    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }
}

impl Clone for Watch {
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

// === impl Release ===

impl Release {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared.acquire();
        Self { shared }
    }

    /// Release the token (the same as dropping it; reads better at the end of a task).
    pub fn release(self) {}
}

impl Drop for Release {
    fn drop(&mut self) {
        self.shared.release();
    }
}
