//! The state every handle of one drain shares, and the pure rules that turn it into decisions.
//!
//! Times are stored as nanoseconds since the drain was created so that the data plane reads
//! them with one atomic load; `NEVER` marks "not started". Writers store a time before they
//! announce it on `changed`, so a reader that marks `changed` seen and then loads the atomics
//! never misses an update.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::{Config, Direction, Phase, Scope, Strategy};

const NEVER: u64 = u64::MAX;

/// The increment of the Weyl sequence behind the draws; any odd constant with well-mixed bits
/// works, this one is wyrand's.
const WEYL: u64 = 0xa076_1d64_78bd_642f;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Time zero of every stored time.
    base: Instant,
    /// Per [`Scope::index`]: when a drain of that scope started.
    drain_started: [AtomicU64; 2],
    /// Per [`Scope::index`]: when listeners of that scope stop accepting.
    stop_at: [AtomicU64; 2],
    health_failed: AtomicBool,
    /// State of the draws: each draw takes the next value of a Weyl sequence and mixes it.
    rng: AtomicU64,
    /// Release tokens held ([`crate::Release`]); zero wakes `released`.
    tokens: AtomicU64,
    open: AtomicU64,
    asked: AtomicU64,
    /// Woken when `tokens` reaches zero.
    released: Notify,
    /// Held here for as long as any handle exists; receivers are every `subscribe`r.
    phase: watch::Sender<Phase>,
    /// Bumped after every change of `drain_started`, `stop_at` or `health_failed`; the
    /// receivers are in each [`crate::Watch`] and [`crate::Conn`], to wake their futures.
    changed: watch::Sender<()>,
}

/// Envoy's gradual rule for one "should I close now?": true with probability
/// `elapsed / window`, given `u` uniform in `[0, 1)`. At or past the window (and for an empty
/// window) always true.
pub(crate) fn gradual(elapsed: Duration, window: Duration, u: f64) -> bool {
    if window.is_zero() || elapsed >= window {
        return true;
    }
    u * window.as_secs_f64() < elapsed.as_secs_f64()
}

