//! Per-worker load balancing over a cluster's routable hosts (the healthy ones, or all of them
//! in panic mode, as the host set was published): a priority level drawn by the levels' loads
//! (when there are several), then a host of it by the cluster's policy. The balancer state is
//! per worker and never shared; choosing a host reads only the published set and per-host
//! atomics. RING_HASH and MAGLEV pick through the level's shared table by the request's hash
//! (its route's `hash_policy`), or a random one without it, as Envoy does.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Cluster, ClusterManager, Host, HostSet};
use crate::config::LbPolicy;

/// What a request brings to host selection: the hash of its route's `hash_policy` (only
/// consistent-hashing clusters read it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pick {
    pub hash: Option<u64>,
}

/// Per-worker balancer state, one entry per cluster.
#[derive(Debug)]
pub struct WorkerLb {
    /// Per cluster, one state per priority level.
    per_cluster: Vec<RefCell<Vec<LbState>>>,
}

#[derive(Debug, Default)]
struct LbState {
    version: u64,
    next: usize,
    /// Smooth weighted round robin's current weights, when weights differ.
    current: Vec<i64>,
    weighted: bool,
}

// === impl WorkerLb ===

impl WorkerLb {
    pub fn new(clusters: &ClusterManager) -> Self {
        Self {
            per_cluster: clusters
                .clusters
                .iter()
                .map(|_| RefCell::new(vec![LbState::default()]))
                .collect(),
        }
    }

    /// Pick a host of `cluster` (index `idx`) by its policy among the set's routable hosts;
    /// `None` when there is none (no host, or none healthy with panic mode off).
    pub fn pick(
        &self,
        idx: usize,
        cluster: &Cluster,
        set: &HostSet,
        by: Pick,
    ) -> Option<Arc<Host>> {
        if cluster.config.lb_policy.hashes() {
            return pick_hashed(cluster, set, by.hash.unwrap_or_else(|| fastrand::u64(..)));
        }
        let level = match set.levels.len() {
            0 => return None,
            1 => 0,
            _ => choose_level(set, fastrand::u32(1..=100)),
        };
        let hosts = &set.levels[level].routable;
        let n = hosts.len();
        if n == 0 {
            return None;
        }
        if set.levels[level].panic {
            cluster.stats.lb_healthy_panic.inc();
        }
        if n == 1 {
            return Some(hosts[0].clone());
        }
        let mut states = self.per_cluster.get(idx)?.borrow_mut();
        if states.len() < set.levels.len() {
            states.resize_with(set.levels.len(), LbState::default);
        }
        let st = &mut states[level];
        if st.version != set.version {
            st.version = set.version;
            st.next = fastrand::usize(..n);
            st.weighted = hosts.iter().any(|h| h.weight != hosts[0].weight);
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
                let total: i64 = hosts.iter().map(|h| i64::from(h.weight)).sum();
                let mut best = 0;
                for (j, h) in hosts.iter().enumerate() {
                    st.current[j] += i64::from(h.weight);
                    if st.current[j] > st.current[best] {
                        best = j;
                    }
                }
                st.current[best] -= total;
                best
            }
            // An ORIGINAL_DST cluster (CLUSTER_PROVIDED) chooses its hosts itself
            // (`Cluster::original_dst_host`) and is never balanced here.
            LbPolicy::Random
            | LbPolicy::ClusterProvided
            | LbPolicy::RingHash(_)
            | LbPolicy::Maglev(_) => weighted_random(hosts),
            LbPolicy::LeastRequest => {
                // Power of two choices on active requests scaled by weight.
                let a = weighted_random(hosts);
                let mut b = weighted_random(hosts);
                if b == a {
                    b = (a + 1) % n;
                }
                let load = |h: &Host| {
                    (h.stats.rq_active.load(Ordering::Relaxed) as f64 + 1.0) / f64::from(h.weight)
                };
                if load(&hosts[b]) < load(&hosts[a]) {
                    b
                } else {
                    a
                }
            }
        };
        Some(hosts[i].clone())
    }
}

/// RING_HASH or MAGLEV: the level by `hash` (as Envoy: `hash % 100 + 1` against the levels'
/// loads), then the host `hash` falls on in its table.
fn pick_hashed(cluster: &Cluster, set: &HostSet, hash: u64) -> Option<Arc<Host>> {
    let level = match set.levels.len() {
        0 => return None,
        1 => 0,
        _ => choose_level(set, (hash % 100) as u32 + 1),
    };
    let l = &set.levels[level];
    let host = l.table.as_ref()?.pick(hash)?;
    if l.panic {
        cluster.stats.lb_healthy_panic.inc();
    }
    Some(host.clone())
}

/// The level `draw` (1 to 100) falls in by the levels' loads (percentages adding up to 100).
fn choose_level(set: &HostSet, draw: u32) -> usize {
    let mut sum = 0;
    for (i, l) in set.levels.iter().enumerate() {
        sum += l.load;
        if draw <= sum {
            return i;
        }
    }
    0
}

fn weighted_random(hosts: &[Arc<Host>]) -> usize {
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
    let mut r = fastrand::u64(..total.max(1));
    for (i, h) in hosts.iter().enumerate() {
        let w = u64::from(h.weight);
        if r < w {
            return i;
        }
        r -= w;
    }
    hosts.len() - 1
}
