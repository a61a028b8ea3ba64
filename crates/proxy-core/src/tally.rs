//! This process's own count of the requests it answered, and of those it answered itself
//! because the upstream failed: what the rollback health gate compares between a new
//! generation and the one it replaced. The stats region cannot tell them apart (its counters
//! are the chain's, summed over generations), so each process keeps its own here.
//!
//! One slot per worker thread, written by that thread only (a plain load and store, no locked
//! instruction on the request path) and summed by readers on other threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::flags::ResponseFlags;

/// The process's tally: every worker's slot, including those of workers that have exited (a
/// generation that serves again after a rollback starts new ones; its counts go on).
#[derive(Debug, Default)]
pub struct Tally {
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// Counts read from a [`Tally`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered with a status (a client that left first is not counted).
    pub answered: u64,
    /// Of those, answered by this process for an upstream failure: see [`is_upstream_failure`].
    pub upstream_failed: u64,
}

/// One worker's counts. Cache-line aligned so workers never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Slot {
    answered: AtomicU64,
    upstream_failed: AtomicU64,
}

// === impl Tally ===

impl Tally {
    /// A new worker's slot.
    pub fn slot(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(slot.clone());
        slot
    }

    /// The counts so far, summed over every worker.
    pub fn read(&self) -> Counts {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .fold(Counts::default(), |sum, s| Counts {
                answered: sum.answered + s.answered.load(Ordering::Relaxed),
                upstream_failed: sum.upstream_failed + s.upstream_failed.load(Ordering::Relaxed),
            })
    }
}

// === impl Slot ===

impl Slot {
    /// A request was answered with `status` and `flags`. Called by the slot's own worker only:
    /// the load and store cannot race with another writer.
    pub fn record(&self, status: u16, flags: ResponseFlags) {
        bump(&self.answered);
        if is_upstream_failure(status, flags) {
            bump(&self.upstream_failed);
        }
    }
}

fn bump(n: &AtomicU64) {
    n.store(n.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// A response this process generated itself because the upstream failed: a 502, 503 or 504
/// flagged no healthy upstream, connection failure or termination, reset, timeout, overflow,
/// retries exhausted or an upstream protocol error. An upstream's own 503 (no flag) is not one.
pub fn is_upstream_failure(status: u16, flags: ResponseFlags) -> bool {
    const UPSTREAM: [ResponseFlags; 8] = [
        ResponseFlags::NO_HEALTHY_UPSTREAM,
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
        ResponseFlags::UPSTREAM_REMOTE_RESET,
        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
        ResponseFlags::UPSTREAM_OVERFLOW,
        ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
    ];
    matches!(status, 502..=504) && UPSTREAM.iter().any(|f| flags.contains(*f))
}

impl Counts {
    /// The counts between `earlier` and `self`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            answered: self.answered.saturating_sub(earlier.answered),
            upstream_failed: self.upstream_failed.saturating_sub(earlier.upstream_failed),
        }
    }

    /// The share of answered requests that were upstream failures (0 with none answered).
    pub fn failure_share(self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.upstream_failed as f64 / self.answered as f64
        }
    }
}

/// A generation's traffic over its last minute, the baseline a successor's health gate
/// compares itself with: the tally sampled every [`Recent::EVERY`], the samples older than the
/// newest one at least [`Recent::SPAN`] old dropped.
#[derive(Debug)]
pub struct Recent {
    tally: Arc<Tally>,
    samples: Mutex<VecDeque<(Instant, Counts)>>,
}

// === impl Recent ===

impl Recent {
    /// How far back the baseline reaches.
    pub const SPAN: Duration = Duration::from_secs(60);
    /// How often to [`Recent::sample`].
    pub const EVERY: Duration = Duration::from_secs(5);

    pub fn new(tally: Arc<Tally>, now: Instant) -> Self {
        let first = tally.read();
        Self {
            tally,
            samples: Mutex::new(VecDeque::from([(now, first)])),
        }
    }

    /// Take a sample (every [`Recent::EVERY`]).
    pub fn sample(&self, now: Instant) {
        let counts = self.tally.read();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back((now, counts));
        let horizon = now.checked_sub(Self::SPAN);
        // Keep one sample at or past the horizon: the start of the span.
        while samples.len() > 1 && horizon.is_some_and(|h| samples[1].0 <= h) {
            samples.pop_front();
        }
    }

    /// The counts since the oldest sample kept (about a minute ago), and how long ago it was.
    pub fn last_minute(&self, now: Instant) -> (Counts, Duration) {
        let counts = self.tally.read();
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        match samples.front() {
            Some((at, base)) => (counts.since(*base), now.saturating_duration_since(*at)),
            None => (counts, Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_baton_s_own_upstream_failures_count() {
        let tally = Tally::default();
        let (a, b) = (tally.slot(), tally.slot());
        a.record(200, ResponseFlags::NONE);
        a.record(503, ResponseFlags::NO_HEALTHY_UPSTREAM);
        // The upstream's own 503, a route not found, a 500 flagged oddly: not counted.
        b.record(503, ResponseFlags::NONE);
        b.record(404, ResponseFlags::NO_ROUTE_FOUND);
        b.record(500, ResponseFlags::UPSTREAM_REMOTE_RESET);
        b.record(504, ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
        let now = tally.read();
        assert_eq!(
            now,
            Counts {
                answered: 6,
                upstream_failed: 2
            }
        );
        let later = Counts {
            answered: 10,
            upstream_failed: 2,
        };
        assert_eq!(later.since(now).failure_share(), 0.0);
        assert!((now.failure_share() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(Counts::default().failure_share(), 0.0);
    }

    #[test]
    fn the_baseline_reaches_about_a_minute_back() {
        let tally = Arc::new(Tally::default());
        let slot = tally.slot();
        let t0 = Instant::now();
        let recent = Recent::new(tally.clone(), t0);
        // 10 requests every 5 s for two minutes, one in ten an upstream failure.
        for step in 1..=24u32 {
            for i in 0..10 {
                if i == 0 {
                    slot.record(503, ResponseFlags::NO_HEALTHY_UPSTREAM);
                } else {
                    slot.record(200, ResponseFlags::NONE);
                }
            }
            recent.sample(t0 + Recent::EVERY * step);
        }
        let now = t0 + Recent::EVERY * 24;
        let (counts, span) = recent.last_minute(now);
        assert_eq!(span, Recent::SPAN);
        assert_eq!(
            counts,
            Counts {
                answered: 120,
                upstream_failed: 12
            }
        );
        // A fresh generation's baseline covers what it has.
        let young = Recent::new(Arc::new(Tally::default()), t0);
        assert_eq!(
            young.last_minute(t0 + Duration::from_secs(2)),
            (Counts::default(), Duration::from_secs(2))
        );
    }
}
