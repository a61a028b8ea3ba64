//! Host health across a hot restart: what a generation knows of its hosts (active health
//! checking's verdict, outlier ejections with their time left) read for its successor, and
//! applied by the successor before it serves, so it starts with the hosts its parent knows to
//! be down kept out and ejections continuing, instead of sending its first requests to them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::{ClusterManager, EjectionShare};
use crate::host_health::HealthFlags;
use crate::lifecycle::unix_ms;

/// One host's health as a generation hands it to its successor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostHealth {
    pub cluster: String,
    pub addr: SocketAddr,
    /// Active health checking has it out.
    pub failed_active_hc: bool,
    /// Outlier detection has it out for this much longer (zero: not ejected).
    pub ejected_for: Duration,
    /// Ejections in a row (the next ejection time's multiplier).
    pub ejections: u32,
}

// === impl ClusterManager ===

impl ClusterManager {
    /// The health of every host of a cluster with health checking or outlier detection.
    pub fn host_health(&self) -> Vec<HostHealth> {
        let now = unix_ms(SystemTime::now());
        self.clusters()
            .iter()
            .filter(|c| c.config.health_check.is_some() || c.config.outlier.is_some())
            .flat_map(|c| {
                let name = c.config.name.clone();
                c.hosts()
                    .hosts
                    .iter()
                    .map(|h| {
                        let (ejections, until) = h.outlier.ejection.read();
                        HostHealth {
                            cluster: name.clone(),
                            addr: h.addr,
                            failed_active_hc: h
                                .health
                                .load()
                                .contains(HealthFlags::FAILED_ACTIVE_HC),
                            ejected_for: Duration::from_millis(until.saturating_sub(now)),
                            ejections,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Take the parent's view of `hosts` (those of the same cluster and address here; call
    /// once the clusters are resolved, before health checking and outlier detection start):
    /// active health checking's verdict where this cluster checks, ejections where it detects
    /// outliers. How many hosts of health-checked clusters it covered, and how many of those
    /// clusters' hosts there are.
    pub fn inherit_health(&self, hosts: &[HostHealth]) -> (usize, usize) {
        let now = unix_ms(SystemTime::now());
        let (mut covered, mut checked) = (0, 0);
        for c in self.clusters() {
            let (hc, od) = (c.config.health_check.is_some(), c.config.outlier.is_some());
            if !hc && !od {
                continue;
            }
            for h in &c.hosts().hosts {
                checked += usize::from(hc);
                let Some(p) = hosts
                    .iter()
                    .find(|p| p.cluster == c.config.name && p.addr == h.addr)
                else {
                    continue;
                };
                if hc {
                    covered += 1;
                    h.health
                        .set(HealthFlags::FAILED_ACTIVE_HC, p.failed_active_hc);
                }
                if od {
                    let until = (!p.ejected_for.is_zero())
                        .then(|| now.saturating_add(p.ejected_for.as_millis() as u64));
                    h.outlier.ejection.publish(p.ejections, until);
                    h.health
                        .set(HealthFlags::FAILED_OUTLIER_CHECK, until.is_some());
                }
            }
            c.publish_health();
        }
        (covered, checked)
    }
}

// === impl EjectionShare ===

impl EjectionShare {
    /// The detector's latest word on the host: ejections in a row, and until when it is out
    /// (`None`: in).
    pub fn publish(&self, ejections: u32, until_unix_ms: Option<u64>) {
        self.ejections.store(ejections, Ordering::Relaxed);
        self.until_unix_ms
            .store(until_unix_ms.unwrap_or(0), Ordering::Release);
    }

    /// (ejections in a row, out until in ms since the Unix epoch; 0 when in).
    pub fn read(&self) -> (u32, u64) {
        (
            self.ejections.load(Ordering::Relaxed),
            self.until_unix_ms.load(Ordering::Acquire),
        )
    }

    /// How long the host is still out, as of now; zero when it is in.
    pub fn left(&self) -> Duration {
        let until = self.until_unix_ms.load(Ordering::Acquire);
        Duration::from_millis(until.saturating_sub(unix_ms(SystemTime::now())))
    }
}
