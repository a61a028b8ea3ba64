//! Worker threads: one current-thread tokio runtime per worker, accepting on every listener's
//! (shared, already bound) socket and adopting connections handed over by the previous
//! generation; each connection is served by [`crate::downstream`].
//!
//! Nothing here is shared across workers but read-only configuration, stats handles and the
//! cluster manager; upstream pools and balancer state are per worker.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shm_stats::Store;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::cluster::{ClusterManager, WorkerLb};
use crate::config::{self, Bootstrap, NetworkFilter};
use crate::context::{Chain, ChainKind, ListenerShared, ListenerState, TcpProxyShared, Worker};
use crate::downstream;
use crate::error::BuildError;
use crate::handover::{Arriving, Handover, Kind, WorkerModes};
use crate::router::Router;
use crate::stats::{
    CodeCounters, CompressorStats, CorsStats, CsrfStats, FaultFilterStats, HealthCheckFilterStats,
    HttpInspectorStats, HttpStats, ListenerStats, LocalRateLimitStats, ProxyProtoStats,
    TcpProxyStats,
};
use crate::tally::{Slot, Tally};
use crate::tls::SslStats;
use crate::upstream::Pools;

/// The data plane of one generation, built from a validated configuration.
#[derive(Debug)]
pub struct Dataplane {
    listeners: Vec<Arc<ListenerState>>,
    clusters: Arc<ClusterManager>,
    handover: Handover,
    /// What this process answered, for the rollback health gate (kept across serving again).
    tally: Arc<Tally>,
}

/// The running worker threads.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<std::thread::JoinHandle<()>>,
    adopter: Option<Adopter>,
}

/// Gives connections arriving from the previous generation to the workers, round robin.
#[derive(Clone, Debug)]
pub struct Adopter {
    workers: Vec<mpsc::UnboundedSender<Arriving>>,
    next: Arc<AtomicUsize>,
    /// This generation's listeners and clusters: what a moved connection is checked against.
    listeners: Vec<Arc<ListenerState>>,
    clusters: Arc<ClusterManager>,
}

// === impl Dataplane ===

impl Dataplane {
    pub fn new(
        bootstrap: &Bootstrap,
        clusters: Arc<ClusterManager>,
        store: &Store,
    ) -> Result<Self, BuildError> {
        let listeners = bootstrap
            .listeners
            .iter()
            .map(|lc| build_listener(lc, &clusters, store).map(Arc::new))
            .collect::<Result<Vec<_>, BuildError>>()?;
        store
            .gauge("listener_manager.total_listeners_active")
            .set(listeners.len() as i64);
        Ok(Self {
            listeners,
            clusters,
            handover: Handover::new(false, store),
            tally: Arc::default(),
        })
    }

    /// Hand live connections to the next generation through `handover` (instead of draining
    /// them all).
    pub fn with_handover(mut self, handover: Handover) -> Self {
        self.handover = handover;
        self
    }

    /// What this process's workers answered (every time it served).
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    pub fn handover(&self) -> &Handover {
        &self.handover
    }

    pub fn listeners(&self) -> &[Arc<ListenerState>] {
        &self.listeners
    }

    /// Reopen every access log's file sink (log rotation): the HTTP connection managers',
    /// the listeners' and the `tcp_proxy` filters'.
    pub fn reopen_access_logs(&self) {
        for l in &self.listeners {
            let chains = l.chains.iter().map(|c| match &c.serve {
                ChainKind::Http(h) => h.access_logs.as_ref(),
                ChainKind::Tcp(t) => t.access_logs.as_ref(),
            });
            for logs in std::iter::once(l.access_logs.as_ref())
                .chain(chains)
                .flatten()
            {
                logs.reopen();
            }
        }
    }

