//! Clusters: the hosts each one resolves to (STATIC, STRICT_DNS, LOGICAL_DNS), their live
//! per-host counters, DNS refresh, and per-worker load balancing.
//!
//! The [`ClusterManager`] is shared by every worker; a host set is a snapshot swapped atomically
//! when DNS answers or a host's health change, so the request path reads it without a lock.
//! Load-balancer state ([`WorkerLb`], in `lb`) is per worker and never shared.

mod hash;
mod inherit;
mod lb;
mod original_dst;
mod priority;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use shm_stats::Store;
use tokio::sync::{mpsc, Notify};

use crate::config::{self, Discovery, DnsLookupFamily};
use crate::host_health::{AtomicHealth, HealthFlags};
use crate::stats::{ClusterStats, HealthCheckStats, OutlierStats};

pub use hash::{is_prime, murmur2_64, HashLbStats, HashTable};
pub use lb::{Pick, WorkerLb};
pub use priority::Level;

/// Every cluster of a configuration.
#[derive(Debug)]
pub struct ClusterManager {
    clusters: Vec<Arc<Cluster>>,
    by_name: HashMap<String, usize>,
}

/// One cluster and its current hosts.
#[derive(Debug)]
pub struct Cluster {
    pub config: config::Cluster,
    pub stats: ClusterStats,
    /// `cluster.<name>.ssl.*`, for a cluster with an upstream TLS context.
    pub ssl: Option<crate::tls::SslStats>,
    /// `cluster.<name>.health_check.*`, for a cluster with a health check.
    pub health_stats: Option<HealthCheckStats>,
    /// For a cluster with `outlier_detection`: where hosts crossing a threshold are reported.
    pub outlier: Option<OutlierSink>,
    /// For a RING_HASH or MAGLEV cluster: the last ring or table built.
    pub hash_stats: Option<HashLbStats>,
    hosts: ArcSwap<HostSet>,
    /// Woken when the host set's members change: the health checker (its only waiter)
    /// starts checking the new hosts and stops checking the gone ones.
    members_changed: Notify,
    /// Retries under way across every worker (the `max_retries` circuit breaker).
    retries_active: AtomicU64,
}

/// A retry admitted by the cluster's `max_retries` breaker; dropping it ends the retry.
#[derive(Debug)]
#[must_use]
pub struct RetryGuard(Arc<Cluster>);

/// The hosts of a cluster at one moment, and those load balancing uses. Replaced as a whole,
/// never mutated: a snapshot.
#[derive(Debug, Default)]
pub struct HostSet {
    pub hosts: Vec<Arc<Host>>,
    /// The priority levels, 0 first (at least one), with their routable hosts and load.
    pub levels: Vec<Level>,
    /// Changes whenever the set changes, so workers know to reset their balancer state.
    pub version: u64,
}

/// What a host is made of, before it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostSpec {
    addr: SocketAddr,
    hostname: String,
    weight: u32,
    check_port: Option<u16>,
    priority: u32,
    hash_key: Option<String>,
}

/// One upstream address.
#[derive(Debug)]
pub struct Host {
    pub addr: SocketAddr,
    /// The DNS name it was resolved from (or the literal address).
    pub hostname: String,
    pub weight: u32,
    /// Its `endpoints[].priority` (0 is the highest).
    pub priority: u32,
    /// Its `metadata.filter_metadata["envoy.lb"].hash_key`: what RING_HASH and MAGLEV hash
    /// it as instead of its address.
    pub hash_key: Option<String>,
    /// Where health checks go: `addr`, or its IP with `health_check_config.port_value`.
    pub check_addr: SocketAddr,
    /// Written by the health checker only; a host of a cluster without one stays healthy.
    pub health: AtomicHealth,
    pub stats: HostStats,
    /// Consecutive errors, for outlier detection (written by every worker).
    pub outlier: OutlierCounters,
    /// An `ORIGINAL_DST` cluster's host was picked since the last cleanup sweep.
    used: AtomicBool,
}

