//! `ORIGINAL_DST` clusters: no configured hosts; a request or connection goes to its downstream
//! connection's original destination (the local address a listener filter restored) or, with
//! `use_http_header`, to the `ip:port` its header names. A host is made on first use and joins
//! the cluster's host set (shown by `/clusters`, counted in `membership_*`); one left unused
//! for a whole `cleanup_interval` is removed, as Envoy does (a host is marked used when picked
//! and unmarked by each sweep, so it goes after one to two intervals without use).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::HeaderMap;

use super::{Cluster, Host, HostSpec};

impl Cluster {
    /// The host a request (its `headers`) or connection of this `ORIGINAL_DST` cluster goes to;
    /// `restored`: its downstream connection's original destination, if a listener filter
    /// restored one. `None` when there is none (counted by the caller as no healthy upstream).
    pub fn original_dst_host(
        &self,
        headers: Option<&HeaderMap>,
        restored: Option<SocketAddr>,
    ) -> Option<Arc<Host>> {
        let od = self.config.original_dst.as_ref()?;
        let from_header = match (&od.header, headers) {
            (Some(name), Some(headers)) => headers.get(name).and_then(|v| {
                // Envoy 1.40: an `ip:port` literal (IPv6 in brackets); anything else is
                // counted invalid and the connection's original destination is used instead.
                let addr = v.to_str().ok().and_then(|s| s.parse::<SocketAddr>().ok());
                if addr.is_none() {
                    self.stats.original_dst_host_invalid.inc();
                }
                addr
            }),
            _ => None,
        };
        let mut addr = from_header.or(restored)?;
        if let Some(port) = od.port_override {
            addr.set_port(port);
        }
        Some(self.original_dst_host_at(addr))
    }

    /// The host at `addr`, made and added to the host set if it is not there yet.
    fn original_dst_host_at(&self, addr: SocketAddr) -> Arc<Host> {
        let existing = self.hosts().hosts.iter().find(|h| h.addr == addr).cloned();
        let host = match existing {
            Some(h) => h,
            None => {
                let spec = HostSpec {
                    addr,
                    // Envoy 1.40 names such a host by its cluster's name followed by its
                    // address (`od127.0.0.1:8080` in `/clusters`).
                    hostname: format!("{}{addr}", self.config.name),
                    weight: 1,
                    check_port: None,
                    priority: 0,
                    hash_key: None,
                };
                let fresh = Arc::new(Host::new(spec, false));
                let mut raced = None;
                self.hosts.rcu(|old| {
                    raced = old.hosts.iter().find(|h| h.addr == addr).cloned();
                    if raced.is_some() {
                        // Another worker added it meanwhile.
                        return Arc::clone(old);
                    }
                    let mut hosts = old.hosts.clone();
                    hosts.push(fresh.clone());
                    Arc::new(self.snapshot(hosts, old.version + 1))
                });
                match raced {
                    Some(h) => h,
                    None => {
                        self.stats.membership_change.inc();
                        self.count_membership(&self.hosts.load());
                        fresh
                    }
                }
            }
        };
        host.used.store(true, Ordering::Relaxed);
        host
    }

    /// One cleanup sweep: remove the hosts not used since the last one, and unmark the others.
    pub fn original_dst_sweep(&self) {
        let stale: Vec<SocketAddr> = self
            .hosts()
            .hosts
            .iter()
            .filter(|h| !h.used.swap(false, Ordering::Relaxed))
            .map(|h| h.addr)
            .collect();
        if stale.is_empty() {
            return;
        }
        self.hosts.rcu(|old| {
            let keep = old
                .hosts
                .iter()
                .filter(|h| !stale.contains(&h.addr))
                .cloned()
                .collect();
            Arc::new(self.snapshot(keep, old.version + 1))
        });
        self.stats.membership_change.inc();
        self.count_membership(&self.hosts.load());
    }
}
