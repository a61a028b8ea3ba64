//! Outlier detection (`clusters[].outlier_detection`): passive ejection of hosts that keep
//! failing, once per process.
//!
//! Workers count each host's consecutive errors with atomics ([`Cluster::record_outcome`]) and
//! report a host that reaches a threshold; one detector task per cluster decides: it ejects
//! (sets the host's `FAILED_OUTLIER_CHECK` flag and publishes a new host-set snapshot) unless
//! `max_ejection_percent` would be passed or the enforcement roll says no, and every
//! `interval` ends the ejections whose time is up (`base_ejection_time` times the host's
//! ejection count, at most `max_ejection_time`) and lowers the count of hosts that stayed in.
//! Every `interval` also runs success-rate and failure-percentage detection (`rates`) over the
//! requests and failures each host counted since the last one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

mod rates;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::{Cluster, ClusterManager, Detected, Host, OutlierSink};
use crate::config::OutlierDetection;
use crate::host_health::HealthFlags;
use crate::lifecycle::unix_ms;
use crate::stats::OutlierStats;

/// One cluster's ejection bookkeeping, apart from its clock and its randomness.
#[derive(Debug, Default)]
struct Detector {
    hosts: HashMap<usize, Ejection>,
}

/// What the detector remembers of one host.
#[derive(Debug)]
struct Ejection {
    host: Arc<Host>,
    /// Ejections in a row: the ejection time's multiplier.
    count: u32,
    /// While ejected: until when.
    until: Option<Instant>,
}

pub use rates::format_rate;

/// Why a host is an outlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    FailurePercentage,
    LocalOriginSuccessRate,
    LocalOriginFailurePercentage,
}

/// What the detector decided about one report.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Ignored,
    Overflow,
    NotEnforced,
    Ejected,
    Returned,
}

/// Run a detector for every cluster with outlier detection, until `shutdown` fires.
pub fn spawn(clusters: &ClusterManager, mut shutdown: drain::Watch) {
    let detectors: Vec<_> = clusters
        .clusters()
        .iter()
        .filter(|c| c.config.outlier.is_some())
        .map(|c| detect(c.clone()))
        .collect();
    if detectors.is_empty() {
        return;
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = futures_util::future::join_all(detectors) => {}
            _ = shutdown.signaled() => {}
        }
    });
}

async fn detect(cluster: Arc<Cluster>) {
    let (Some(cfg), Some(sink)) = (cluster.config.outlier.clone(), cluster.outlier.as_ref()) else {
        return;
    };
    let Some(mut reports) = sink.take_reports() else {
        return;
    };
    let stats = &sink.stats;
    // Ejections the previous generation made go on (see `cluster::inherit`).
    let mut detector = Detector::inherited(&cluster.hosts().hosts, Instant::now());
    if detector.ejected() > 0 {
        stats.ejections_active.set(detector.ejected() as i64);
    }
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = tokio::select! {
            report = reports.recv() => {
                let Some((host, what)) = report else { return };
                let total = cluster.hosts().hosts.len();
                let roll = fastrand::u32(..100);
                let d = detector.report(&host, what, total, roll, Instant::now(), &cfg);
                if let Some(kind) = Kind::of(what) {
                    count(stats, kind, &d);
                }
                if d == Decision::Ejected {
                    tracing::warn!(cluster = %cluster.config.name, host = %host.addr, ?what, "outlier detection ejected a host");
                }
                matches!(d, Decision::Ejected | Decision::Returned)
            }
            _ = tick.tick() => {
                let live = cluster.hosts().hosts.iter().map(|h| Arc::as_ptr(h) as usize).collect::<Vec<_>>();
                let returned = detector.review(Instant::now(), &live) > 0;
                let ejected = detect_rates(&cluster, sink, &mut detector, &cfg);
                returned || ejected
            }
        };
        if changed {
            stats.ejections_active.set(detector.ejected() as i64);
            cluster.publish_health();
        }
    }
}