/// A host's consecutive errors since its last success, and its requests and failures (5xx,
/// local failures included) in the detector's current interval.
#[derive(Debug, Default)]
pub struct OutlierCounters {
    pub consecutive_5xx: AtomicU32,
    pub consecutive_gateway_failure: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// The success rate of the last interval, in percent, when the host had
    /// `success_rate_request_volume` requests in it and was not ejected.
    pub success_rate: Rate,
    /// With `split_external_local_origin_errors`: local failures in a row, and the local
    /// events (a connection obtained, or a local failure) of the interval and their failures.
    pub consecutive_local_origin_failure: AtomicU32,
    pub local_requests: AtomicU64,
    pub local_failures: AtomicU64,
    pub local_origin_success_rate: Rate,
    /// What the detector last decided about the host, readable by a successor.
    pub ejection: EjectionShare,
}

/// A host's outlier ejection as the detector publishes it (the detector's own bookkeeping
/// stays in its task): read for the next generation, and written by it from its parent's.
#[derive(Debug, Default)]
pub struct EjectionShare {
    ejections: AtomicU32,
    until_unix_ms: AtomicU64,
}

pub use inherit::HostHealth;

/// A percentage the outlier detector publishes for `/clusters`, or none (Envoy's `-1`).
#[derive(Debug)]
pub struct Rate(AtomicU64);

/// Why a host was reported to its cluster's outlier detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    /// An active health check passed (which may end an ejection).
    HealthCheckPassed,
}

/// The reporting end of a cluster's outlier detection: workers (on a threshold) and the health
/// checker send here; the detector task (`crate::outlier`) takes the receiving end once.
#[derive(Debug)]
pub struct OutlierSink {
    pub stats: OutlierStats,
    /// The last success-rate detection's mean and ejection threshold, when it ran.
    pub success_rate_average: Rate,
    pub success_rate_threshold: Rate,
    /// The same for local-origin events (`split_external_local_origin_errors`).
    pub local_origin_success_rate_average: Rate,
    pub local_origin_success_rate_threshold: Rate,
    tx: mpsc::UnboundedSender<(Arc<Host>, Detected)>,
    rx: std::sync::Mutex<Option<OutlierReports>>,
}

/// The detector's end of a cluster's outlier reports.
pub type OutlierReports = mpsc::UnboundedReceiver<(Arc<Host>, Detected)>;

/// Live counters of one host, shown by the admin's `/clusters`.
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_active: AtomicU64,
    pub cx_total: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_active: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_success: AtomicU64,
}

// === impl ClusterManager ===

