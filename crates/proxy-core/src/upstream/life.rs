//! How long a pooled upstream connection may live: the limits of a cluster's
//! `common_http_protocol_options` (`idle_timeout`, `max_requests_per_connection`,
//! `max_connection_duration`) applied to one connection's history. Pure: the caller passes the
//! time, and closes the connection and counts the stat the verdict names.

use std::time::Instant;

use crate::config::ConnectionLimits;
use crate::stats::ClusterStats;

/// One upstream connection's history.
#[derive(Clone, Copy, Debug)]
pub struct Life {
    opened: Instant,
    /// Requests started on it.
    requests: u32,
    /// When it last became idle (or, for a shared HTTP/2 connection, last took a request).
    idle_since: Instant,
}

/// Why a connection that did nothing wrong is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retire {
    /// `idle_timeout`: `upstream_cx_idle_timeout`.
    Idle,
    /// `max_requests_per_connection`: `upstream_cx_max_requests`.
    MaxRequests,
    /// `max_connection_duration`: `upstream_cx_max_duration_reached`.
    MaxDuration,
}

// === impl Life ===

impl Life {
    pub fn new(now: Instant) -> Self {
        Self {
            opened: now,
            requests: 0,
            idle_since: now,
        }
    }

    /// A request starts on the connection. `Some(MaxRequests)`: it is the last one the
    /// connection may carry (Envoy counts `upstream_cx_max_requests` then, and closes the
    /// connection once the request is done); it must not be handed out again.
    pub fn start_request(&mut self, limits: &ConnectionLimits, now: Instant) -> Option<Retire> {
        self.requests = self.requests.saturating_add(1);
        self.idle_since = now;
        limits
            .max_requests_per_connection
            .is_some_and(|max| self.requests >= max)
            .then_some(Retire::MaxRequests)
    }

    /// The connection's requests are done. `None`: it may go back to the pool, idle from `now`.
    /// A connection that has carried its last request is closed without a count (it was
    /// counted when that request started).
    pub fn finish(
        &mut self,
        limits: &ConnectionLimits,
        now: Instant,
    ) -> Result<(), Option<Retire>> {
        if limits
            .max_requests_per_connection
            .is_some_and(|max| self.requests >= max)
        {
            return Err(None);
        }
        if let Some(r) = self.expired(limits, now) {
            return Err(Some(r));
        }
        self.idle_since = now;
        Ok(())
    }

    /// Whether an idle connection is due to be closed at `now`, and why.
    pub fn expired(&self, limits: &ConnectionLimits, now: Instant) -> Option<Retire> {
        if limits
            .max_connection_duration
            .is_some_and(|d| now.saturating_duration_since(self.opened) >= d)
        {
            return Some(Retire::MaxDuration);
        }
        if limits
            .idle_timeout
            .is_some_and(|d| now.saturating_duration_since(self.idle_since) >= d)
        {
            return Some(Retire::Idle);
        }
        None
    }

    /// When an idle connection becomes due, if ever.
    pub fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let idle = limits.idle_timeout.map(|d| self.idle_since + d);
        let duration = limits.max_connection_duration.map(|d| self.opened + d);
        match (idle, duration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

// === impl Retire ===

impl Retire {
    /// Count the closing in the cluster's stats.
    pub fn count(self, stats: &ClusterStats) {
        match self {
            Retire::Idle => stats.upstream_cx_idle_timeout.inc(),
            Retire::MaxRequests => stats.upstream_cx_max_requests.inc(),
            Retire::MaxDuration => stats.upstream_cx_max_duration_reached.inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(idle: Option<u64>, max_rq: Option<u32>, dur: Option<u64>) -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: idle.map(Duration::from_secs),
            max_requests_per_connection: max_rq,
            max_connection_duration: dur.map(Duration::from_secs),
        }
    }

    #[test]
    fn max_requests_retires_at_the_last_request() {
        let t0 = Instant::now();
        let l = limits(None, Some(2), None);
        let mut life = Life::new(t0);
        assert_eq!(life.start_request(&l, t0), None);
        assert_eq!(life.finish(&l, t0), Ok(()));
        assert_eq!(life.start_request(&l, t0), Some(Retire::MaxRequests));
        // Counted at the start of that request, not again at its end.
        assert_eq!(life.finish(&l, t0), Err(None));
    }

    #[test]
    fn idle_timeout_runs_from_the_last_request() {
        let t0 = Instant::now();
        let l = limits(Some(10), None, None);
        let mut life = Life::new(t0);
        life.start_request(&l, t0);
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(life.finish(&l, t5), Ok(()));
        assert_eq!(life.deadline(&l), Some(t5 + Duration::from_secs(10)));
        assert_eq!(life.expired(&l, t5 + Duration::from_secs(9)), None);
        assert_eq!(
            life.expired(&l, t5 + Duration::from_secs(10)),
            Some(Retire::Idle)
        );
    }

    #[test]
    fn max_duration_runs_from_the_open_and_wins_over_idle() {
        let t0 = Instant::now();
        let l = limits(Some(10), None, Some(3));
        let mut life = Life::new(t0);
        life.start_request(&l, t0);
        assert_eq!(life.deadline(&l), Some(t0 + Duration::from_secs(3)));
        let t4 = t0 + Duration::from_secs(4);
        // A request that outlived the duration: the connection is not reused.
        assert_eq!(life.finish(&l, t4), Err(Some(Retire::MaxDuration)));
    }

    #[test]
    fn no_limits_never_expire() {
        let t0 = Instant::now();
        let l = limits(None, None, None);
        let mut life = Life::new(t0);
        for _ in 0..1000 {
            assert_eq!(life.start_request(&l, t0), None);
        }
        assert_eq!(life.deadline(&l), None);
        assert_eq!(life.expired(&l, t0 + Duration::from_secs(1 << 30)), None);
    }
}
