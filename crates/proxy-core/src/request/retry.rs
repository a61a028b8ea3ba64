//! Retry decisions: which statuses and failures a route's retry policy retries, and the count
//! of tries a request has left.

use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::cluster::{Cluster, Host, RetryGuard};
use crate::config::{RetryOn, RetryPolicy};
use crate::error::UpstreamFailure;

/// The tries of one request: counted attempts (at most `1 + num_retries` with a replayable
/// body), plus one uncounted resend when a reused keep-alive connection turned out closed.
#[derive(Debug)]
pub(super) struct Tries<'p> {
    policy: Option<Policy<'p>>,
    /// Counted attempts started.
    attempt: u32,
    max_attempts: u32,
    /// The resend on a fresh connection has been used.
    stale_resend_used: bool,
    /// The hosts tried, when the policy avoids them on a retry (`previous_hosts`).
    pub(super) tried: Option<Vec<Arc<Host>>>,
    /// Held while a retry is under way (the cluster's `max_retries` breaker).
    _guard: Option<RetryGuard>,
}

/// A request's retry policy: the route's, or one made for it from what an internal client
/// asked (boxed: the request's future holds only a pointer).
#[derive(Debug)]
pub(super) enum Policy<'p> {
    Route(&'p RetryPolicy),
    Asked(Box<RetryPolicy>),
}

impl std::ops::Deref for Policy<'_> {
    type Target = RetryPolicy;

    fn deref(&self) -> &RetryPolicy {
        match self {
            Policy::Route(p) => p,
            Policy::Asked(p) => p,
        }
    }
}

/// What to do after a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Try again (a counted retry), after the back-off.
    Retry,
    /// Send the same request once more, on a new connection, without counting it.
    Resend,
    /// This outcome is the answer.
    Done,
}

// === impl Tries ===