/// Success-rate and failure-percentage detection over the interval that just ended (every
/// host's counters start again), of the upstream's answers and, with
/// `split_external_local_origin_errors`, of local-origin events; whether a host was ejected.
fn detect_rates(
    cluster: &Cluster,
    sink: &OutlierSink,
    detector: &mut Detector,
    cfg: &OutlierDetection,
) -> bool {
    let set = cluster.hosts();
    let ejected: Vec<bool> = set
        .hosts
        .iter()
        .map(|h| h.health.load().contains(HealthFlags::FAILED_OUTLIER_CHECK))
        .collect();
    let take = |requests: &AtomicU64, failures: &AtomicU64, out: bool| {
        let requests = requests.swap(0, Ordering::Relaxed);
        let failures = failures.swap(0, Ordering::Relaxed);
        (!out).then_some(rates::Sample { requests, failures })
    };
    let external: Vec<_> = set
        .hosts
        .iter()
        .zip(&ejected)
        .map(|(h, &out)| take(&h.outlier.requests, &h.outlier.failures, out))
        .collect();
    let v = rates::judge(&external, cfg);
    sink.success_rate_average.set(v.average);
    sink.success_rate_threshold.set(v.threshold);
    for (h, rate) in set.hosts.iter().zip(&v.rates) {
        h.outlier.success_rate.set(*rate);
    }
    let mut outliers: Vec<(usize, Kind)> = v
        .success_rate
        .iter()
        .map(|&i| (i, Kind::SuccessRate))
        .chain(
            v.failure_percentage
                .iter()
                .map(|&i| (i, Kind::FailurePercentage)),
        )
        .collect();
    if cfg.split_external_local_origin_errors {
        let local: Vec<_> = set
            .hosts
            .iter()
            .zip(&ejected)
            .map(|(h, &out)| take(&h.outlier.local_requests, &h.outlier.local_failures, out))
            .collect();
        let v = rates::judge(&local, cfg);
        sink.local_origin_success_rate_average.set(v.average);
        sink.local_origin_success_rate_threshold.set(v.threshold);
        for (h, rate) in set.hosts.iter().zip(&v.rates) {
            h.outlier.local_origin_success_rate.set(*rate);
        }
        outliers.extend(
            v.success_rate
                .iter()
                .map(|&i| (i, Kind::LocalOriginSuccessRate)),
        );
        outliers.extend(
            v.failure_percentage
                .iter()
                .map(|&i| (i, Kind::LocalOriginFailurePercentage)),
        );
    }
    let now = Instant::now();
    let mut any = false;
    for (i, kind) in outliers {
        let host = &set.hosts[i];
        let d = detector.eject(host, kind, set.hosts.len(), fastrand::u32(..100), now, cfg);
        count(&sink.stats, kind, &d);
        if d == Decision::Ejected {
            any = true;
            tracing::warn!(cluster = %cluster.config.name, host = %host.addr, ?kind, "outlier detection ejected a host");
        }
    }
    any
}

/// Count a detection of `kind` and what became of it, with Envoy's names.
fn count(stats: &OutlierStats, kind: Kind, d: &Decision) {
    let (detected, enforced) = match kind {
        Kind::Consecutive5xx => {
            stats.ejections_consecutive_5xx.inc();
            (
                &stats.ejections_detected_consecutive_5xx,
                &stats.ejections_enforced_consecutive_5xx,
            )
        }
        Kind::ConsecutiveGatewayFailure => (
            &stats.ejections_detected_consecutive_gateway_failure,
            &stats.ejections_enforced_consecutive_gateway_failure,
        ),
        Kind::SuccessRate => {
            stats.ejections_success_rate.inc();
            (
                &stats.ejections_detected_success_rate,
                &stats.ejections_enforced_success_rate,
            )
        }
        Kind::FailurePercentage => (
            &stats.ejections_detected_failure_percentage,
            &stats.ejections_enforced_failure_percentage,
        ),
        Kind::ConsecutiveLocalOriginFailure => (
            &stats.ejections_detected_consecutive_local_origin_failure,
            &stats.ejections_enforced_consecutive_local_origin_failure,
        ),
        Kind::LocalOriginSuccessRate => {
            // Envoy's deprecated count takes both success rates (measured).
            stats.ejections_success_rate.inc();
            (
                &stats.ejections_detected_local_origin_success_rate,
                &stats.ejections_enforced_local_origin_success_rate,
            )
        }
        Kind::LocalOriginFailurePercentage => (
            &stats.ejections_detected_local_origin_failure_percentage,
            &stats.ejections_enforced_local_origin_failure_percentage,
        ),
    };
    detected.inc();
    // Envoy's deprecated total counts these two kinds (not their local-origin kin) within
    // `max_ejection_percent`, enforced or not (measured).
    let in_total = matches!(kind, Kind::Consecutive5xx | Kind::SuccessRate);
    match d {
        Decision::Overflow => stats.ejections_overflow.inc(),
        Decision::NotEnforced if in_total => stats.ejections_total.inc(),
        Decision::Ejected => {
            if in_total {
                stats.ejections_total.inc();
            }
            stats.ejections_enforced_total.inc();
            enforced.inc();
        }
        _ => {}
    }
}

// === impl Kind ===

impl Kind {
    /// The kind of a worker's report; `None` for a passed health check.
    fn of(what: Detected) -> Option<Self> {
        match what {
            Detected::Consecutive5xx => Some(Self::Consecutive5xx),
            Detected::ConsecutiveGatewayFailure => Some(Self::ConsecutiveGatewayFailure),
            Detected::ConsecutiveLocalOriginFailure => Some(Self::ConsecutiveLocalOriginFailure),
            Detected::HealthCheckPassed => None,
        }
    }