    /// Start `concurrency` workers serving `sockets` (each listener's, in configuration order:
    /// its `address`, then its `additional_addresses`; a listener without any socket — one
    /// that could not be bound again after a rollback — is not served). Each worker stops
    /// accepting when `drain` fires and exits once its last connection has closed.
    pub fn spawn_workers(
        &self,
        sockets: &[Vec<std::net::TcpListener>],
        concurrency: usize,
        drain: drain::Watch,
    ) -> Result<Workers, BuildError> {
        let mut handles = Vec::with_capacity(concurrency);
        let mut senders = Vec::with_capacity(concurrency);
        for index in 0..concurrency.max(1) {
            let (adopt_tx, adopt_rx) = mpsc::unbounded_channel();
            senders.push(adopt_tx);
            let mut mine = Vec::with_capacity(sockets.len());
            for (l, socks) in self.listeners.iter().zip(sockets) {
                for s in socks {
                    let sock = s.try_clone().map_err(|source| BuildError::Listener {
                        listener: l.config.name.clone(),
                        source,
                    })?;
                    sock.set_nonblocking(true)
                        .map_err(|source| BuildError::Listener {
                            listener: l.config.name.clone(),
                            source,
                        })?;
                    mine.push((l.clone(), sock));
                }
            }
            let clusters = self.clusters.clone();
            let drain = drain.clone();
            let handover = self.handover.clone();
            let tally = self.tally.slot();
            let handle = std::thread::Builder::new()
                .name(format!("baton-worker-{index}"))
                .spawn(move || {
                    run_worker(index, clusters, (handover, tally), mine, adopt_rx, drain)
                })
                .map_err(|source| BuildError::Worker { index, source })?;
            handles.push(handle);
        }
        Ok(Workers {
            handles,
            adopter: Some(Adopter {
                workers: senders,
                next: Arc::new(AtomicUsize::new(0)),
                listeners: self.listeners.clone(),
                clusters: self.clusters.clone(),
            }),
        })
    }
}

// === impl Workers ===

impl Workers {
    /// Wait for every worker thread to exit.
    pub fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }

    /// Where connections arriving from the previous generation go (once). The workers serve
    /// every connection given to it until it — and every clone — is dropped, draining or not:
    /// a connection taken from the previous generation is never dropped unserved.
    pub fn take_adopter(&mut self) -> Option<Adopter> {
        self.adopter.take()
    }
}

// === impl Adopter ===

impl Adopter {
    /// Whether `conn` can be served here: its listener (by configured address) is in this
    /// configuration with the chain that served it, unchanged (see
    /// [`ListenerState::adoptable`]), and a tunnel's or `tcp_proxy` connection's cluster exists.
    pub fn accepts(&self, conn: &Arriving) -> bool {
        let cluster_known = match conn.kind {
            Kind::Http1 => true,
            Kind::Tunnel | Kind::TcpProxy => self.clusters.index(&conn.cluster).is_some(),
        };
        cluster_known
            && self
                .listeners
                .iter()
                .find(|l| l.config.address == conn.listener)
                .and_then(|l| l.adoptable(conn.kind, conn.chain.as_ref()))
                .is_some()
    }

    /// Serve `conn` on the next worker. False (the connection is closed) when no worker takes
    /// connections any more (this generation is draining).
    pub fn adopt(&self, conn: Arriving) -> bool {
        let n = self.workers.len();
        let mut conn = conn;
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            match self.workers[i].send(conn) {
                Ok(()) => return true,
                Err(e) => conn = e.0,
            }
        }
        false
    }
}

