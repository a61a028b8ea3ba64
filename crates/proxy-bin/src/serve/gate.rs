//! The rollback health gate: through its parent's rollback window (counted from cutover), a
//! new generation judges itself, and gives way to the parent (which serves again) when it
//! fails. It fails when its `/ready` is not LIVE, or when the share of the requests it answered
//! with its own 502/503/504 for an upstream failure (no healthy upstream, connect failure,
//! reset, timeout: see [`proxy_core::tally::is_upstream_failure`]) exceeds the parent's share
//! over its last minute by more than `--rollback-gate-failure-percent` points, once it has
//! answered `--rollback-gate-min-requests`. The parent's share travels in its restart state
//! (`ParentState.recent`), so an upstream that was already failing before the restart does not
//! make the new generation give way.

use std::sync::Arc;
use std::time::Duration;

use hotrestart_rpc::pb::ParentState;
use proxy_core::admin::ServerState;
use proxy_core::lifecycle::Lifecycle;
use proxy_core::tally::{Counts, Recent, Tally};
use tokio::sync::oneshot;

use super::Generation;
use crate::cli::GateOptions;

/// The gate as the main loop polls it.
pub(super) type Judging = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

// === impl Generation ===

impl Generation {
    /// The health gate of a generation whose parent has a rollback window (`None` otherwise):
    /// it starts judging at cutover.
    pub(super) fn gate(
        &self,
        parent: &ParentState,
        cutover: oneshot::Receiver<()>,
    ) -> Option<Judging> {
        let baseline = Baseline::of(parent)?;
        tracing::info!(
            window_s = baseline.window.as_secs(),
            failure_percent = self.opts.rollback_gate.failure_percent,
            min_requests = self.opts.rollback_gate.min_requests,
            "the previous generation stands by after cutover: health gate on"
        );
        Some(Box::pin(judge(
            self.opts.rollback_gate,
            baseline,
            self.dataplane.tally().clone(),
            self.lifecycle.clone(),
            cutover,
        )))
    }

    /// This generation's traffic over its last minute, sampled from now on (a child's gate
    /// compares itself with it).
    pub(super) fn sample_recent_traffic(&self) -> Arc<Recent> {
        let recent = Arc::new(Recent::new(
            self.dataplane.tally().clone(),
            std::time::Instant::now(),
        ));
        let sampled = recent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Recent::EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                sampled.sample(std::time::Instant::now());
            }
        });
        recent
    }
}

/// How often the gate looks.
const PERIOD: Duration = Duration::from_millis(25);

/// What the gate judges against: the parent's window and recent traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Baseline {
    window: Duration,
    recent: Counts,
    span: Duration,
}

impl Baseline {
    /// The parent's, from its restart state; `None` without a rollback window (nothing to roll
    /// back to).
    pub(super) fn of(parent: &ParentState) -> Option<Self> {
        let window = Duration::from_millis(parent.rollback_window_ms);
        if window.is_zero() {
            return None;
        }
        let recent = parent.recent.unwrap_or_default();
        Some(Self {
            window,
            recent: Counts {
                answered: recent.answered,
                upstream_failed: recent.upstream_failed,
            },
            span: Duration::from_millis(recent.span_ms),
        })
    }
}

/// Judge this generation from cutover (when `cutover` fires) until the parent's window ends.
/// Ready with the reason when the gate fails; pending forever when it passes (or the cutover
/// never comes).
pub(super) async fn judge(
    opts: GateOptions,
    baseline: Baseline,
    tally: Arc<Tally>,
    lifecycle: Arc<Lifecycle>,
    cutover: oneshot::Receiver<()>,
) -> String {
    if cutover.await.is_err() {
        return std::future::pending().await;
    }
    let until = tokio::time::Instant::now() + baseline.window;
    let mut tick = tokio::time::interval(PERIOD);
    while tokio::time::Instant::now() < until {
        tick.tick().await;
        let state = ServerState::from(&lifecycle.phase());
        if state != ServerState::Live {
            return format!("health gate: /ready is {state}, not LIVE");
        }
        if let Some(why) = verdict(opts, &baseline, tally.read()) {
            return why;
        }
    }
    tracing::info!(
        window_s = baseline.window.as_secs(),
        "health gate passed: the previous generation's rollback window is over"
    );
    std::future::pending().await
}

/// The share rule on `now` (this generation's counts so far): the reason it fails, if it does.
fn verdict(opts: GateOptions, baseline: &Baseline, now: Counts) -> Option<String> {
    if opts.failure_percent >= 100 || now.answered < opts.min_requests {
        return None;
    }
    let share = now.failure_share() * 100.0;
    let base = baseline.recent.failure_share() * 100.0;
    if share <= base + f64::from(opts.failure_percent) {
        return None;
    }
    Some(format!(
        "health gate: {share:.1}% of the {} requests answered were Baton's own 502/503/504 for \
         an upstream failure (the previous generation's last {} s: {base:.1}% of {}; allowed: \
         {} points more)",
        now.answered,
        baseline.span.as_secs(),
        baseline.recent.answered,
        opts.failure_percent
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotrestart_rpc::pb::RecentTraffic;

    fn counts(answered: u64, upstream_failed: u64) -> Counts {
        Counts {
            answered,
            upstream_failed,
        }
    }

    #[test]
    fn the_share_rule_compares_with_the_parent_s_last_minute() {
        let opts = GateOptions {
            failure_percent: 20,
            min_requests: 20,
        };
        let parent = ParentState {
            rollback_window_ms: 10_000,
            recent: Some(RecentTraffic {
                answered: 1000,
                upstream_failed: 100,
                span_ms: 60_000,
            }),
            ..ParentState::default()
        };
        let base = Baseline::of(&parent).expect("a window");
        // Too few requests to judge, however bad.
        assert_eq!(verdict(opts, &base, counts(19, 19)), None);
        // 10% before, 30% now: within 20 points.
        assert_eq!(verdict(opts, &base, counts(100, 30)), None);
        let why = verdict(opts, &base, counts(100, 31)).expect("fails");
        assert!(
            why.contains("31.0% of the 100 requests")
                && why.contains("last 60 s: 10.0% of 1000")
                && why.contains("20 points"),
            "{why}"
        );
        // 100 turns the rule off.
        let off = GateOptions {
            failure_percent: 100,
            ..opts
        };
        assert_eq!(verdict(off, &base, counts(100, 100)), None);
        // No window: no gate.
        assert_eq!(Baseline::of(&ParentState::default()), None);
    }
}
