//! Clusters: the hosts each one resolves to (STATIC, STRICT_DNS, LOGICAL_DNS), their live
//! per-host counters, DNS refresh, and per-worker load balancing.
//!
//! The [`ClusterManager`] is shared by every worker; a host set is swapped atomically when DNS
//! answers change, so the request path reads it without a lock. Load-balancer state
//! ([`WorkerLb`]) is per worker and never shared.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use shm_stats::Store;

use crate::config::{self, Discovery, DnsLookupFamily, LbPolicy};
use crate::stats::ClusterStats;

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
    hosts: ArcSwap<HostSet>,
    /// Retries under way across every worker (the `max_retries` circuit breaker).
    retries_active: AtomicU64,
}

/// A retry admitted by the cluster's `max_retries` breaker; dropping it ends the retry.
#[derive(Debug)]
#[must_use]
pub struct RetryGuard(Arc<Cluster>);

/// The hosts of a cluster at one moment. Replaced as a whole, never mutated.
#[derive(Debug, Default)]
pub struct HostSet {
    pub hosts: Vec<Arc<Host>>,
    /// Changes whenever the set changes, so workers know to reset their balancer state.
    pub version: u64,
}

/// One upstream address.
#[derive(Debug)]
pub struct Host {
    pub addr: SocketAddr,
    /// The DNS name it was resolved from (or the literal address).
    pub hostname: String,
    pub weight: u32,
    pub stats: HostStats,
}

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

/// Per-worker balancer state, one entry per cluster.
#[derive(Debug)]
pub struct WorkerLb {
    per_cluster: Vec<RefCell<LbState>>,
}

