//! The serving step's parts, run when a generation first serves and again after a rollback:
//! its listen sockets (owned, duplicated for the workers, closed or kept when it stops
//! accepting), its admin interface, its workers, and the parent side that answers its child.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use parking_lot::Mutex;
use proxy_core::admin::{self, AdminState, ListenerStatus, ServerInfo};
use proxy_core::lifecycle::Phase;
use proxy_core::tally::Recent;
use tokio::sync::mpsc;

use super::{notify_ready_when_serving, AdminParts, Drains, Generation, Resolve, Resume, Serving};
use crate::restart::{parent, Grandparent, OwnedSocket, OwnedSockets, ParentEvent, Returning};

// === impl Generation ===

impl Generation {
    /// Start serving on the generation's own sockets (the first time, and again after a
    /// rollback): the drains, the admin interface, the DNS refresh and the workers.
    pub(super) async fn start_serving(
        &self,
        resume: &Resume,
        resolve: Resolve,
    ) -> anyhow::Result<Serving> {
        let (drains, drain_watch, admin_watch) = Drains::new(&self.opts);
        let (listeners, admin) = self.serving_sockets(&resume.owned);
        let parts = AdminParts {
            quit: resume.quit.clone(),
            rollback: resume.rollback.clone(),
            control: drains.control.clone(),
            shutdown: admin_watch,
            epoch_started: resume.epoch_started,
        };
        self.start_admin(admin.as_ref(), parts)?;
        if resolve == Resolve::First {
            // Clusters are resolved, and their hosts checked once, before the first request
            // can arrive.
            self.clusters.resolve_all().await;
        }
        tokio::spawn(self.clusters.clone().run_dns_refresh(drain_watch.clone()));
        if resolve == Resolve::First {
            let inherited = self.inherit_health();
            super::first_health_round(&self.clusters, drain_watch.clone(), inherited).await;
        } else {
            // Serving again after a rollback: checks resume without holding up the accepts.
            drop(proxy_core::health::spawn(
                &self.clusters,
                drain_watch.clone(),
            ));
        }
        proxy_core::outlier::spawn(&self.clusters, drain_watch.clone());
        self.close_sockets_when_accept_stops(resume, drain_watch.clone());
        let workers = self
            .dataplane
            .spawn_workers(&listeners, self.opts.concurrency, drain_watch)
            .context("could not start workers")?;
        Ok(Serving { drains, workers })
    }

    /// Start with the parent's host health (after the clusters are resolved, before checks and
    /// outlier detection start). True when it covered every health-checked host: then serving
    /// need not wait for a first round of checks.
    fn inherit_health(&self) -> bool {
        if self.inherited_health.is_empty() {
            return false;
        }
        let (covered, checked) = self.clusters.inherit_health(&self.inherited_health);
        let down = self
            .inherited_health
            .iter()
            .filter(|h| h.failed_active_hc || !h.ejected_for.is_zero())
            .count();
        tracing::info!(
            hosts = self.inherited_health.len(),
            down,
            covered,
            checked,
            "took the previous generation's host health"
        );
        covered == checked && checked > 0
    }

    /// Duplicates of the generation's listen sockets for its workers (each listener's, its
    /// `address` then its `additional_addresses`, in configuration order; none for an address
    /// it no longer holds) and of its admin socket.
    fn serving_sockets(
        &self,
        owned: &OwnedSockets,
    ) -> (Vec<Vec<TcpListener>>, Option<TcpListener>) {
        let owned = owned.lock();
        let dup = |addr: SocketAddr, name: &str| {
            let o = owned.iter().find(|o| o.addr == addr && o.name == name)?;
            o.socket
                .try_clone()
                .inspect_err(
                    |e| tracing::error!(%addr, error = %e, "could not use a listen socket"),
                )
                .ok()
        };
        let listeners = self
            .bootstrap
            .listeners
            .iter()
            .map(|l| l.addresses().filter_map(|a| dup(a, &l.name)).collect())
            .collect();
        let admin = self
            .bootstrap
            .admin
            .as_ref()
            .and_then(|a| dup(a.address, "admin"));
        (listeners, admin)
    }