impl ClusterManager {
    /// Build every cluster; STATIC hosts are known at once, DNS ones after [`Self::resolve_all`].
    pub fn new(clusters: &[config::Cluster], store: &Store) -> Self {
        let mut by_name = HashMap::with_capacity(clusters.len());
        let clusters = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                by_name.insert(c.name.clone(), i);
                let cluster = Cluster {
                    stats: ClusterStats::new(store, &c.name),
                    ssl: c
                        .tls
                        .as_ref()
                        .map(|_| crate::tls::SslStats::new(store, &format!("cluster.{}", c.name))),
                    health_stats: c
                        .health_check
                        .as_ref()
                        .map(|_| HealthCheckStats::new(store, &c.name)),
                    outlier: c.outlier.as_ref().map(|_| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        OutlierSink {
                            stats: OutlierStats::new(store, &c.name),
                            success_rate_average: Rate::default(),
                            success_rate_threshold: Rate::default(),
                            local_origin_success_rate_average: Rate::default(),
                            local_origin_success_rate_threshold: Rate::default(),
                            tx,
                            rx: std::sync::Mutex::new(Some(rx)),
                        }
                    }),
                    hash_stats: HashLbStats::new(store, &c.name, &c.lb_policy),
                    config: c.clone(),
                    hosts: ArcSwap::from_pointee(HostSet::default()),
                    members_changed: Notify::new(),
                    retries_active: AtomicU64::new(0),
                };
                if c.discovery == Discovery::Static {
                    let addrs = c
                        .endpoints
                        .iter()
                        .filter_map(|e| {
                            let ip: IpAddr = e.host.parse().ok()?;
                            Some(HostSpec::new(SocketAddr::new(ip, e.port), e))
                        })
                        .collect();
                    cluster.set_hosts(addrs);
                }
                Arc::new(cluster)
            })
            .collect();
        store
            .gauge("cluster_manager.active_clusters")
            .set(by_name.len() as i64);
        Self { clusters, by_name }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, idx: usize) -> Option<&Arc<Cluster>> {
        self.clusters.get(idx)
    }

    pub fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    /// Resolve every DNS cluster once. Failures are counted and logged, not fatal: the cluster
    /// answers "no healthy upstream" until a refresh succeeds.
    pub async fn resolve_all(&self) {
        let mut tasks = Vec::new();
        for c in &self.clusters {
            if c.config.discovery.is_dns() {
                tasks.push(c.refresh());
            }
        }
        futures_util::future::join_all(tasks).await;
    }

    /// Re-resolve DNS clusters every `dns_refresh_rate`, and sweep `ORIGINAL_DST` clusters'
    /// unused hosts every `cleanup_interval`, until `shutdown` fires.
    pub async fn run_dns_refresh(self: Arc<Self>, mut shutdown: drain::Watch) {
        let timed: Vec<_> = self
            .clusters
            .iter()
            .filter(|c| c.config.discovery != Discovery::Static)
            .cloned()
            .collect();
        if timed.is_empty() {
            return;
        }
        let loops = timed.into_iter().map(|c| async move {
            if let Some(od) = &c.config.original_dst {
                let mut tick = tokio::time::interval(od.cleanup_interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    c.original_dst_sweep();
                }
            }
            loop {
                tokio::time::sleep(c.config.dns_refresh_rate.max(Duration::from_millis(100))).await;
                c.refresh().await;
            }
        });
        tokio::select! {
            _ = futures_util::future::join_all(loops) => {}
            _ = shutdown.signaled() => {}
        }
    }
}

// === impl Rate ===

impl Rate {
    /// No value: a bit pattern no stored `f64` has here (a NaN's).
    const NONE: u64 = u64::MAX;

    pub fn get(&self) -> Option<f64> {
        let bits = self.0.load(Ordering::Relaxed);
        (bits != Self::NONE).then(|| f64::from_bits(bits))
    }

    pub fn set(&self, v: Option<f64>) {
        let bits = v.filter(|v| !v.is_nan()).map_or(Self::NONE, f64::to_bits);
        self.0.store(bits, Ordering::Relaxed);
    }
}

impl Default for Rate {
    fn default() -> Self {
        Self(AtomicU64::new(Self::NONE))
    }
}

// === impl OutlierSink ===

impl OutlierSink {
    /// The detector's end of the reports; `None` once taken.
    pub fn take_reports(&self) -> Option<OutlierReports> {
        self.rx.lock().ok()?.take()
    }
}

// === impl Host ===

impl HostSpec {
    fn new(addr: SocketAddr, ep: &config::Endpoint) -> Self {
        Self {
            addr,
            hostname: ep.shown_hostname(),
            weight: ep.weight.max(1),
            check_port: ep.health_check_port,
            priority: ep.priority,
            hash_key: ep
                .metadata
                .get("envoy.lb")
                .and_then(|m| m.get("hash_key"))
                .and_then(|k| k.as_str())
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        }
    }
}

impl Host {
    /// `checked`: its cluster has a health check, so it waits for a first pass.
    fn new(spec: HostSpec, checked: bool) -> Self {
        let check_addr =
            SocketAddr::new(spec.addr.ip(), spec.check_port.unwrap_or(spec.addr.port()));
        let flags = HealthFlags::HEALTHY.with(HealthFlags::FAILED_ACTIVE_HC, checked);
        Self {
            addr: spec.addr,
            hostname: spec.hostname,
            weight: spec.weight,
            priority: spec.priority,
            hash_key: spec.hash_key,
            check_addr,
            health: AtomicHealth::new(flags),
            stats: HostStats::default(),
            outlier: OutlierCounters::default(),
            used: AtomicBool::new(true),
        }
    }