/// A listener's state: its chains built, its stats resolved.
fn build_listener(
    lc: &config::Listener,
    clusters: &ClusterManager,
    store: &Store,
) -> Result<ListenerState, BuildError> {
    let config = Arc::new(lc.clone());
    let p = format!("listener.{}", crate::stats::listener_stat_name(&lc.address));
    let chains = lc
        .chains()
        .map(|fc| build_chain(&config, fc, clusters, store))
        .collect::<Result<Vec<_>, BuildError>>()?;
    let trivial = lc.listener_filters.is_empty()
        && lc.filter_chains.len() == 1
        && lc.default_filter_chain.is_none()
        && lc.filter_chains[0].matcher.is_empty();
    Ok(ListenerState {
        stats: ListenerStats::new(store, &lc.address),
        ssl: lc
            .chains()
            .any(|c| c.tls.is_some())
            .then(|| SslStats::new(store, &p)),
        no_filter_chain_match: store.counter(&format!("{p}.no_filter_chain_match")),
        http_inspector: lc
            .listener_filters
            .contains(&config::ListenerFilter::HttpInspector)
            .then(|| HttpInspectorStats::new(store)),
        proxy_proto: lc.listener_filters.iter().find_map(|f| match f {
            config::ListenerFilter::ProxyProtocol(pp) => {
                Some(ProxyProtoStats::new(store, &pp.stat_prefix))
            }
            config::ListenerFilter::TlsInspector
            | config::ListenerFilter::HttpInspector
            | config::ListenerFilter::OriginalDst => None,
        }),
        has_default: lc.default_filter_chain.is_some(),
        access_logs: crate::access::AccessLogs::open(&lc.access_logs)?,
        trivial,
        chains,
        config,
    })
}

fn build_chain(
    config: &Arc<config::Listener>,
    fc: &config::FilterChain,
    clusters: &ClusterManager,
    store: &Store,
) -> Result<Chain, BuildError> {
    let serve = match &fc.filter {
        NetworkFilter::Http(hcm) => {
            let router = Router::with_clusters(
                &hcm.route_config,
                clusters.clusters().iter().map(|c| c.config.name.as_str()),
                |name| clusters.index(name),
            )?;
            ChainKind::Http(Arc::new(ListenerShared {
                router,
                access_logs: crate::access::AccessLogs::open(&hcm.access_logs)?,
                http_stats: HttpStats::new(store, &hcm.stat_prefix),
                health_check_stats: has(hcm, |f| matches!(f, config::HttpFilter::HealthCheck(_)))
                    .then(|| HealthCheckFilterStats::new(store, &hcm.stat_prefix)),
                fault_stats: has(hcm, |f| matches!(f, config::HttpFilter::Fault(_)))
                    .then(|| FaultFilterStats::new(store, &hcm.stat_prefix)),
                local_rate_limit_stats: local_rate_limit_stats(store, hcm),
                compressor_stats: compressor_stats(store, hcm),
                set_metadata_overwrite_denied: has(hcm, |f| {
                    matches!(f, config::HttpFilter::SetMetadata(_))
                })
                .then(|| {
                    store.counter(&format!(
                        "http.{}.set_metadata.overwrite_denied",
                        hcm.stat_prefix
                    ))
                }),
                cors_stats: has(hcm, |f| matches!(f, config::HttpFilter::Cors))
                    .then(|| CorsStats::new(store, &hcm.stat_prefix)),
                network_rbac: network_rbac(store, fc),
                rbac_stats: hcm
                    .http_filters
                    .iter()
                    .filter_map(|f| match &f.filter {
                        config::HttpFilter::Rbac(r) => Some(crate::stats::RbacStats::new(
                            store,
                            &format!("http.{}.", hcm.stat_prefix),
                            &r.rules_stat_prefix,
                            &r.shadow_rules_stat_prefix,
                        )),
                        _ => None,
                    })
                    .collect(),
                csrf_stats: has(hcm, |f| matches!(f, config::HttpFilter::Csrf(_)))
                    .then(|| CsrfStats::new(store, &hcm.stat_prefix)),
                listener_stats: ListenerStats::new(store, &config.address),
                movable: fc.tls.is_none(),
                chain: fc.id(),
                http: (**hcm).clone(),
                config: config.clone(),
            }))
        }
        NetworkFilter::TcpProxy(t) => {
            let mut total = 0u64;
            let targets = match &t.cluster {
                config::ClusterSpecifier::Cluster(c) => vec![(clusters.index(c), 1)],
                config::ClusterSpecifier::Weighted(w) => w
                    .iter()
                    .map(|(c, weight)| {
                        total += u64::from(*weight);
                        (clusters.index(c), total)
                    })
                    .collect(),
                // Not from a tcp_proxy's configuration: no cluster, the connection's `NC`.
                config::ClusterSpecifier::Header(_) => Vec::new(),
            };
            ChainKind::Tcp(Arc::new(TcpProxyShared {
                listener: config.address,
                chain: fc.id(),
                stats: TcpProxyStats::new(store, &t.stat_prefix),
                rbac: network_rbac(store, fc),
                access_logs: crate::access::AccessLogs::open(&t.access_logs)?,
                config: t.clone(),
                targets,
            }))
        }
    };
    Ok(Chain {
        id: fc.id(),
        matcher: fc.matcher.clone(),
        tls: fc.tls.as_ref().map(|t| t.config.clone()),
        serve,
    })
}