#[derive(Debug, Default)]
struct LbState {
    version: u64,
    next: usize,
    /// Smooth weighted round robin's current weights, when weights differ.
    current: Vec<i64>,
    weighted: bool,
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
                    config: c.clone(),
                    hosts: ArcSwap::from_pointee(HostSet::default()),
                    retries_active: AtomicU64::new(0),
                };
                if c.discovery == Discovery::Static {
                    let addrs = c
                        .endpoints
                        .iter()
                        .filter_map(|e| {
                            let ip: IpAddr = e.host.parse().ok()?;
                            Some((SocketAddr::new(ip, e.port), e.shown_hostname(), e.weight))
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
            if c.config.discovery != Discovery::Static {
                tasks.push(c.refresh());
            }
        }
        futures_util::future::join_all(tasks).await;
    }

    /// Re-resolve DNS clusters every `dns_refresh_rate` until `shutdown` fires.
    pub async fn run_dns_refresh(self: Arc<Self>, mut shutdown: drain::Watch) {
        let dns: Vec<_> = self
            .clusters
            .iter()
            .filter(|c| c.config.discovery != Discovery::Static)
            .cloned()
            .collect();
        if dns.is_empty() {
            return;
        }
        let loops = dns.into_iter().map(|c| async move {
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

    /// Replace the host set, keeping the `Host` (and its counters) of every address that stays.
    fn set_hosts(&self, addrs: Vec<(SocketAddr, String, u32)>) {
        let old = self.hosts.load_full();
        let same = old.hosts.len() == addrs.len()
            && old
                .hosts
                .iter()
                .zip(&addrs)
                .all(|(h, (a, _, w))| h.addr == *a && h.weight == *w);
        if same {
            return;
        }
        let hosts: Vec<Arc<Host>> = addrs
            .into_iter()
            .map(|(addr, hostname, weight)| {
                old.hosts
                    .iter()
                    .find(|h| h.addr == addr && h.weight == weight)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Host {
                            addr,
                            hostname,
                            weight: weight.max(1),
                            stats: HostStats::default(),
                        })
                    })
            })
            .collect();
        self.stats.membership_total.set(hosts.len() as i64);
        self.stats.membership_healthy.set(hosts.len() as i64);
        self.stats.membership_change.inc();
        self.hosts.store(Arc::new(HostSet {
            hosts,
            version: old.version + 1,
        }));
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
                    addrs.extend(
                        found
                            .into_iter()
                            .take(take)
                            .map(|a| (a, ep.shown_hostname(), ep.weight)),
                    );
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

// === impl WorkerLb ===

impl WorkerLb {
    pub fn new(clusters: &ClusterManager) -> Self {
        Self {
            per_cluster: clusters
                .clusters
                .iter()
                .map(|_| RefCell::new(LbState::default()))
                .collect(),
        }
    }

    /// Pick a host of `cluster` (index `idx`) by its policy, skipping none: every resolved host
    /// counts as healthy until health checking exists.
    pub fn pick(&self, idx: usize, cluster: &Cluster, set: &HostSet) -> Option<Arc<Host>> {
        let n = set.hosts.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(set.hosts[0].clone());
        }
        let mut st = self.per_cluster.get(idx)?.borrow_mut();
        if st.version != set.version {
            st.version = set.version;
            st.next = fastrand::usize(..n);
            st.weighted = set.hosts.iter().any(|h| h.weight != set.hosts[0].weight);
            st.current = vec![0; n];
        }
        let i = match cluster.config.lb_policy {
            LbPolicy::RoundRobin if !st.weighted => {
                let i = st.next % n;
                st.next = st.next.wrapping_add(1);
                i
            }
            LbPolicy::RoundRobin => {
                // Smooth weighted round robin: even spread, exact proportions.
                let total: i64 = set.hosts.iter().map(|h| i64::from(h.weight)).sum();
                let mut best = 0;
                for (j, h) in set.hosts.iter().enumerate() {
                    st.current[j] += i64::from(h.weight);
                    if st.current[j] > st.current[best] {
                        best = j;
                    }
                }
                st.current[best] -= total;
                best
            }
            LbPolicy::Random => weighted_random(set),
            LbPolicy::LeastRequest => {
                // Power of two choices on active requests scaled by weight.
                let a = weighted_random(set);
                let mut b = weighted_random(set);
                if b == a {
                    b = (a + 1) % n;
                }
                let load = |h: &Host| {
                    (h.stats.rq_active.load(Ordering::Relaxed) as f64 + 1.0) / f64::from(h.weight)
                };
                if load(&set.hosts[b]) < load(&set.hosts[a]) {
                    b
                } else {
                    a
                }
            }
        };
        Some(set.hosts[i].clone())
    }
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
                            healthy: true,
                            cx_active: s.cx_active.load(Ordering::Relaxed),
                            cx_connect_fail: s.cx_connect_fail.load(Ordering::Relaxed),
                            rq_active: s.rq_active.load(Ordering::Relaxed),
                            rq_total: s.rq_total.load(Ordering::Relaxed),
                            rq_error: s.rq_error.load(Ordering::Relaxed),
                            rq_success: s.rq_success.load(Ordering::Relaxed),
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

fn weighted_random(set: &HostSet) -> usize {
    let total: u64 = set.hosts.iter().map(|h| u64::from(h.weight)).sum();
    let mut r = fastrand::u64(..total.max(1));
    for (i, h) in set.hosts.iter().enumerate() {
        let w = u64::from(h.weight);
        if r < w {
            return i;
        }
        r -= w;
    }
    set.hosts.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Endpoint, Thresholds};

    fn cluster(policy: LbPolicy, eps: &[(&str, u16, u32)]) -> config::Cluster {
        config::Cluster {
            name: "c".into(),
            discovery: Discovery::Static,
            connect_timeout: Duration::from_secs(1),
            lb_policy: policy,
            endpoints: eps
                .iter()
                .map(|(h, p, w)| Endpoint {
                    host: (*h).into(),
                    port: *p,
                    weight: *w,
                    ..Endpoint::default()
                })
                .collect(),
            dns_lookup_family: DnsLookupFamily::V4Only,
            dns_refresh_rate: Duration::from_secs(5),
            circuit_breakers: Thresholds::default(),
            per_connection_buffer_limit_bytes: config::DEFAULT_BUFFER_LIMIT,
            tls: None,
            http2: false,
            metadata: Default::default(),
        }
    }

    fn counts(policy: LbPolicy, eps: &[(&str, u16, u32)], n: usize) -> HashMap<u16, usize> {
        let store = Store::new();
        let cm = ClusterManager::new(&[cluster(policy, eps)], &store);
        let lb = WorkerLb::new(&cm);
        let c = cm.get(0).unwrap();
        let mut out = HashMap::new();
        for _ in 0..n {
            let set = c.hosts();
            let h = lb.pick(0, c, &set).unwrap();
            *out.entry(h.addr.port()).or_default() += 1;
        }
        out
    }

    #[test]
    fn round_robin_is_even_and_weighted_is_proportional() {
        let even = counts(
            LbPolicy::RoundRobin,
            &[
                ("127.0.0.1", 1, 1),
                ("127.0.0.1", 2, 1),
                ("127.0.0.1", 3, 1),
            ],
            300,
        );
        assert!(even.values().all(|c| *c == 100), "{even:?}");
        let weighted = counts(
            LbPolicy::RoundRobin,
            &[("127.0.0.1", 1, 1), ("127.0.0.1", 2, 3)],
            400,
        );
        assert_eq!(weighted[&1], 100);
        assert_eq!(weighted[&2], 300);
    }

    #[test]
    fn random_and_least_request_reach_every_host() {
        for policy in [LbPolicy::Random, LbPolicy::LeastRequest] {
            let c = counts(policy, &[("127.0.0.1", 1, 1), ("127.0.0.1", 2, 1)], 400);
            assert!(c[&1] > 100 && c[&2] > 100, "{policy:?} {c:?}");
        }
    }

    #[test]
    fn static_hosts_and_membership() {
        let store = Store::new();
        let cm = ClusterManager::new(
            &[cluster(
                LbPolicy::RoundRobin,
                &[("127.0.0.1", 1, 1), ("::1", 2, 1)],
            )],
            &store,
        );
        let c = cm.get(cm.index("c").unwrap()).unwrap();
        assert_eq!(c.hosts().hosts.len(), 2);
        assert_eq!(c.stats.membership_total.value(), 2);
    }

    #[test]
    fn max_retries_breaker_admits_up_to_the_limit() {
        let store = Store::new();
        let mut cfg = cluster(LbPolicy::RoundRobin, &[("127.0.0.1", 1, 1)]);
        cfg.circuit_breakers.max_retries = 2;
        let cm = ClusterManager::new(&[cfg], &store);
        let c = cm.get(0).unwrap();
        let a = c.try_retry().expect("first retry");
        let b = c.try_retry().expect("second retry");
        assert!(c.try_retry().is_none());
        assert_eq!(c.stats.upstream_rq_retry_overflow.value(), 1);
        drop(a);
        assert!(c.try_retry().is_some());
        drop(b);
    }

    #[tokio::test]
    async fn dns_clusters_resolve_localhost() {
        let store = Store::new();
        let mut cfg = cluster(LbPolicy::RoundRobin, &[("localhost", 8080, 1)]);
        cfg.discovery = Discovery::LogicalDns;
        let cm = ClusterManager::new(&[cfg], &store);
        cm.resolve_all().await;
        let set = cm.get(0).unwrap().hosts();
        assert_eq!(set.hosts.len(), 1);
        assert_eq!(set.hosts[0].addr, "127.0.0.1:8080".parse().unwrap());
    }
}