    /// Serve the admin interface on `socket`, if the configuration has one.
    pub(super) fn start_admin(
        &self,
        socket: Option<&TcpListener>,
        parts: AdminParts,
    ) -> anyhow::Result<()> {
        let Some(sock) = socket else {
            return Ok(());
        };
        let AdminParts {
            quit,
            rollback,
            control,
            shutdown,
            epoch_started,
        } = parts;
        let listener = tokio::net::TcpListener::from_std(
            sock.try_clone().context("could not use the admin socket")?,
        )
        .context("could not use the admin socket")?;
        let state = Arc::new(AdminState {
            stats: self.store.clone(),
            server: ServerInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                hot_restart_version: self.plan.hot_restart_version(),
                command_line_options: self.place.command_line_options(&self.opts),
                node: crate::config::node_with_overrides(
                    &self.bootstrap.node,
                    crate::config::NodeOverrides {
                        id: self.opts.service_node.as_deref(),
                        cluster: self.opts.service_cluster.as_deref(),
                        zone: self.opts.service_zone.as_deref(),
                    },
                ),
                epoch: self.place.epoch,
                concurrency: u32::try_from(self.opts.concurrency).unwrap_or(u32::MAX),
                epoch_started,
                chain_started: self.chain_started,
            },
            generation: self.lifecycle.subscribe(),
            config_dump: self.config_dump.clone(),
            listeners: self
                .bootstrap
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    name: l.name.clone(),
                    address: l.address,
                    additional_addresses: l.additional_addresses.clone(),
                })
                .collect(),
            clusters: self.clusters.clone(),
            quit,
            rollback: Some(rollback),
            drain: Some(control),
        });
        tokio::spawn(admin::serve(listener, state, shutdown));
        Ok(())
    }

    /// This generation serves: enter the phase (which tells a supervising restarter, see
    /// [`notify_ready_when_serving`]) and say so in the log, for people.
    pub(super) fn announce_serving(&self) {
        tokio::spawn(notify_ready_when_serving(self.lifecycle.subscribe()));
        self.lifecycle.enter(Phase::Serving);
        tracing::info!(
            listeners = self.bootstrap.listeners.len(),
            clusters = self.bootstrap.clusters.len(),
            concurrency = self.opts.concurrency,
            epoch = self.place.epoch,
            "baton is serving"
        );
    }

    /// The generation's listen sockets by address and name, for a successor to take.
    pub(super) fn own_sockets(
        &self,
        listeners: Vec<Vec<TcpListener>>,
        admin: Option<TcpListener>,
    ) -> OwnedSockets {
        let mut owned: Vec<OwnedSocket> = self
            .bootstrap
            .listeners
            .iter()
            .zip(listeners)
            .flat_map(|(l, sockets)| {
                l.addresses()
                    .zip(sockets)
                    .map(|(addr, socket)| OwnedSocket {
                        addr,
                        name: l.name.clone(),
                        socket,
                    })
            })
            .collect();
        if let (Some(a), Some(socket)) = (&self.bootstrap.admin, admin) {
            owned.push(OwnedSocket {
                addr: a.address,
                name: "admin".to_owned(),
                socket,
            });
        }
        Arc::new(Mutex::new(owned))
    }

    /// Once this generation stops accepting (a successor serves, /drain_listeners, a
    /// shutdown), nothing accepts on its sockets: close them so new connections are refused
    /// (or go to the successor's copies) rather than queue unanswered — unless a rollback
    /// window keeps them for this generation to serve again (see [`Resume::keep_sockets`]).
    /// Each listener's sockets close when accepting stops for its `traffic_direction` (an
    /// inbound-only drain stops the inbound ones); the admin's with the last.
    fn close_sockets_when_accept_stops(&self, resume: &Resume, watch: drain::Watch) {
        let draining = self
            .store
            .gauge("listener_manager.total_listeners_draining");
        let active = self.store.gauge("listener_manager.total_listeners_active");
        active.set(self.bootstrap.listeners.len() as i64);
        draining.set(0);
        // This serving's round: a task woken after a rollback started another one (it can run
        // late on a busy machine) leaves the sockets alone.
        let round = resume.serving_round.fetch_add(1, Ordering::AcqRel) + 1;
        let close = {
            let (keep, current) = (resume.keep_sockets.clone(), resume.serving_round.clone());
            move || !keep.load(Ordering::Acquire) && current.load(Ordering::Acquire) == round
        };
        for l in &self.bootstrap.listeners {
            let (owned, close) = (resume.owned.clone(), close.clone());
            let (mut watch, active, draining) = (watch.clone(), active.clone(), draining.clone());
            let (addrs, direction): (Vec<SocketAddr>, _) = (l.addresses().collect(), l.direction);
            tokio::spawn(async move {
                watch.accept_stopped(direction).await;
                drop(watch);
                if close() {
                    owned
                        .lock()
                        .retain(|s| !addrs.contains(&s.addr) || s.name == "admin");
                }
                active.dec();
                draining.inc();
            });
        }
        let (owned, mut watch) = (resume.owned.clone(), watch);
        tokio::spawn(async move {
            watch.accept_stopped(drain::Direction::Unspecified).await;
            drop(watch);
            if close() {
                owned.lock().clear();
            }
        });
    }

    /// Answer a future child on this generation's restart socket, on a thread of its own.
    pub(super) fn answer_children(
        &self,
        listener: hotrestart_rpc::Listener,
        owned: OwnedSockets,
        events: mpsc::UnboundedSender<ParentEvent>,
        grandparent: &Grandparent,
        recent: Arc<Recent>,
        returning: Returning,
    ) -> anyhow::Result<parent::ParentSide> {
        parent::spawn(parent::Answering {
            listener,
            hot_restart_version: self.plan.hot_restart_version(),
            epoch: self.place.epoch,
            chain_started: self.chain_started,
            concurrency: self.opts.concurrency,
            sockets: owned,
            events,
            grandparent: grandparent.clone(),
            handover: self.handover.clone(),
            rollback_window: self.rollback_window,
            recent,
            returning,
            clusters: self.clusters.clone(),
        })
    }
}