    /// Percent chance that a detection of this kind ejects.
    fn enforcing(self, cfg: &OutlierDetection) -> u32 {
        match self {
            Self::Consecutive5xx => cfg.enforcing_consecutive_5xx,
            Self::ConsecutiveGatewayFailure => cfg.enforcing_consecutive_gateway_failure,
            Self::SuccessRate => cfg.enforcing_success_rate,
            Self::FailurePercentage => cfg.enforcing_failure_percentage,
            Self::ConsecutiveLocalOriginFailure => cfg.enforcing_consecutive_local_origin_failure,
            Self::LocalOriginSuccessRate => cfg.enforcing_local_origin_success_rate,
            Self::LocalOriginFailurePercentage => cfg.enforcing_failure_percentage_local_origin,
        }
    }
}

// === impl Detector ===

impl Detector {
    /// The ejections `hosts` carry from the previous generation.
    fn inherited(hosts: &[Arc<Host>], now: Instant) -> Self {
        let hosts = hosts
            .iter()
            .filter_map(|h| {
                let (count, _) = h.outlier.ejection.read();
                let left = h.outlier.ejection.left();
                (count > 0 || !left.is_zero()).then(|| {
                    let e = Ejection {
                        host: h.clone(),
                        count,
                        until: (!left.is_zero()).then(|| now + left),
                    };
                    (Arc::as_ptr(h) as usize, e)
                })
            })
            .collect();
        Self { hosts }
    }

    fn ejected(&self) -> usize {
        self.hosts.values().filter(|e| e.until.is_some()).count()
    }

    /// Decide about a report on `host` of a cluster of `total` hosts; `roll` is uniform in
    /// `0..100` (the enforcement draw).
    fn report(
        &mut self,
        host: &Arc<Host>,
        what: Detected,
        total: usize,
        roll: u32,
        now: Instant,
        cfg: &OutlierDetection,
    ) -> Decision {
        let key = Arc::as_ptr(host) as usize;
        if what == Detected::HealthCheckPassed {
            return match self.hosts.get_mut(&key) {
                Some(e) if e.until.is_some() => {
                    e.until = None;
                    host.health.set(HealthFlags::FAILED_OUTLIER_CHECK, false);
                    host.outlier.ejection.publish(e.count, None);
                    Decision::Returned
                }
                _ => Decision::Ignored,
            };
        }
        match Kind::of(what) {
            Some(kind) => self.eject(host, kind, total, roll, now, cfg),
            None => Decision::Ignored,
        }
    }

    /// Eject `host`, detected as `kind`, unless it is out already, `max_ejection_percent`
    /// forbids, or the enforcement `roll` (uniform in `0..100`) says no.
    fn eject(
        &mut self,
        host: &Arc<Host>,
        kind: Kind,
        total: usize,
        roll: u32,
        now: Instant,
        cfg: &OutlierDetection,
    ) -> Decision {
        let key = Arc::as_ptr(host) as usize;
        if self.hosts.get(&key).is_some_and(|e| e.until.is_some()) {
            return Decision::Ignored;
        }
        if (self.ejected() + 1) * 100 > cfg.max_ejection_percent as usize * total {
            return Decision::Overflow;
        }
        if roll >= kind.enforcing(cfg) {
            return Decision::NotEnforced;
        }
        let e = self.hosts.entry(key).or_insert_with(|| Ejection {
            host: host.clone(),
            count: 0,
            until: None,
        });
        e.count = e.count.saturating_add(1);
        let longest = cfg.max_ejection_time.max(cfg.base_ejection_time);
        let time = cfg.base_ejection_time.saturating_mul(e.count).min(longest);
        e.until = Some(now + time);
        host.health.set(HealthFlags::FAILED_OUTLIER_CHECK, true);
        host.outlier
            .ejection
            .publish(e.count, Some(unix_ms(SystemTime::now() + time)));
        Decision::Ejected
    }

    /// End the ejections whose time is up, lower the count of hosts that stayed in, forget
    /// hosts no longer in the cluster (`live`); how many hosts came back.
    fn review(&mut self, now: Instant, live: &[usize]) -> usize {
        self.hosts.retain(|k, _| live.contains(k));
        let mut returned = 0;
        for e in self.hosts.values_mut() {
            match e.until {
                Some(t) if t <= now => {
                    e.until = None;
                    e.host.health.set(HealthFlags::FAILED_OUTLIER_CHECK, false);
                    e.host
                        .outlier
                        .consecutive_5xx
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    e.host
                        .outlier
                        .consecutive_gateway_failure
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    e.host
                        .outlier
                        .consecutive_local_origin_failure
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    returned += 1;
                }
                Some(_) => {}
                None => e.count = e.count.saturating_sub(1),
            }
            if e.until.is_none() {
                e.host.outlier.ejection.publish(e.count, None);
            }
        }
        self.hosts.retain(|_, e| e.count > 0 || e.until.is_some());
        returned
    }
}

#[cfg(test)]
mod tests;