fn run_worker(
    index: usize,
    clusters: Arc<ClusterManager>,
    (handover, tally): (Handover, Arc<Slot>),
    listeners: Vec<(Arc<ListenerState>, std::net::TcpListener)>,
    adopt_rx: mpsc::UnboundedReceiver<Arriving>,
    drain: drain::Watch,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "could not start worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = Rc::new(Worker {
            lb: WorkerLb::new(&clusters),
            pools: Rc::new(Pools::default()),
            codes: clusters
                .clusters()
                .iter()
                .map(|_| CodeCounters::default())
                .collect(),
            clusters,
            modes: WorkerModes::new(&handover),
            handover,
            tally,
        });
        tokio::task::spawn_local(worker.modes.clone().follow(worker.handover.clone()));
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let mut served: Vec<Arc<ListenerState>> = listeners.iter().map(|(l, _)| l.clone()).collect();
        // A listener with additional addresses comes once per socket, one after the other.
        served.dedup_by(|a, b| Arc::ptr_eq(a, b));
        tokio::task::spawn_local(adopt_loop(
            served,
            worker.clone(),
            adopt_rx,
            drain.clone(),
            alive_tx.clone(),
        ));
        for (l, sock) in listeners {
            match TcpListener::from_std(sock) {
                Ok(listener) => {
                    tokio::task::spawn_local(accept_loop(
                        l,
                        worker.clone(),
                        listener,
                        drain.clone(),
                        alive_tx.clone(),
                    ));
                }
                Err(e) => {
                    tracing::error!(worker = index, listener = %l.config.name, error = %e, "could not register listen socket");
                }
            }
        }
        drop(alive_tx);
        drop(drain);
        // `None` once every accept loop, connection and tunnel has ended.
        let _ = alive_rx.recv().await;
        tracing::debug!(worker = index, "worker finished");
    });
}