impl<'p> Tries<'p> {
    /// `replayable`: the request body is in memory, so the request can be sent again.
    /// `request`: its head, which a policy's `retriable_request_headers` must match.
    pub(super) fn new(policy: Option<Policy<'p>>, replayable: bool, request: &HeaderMap) -> Self {
        let policy = policy.filter(|p| {
            p.retriable_request_headers.is_empty()
                || p.retriable_request_headers
                    .iter()
                    .any(|m| m.matches(request))
        });
        let max_attempts = if replayable {
            1 + policy.as_ref().map_or(0, |p| p.num_retries)
        } else {
            1
        };
        let tried = policy
            .as_ref()
            .filter(|p| p.previous_hosts && max_attempts > 1)
            .map(|_| Vec::new());
        Self {
            policy,
            attempt: 0,
            max_attempts,
            stale_resend_used: false,
            tried,
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

    /// How long to wait before the retry about to start (the attempt under way is the one
    /// that failed), as Envoy's back-off draws it.
    pub(super) fn back_off(&self) -> std::time::Duration {
        let b = self.policy.as_ref().map(|p| p.back_off).unwrap_or_default();
        b.wait(self.attempt, fastrand::u64(..))
    }

    /// How many times a retry re-picks a host it already tried (`previous_hosts`).
    pub(super) fn reselect(&self) -> u32 {
        self.policy
            .as_ref()
            .map_or(0, |p| p.host_selection_retry_max_attempts)
    }

    /// After a response with `status` and `headers`.
    pub(super) fn after_response(
        &mut self,
        status: u16,
        headers: &HeaderMap,
        cluster: &Arc<Cluster>,
    ) -> Next {
        let retriable = self
            .policy
            .as_deref()
            .is_some_and(|p| retriable_response(p, status, headers));
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
        let retriable = self
            .policy
            .as_deref()
            .is_some_and(|p| retriable_failure(p, failure));
        self.retry_if(retriable, cluster)
    }

    fn retry_if(&mut self, retriable: bool, cluster: &Arc<Cluster>) -> Next {
        if !retriable {
            return Next::Done;
        }
        if self.is_last() {
            if self.max_attempts > 1 {
                cluster.stats.upstream_rq_retry_limit_exceeded.inc();
            }
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

/// What an internal client asks of the retries and timeouts in `x-envoy-retry-on`,
/// `x-envoy-max-retries`, `x-envoy-upstream-rq-timeout-ms` and
/// `x-envoy-upstream-rq-per-try-timeout-ms` (removed from the request, as Envoy does; an
/// external client's never reach here, Baton strips every `x-envoy-*` of theirs).
#[derive(Debug, Default)]
pub(super) struct Asked {
    retry_on: Option<RetryOn>,
    max_retries: Option<u32>,
    pub(super) timeout: Option<Option<std::time::Duration>>,
    pub(super) per_try_timeout: Option<std::time::Duration>,
}

static X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
static X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
static X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
static X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");

impl Asked {
    /// Take the fields from `h`; `None` when there is none.
    pub(super) fn take(h: &mut HeaderMap) -> Option<Self> {
        let text =
            |v: Option<http::HeaderValue>| v.and_then(|v| v.to_str().ok().map(str::to_owned));
        let num = |v: Option<http::HeaderValue>| text(v).and_then(|t| t.trim().parse::<u64>().ok());
        let retry_on = text(h.remove(&X_ENVOY_RETRY_ON)).map(|t| {
            // Unknown conditions are ignored, as Envoy ignores them in the header.
            let mut on = RetryOn::default();
            for c in t.split(',') {
                on.set(c.trim());
            }
            on
        });
        let max_retries =
            num(h.remove(&X_ENVOY_MAX_RETRIES)).map(|n| n.min(u64::from(u32::MAX)) as u32);
        let timeout = num(h.remove(&X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS))
            .map(|ms| (ms > 0).then(|| std::time::Duration::from_millis(ms)));
        let per_try_timeout = num(h.remove(&X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS))
            .filter(|&ms| ms > 0)
            .map(std::time::Duration::from_millis);
        let asked = Self {
            retry_on,
            max_retries,
            timeout,
            per_try_timeout,
        };
        (asked.retry_on.is_some()
            || asked.max_retries.is_some()
            || asked.timeout.is_some()
            || asked.per_try_timeout.is_some())
        .then_some(asked)
    }

    /// The route's policy with what was asked: conditions added to the route's, the number
    /// of retries replaced (a policy made when the route has none and retries were asked).
    pub(super) fn policy<'p>(&self, route: Option<&'p RetryPolicy>) -> Option<Policy<'p>> {
        if self.retry_on.is_none() && self.max_retries.is_none() && self.per_try_timeout.is_none() {
            return route.map(Policy::Route);
        }
        let mut p = match route {
            Some(p) => p.clone(),
            None if self.retry_on.is_some() => RetryPolicy {
                retry_on: RetryOn::default(),
                num_retries: 1,
                per_try_timeout: None,
                retriable_status_codes: Vec::new(),
                back_off: Default::default(),
                previous_hosts: false,
                host_selection_retry_max_attempts: 1,
                retriable_headers: Vec::new(),
                retriable_request_headers: Vec::new(),
            },
            None => return None,
        };
        if let Some(on) = self.retry_on {
            p.retry_on = p.retry_on.union(on);
        }
        if let Some(n) = self.max_retries {
            p.num_retries = n;
        }
        if let Some(t) = self.per_try_timeout {
            p.per_try_timeout = Some(t);
        }
        Some(Policy::Asked(Box::new(p)))
    }
}

/// Whether `p` retries a response with `status` and `headers`.
pub(super) fn retriable_response(p: &RetryPolicy, status: u16, headers: &HeaderMap) -> bool {
    let r = p.retry_on;
    retriable_status(p, status)
        || (r.envoy_ratelimited && headers.contains_key("x-envoy-ratelimited"))
        || (r.retriable_headers && p.retriable_headers.iter().any(|m| m.matches(headers)))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::RetryBackOff;

    #[test]
    fn back_off_ceilings_grow_as_envoy_s_and_stop_at_the_max() {
        let b = RetryBackOff::default();
        // The n-th retry draws below 25 ms × (2ⁿ − 1): 25, 75, 175, then capped at 250.
        let most = |retry| b.wait(retry, u64::MAX - 1);
        for (retry, below) in [(1, 25), (2, 75), (3, 175)] {
            assert!(most(retry) < Duration::from_millis(below), "retry {retry}");
            assert!(b.wait(retry, below - 1) == Duration::from_millis(below - 1));
            assert!(b.wait(retry, below) == Duration::ZERO);
        }
        for retry in [4, 10, 40, 100] {
            assert!(most(retry) <= Duration::from_millis(250), "retry {retry}");
        }
        assert_eq!(b.wait(4, 300), Duration::from_millis(250));
    }
}
