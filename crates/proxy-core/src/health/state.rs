//! One host's health-check bookkeeping, pure: what a check's outcome does to the host's flags
//! (thresholds, the first check, timeouts) and how long to wait before the next check. No
//! sockets, no clock; tested on values.
//!
//! As Envoy 1.40 does (measured): a host that answers but not as expected (an HTTP status
//! outside `expected_statuses`) is out at once, whatever `unhealthy_threshold`; the threshold
//! counts connection failures and timeouts. The edge intervals apply while a change is under
//! way (`healthy_edge_interval` between the passes that bring a host back,
//! `unhealthy_edge_interval` between the failures that take it out), and the regular ones
//! once it is done.

use std::time::Duration;

use crate::config::HealthCheck;
use crate::host_health::HealthFlags;

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The host answered, but not as expected (status, payload): out at once.
    Failure,
    /// No usable connection: refused, reset, closed, or a response that is not HTTP.
    Network,
    /// No answer within `timeout`.
    Timeout,
}

/// What a check changed about the host's place in load balancing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// The check disagreed with the host's state, short of its threshold.
    Pending,
    BecameHealthy,
    BecameUnhealthy,
}

/// The consecutive results of one host's checks.
#[derive(Debug)]
pub struct HostState {
    flags: HealthFlags,
    successes: u32,
    failures: u32,
    /// No check has finished yet: a first pass lets a host in at once.
    first: bool,
}

// === impl Outcome ===

impl Outcome {
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }

    /// Counted as `health_check.network_failure` (besides `failure`).
    pub fn is_network(self) -> bool {
        matches!(self, Outcome::Network | Outcome::Timeout)
    }
}

// === impl HostState ===

impl HostState {
    /// `flags`: the host's, of which only the health checker's own count here.
    pub fn new(flags: HealthFlags) -> Self {
        let own = HealthFlags::HEALTHY.with(
            HealthFlags::FAILED_ACTIVE_HC,
            flags.contains(HealthFlags::FAILED_ACTIVE_HC),
        );
        Self {
            flags: own,
            successes: 0,
            failures: 0,
            first: true,
        }
    }

    /// The health checker's flags: `FAILED_ACTIVE_HC` and `ACTIVE_HC_TIMEOUT`.
    pub fn flags(&self) -> HealthFlags {
        self.flags
    }

    fn passing(&self) -> bool {
        !self.flags.contains(HealthFlags::FAILED_ACTIVE_HC)
    }

    /// Take one check's outcome into account.
    pub fn record(&mut self, outcome: Outcome, cfg: &HealthCheck) -> Change {
        let first = std::mem::replace(&mut self.first, false);
        let was_healthy = self.passing();
        if outcome.is_success() {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if was_healthy {
                self.flags = self.flags.with(HealthFlags::ACTIVE_HC_TIMEOUT, false);
                return Change::None;
            }
            if first || self.successes >= cfg.healthy_threshold {
                self.flags = HealthFlags::HEALTHY;
                return Change::BecameHealthy;
            }
            return Change::Pending;
        }
        self.successes = 0;
        self.failures = self.failures.saturating_add(1);
        let mut change = Change::None;
        if was_healthy {
            change = if outcome == Outcome::Failure || self.failures >= cfg.unhealthy_threshold {
                self.flags = self.flags.with(HealthFlags::FAILED_ACTIVE_HC, true);
                Change::BecameUnhealthy
            } else {
                Change::Pending
            };
        }
        let timed_out = outcome == Outcome::Timeout && !self.passing();
        self.flags = self.flags.with(HealthFlags::ACTIVE_HC_TIMEOUT, timed_out);
        change
    }

    /// How long to wait before the next check, before jitter. `traffic`: the cluster has
    /// opened an upstream connection at some point.
    pub fn next_interval(&self, change: Change, traffic: bool, cfg: &HealthCheck) -> Duration {
        if !traffic {
            return if self.passing() {
                cfg.no_traffic_healthy_interval
            } else {
                cfg.no_traffic_interval
            };
        }
        match change {
            // Still in: failures are adding up.
            Change::Pending if self.passing() => cfg.unhealthy_edge_interval,
            // Still out: passes are adding up.
            Change::Pending => cfg.healthy_edge_interval,
            Change::None | Change::BecameHealthy if self.passing() => cfg.interval,
            Change::None | Change::BecameHealthy | Change::BecameUnhealthy => {
                cfg.unhealthy_interval
            }
        }
    }
}

