//! `--mode serve`: one generation's life, in named steps.
//!
//! 1. **bootstrap** ([`bootstrap`]): decide the restart plan once from the command line, open
//!    the stats store, build the data plane, take the listen sockets over from the previous
//!    generation or bind them, and bind this generation's restart socket;
//! 2. **serve** ([`Generation::serve`]): start the admin interface and the workers, announce
//!    that this generation serves, answer a future child, tell the parent to drain, and wait for
//!    a reason to stop ([`serve_until_stop`]);
//! 3. **drain** ([`Generation::drain`]): stop accepting and let connections finish or move,
//!    bounded by a deadline;
//! 4. **shutdown** ([`shutdown`]): end the runtime and leave the stats region.
//!
//! Each step enters its [`Phase`] on the generation's [`Lifecycle`]; a step that fails marks the
//! generation failed with that [`Step`]. Order matters for a production proxy: every listen
//! socket is bound or inherited and every cluster resolved before the first connection is
//! accepted, so a bad configuration or address fails the start (exit 1) without disturbing a
//! running generation.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use parking_lot::Mutex;
use proxy_core::admin::{self, AdminState, ListenerStatus, QuitRequest, ServerInfo};
use proxy_core::cluster::ClusterManager;
use proxy_core::config::Bootstrap;
use proxy_core::handover::Handover;
use proxy_core::lifecycle::{GenerationStatus, Lifecycle, Peer, Phase, Step};
use proxy_core::worker::{Adopter, Dataplane};
use shm_stats::Store;
use tokio::sync::{mpsc, watch};

use crate::cli::{DrainStrategy, Options};
use crate::config::Loaded;
use crate::listen;
use crate::logging::LogHandle;
use crate::restart::plan::{Place, RestartPlan};
use crate::restart::{self, child, parent, Grandparent, OwnedSocket, OwnedSockets, ParentEvent};
use crate::signals::{self, ProcessSignal, Signals};

mod draining;
mod store;
#[cfg(test)]
mod tests;

use store::open_store;

/// Why the generation stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Terminate,
    Interrupt,
    Quit,
    /// The next generation serves and asked this one to drain.
    Restart,
    /// The next generation (or its successor) wants this one gone now: no drain.
    Ended,
}

/// A step's error, with the step that failed.
#[derive(Debug)]
struct Failed {
    step: Step,
    error: anyhow::Error,
}

/// Names the step a result comes from.
trait InStep<T> {
    fn in_step(self, step: Step) -> Result<T, Failed>;
}

/// What bootstrap built, ready to serve.
struct Ready {
    place: Place,
    store: Store,
    clusters: Arc<ClusterManager>,
    dataplane: Dataplane,
    handover: Handover,
    sockets: Sockets,
}

/// The sockets a generation serves on and its links to the rest of its chain.
#[derive(Debug)]
struct Sockets {
    /// Each configured listener's (its `address`, then its `additional_addresses`), in
    /// configuration order.
    listeners: Vec<Vec<TcpListener>>,
    admin: Option<TcpListener>,
    /// This generation's restart socket, for a future child; `None` without hot restart.
    restart: Option<hotrestart_rpc::Listener>,
    /// The link to the parent, told to drain once this generation serves.
    parent: Option<hotrestart_rpc::Client>,
    /// When epoch 0 of the chain started (as the parent says, or now).
    chain_started: SystemTime,
}

/// Everything a serving generation reads, for the serve and drain steps.
struct Generation {
    opts: Options,
    plan: RestartPlan,
    place: Place,
    bootstrap: Bootstrap,
    /// The merged bootstrap as JSON (`/config_dump`).
    config_dump: serde_json::Value,
    store: Store,
    clusters: Arc<ClusterManager>,
    dataplane: Dataplane,
    handover: Handover,
    lifecycle: Arc<Lifecycle>,
    log: LogHandle,
    chain_started: SystemTime,
}