async fn accept_loop(
    l: Arc<ListenerState>,
    w: Rc<Worker>,
    listener: TcpListener,
    mut drain: drain::Watch,
    alive: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            biased;
            _ = drain.accept_stopped(l.config.direction) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let (l, w, drain, alive) = (l.clone(), w.clone(), drain.clone(), alive.clone());
                    // The task holds the connection's (few KiB) future in a pooled slot:
                    // spawning then moves a few words, not the whole state machine, each time
                    // the runtime hands the task on, and no large allocation is made.
                    tokio::task::spawn_local(async move {
                        crate::slot_pool::hold(downstream::serve_conn(l, w, stream, remote, drain, alive))
                            .await;
                    });
                }
                Err(e) => {
                    // Out of fds or buffers: back off briefly instead of spinning.
                    tracing::warn!(listener = %l.config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::debug!(listener = %l.config.name, "stopped accepting");
}

/// Serves connections arriving from the previous generation on this worker until the
/// [`Adopter`] is dropped (even while this generation drains: they were taken, so they are
/// served).
async fn adopt_loop(
    listeners: Vec<Arc<ListenerState>>,
    w: Rc<Worker>,
    mut arrivals: mpsc::UnboundedReceiver<Arriving>,
    drain: drain::Watch,
    alive: mpsc::Sender<()>,
) {
    while let Some(conn) = arrivals.recv().await {
        let found = listeners
            .iter()
            .find(|l| l.config.address == conn.listener)
            .and_then(|l| Some((l, l.adoptable(conn.kind, conn.chain.as_ref())?)));
        match found.map(|(lst, chain)| (lst, &chain.serve)) {
            Some((_, ChainKind::Http(l))) => {
                tokio::task::spawn_local(downstream::serve_arriving(
                    l.clone(),
                    w.clone(),
                    conn,
                    drain.clone(),
                    alive.clone(),
                ));
            }
            Some((lst, ChainKind::Tcp(t))) => {
                tokio::task::spawn_local(crate::tcp_proxy::serve_arriving(
                    (lst.clone(), t.clone()),
                    w.clone(),
                    conn,
                    drain.connection(lst.config.direction),
                    alive.clone(),
                ));
            }
            None => tracing::warn!(
                listener = %conn.listener,
                "a connection arrived for a chain this generation does not have; closing it"
            ),
        }
    }
}

/// The stats of every local rate limit configuration of `hcm` (its filters' and its routes'),
/// one set per `stat_prefix`.
/// Whether the connection manager has an HTTP filter `is`.
fn network_rbac(
    store: &shm_stats::Store,
    fc: &config::FilterChain,
) -> Vec<crate::rbac::NetworkRbacState> {
    fc.rbac
        .iter()
        .map(|r| crate::rbac::NetworkRbacState::new(store, r))
        .collect()
}

fn has(hcm: &config::HttpConnectionManager, is: impl Fn(&config::HttpFilter) -> bool) -> bool {
    hcm.http_filters.iter().any(|f| is(&f.filter))
}

fn compressor_stats(
    store: &shm_stats::Store,
    hcm: &config::HttpConnectionManager,
) -> Vec<(usize, CompressorStats)> {
    let filters = hcm.http_filters.iter().enumerate();
    filters
        .filter_map(|(i, f)| match &f.filter {
            config::HttpFilter::Compressor(c) => Some((
                i,
                CompressorStats::new(
                    store,
                    &hcm.stat_prefix,
                    &c.library_name,
                    c.library.stat_name(),
                    c.response_scoped_stats,
                ),
            )),
            _ => None,
        })
        .collect()
}

fn local_rate_limit_stats(
    store: &shm_stats::Store,
    hcm: &config::HttpConnectionManager,
) -> Vec<(String, LocalRateLimitStats)> {
    let rc = &hcm.route_config;
    let from_filters = hcm.http_filters.iter().filter_map(|f| match &f.filter {
        config::HttpFilter::LocalRateLimit(l) => Some(&l.stat_prefix),
        _ => None,
    });
    let levels = std::iter::once(&rc.filter_configs)
        .chain(rc.virtual_hosts.iter().map(|v| &v.filter_configs))
        .chain(
            rc.virtual_hosts
                .iter()
                .flat_map(|v| v.routes.iter().map(|r| &r.filter_configs)),
        );
    let from_routes = levels.flatten().filter_map(|(_, per)| match &per.config {
        Some(config::RouteFilterConfig::LocalRateLimit(l)) => Some(&l.stat_prefix),
        _ => None,
    });
    let mut out: Vec<(String, LocalRateLimitStats)> = Vec::new();
    for prefix in from_filters.chain(from_routes) {
        if !out.iter().any(|(p, _)| p == prefix) {
            out.push((prefix.clone(), LocalRateLimitStats::new(store, prefix)));
        }
    }
    out
}
