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
//! - `probe`: one HTTP/1.1 check on the wire; `h2`: one HTTP/2 check; `tcp`: one TCP check.

mod conn;
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
    /// Each host's task sends once after its first check; the senders drop with the tasks.
    done: mpsc::Receiver<()>,
    hosts: usize,
}

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
                tasks.spawn(check_host(cluster.clone(), host.clone(), first.clone()))
            });
        }
        drop(set);
        first = None;
        while tasks.try_join_next().is_some() {}
        cluster.members_changed().await;
    }
}

/// Check `host` forever: one probe per interval, its outcome counted and applied.
async fn check_host(cluster: Arc<Cluster>, host: Arc<Host>, mut first: Option<mpsc::Sender<()>>) {
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
        if change != state::Change::None {
            cluster.publish_health();
        }
        // The start's first round would log every host: only its failures are told.
        let quiet = first.is_some() && outcome.is_success();
        if !quiet {
            log(&cluster, &host, cfg, outcome, change);
        }
        if let Some(tx) = first.take() {
            let _ = tx.try_send(());
        }
        let traffic = cluster.stats.upstream_cx_total.value() > 0;
        let wait = state::with_jitter(st.next_interval(change, traffic, cfg), cfg);
        tokio::time::sleep(wait).await;
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
        state::Change::None if !outcome.is_success() && cfg.always_log_failures => {
            tracing::warn!(cluster = %name, host = %host.addr, ?outcome, "health check failed");
        }
        state::Change::None => {}
    }
}