/// `base` plus a random share of `interval_jitter` and of `interval_jitter_percent` of `base`.
pub fn with_jitter(base: Duration, cfg: &HealthCheck) -> Duration {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let jitter = ms(cfg.interval_jitter)
        .saturating_add(ms(base).saturating_mul(u64::from(cfg.interval_jitter_percent)) / 100);
    if jitter == 0 {
        return base;
    }
    base + Duration::from_millis(fastrand::u64(..=jitter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CheckKind, TcpCheck};

    fn cfg() -> HealthCheck {
        let s = Duration::from_secs;
        HealthCheck {
            timeout: s(1),
            interval: s(10),
            interval_jitter: Duration::ZERO,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            no_traffic_interval: s(60),
            no_traffic_healthy_interval: s(61),
            interval_jitter_percent: 0,
            reuse_connection: true,
            unhealthy_interval: s(20),
            unhealthy_edge_interval: s(21),
            healthy_edge_interval: s(11),
            always_log_failures: false,
            kind: CheckKind::Tcp(TcpCheck::default()),
        }
    }

    #[test]
    fn a_first_pass_lets_a_new_host_in_at_once() {
        let c = cfg();
        let mut st = HostState::new(HealthFlags::FAILED_ACTIVE_HC);
        assert_eq!(st.record(Outcome::Success, &c), Change::BecameHealthy);
        assert_eq!(st.flags(), HealthFlags::HEALTHY);
    }

    #[test]
    fn a_failed_first_check_keeps_it_out_until_healthy_threshold() {
        let c = cfg();
        let mut st = HostState::new(HealthFlags::FAILED_ACTIVE_HC);
        assert_eq!(st.record(Outcome::Network, &c), Change::None);
        assert_eq!(st.record(Outcome::Success, &c), Change::Pending);
        assert!(!st.flags().is_healthy());
        assert_eq!(st.record(Outcome::Success, &c), Change::BecameHealthy);
    }

    #[test]
    fn unhealthy_threshold_counts_connection_failures_and_timeouts() {
        let c = cfg();
        let mut st = HostState::new(HealthFlags::HEALTHY);
        assert_eq!(st.record(Outcome::Network, &c), Change::Pending);
        assert_eq!(st.record(Outcome::Network, &c), Change::Pending);
        // A pass in between starts the count again.
        assert_eq!(st.record(Outcome::Success, &c), Change::None);
        assert_eq!(st.record(Outcome::Network, &c), Change::Pending);
        assert_eq!(st.record(Outcome::Timeout, &c), Change::Pending);
        // A timeout on a host still in balancing sets no flag.
        assert_eq!(st.flags(), HealthFlags::HEALTHY);
        assert_eq!(st.record(Outcome::Timeout, &c), Change::BecameUnhealthy);
        assert_eq!(st.flags().render(), "/failed_active_hc/active_hc_timeout");
        assert_eq!(st.record(Outcome::Network, &c), Change::None);
        assert_eq!(st.flags().render(), "/failed_active_hc");
    }

    #[test]
    fn an_unexpected_answer_takes_it_out_at_once() {
        let c = cfg();
        let mut st = HostState::new(HealthFlags::HEALTHY);
        assert_eq!(st.record(Outcome::Failure, &c), Change::BecameUnhealthy);
        assert_eq!(st.flags().render(), "/failed_active_hc");
    }

    /// As measured on Envoy 1.40 (interval 3 s, edges 0.3 s, thresholds 3): after a 503 the
    /// next check is `unhealthy_interval` away; the passes that bring it back are
    /// `healthy_edge_interval` apart; once back, `interval`.
    #[test]
    fn intervals_follow_health_changes_and_traffic() {
        let c = cfg();
        let s = Duration::from_secs;
        let mut st = HostState::new(HealthFlags::HEALTHY);
        assert_eq!(st.next_interval(Change::None, false, &c), s(61));
        assert_eq!(st.next_interval(Change::None, true, &c), s(10));
        let ch = st.record(Outcome::Network, &c);
        assert_eq!(st.next_interval(ch, true, &c), s(21), "failures adding up");
        let ch = st.record(Outcome::Failure, &c);
        assert_eq!(ch, Change::BecameUnhealthy);
        assert_eq!(st.next_interval(ch, true, &c), s(20));
        let ch = st.record(Outcome::Failure, &c);
        assert_eq!(st.next_interval(ch, true, &c), s(20));
        assert_eq!(st.next_interval(ch, false, &c), s(60));
        let ch = st.record(Outcome::Success, &c);
        assert_eq!(st.next_interval(ch, true, &c), s(11), "passes adding up");
        let ch = st.record(Outcome::Success, &c);
        assert_eq!(ch, Change::BecameHealthy);
        assert_eq!(st.next_interval(ch, true, &c), s(10));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut c = cfg();
        c.interval_jitter = Duration::from_millis(500);
        for _ in 0..100 {
            let d = with_jitter(Duration::from_secs(1), &c);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_millis(1500));
        }
        c.interval_jitter_percent = 10;
        for _ in 0..100 {
            let d = with_jitter(Duration::from_secs(10), &c);
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_millis(11_500));
        }
    }
}