/// The moment a connection must be asked to close: `u` of the way from `from` to `deadline`.
pub(crate) fn spread(from: Instant, deadline: Instant, u: f64) -> Instant {
    if deadline <= from {
        return from;
    }
    from + (deadline - from).mul_f64(u.clamp(0.0, 1.0))
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
        Self {
            config,
            base: Instant::now(),
            drain_started: [AtomicU64::new(NEVER), AtomicU64::new(NEVER)],
            stop_at: [AtomicU64::new(NEVER), AtomicU64::new(NEVER)],
            health_failed: AtomicBool::new(false),
            rng: AtomicU64::new(seed),
            tokens: AtomicU64::new(0),
            open: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            released: Notify::new(),
            phase: watch::Sender::new(Phase::Serving),
            changed: watch::Sender::new(()),
        }
    }

    // --- time ---

    pub(crate) fn now_ns(&self) -> u64 {
        self.to_ns(Instant::now())
    }

    fn to_ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(NEVER - 1)
    }

    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }

    // --- randomness ---

    /// A draw uniform in `[0, 1)`. Lock-free: any thread may draw; with one seed and one order
    /// of draws the results repeat.
    pub(crate) fn draw(&self) -> f64 {
        let state = self.rng.fetch_add(WEYL, SeqCst);
        fastrand::Rng::with_seed(state).f64()
    }

    // --- drain ---

    /// Start a drain of `scope` now; false if one had already started.
    pub(crate) fn start_drain(&self, scope: Scope) -> bool {
        let now = self.now_ns();
        if self.drain_started[scope.index()]
            .compare_exchange(NEVER, now, SeqCst, SeqCst)
            .is_err()
        {
            return false;
        }
        let started = self.instant(now);
        let deadline = started + self.config.drain_time;
        self.phase.send_if_modified(|p| {
            let widen = match p {
                Phase::Serving => true,
                Phase::Draining { scope: s, .. } => *s == Scope::InboundOnly && scope == Scope::All,
                _ => false,
            };
            if widen {
                *p = Phase::Draining {
                    scope,
                    started,
                    deadline,
                };
            }
            widen
        });
        self.changed.send_replace(());
        if self.tokens.load(SeqCst) == 0 {
            self.mark_drained();
        }
        true
    }

    /// When the drain that applies to `direction` started: the earliest applicable scope.
    pub(crate) fn drain_start(&self, direction: Direction) -> Option<u64> {
        earliest(&self.drain_started, direction)
    }

    /// When a drain of `scope` started and when its window ends.
    pub(crate) fn drain_window(&self, scope: Scope) -> Option<(Instant, Instant)> {
        let started = self.drain_started[scope.index()].load(SeqCst);
        (started != NEVER).then(|| {
            let started = self.instant(started);
            (started, started + self.config.drain_time)
        })
    }

    pub(crate) fn any_drain(&self) -> bool {
        Scope::EACH
            .iter()
            .any(|s| self.drain_started[s.index()].load(SeqCst) != NEVER)
    }

    /// Envoy's `drainClose()` for a connection of `direction`, without per-connection memory:
    /// true when the health check is failed; otherwise false before a drain applies, and then
    /// per the strategy.
    pub(crate) fn decide(&self, direction: Direction) -> bool {
        if self.health_check_failed() {
            return true;
        }
        let Some(start) = self.drain_start(direction) else {
            return false;
        };
        match self.config.strategy {
            Strategy::Immediate => true,
            Strategy::Gradual => {
                let elapsed = Duration::from_nanos(self.now_ns().saturating_sub(start));
                let window = self.config.drain_time;
                // Skip the draw where the answer does not depend on it.
                window.is_zero() || elapsed >= window || gradual(elapsed, window, self.draw())
            }
        }
    }

    /// The moment a connection of `direction`, opened at `opened_ns`, with its own draw `u`,
    /// must be asked to close; `None` before a drain applies to it.
    pub(crate) fn close_by(&self, direction: Direction, opened_ns: u64, u: f64) -> Option<Instant> {
        let start = self.drain_start(direction)?;
        let from = self.instant(start.max(opened_ns));
        match self.config.strategy {
            Strategy::Immediate => Some(from),
            Strategy::Gradual => {
                let deadline = self.instant(start) + self.config.drain_time;
                Some(spread(from, deadline, u))
            }
        }
    }

    // --- listeners ---

    /// Listeners of `scope` stop accepting at `at` (or earlier, if already set earlier).
    pub(crate) fn stop_accepting_at(&self, scope: Scope, at: Instant) {
        let at = self.to_ns(at);
        let prev = self.stop_at[scope.index()].fetch_min(at, SeqCst);
        if at < prev {
            self.changed.send_replace(());
        }
    }

    pub(crate) fn stop_at(&self, direction: Direction) -> Option<Instant> {
        earliest(&self.stop_at, direction).map(|ns| self.instant(ns))
    }

    // --- health ---

    pub(crate) fn set_health_check_failed(&self, failed: bool) {
        if self.health_failed.swap(failed, SeqCst) != failed {
            self.changed.send_replace(());
        }
    }

    pub(crate) fn health_check_failed(&self) -> bool {
        self.health_failed.load(SeqCst)
    }

    // --- tokens and counters ---

    pub(crate) fn acquire(&self) {
        self.tokens.fetch_add(1, SeqCst);
    }

    pub(crate) fn release(&self) {
        if self.tokens.fetch_sub(1, SeqCst) == 1 {
            self.released.notify_waiters();
            if self.any_drain() {
                self.mark_drained();
            }
        }
    }

    pub(crate) fn conn_opened(&self) {
        self.open.fetch_add(1, SeqCst);
    }

    pub(crate) fn conn_closed(&self) {
        self.open.fetch_sub(1, SeqCst);
    }

    pub(crate) fn conn_asked(&self) {
        self.asked.fetch_add(1, SeqCst);
    }

    pub(crate) fn counts(&self) -> crate::Counts {
        crate::Counts {
            open: self.open.load(SeqCst),
            asked_to_close: self.asked.load(SeqCst),
            remaining: self.tokens.load(SeqCst),
        }
    }

    /// Completes once no token is held (at once if none is).
    pub(crate) async fn released(&self) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the check and the await
            // still wakes us.
            notified.as_mut().enable();
            if self.tokens.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    // --- phase ---

    fn mark_drained(&self) {
        self.phase.send_if_modified(|p| {
            let done = matches!(p, Phase::Draining { .. } | Phase::Abandoned { .. });
            if done {
                *p = Phase::Drained;
            }
            done
        });
    }

    pub(crate) fn mark_abandoned(&self) {
        let remaining = self.tokens.load(SeqCst);
        self.phase.send_if_modified(|p| {
            let give_up = remaining > 0 && matches!(p, Phase::Draining { .. });
            if give_up {
                *p = Phase::Abandoned { remaining };
            }
            give_up
        });
    }

    pub(crate) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub(crate) fn subscribe_phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// The earliest time among the scopes that apply to `direction`.
fn earliest(slots: &[AtomicU64; 2], direction: Direction) -> Option<u64> {
    Scope::EACH
        .iter()
        .filter(|s| s.applies_to(direction))
        .map(|s| slots[s.index()].load(SeqCst))
        .min()
        .filter(|&t| t != NEVER)
}