    /// A host built from `spec` would be this one.
    fn matches(&self, spec: &HostSpec) -> bool {
        self.addr == spec.addr
            && self.weight == spec.weight
            && self.priority == spec.priority
            && self.hash_key == spec.hash_key
            && self.check_addr.port() == spec.check_port.unwrap_or(spec.addr.port())
    }
}

// === impl Cluster ===

impl Cluster {
    /// Admit one more retry unless `max_retries` are already under way (then counted as
    /// `upstream_rq_retry_overflow`).
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let max = u64::from(self.config.circuit_breakers.max_retries);
        let admitted = self
            .retries_active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(RetryGuard(self.clone()))
        } else {
            self.stats.upstream_rq_retry_overflow.inc();
            None
        }
    }

    /// The current hosts.
    pub fn hosts(&self) -> arc_swap::Guard<Arc<HostSet>> {
        self.hosts.load()
    }

    /// Count the result of one request to `host` for outlier detection: the upstream's status,
    /// or (through [`Self::record_local_failure`] without the split) the status a local
    /// failure is answered with. A host reaching a threshold is reported to the detector.
    #[inline]
    pub fn record_outcome(&self, host: &Arc<Host>, status: u16) {
        let (Some(od), Some(sink)) = (&self.config.outlier, &self.outlier) else {
            return;
        };
        let c = &host.outlier;
        c.requests.fetch_add(1, Ordering::Relaxed);
        if status < 500 {
            // Writes only to end a run: the common case reads and leaves the line shared.
            for n in [&c.consecutive_5xx, &c.consecutive_gateway_failure] {
                if n.load(Ordering::Relaxed) != 0 {
                    n.store(0, Ordering::Relaxed);
                }
            }
            return;
        }
        c.failures.fetch_add(1, Ordering::Relaxed);
        let count = |n: &AtomicU32, threshold: u32, what: Detected| {
            if n.fetch_add(1, Ordering::Relaxed) + 1 == threshold {
                n.store(0, Ordering::Relaxed);
                let _ = sink.tx.send((host.clone(), what));
            }
        };
        count(
            &c.consecutive_5xx,
            od.consecutive_5xx,
            Detected::Consecutive5xx,
        );
        if matches!(status, 502..=504) {
            count(
                &c.consecutive_gateway_failure,
                od.consecutive_gateway_failure,
                Detected::ConsecutiveGatewayFailure,
            );
        } else if c.consecutive_gateway_failure.load(Ordering::Relaxed) != 0 {
            c.consecutive_gateway_failure.store(0, Ordering::Relaxed);
        }
    }

    /// A local failure of a request to `host` (connect failure, reset, timeout), answered
    /// with `status`: with `split_external_local_origin_errors` a local-origin failure, else
    /// counted as that status.
    #[inline]
    pub fn record_local_failure(&self, host: &Arc<Host>, status: u16) {
        let (Some(od), Some(sink)) = (&self.config.outlier, &self.outlier) else {
            return;
        };
        if !od.split_external_local_origin_errors {
            return self.record_outcome(host, status);
        }
        let c = &host.outlier;
        c.local_requests.fetch_add(1, Ordering::Relaxed);
        c.local_failures.fetch_add(1, Ordering::Relaxed);
        let n = c
            .consecutive_local_origin_failure
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n == od.consecutive_local_origin_failure {
            c.consecutive_local_origin_failure
                .store(0, Ordering::Relaxed);
            let _ = sink
                .tx
                .send((host.clone(), Detected::ConsecutiveLocalOriginFailure));
        }
    }

    /// A request got a connection to `host`: with `split_external_local_origin_errors`, a
    /// local-origin success (as Envoy counts one when its pool hands a connection over).
    #[inline]
    pub fn record_connected(&self, host: &Host) {
        let Some(od) = &self.config.outlier else {
            return;
        };
        if !od.split_external_local_origin_errors {
            return;
        }
        let c = &host.outlier;
        c.local_requests.fetch_add(1, Ordering::Relaxed);
        if c.consecutive_local_origin_failure.load(Ordering::Relaxed) != 0 {
            c.consecutive_local_origin_failure
                .store(0, Ordering::Relaxed);
        }
    }

    /// An active health check of `host` passed: an ejection may end
    /// (`successful_active_health_check_uneject_host`).
    pub fn report_health_check_pass(&self, host: &Arc<Host>) {
        let (Some(od), Some(sink)) = (&self.config.outlier, &self.outlier) else {
            return;
        };
        if od.uneject_on_health_check
            && host
                .health
                .load()
                .contains(HealthFlags::FAILED_OUTLIER_CHECK)
        {
            let _ = sink.tx.send((host.clone(), Detected::HealthCheckPassed));
        }
    }

    /// Woken when hosts join or leave (see [`Self::hosts`] for who they are now).
    pub async fn members_changed(&self) {
        self.members_changed.notified().await;
    }

    /// Replace the host set, keeping the `Host` (its counters and health) of every address
    /// that stays. A new host of a health-checked cluster starts out of balancing until its
    /// first check passes, as Envoy's do.
    fn set_hosts(&self, specs: Vec<HostSpec>) {
        let checked = self.config.health_check.is_some();
        let mut changed = false;
        let set = self.hosts.rcu(|old| {
            let same = old.hosts.len() == specs.len()
                && old.hosts.iter().zip(&specs).all(|(h, s)| h.matches(s));
            changed = !same;
            if same {
                return Arc::clone(old);
            }
            let hosts = specs
                .iter()
                .map(|s| {
                    old.hosts
                        .iter()
                        .find(|h| h.matches(s))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Host::new(s.clone(), checked)))
                })
                .collect();
            Arc::new(self.snapshot(hosts, old.version + 1))
        });
        if changed {
            self.stats.membership_change.inc();
            self.count_membership(&self.hosts.load());
            self.members_changed.notify_one();
        }
        drop(set);
    }

    /// Publish the hosts' current health (after the checker changed a host's flags): the
    /// routable hosts and panic mode are computed again, once, for every worker.
    pub fn publish_health(&self) {
        self.hosts
            .rcu(|old| Arc::new(self.snapshot(old.hosts.clone(), old.version + 1)));
        self.count_membership(&self.hosts.load());
    }

    /// A host set of `hosts`, with each level's routable hosts and load as their health is now.
    fn snapshot(&self, hosts: Vec<Arc<Host>>, version: u64) -> HostSet {
        let mut levels = priority::levels(
            &hosts,
            self.config.overprovisioning_factor,
            self.config.panic_threshold,
        );
        // Consistent hashing: each level's table over its routable hosts, built once here for
        // every worker (as Envoy rebuilds its ring or table when health changes).
        if self.config.lb_policy.hashes() {
            for l in &mut levels {
                l.table = HashTable::build(&self.config.lb_policy, &l.routable);
                if let (Some(s), Some(t)) = (&self.hash_stats, &l.table) {
                    s.record(t);
                }
            }
        }
        HostSet {
            hosts,
            levels,
            version,
        }
    }

    fn count_membership(&self, set: &HostSet) {
        let healthy = set
            .hosts
            .iter()
            .filter(|h| h.health.load().is_healthy())
            .count();
        self.stats.membership_total.set(set.hosts.len() as i64);
        self.stats.membership_healthy.set(healthy as i64);
        if let Some(hc) = &self.health_stats {
            let passing = set
                .hosts
                .iter()
                .filter(|h| !h.health.load().contains(HealthFlags::FAILED_ACTIVE_HC))
                .count();
            hc.healthy.set(passing as i64);
        }
    }

    /// Resolve this DNS cluster's endpoints once and publish the result.
    async fn refresh(&self) {
        self.stats.update_attempt.inc();
        let cfg = &self.config;
        let mut addrs = Vec::new();
        let mut failed = false;
        for ep in &cfg.endpoints {
            match resolve(
                &ep.host,
                ep.port,
                cfg.dns_lookup_family,
                cfg.connect_timeout,
            )
            .await
            {
                Ok(found) if !found.is_empty() => {
                    let take = if cfg.discovery == Discovery::LogicalDns {
                        1
                    } else {
                        found.len()
                    };
                    addrs.extend(found.into_iter().take(take).map(|a| HostSpec::new(a, ep)));
                }
                Ok(_) => {
                    failed = true;
                    tracing::warn!(cluster = %cfg.name, host = %ep.host, "DNS lookup returned no usable address");
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(cluster = %cfg.name, host = %ep.host, error = %e, "could not resolve endpoint");
                }
            }
        }
        if failed {
            self.stats.update_failure.inc();
            // Keep the last good answer rather than emptying the cluster.
            if addrs.is_empty() {
                return;
            }
        } else {
            self.stats.update_success.inc();
        }
        self.set_hosts(addrs);
    }
}