/// The owner's side of a generation's drains: its connections' and its admin interface's. The
/// watches go to the workers and the admin interface (see [`Drains::new`]).
struct Drains {
    signal: drain::Signal,
    control: drain::Control,
    admin: drain::Signal,
}

/// What the admin interface is handed besides the generation's own state.
struct AdminParts {
    /// `POST /quitquitquit` sends here; the main loop holds the receiver.
    quit: mpsc::Sender<QuitRequest>,
    /// For `/drain_listeners` and `/healthcheck/{fail,ok}`.
    control: drain::Control,
    /// Signalled when the generation drains; held by the admin's accept loop.
    shutdown: drain::Watch,
    epoch_started: Instant,
}

/// What the main loop listens to while serving and draining.
struct Inputs {
    signals: Signals,
    /// `POST /quitquitquit`; the admin interface holds the sender.
    quit: mpsc::Receiver<QuitRequest>,
    /// From the parent side (this generation's child); the parent side holds the sender.
    events: mpsc::UnboundedReceiver<ParentEvent>,
}

/// Serve until SIGTERM, SIGINT, `POST /quitquitquit` or a successor's drain request, then drain
/// and return.
pub fn run(opts: Options, loaded: Loaded, log: LogHandle) -> anyhow::Result<()> {
    let plan = RestartPlan::from_options(&opts);
    let epoch = restart::epoch(&plan);
    let lifecycle = Arc::new(Lifecycle::new(epoch));
    let ready = fail_on(
        &lifecycle,
        bootstrap(&plan, epoch, &loaded.bootstrap, &lifecycle),
    )?;
    let rt = fail_on(&lifecycle, runtime().in_step(Step::Start))?;
    let Ready {
        place,
        store,
        clusters,
        dataplane,
        handover,
        sockets,
    } = ready;
    // Leaves the region when serving ends (tasks may still hold clones).
    let store_at_exit = store.clone();
    let generation = Generation {
        chain_started: store.chain_created().unwrap_or(sockets.chain_started),
        opts,
        plan,
        place,
        bootstrap: loaded.bootstrap,
        config_dump: loaded.effective,
        store,
        clusters,
        dataplane,
        handover,
        lifecycle: lifecycle.clone(),
        log,
    };
    let result = fail_on(&lifecycle, rt.block_on(generation.serve(sockets)));
    shutdown(rt, &store_at_exit);
    result
}

/// Marks the generation failed at the failed step, and gives the error back.
fn fail_on<T>(lifecycle: &Lifecycle, result: Result<T, Failed>) -> anyhow::Result<T> {
    result.map_err(|Failed { step, error }| {
        lifecycle.fail(step, format!("{error:#}"));
        error
    })
}

/// Everything before the runtime: the stats store, the data plane, the sockets.
fn bootstrap(
    plan: &RestartPlan,
    epoch: u32,
    bootstrap: &Bootstrap,
    lifecycle: &Lifecycle,
) -> Result<Ready, Failed> {
    lifecycle.enter(Phase::Validating);
    let (store, place) = open_store(plan, epoch).in_step(Step::OpenStats)?;
    let clusters = Arc::new(ClusterManager::new(&bootstrap.clusters, &store));
    // Live connections move to the next generation on a restart unless turned off (or there is
    // no hot restart at all).
    let handover = Handover::new(plan.connection_handover().is_enabled(), &store);
    let dataplane = Dataplane::new(bootstrap, clusters.clone(), &store)
        .context("could not build the data plane")
        .in_step(Step::BuildDataplane)?
        .with_handover(handover.clone());
    lifecycle.enter(Phase::TakingSockets);
    let sockets = take_sockets(plan, place, bootstrap, lifecycle)?;
    Ok(Ready {
        place,
        store,
        clusters,
        dataplane,
        handover,
        sockets,
    })
}

