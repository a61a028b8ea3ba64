//! Retry decisions: which statuses and failures a route's retry policy retries, and the count
//! of tries a request has left.

use std::sync::Arc;

use crate::cluster::{Cluster, RetryGuard};
use crate::config::RetryPolicy;
use crate::error::UpstreamFailure;

/// The tries of one request: counted attempts (at most `1 + num_retries` with a replayable
/// body), plus one uncounted resend when a reused keep-alive connection turned out closed.
#[derive(Debug)]
pub(super) struct Tries<'p> {
    policy: Option<&'p RetryPolicy>,
    /// Counted attempts started.
    attempt: u32,
    max_attempts: u32,
    /// The resend on a fresh connection has been used.
    stale_resend_used: bool,
    /// Held while a retry is under way (the cluster's `max_retries` breaker).
    _guard: Option<RetryGuard>,
}

/// What to do after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Try again (a counted retry).
    Retry,
    /// Send the same request once more, on a new connection, without counting it.
    Resend,
    /// This outcome is the answer.
    Done,
}

// === impl Tries ===

impl<'p> Tries<'p> {
    /// `replayable`: the request body is in memory, so the request can be sent again.
    pub(super) fn new(policy: Option<&'p RetryPolicy>, replayable: bool) -> Self {
        let max_attempts = if replayable {
            1 + policy.map_or(0, |p| p.num_retries)
        } else {
            1
        };
        Self {
            policy,
            attempt: 0,
            max_attempts,
            stale_resend_used: false,
            _guard: None,
        }
    }

    /// Start a counted attempt.
    pub(super) fn start(&mut self) {
        self.attempt += 1;
    }

    /// The attempt under way is the last counted one.
    pub(super) fn is_last(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// This is a retry (counted attempts after the first).
    pub(super) fn retried(&self) -> bool {
        self.attempt > 1
    }

    /// After a response with `status`.
    pub(super) fn after_status(&mut self, status: u16, cluster: &Arc<Cluster>) -> Next {
        let retriable = self.policy.is_some_and(|p| retriable_status(p, status));
        self.retry_if(retriable, cluster)
    }

    /// After `failure`. `resendable`: the connection was a reused one, the request idempotent
    /// and its body replayable, and its head still in hand.
    pub(super) fn after_failure(
        &mut self,
        failure: UpstreamFailure,
        resendable: bool,
        cluster: &Arc<Cluster>,
    ) -> Next {
        if resendable && failure == UpstreamFailure::Reset && !self.stale_resend_used {
            self.stale_resend_used = true;
            return Next::Resend;
        }
        let retriable = self.policy.is_some_and(|p| retriable_failure(p, failure));
        self.retry_if(retriable, cluster)
    }

    fn retry_if(&mut self, retriable: bool, cluster: &Arc<Cluster>) -> Next {
        if !retriable || self.is_last() {
            return Next::Done;
        }
        match cluster.try_retry() {
            Some(g) => {
                self._guard = Some(g);
                cluster.stats.upstream_rq_retry.inc();
                Next::Retry
            }
            None => Next::Done,
        }
    }
}

/// Whether `p` retries a response with `status`.
pub(super) fn retriable_status(p: &RetryPolicy, status: u16) -> bool {
    let r = p.retry_on;
    (r.five_xx && status >= 500)
        || (r.gateway_error && (502..=504).contains(&status))
        || (r.retriable_4xx && status == 409)
        || (r.retriable_status_codes && p.retriable_status_codes.contains(&status))
}

/// Whether `p` retries after `f`.
pub(super) fn retriable_failure(p: &RetryPolicy, f: UpstreamFailure) -> bool {
    let r = p.retry_on;
    match f {
        UpstreamFailure::ConnectFailure => r.five_xx || r.gateway_error || r.connect_failure,
        UpstreamFailure::Reset => r.five_xx || r.gateway_error || r.reset,
        UpstreamFailure::ProtocolError | UpstreamFailure::Timeout => r.five_xx || r.gateway_error,
        UpstreamFailure::NoHealthyUpstream | UpstreamFailure::Overflow => false,
    }
}