/// Resolve `host` (a name or an IP literal) with the cluster's family policy.
async fn resolve(
    host: &str,
    port: u16,
    family: DnsLookupFamily,
    timeout: Duration,
) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = tokio::time::timeout(timeout.max(Duration::from_secs(1)), async {
        tokio::net::lookup_host((host, port)).await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out"))??
    .collect();
    let v4: Vec<_> = found.iter().copied().filter(SocketAddr::is_ipv4).collect();
    let v6: Vec<_> = found.iter().copied().filter(SocketAddr::is_ipv6).collect();
    Ok(match family {
        DnsLookupFamily::V4Only => v4,
        DnsLookupFamily::V6Only => v6,
        DnsLookupFamily::Auto => {
            if v6.is_empty() {
                v4
            } else {
                v6
            }
        }
        DnsLookupFamily::V4Preferred => {
            if v4.is_empty() {
                v6
            } else {
                v4
            }
        }
        DnsLookupFamily::All => found,
    })
}

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retries_active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl crate::admin::ClusterStatusSource for ClusterManager {
    fn clusters(&self) -> Vec<crate::admin::ClusterStatus> {
        self.clusters
            .iter()
            .map(|c| crate::admin::ClusterStatus {
                name: c.config.name.clone(),
                thresholds: c.config.circuit_breakers,
                added_via_api: false,
                outlier_detection: c.config.outlier.is_some(),
                success_rate_average: c
                    .outlier
                    .as_ref()
                    .and_then(|o| o.success_rate_average.get()),
                success_rate_threshold: c
                    .outlier
                    .as_ref()
                    .and_then(|o| o.success_rate_threshold.get()),
                local_origin_success_rate_average: c
                    .outlier
                    .as_ref()
                    .and_then(|o| o.local_origin_success_rate_average.get()),
                local_origin_success_rate_threshold: c
                    .outlier
                    .as_ref()
                    .and_then(|o| o.local_origin_success_rate_threshold.get()),
                hosts: c
                    .hosts()
                    .hosts
                    .iter()
                    .map(|h| {
                        let s = &h.stats;
                        crate::admin::HostStatus {
                            address: h.addr,
                            hostname: h.hostname.clone(),
                            weight: h.weight,
                            priority: h.priority,
                            health: h.health.load(),
                            cx_active: s.cx_active.load(Ordering::Relaxed),
                            cx_connect_fail: s.cx_connect_fail.load(Ordering::Relaxed),
                            rq_active: s.rq_active.load(Ordering::Relaxed),
                            rq_total: s.rq_total.load(Ordering::Relaxed),
                            rq_error: s.rq_error.load(Ordering::Relaxed),
                            rq_success: s.rq_success.load(Ordering::Relaxed),
                            success_rate: h.outlier.success_rate.get(),
                            local_origin_success_rate: h.outlier.local_origin_success_rate.get(),
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
