//! One downstream connection's view of the drain: "should I close now?" at natural points
//! ([`Conn::drain_close`]) and "I must close by now" ([`Conn::close_requested`]).
//!
//! A connection is *asked* to close at most once: the first of a `drain_close` that answers
//! yes or its own close-by moment passing while `close_requested` is awaited. Once asked, it
//! stays asked (every later `drain_close` is true and `close_requested` completes at once),
//! and it is counted once in [`crate::Counts::asked_to_close`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::{Direction, Release, Shared};

/// A connection's handle. Clones share one state (one draw, one "asked" flag), so the task
/// driving the connection and the service answering its requests can each hold one; the
/// connection counts as open until every clone is dropped.
#[must_use = "dropping every clone of a connection handle marks the connection closed"]
#[derive(Debug)]
pub struct Conn {
    state: Arc<State>,
    /// Wakes [`Conn::close_requested`] when a drain starts; the sender is in the shared state.
    changes: watch::Receiver<()>,
}

#[derive(Debug)]
struct State {
    shared: Arc<Shared>,
    direction: Direction,
    opened_ns: u64,
    /// This connection's place in the drain window, uniform in `[0, 1)`.
    u: f64,
    asked: AtomicBool,
    /// Asked by [`Conn::ask_close`] (a limit of the connection's own), not by a drain.
    asked_by_limit: AtomicBool,
    /// Woken when `asked` is set, so that a `close_requested` awaited by one clone learns of
    /// a `drain_close` answered on another.
    asked_notify: Notify,
    _token: Release,
}

// === impl Conn ===

impl Conn {
    pub(crate) fn new(shared: Arc<Shared>, direction: Direction) -> Self {
        shared.conn_opened();
        let state = State {
            direction,
            opened_ns: shared.now_ns(),
            u: shared.draw(),
            asked: AtomicBool::new(false),
            asked_by_limit: AtomicBool::new(false),
            asked_notify: Notify::new(),
            _token: Release::new(shared.clone()),
            shared,
        };
        Self {
            changes: state.shared.subscribe_changes(),
            state: Arc::new(state),
        }
    }

    /// Envoy's `drainClose()`: should this connection close now? Ask it at natural points,
    /// e.g. when about to write a response (HTTP/1: add `Connection: close`; HTTP/2: start a
    /// graceful GOAWAY). True when the health check is failed; before a drain applies to the
    /// connection's direction, false; during a gradual drain, true with probability
    /// `elapsed / drain_time` on each call (a fresh draw each time), and always true at or after
    /// the end of the window; always true for the immediate strategy or a zero drain time.
    /// Once it has answered true, or [`Conn::close_requested`] has completed, it stays true.
    pub fn drain_close(&self) -> bool {
        if self.state.asked.load(SeqCst) {
            return true;
        }
        let yes = self.state.shared.decide(self.state.direction);
        if yes {
            self.state.mark_asked();
        }
        yes
    }

    /// Ask this connection to close for a limit of its own (Envoy's `max_requests_per_connection`,
    /// `max_connection_duration`), as a drain would: [`Conn::drain_close`] is true from now on
    /// and [`Conn::close_requested`] completes. Not counted among the drain's asks (see
    /// [`Conn::asked_by_limit`]); a connection already asked stays as it was.
    pub fn ask_close(&self) {
        if !self.state.asked.swap(true, SeqCst) {
            self.state.asked_by_limit.store(true, SeqCst);
            self.state.asked_notify.notify_waiters();
        }
    }

    /// True when the connection was asked to close by [`Conn::ask_close`] rather than by a
    /// drain (so it is not counted as a drain's close).
    pub fn asked_by_limit(&self) -> bool {
        self.state.asked_by_limit.load(SeqCst)
    }

    /// Completes when this connection must start closing: at its own moment in the drain
    /// window (for connections open when the drain starts, uniform over the window, so idle
    /// connections are closed spread out; at once for the immediate strategy or a zero drain
    /// time), or as soon as the connection has been asked by [`Conn::drain_close`]. Never on a
    /// failed health check alone: that closes connections only at their natural points.
    /// Cancel-safe.
    pub async fn close_requested(&mut self) {
        loop {
            let notified = self.state.asked_notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so an ask between the check and the await wakes us.
            notified.as_mut().enable();
            self.changes.borrow_and_update();
            if self.state.asked.load(SeqCst) {
                return;
            }
            match self.close_by() {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        self.state.mark_asked();
                        return;
                    }
                    _ = &mut notified => {}
                },
                None => {
                    // Before any drain or failed health check (a proxy's whole normal life),
                    // this future is polled at every wake-up of the connection's task, i.e.
                    // for every request. The two waits are polled with a waker of our own that
                    // records its wake-ups: while it has none, and the task's waker is the
                    // same, neither wait can have fired and a poll is one atomic load.
                    let changed = self.changes.changed();
                    tokio::pin!(changed);
                    let mut registered: Option<Arc<WakeFlag>> = None;
                    let r = std::future::poll_fn(|cx| {
                        if let Some(flag) = &registered {
                            if !flag.fired.load(SeqCst) && flag.task.will_wake(cx.waker()) {
                                return Poll::Pending;
                            }
                        }
                        let flag = Arc::new(WakeFlag {
                            fired: AtomicBool::new(false),
                            task: cx.waker().clone(),
                        });
                        let waker = Waker::from(flag.clone());
                        let mut inner = Context::from_waker(&waker);
                        registered = Some(flag);
                        if let Poll::Ready(r) = changed.as_mut().poll(&mut inner) {
                            return Poll::Ready(r.is_ok());
                        }
                        notified.as_mut().poll(&mut inner).map(|()| true)
                    })
                    .await;
                    if !r {
                        // The sender lives in the shared state this handle holds: cannot
                        // happen; wait for an ask rather than spin.
                        notified.await;
                    }
                }
            }
        }
    }

    /// The moment this connection must be asked to close by ("must close by"); `None` before
    /// a drain applies to it. For a connection open when a gradual drain starts, uniform over
    /// the window; for one opened during the drain, uniform over what is left of it.
    pub fn close_by(&self) -> Option<Instant> {
        let s = &self.state;
        s.shared.close_by(s.direction, s.opened_ns, s.u)
    }

    /// The end of the drain window that applies to this connection, after which every
    /// connection has been asked; `None` before a drain applies to it.
    pub fn drain_deadline(&self) -> Option<Instant> {
        let s = &self.state;
        s.shared
            .drain_start(s.direction)
            .map(|start| s.shared.instant(start) + s.shared.config.drain_time)
    }

    /// True once this connection has been asked to close.
    pub fn is_asked(&self) -> bool {
        self.state.asked.load(SeqCst)
    }

    /// True once a drain applies to this connection's direction (whether or not it has been
    /// asked yet).
    pub fn is_draining(&self) -> bool {
        self.state
            .shared
            .drain_start(self.state.direction)
            .is_some()
    }

    /// Envoy's `/healthcheck/fail` state: one atomic load.
    pub fn health_check_failed(&self) -> bool {
        self.state.shared.health_check_failed()
    }

    pub fn direction(&self) -> Direction {
        self.state.direction
    }
}

impl Clone for Conn {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            changes: self.state.shared.subscribe_changes(),
        }
    }
}

/// A waker that records that it was woken before waking the task's.
struct WakeFlag {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, SeqCst);
        self.task.wake_by_ref();
    }
}

// === impl State ===

impl State {
    fn mark_asked(&self) {
        if !self.asked.swap(true, SeqCst) {
            self.shared.conn_asked();
            self.asked_notify.notify_waiters();
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.shared.conn_closed();
    }
}