/// Take the listen sockets over from the parent generation (those it has for addresses this
/// configuration keeps), bind the others, and bind this generation's restart socket.
fn take_sockets(
    plan: &RestartPlan,
    place: Place,
    bootstrap: &Bootstrap,
    lifecycle: &Lifecycle,
) -> Result<Sockets, Failed> {
    let admin_address = bootstrap.admin.as_ref().map(|a| a.address);
    let wanted: Vec<SocketAddr> = bootstrap
        .listeners
        .iter()
        .flat_map(|l| l.addresses())
        .chain(admin_address)
        .collect();
    let mut inherited = child::take_over(plan, place, &wanted).in_step(Step::TakeOver)?;
    if let Some(p) = inherited.parent.as_ref().map(|c| c.parent()) {
        lifecycle.set_parent(Peer {
            pid: p.pid,
            epoch: p.epoch,
        });
    }
    let mut take_or_bind =
        |name: &str, addr: SocketAddr, freebind: bool| match inherited.sockets.remove(&addr) {
            Some(s) => {
                s.set_nonblocking(true)
                    .with_context(|| format!("could not use the inherited socket for {addr}"))?;
                Ok(s)
            }
            None => listen::bind_tcp(addr, freebind)
                .with_context(|| format!("could not start listener '{name}'")),
        };
    let listeners = bootstrap
        .listeners
        .iter()
        .map(|l| {
            l.addresses()
                .map(|a| take_or_bind(&l.name, a, l.freebind))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .in_step(Step::Bind)?;
    let admin = admin_address
        .map(|a| take_or_bind("admin", a, false).context("could not start the admin listener"))
        .transpose()
        .in_step(Step::Bind)?;
    // Inherited sockets this configuration no longer uses are closed here; the parent closes
    // its own copies when it drains.
    drop(inherited.sockets);
    let restart = restart::bind_restart_socket(plan, place).in_step(Step::Bind)?;
    Ok(Sockets {
        listeners,
        admin,
        restart,
        parent: inherited.parent,
        chain_started: inherited.chain_started,
    })
}

/// The main runtime: the admin interface, the main loop, the DNS refresh (workers have their
/// own threads).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("baton-main")
        .enable_all()
        .build()
        .context("could not start the main runtime")
}

/// End the runtime (worker threads still serving connections past the deadline end with the
/// process) and leave the stats region (the region's drop would too, but only once every clone
/// held by tasks is gone).
fn shutdown(rt: tokio::runtime::Runtime, store: &Store) {
    rt.shutdown_timeout(Duration::from_millis(100));
    match store.detach() {
        Ok(Some(shm_stats::Detached::Removed)) => {
            tracing::info!("last generation out: removed the stats region");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
}

// === impl Generation ===

impl Generation {
    /// Serve until a reason to stop, then drain.
    async fn serve(self, sockets: Sockets) -> Result<(), Failed> {
        let epoch_started = Instant::now();
        let (drains, drain_watch, admin_watch) = Drains::new(&self.opts);
        let signals = signals::unix().in_step(Step::Start)?;
        let (quit_tx, quit) = mpsc::channel(1);
        let admin = AdminParts {
            quit: quit_tx,
            control: drains.control.clone(),
            shutdown: admin_watch,
            epoch_started,
        };
        self.start_admin(sockets.admin.as_ref(), admin)
            .in_step(Step::Start)?;
        // Clusters are resolved before the first request can arrive.
        self.clusters.resolve_all().await;
        tokio::spawn(self.clusters.clone().run_dns_refresh(drain_watch.clone()));
        let stop_watch = drain_watch.clone();
        let mut workers = self
            .dataplane
            .spawn_workers(&sockets.listeners, self.opts.concurrency, drain_watch)
            .context("could not start workers")
            .in_step(Step::Start)?;
        // Only a generation with a parent takes connections; otherwise the workers stop
        // waiting for arrivals at once.
        let adopter = workers.take_adopter().filter(|_| sockets.parent.is_some());
        self.announce_serving();

        // Answer a future child; this generation's own parent drains from now on.
        let (events_tx, events) = mpsc::unbounded_channel();
        let grandparent = Grandparent::default();
        let owned = self.own_sockets(sockets.listeners, sockets.admin);
        self.close_sockets_when_accept_stops(owned.clone(), stop_watch);
        let _parent_side = sockets
            .restart
            .map(|listener| {
                parent::spawn(parent::Answering {
                    listener,
                    hot_restart_version: self.plan.hot_restart_version(),
                    epoch: self.place.epoch,
                    chain_started: self.chain_started,
                    concurrency: self.opts.concurrency,
                    sockets: owned,
                    events: events_tx,
                    grandparent: grandparent.clone(),
                    handover: self.handover.clone(),
                })
            })
            .transpose()
            .in_step(Step::Start)?;
        if let Some(parent) = sockets.parent {
            self.drain_parent(parent, grandparent, adopter);
        }

        let mut inputs = Inputs {
            signals,
            quit,
            events,
        };
        let stop = serve_until_stop(&mut inputs, &|| self.reopen_logs()).await;
        if stop != Stop::Ended {
            self.drain(stop, drains, &mut inputs, workers).await;
        }
        self.settle_handover().await;
        self.lifecycle.enter(Phase::Terminated);
        Ok(())
    }

    /// Serve the admin interface on `socket`, if the configuration has one.
    fn start_admin(&self, socket: Option<&TcpListener>, parts: AdminParts) -> anyhow::Result<()> {
        let Some(sock) = socket else {
            return Ok(());
        };
        let AdminParts {
            quit,
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
            drain: Some(control),
        });
        tokio::spawn(admin::serve(listener, state, shutdown));
        Ok(())
    }

    /// This generation serves: enter the phase (which tells a supervising restarter, see
    /// [`notify_ready_when_serving`]) and say so in the log, for people.
    fn announce_serving(&self) {
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
    fn own_sockets(
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
    /// (or go to the successor's copies) rather than queue unanswered.
    /// Each listener's socket closes when accepting stops for its `traffic_direction` (an
    /// inbound-only drain stops the inbound ones); the admin's with the last.
    fn close_sockets_when_accept_stops(&self, owned: OwnedSockets, watch: drain::Watch) {
        let draining = self
            .store
            .gauge("listener_manager.total_listeners_draining");
        let active = self.store.gauge("listener_manager.total_listeners_active");
        for l in &self.bootstrap.listeners {
            let (owned, mut watch) = (owned.clone(), watch.clone());
            let (active, draining) = (active.clone(), draining.clone());
            let (addrs, direction): (Vec<SocketAddr>, _) = (l.addresses().collect(), l.direction);
            tokio::spawn(async move {
                watch.accept_stopped(direction).await;
                drop(watch);
                owned
                    .lock()
                    .retain(|s| !addrs.contains(&s.addr) || s.name == "admin");
                active.dec();
                draining.inc();
            });
        }
        let mut watch = watch;
        tokio::spawn(async move {
            watch.accept_stopped(drain::Direction::Unspecified).await;
            drop(watch);
            owned.lock().clear();
        });
    }

    /// Tell the parent to drain (on a blocking thread: the RPC blocks), then take its live
    /// connections if they move. The parent stays reachable as the grandparent of a future
    /// child, which ends it.
    fn drain_parent(
        &self,
        mut parent: hotrestart_rpc::Client,
        grandparent: Grandparent,
        adopter: Option<Adopter>,
    ) {
        let take = self.handover.enabled();
        let lifecycle = self.lifecycle.clone();
        let handover = self.handover.clone();
        tokio::task::spawn_blocking(move || match parent.drain_listeners(take) {
            Ok(()) => {
                tracing::info!("the previous generation is draining");
                let receive = take && adopter.is_some();
                grandparent.keep(parent, receive);
                if let (true, Some(adopter)) = (receive, adopter) {
                    let started = Instant::now();
                    // While connections arrive this generation does not finish handing its own
                    // over (a restart right behind this one): they follow.
                    let _arriving = handover.register();
                    let (moved, refused) = child::receive_connections(&grandparent, &adopter);
                    tracing::info!(
                        moved,
                        refused,
                        took_ms = started.elapsed().as_millis(),
                        "took live connections from the previous generation"
                    );
                    lifecycle.set_handover(moved, refused);
                    grandparent.done_receiving();
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                "could not tell the previous generation to drain; both serve until it stops"
            ),
        });
    }

    fn reopen_logs(&self) {
        tracing::info!("SIGUSR1: reopening logs");
        if let Err(e) = self.log.reopen() {
            tracing::error!("could not reopen the log file: {e:#}");
        }
        for l in self.dataplane.listeners() {
            if let Some(logs) = &l.access_logs {
                logs.reopen();
            }
        }
    }
}

// === impl Drains ===

impl Drains {
    /// The drains for `--drain-strategy` and `--drain-time-s`, with the first watch of the
    /// connections' drain (for the workers and tasks) and of the admin's.
    fn new(opts: &Options) -> (Self, drain::Watch, drain::Watch) {
        let strategy = match opts.drain_strategy {
            DrainStrategy::Gradual => drain::Strategy::Gradual,
            DrainStrategy::Immediate => drain::Strategy::Immediate,
        };
        let (signal, watch) = drain::new(drain::Config::new(strategy, opts.drain_time));
        let (admin, admin_watch) = drain::channel();
        let control = signal.control();
        (
            Drains {
                signal,
                control,
                admin,
            },
            watch,
            admin_watch,
        )
    }
}

// === impl InStep ===

impl<T, E: Into<anyhow::Error>> InStep<T> for Result<T, E> {
    fn in_step(self, step: Step) -> Result<T, Failed> {
        self.map_err(|e| Failed {
            step,
            error: e.into(),
        })
    }
}

/// Serve until something asks this generation to stop; SIGUSR1 reopens the logs on the way.
async fn serve_until_stop(inputs: &mut Inputs, reopen_logs: &dyn Fn()) -> Stop {
    loop {
        tokio::select! {
            Some(sig) = inputs.signals.recv() => match sig {
                ProcessSignal::Terminate => return Stop::Terminate,
                ProcessSignal::Interrupt => return Stop::Interrupt,
                ProcessSignal::ReopenLogs => reopen_logs(),
                ProcessSignal::Hangup => {
                    tracing::info!("SIGHUP ignored: restarts are started with --restart-epoch");
                }
            },
            Some(_) = inputs.quit.recv() => return Stop::Quit,
            Some(ev) = inputs.events.recv() => match ev {
                ParentEvent::DrainListeners => return Stop::Restart,
                ParentEvent::Terminate => {
                    tracing::info!("asked to terminate by the next generation");
                    return Stop::Ended;
                }
            },
            // Nothing can ask this generation to stop any more (no signal source left).
            else => return Stop::Terminate,
        }
    }
}

/// Tell a supervising `baton restarter` that this generation serves, once its phase says so:
/// a `READY=1` datagram to the abstract socket it named in `BATON_READY_SOCKET`, independent of
/// log level and log file.
async fn notify_ready_when_serving(mut status: watch::Receiver<GenerationStatus>) {
    if status.wait_for(GenerationStatus::has_served).await.is_ok() {
        notify_ready();
    }
}

fn notify_ready() {
    use std::os::linux::net::SocketAddrExt as _;
    let Some(name) = std::env::var_os("BATON_READY_SOCKET") else {
        return;
    };
    let sent = std::os::unix::net::SocketAddr::from_abstract_name(name.as_encoded_bytes())
        .and_then(|addr| {
            let sock = std::os::unix::net::UnixDatagram::unbound()?;
            sock.send_to_addr(
                format!("READY=1 PID={}", std::process::id()).as_bytes(),
                &addr,
            )
        });
    if let Err(e) = sent {
        tracing::warn!("could not tell the restarter that this generation serves: {e}");
    }
}
