//! Active health checking (`clusters[].health_checks`): once per process, never per worker.
//!
//! One task per health-checked cluster follows its host set (DNS may add and remove hosts)
//! and runs one checking task per host. A host's task is the only writer of that host's
//! [`crate::host_health::AtomicHealth`]; when a host enters or leaves load balancing it
//! publishes a new host-set snapshot ([`Cluster::publish_health`]), so workers pick among
//! routable hosts with one atomic load, no lock and no per-request filtering.
//!
//! - `state`: what one check's outcome does to a host, and when to check next (pure);
//! - `conn`: a check's connection, TCP or TLS with the cluster's context;
//! - `probe`: one HTTP/1.1 check on the wire; `h2`: one HTTP/2 check; `grpc`: one gRPC check;
//!   `tcp`: one TCP check.

mod conn;
mod grpc;
mod h2;
mod probe;
mod state;
mod tcp;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::cluster::{Cluster, ClusterManager, Host};
use crate::config::HealthCheck;
use crate::host_health::HealthFlags;
use crate::stats::HealthCheckStats;

pub use state::Outcome;

/// Ends once every host known at start has been checked once (or its checker is gone).
#[derive(Debug)]
#[must_use]
pub struct FirstRound {
    /// Each host at start reports once ([`FirstCheck`]): after its first check, or when its
    /// task ends without one (the host left the cluster).
    done: mpsc::Receiver<()>,
    hosts: usize,
}

/// A host's part of the [`FirstRound`]: reported when done, or when dropped undone.
#[derive(Debug)]
struct FirstCheck(Option<mpsc::Sender<()>>);

// === impl FirstRound ===

impl FirstRound {
    /// Wait for the first check of every host there was at start.
    pub async fn wait(mut self) {
        while self.hosts > 0 && self.done.recv().await.is_some() {
            self.hosts -= 1;
        }
    }

    /// How many hosts are still waiting for their first check.
    pub fn pending(&self) -> usize {
        self.hosts
    }
}

/// Check every health-checked cluster's hosts until `shutdown` fires. The returned
/// [`FirstRound`] says when the hosts there are now have all been checked once.
pub fn spawn(clusters: &ClusterManager, mut shutdown: drain::Watch) -> FirstRound {
    let checked: Vec<Arc<Cluster>> = clusters
        .clusters()
        .iter()
        .filter(|c| c.config.health_check.is_some())
        .cloned()
        .collect();
    let hosts: usize = checked.iter().map(|c| c.hosts().hosts.len()).sum();
    let (tx, done) = mpsc::channel(hosts.max(1));
    let supervisors = checked
        .into_iter()
        .map(|c| supervise(c, tx.clone()))
        .collect::<Vec<_>>();
    drop(tx);
    tokio::spawn(async move {
        tokio::select! {
            _ = futures_util::future::join_all(supervisors) => {}
            _ = shutdown.signaled() => {}
        }
    });
    FirstRound { done, hosts }
}

/// Keep one checking task per current host of `cluster`. `first` goes to the hosts there are
/// at start.
async fn supervise(cluster: Arc<Cluster>, first: mpsc::Sender<()>) {
    let mut tasks = JoinSet::new();
    let mut running: HashMap<usize, AbortHandle> = HashMap::new();
    let mut first = Some(first);
    loop {
        let set = cluster.hosts();
        // A host is the same host as long as it is the same allocation.
        let current: HashMap<usize, &Arc<Host>> = set
            .hosts
            .iter()
            .map(|h| (Arc::as_ptr(h) as usize, h))
            .collect();
        running.retain(|ptr, task| {
            let keep = current.contains_key(ptr);
            if !keep {
                task.abort();
            }
            keep
        });
        for (ptr, host) in current {
            running.entry(ptr).or_insert_with(|| {
                tasks.spawn(check_host(
                    cluster.clone(),
                    host.clone(),
                    FirstCheck(first.clone()),
                ))
            });
        }
        drop(set);
        first = None;
        while tasks.try_join_next().is_some() {}
        cluster.members_changed().await;
    }
}

/// Check `host` forever: one probe per interval, its outcome counted and applied.
async fn check_host(cluster: Arc<Cluster>, host: Arc<Host>, mut first: FirstCheck) {
    let (Some(cfg), Some(stats)) = (&cluster.config.health_check, &cluster.health_stats) else {
        return;
    };
    let Some(mut prober) = probe::Prober::new(&cluster.config, &host) else {
        return;
    };
    let mut st = state::HostState::new(host.health.load());
    loop {
        stats.attempt.inc();
        let outcome = match tokio::time::timeout(cfg.timeout, prober.probe(host.check_addr)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                prober.reset();
                Outcome::Timeout
            }
        };
        count(stats, outcome);
        let change = st.record(outcome, cfg);
        let flags = st.flags();
        for flag in [
            HealthFlags::FAILED_ACTIVE_HC,
            HealthFlags::ACTIVE_HC_TIMEOUT,
        ] {
            host.health.set(flag, flags.contains(flag));
        }
        if outcome.is_success() {
            cluster.report_health_check_pass(&host);
        }
        if matches!(
            change,
            state::Change::BecameHealthy | state::Change::BecameUnhealthy
        ) {
            cluster.publish_health();
        }
        // The start's first round would log every host: only its failures are told.
        let quiet = first.0.is_some() && outcome.is_success();
        if !quiet {
            log(&cluster, &host, cfg, outcome, change);
        }
        first.done();
        let traffic = cluster.stats.upstream_cx_total.value() > 0;
        let wait = state::with_jitter(st.next_interval(change, traffic, cfg), cfg);
        tokio::time::sleep(wait).await;
    }
}

