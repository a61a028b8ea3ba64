//! What an upstream connection carries besides its bytes: its life in the stats, where it goes
//! back to once its response is read, and how a send fails.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::cluster::{Cluster, Host};
use crate::error::UpstreamFailure;

/// Why a send failed.
#[derive(Debug)]
pub enum SendError {
    /// The request was not written: it may be sent on another connection.
    NotSent,
    Failed(UpstreamFailure),
}

/// Tracks an upstream connection's life in the cluster's and host's stats.
#[derive(Debug)]
pub struct CxGuard {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
}

// === impl CxGuard ===

impl CxGuard {
    pub fn new(cluster: Arc<Cluster>, host: Arc<Host>) -> Self {
        cluster.stats.upstream_cx_active.inc();
        host.stats.cx_active.fetch_add(1, Ordering::Relaxed);
        host.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        Self { cluster, host }
    }

    /// The connection's cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for CxGuard {
    fn drop(&mut self) {
        self.cluster.stats.upstream_cx_active.dec();
        self.cluster.stats.upstream_cx_destroy.inc();
        self.host.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
    }
}