// === impl FirstCheck ===

impl FirstCheck {
    /// This host's first check is done (once; later calls do nothing).
    fn done(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for FirstCheck {
    fn drop(&mut self) {
        self.done();
    }
}

fn count(stats: &HealthCheckStats, outcome: Outcome) {
    if outcome.is_success() {
        stats.success.inc();
        return;
    }
    stats.failure.inc();
    if outcome.is_network() {
        stats.network_failure.inc();
    }
}

/// A host entering or leaving load balancing is always logged; other failed checks only with
/// `always_log_health_check_failures`.
fn log(cluster: &Cluster, host: &Host, cfg: &HealthCheck, outcome: Outcome, change: state::Change) {
    let name = &cluster.config.name;
    match change {
        state::Change::BecameHealthy => {
            tracing::info!(cluster = %name, host = %host.addr, "health check passed: host back in load balancing");
        }
        state::Change::BecameUnhealthy => {
            tracing::warn!(cluster = %name, host = %host.addr, ?outcome, "health check failed: host out of load balancing");
        }
        state::Change::None | state::Change::Pending
            if !outcome.is_success() && cfg.always_log_failures =>
        {
            tracing::warn!(cluster = %name, host = %host.addr, ?outcome, "health check failed");
        }
        state::Change::None | state::Change::Pending => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{self, CheckKind, Discovery, DnsLookupFamily, Endpoint, LbPolicy};

    /// A cluster of hosts on `ports` of 127.0.0.1 with a TCP check (connect only).
    fn cluster(ports: &[u16]) -> ClusterManager {
        let s = Duration::from_secs;
        let c = config::Cluster {
            name: "c".into(),
            discovery: Discovery::Static,
            connect_timeout: s(1),
            lb_policy: LbPolicy::RoundRobin,
            endpoints: ports
                .iter()
                .map(|p| Endpoint {
                    host: "127.0.0.1".into(),
                    port: *p,
                    weight: 1,
                    ..Endpoint::default()
                })
                .collect(),
            dns_lookup_family: DnsLookupFamily::V4Only,
            dns_refresh_rate: s(5),
            circuit_breakers: config::Thresholds::default(),
            per_connection_buffer_limit_bytes: config::DEFAULT_BUFFER_LIMIT,
            tls: None,
            http2: false,
            metadata: Default::default(),
            health_check: Some(HealthCheck {
                timeout: s(1),
                interval: s(60),
                interval_jitter: Duration::ZERO,
                interval_jitter_percent: 0,
                unhealthy_threshold: 1,
                healthy_threshold: 1,
                no_traffic_interval: s(60),
                no_traffic_healthy_interval: s(60),
                unhealthy_interval: s(60),
                unhealthy_edge_interval: s(60),
                healthy_edge_interval: s(60),
                reuse_connection: true,
                always_log_failures: false,
                kind: CheckKind::Tcp(config::TcpCheck::default()),
            }),
            panic_threshold: config::DEFAULT_PANIC_THRESHOLD,
            outlier: None,
            overprovisioning_factor: config::DEFAULT_OVERPROVISIONING_FACTOR,
            upstream: Default::default(),
            original_dst: None,
        };
        ClusterManager::new(&[c], &shm_stats::Store::new())
    }

    #[tokio::test]
    async fn the_first_round_checks_every_host_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap().port();
        // A port nobody listens on: bound, then closed.
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cm = cluster(&[up, down]);
        let (_signal, watch) = drain::channel();
        let first = spawn(&cm, watch);
        assert_eq!(first.pending(), 2);
        tokio::time::timeout(Duration::from_secs(5), first.wait())
            .await
            .expect("the first round ends");
        let c = cm.get(0).unwrap();
        let set = c.hosts();
        let flags: Vec<_> = set.hosts.iter().map(|h| h.health.load()).collect();
        assert_eq!(flags, [HealthFlags::HEALTHY, HealthFlags::FAILED_ACTIVE_HC]);
        // One of two healthy is not below 50%: no panic, only the live host is routable.
        assert!(!set.levels[0].panic);
        assert_eq!(set.levels[0].routable.len(), 1);
        let stats = c.health_stats.as_ref().unwrap();
        assert_eq!(
            (stats.attempt.value(), stats.network_failure.value()),
            (2, 1)
        );
        assert_eq!(stats.healthy.value(), 1);
    }

    #[test]
    fn a_host_gone_before_its_first_check_still_ends_the_round() {
        let (tx, mut rx) = mpsc::channel(2);
        let done = FirstCheck(Some(tx.clone()));
        let mut checked = FirstCheck(Some(tx));
        checked.done();
        checked.done();
        drop(checked);
        drop(done);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "one report per host");
    }
}
