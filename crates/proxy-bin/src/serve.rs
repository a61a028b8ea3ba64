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
//! 4. after a restart, **stand by** ([`Generation::stand_by`], `rollback`) through the rollback
//!    window, and **serve again** ([`Generation::roll_back`]) if the successor dies or gives
//!    way meanwhile (back to 2's wait);
//! 5. **shutdown** ([`shutdown`]): end the runtime and leave the stats region.
//!
//! Each step enters its [`Phase`] on the generation's [`Lifecycle`]; a step that fails marks the
//! generation failed with that [`Step`]. Order matters for a production proxy: every listen
//! socket is bound or inherited and every cluster resolved before the first connection is
//! accepted, so a bad configuration or address fails the start (exit 1) without disturbing a
//! running generation.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use proxy_core::admin::{QuitRequest, RollbackRequest};
use proxy_core::cluster::ClusterManager;
use proxy_core::config::Bootstrap;
use proxy_core::handover::Handover;
use proxy_core::lifecycle::{GenerationStatus, Lifecycle, Peer, Phase, Step};
use proxy_core::worker::{Adopter, Dataplane, Workers};
use shm_stats::Store;
use tokio::sync::{mpsc, watch};

use crate::cli::{DrainStrategy, Options};
use crate::config::Loaded;
use crate::listen;
use crate::logging::LogHandle;
use crate::restart::plan::{Place, RestartPlan};
use crate::restart::successor::{Successor, Watched};
use crate::restart::{self, child, Grandparent, OwnedSockets, ParentEvent};
use crate::signals::{self, ProcessSignal, Signals};

mod draining;
mod gate;
mod rollback;
mod start;
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
    /// `POST /rollback` or a failed health gate: the previous generation serves again; this
    /// one drains and exits non-zero.
    GiveWay,
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
    /// `server.hot_restart_rollbacks`: times this generation served again after its
    /// successor died.
    rollbacks: shm_stats::Counter,
    /// `--rollback-window-s` where it applies (an epoch chain), zero elsewhere.
    rollback_window: Duration,
    /// The parent's upstream host health, which this generation starts with.
    inherited_health: Vec<proxy_core::cluster::HostHealth>,
}

/// What a generation serves with each time it serves (first, and again after a rollback).
struct Serving {
    drains: Drains,
    workers: Workers,
}

/// What serving again needs, kept from the first start for the life of the generation.
struct Resume {
    /// The generation's listen sockets (shared with the parent side, which lends them).
    owned: OwnedSockets,
    /// For each admin interface started (`POST /quitquitquit`).
    quit: mpsc::Sender<QuitRequest>,
    /// For each admin interface started (`POST /rollback`).
    rollback: mpsc::Sender<RollbackRequest>,
    epoch_started: Instant,
    /// Set while a rollback window keeps the listen sockets open after this generation stops
    /// accepting; cleared when it serves again.
    keep_sockets: Arc<AtomicBool>,
    /// How many times this generation has started serving: a stop from an earlier time (one
    /// that a rollback superseded) must not close the sockets it serves on now.
    serving_round: Arc<std::sync::atomic::AtomicU64>,
    /// Where a successor that gave way hands its connections back (shared with the parent
    /// side).
    returning: restart::Returning,
}

/// Whether serving starts with resolving every cluster: the first time only (after a
/// rollback the addresses are known and the DNS refresh carries on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolve {
    First,
    Again,
}

/// How a drain ended.
#[derive(Debug)]
enum DrainEnd {
    /// Every connection closed, or the deadline passed.
    Done,
    /// Told to end now (a second signal, or the next generation).
    EndNow,
    /// The successor died or gave way inside the rollback window: serve again (the
    /// connections left keep draining meanwhile).
    TakeBack(TakeBack),
}

/// Why this generation serves again after a restart, and who waits to hear that it does (the
/// successor, when it gave way).
#[derive(Debug)]
struct TakeBack {
    reason: String,
    answer: Option<restart::RollbackAnswer>,
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
    /// `POST /rollback` sends here; the main loop holds the receiver.
    rollback: mpsc::Sender<RollbackRequest>,
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
    /// `POST /rollback`; the admin interface holds the sender.
    rollback: mpsc::Receiver<RollbackRequest>,
    /// Why this generation gives way ([`Stop::GiveWay`]).
    give_way: Option<GiveWay>,
    /// The rollback health gate through the parent's window: ready with a reason when it fails.
    gate: Option<gate::Judging>,
    /// From the parent side (this generation's child); the parent side holds the sender.
    events: mpsc::UnboundedReceiver<ParentEvent>,
    /// The child that asked this generation to drain and the addresses it took, until the
    /// main loop decides on a rollback window.
    cutover: Option<(Option<Successor>, Vec<SocketAddr>)>,
    /// The rollback window in progress: the successor watched until it ends.
    window: Option<Window>,
}

/// Why this generation gives way to its parent: an operator's `POST /rollback` (answered when
/// done) or its failed health gate.
#[derive(Debug)]
struct GiveWay {
    why: String,
    request: Option<RollbackRequest>,
}

/// A rollback window in progress.
#[derive(Debug)]
struct Window {
    successor: Watched,
    until: tokio::time::Instant,
    /// The listen sockets kept for a rollback (shared with the parent side): closed when the
    /// window ends while this generation still drains, as they would have been at cutover.
    kept: OwnedSockets,
}

/// Serve until SIGTERM, SIGINT, `POST /quitquitquit` or a successor's drain request, then drain
/// and return.
pub fn run(opts: Options, loaded: Loaded, log: LogHandle) -> anyhow::Result<()> {
    let plan = RestartPlan::from_options(&opts);
    let epoch = restart::epoch(&plan);
    let lifecycle = Arc::new(Lifecycle::new(epoch));
    // A `--hot-restart-file` successor renames its restart socket over this generation's:
    // nothing could restart from a rolled-back one, so only epoch chains stand by.
    let rollback_window = match plan {
        RestartPlan::EpochChain { .. } => opts.rollback_window,
        _ => Duration::ZERO,
    };
    lifecycle.set_rollback_window(rollback_window.as_secs());
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
        rollbacks: store_at_exit.counter("server.hot_restart_rollbacks"),
        rollback_window,
        inherited_health: sockets
            .parent
            .as_ref()
            .map(restart::inherited_health)
            .unwrap_or_default(),
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
    child::hold_after_taking_sockets();
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

/// Start health checking and wait for the first check of every host (each is bounded by its
/// check's timeout), so that workers start with the hosts known to be down already out.
/// With `inherited` (the parent's health covers every checked host) the round runs without
/// holding serving up.
async fn first_health_round(clusters: &ClusterManager, shutdown: drain::Watch, inherited: bool) {
    let bound = clusters
        .clusters()
        .iter()
        .filter_map(|c| c.config.health_check.as_ref().map(|h| h.timeout))
        .max();
    let first = proxy_core::health::spawn(clusters, shutdown);
    let Some(bound) = bound else { return };
    if inherited {
        tracing::info!(
            hosts = first.pending(),
            "first health-check round runs in the background: the previous generation's health \
             covers every host"
        );
        return;
    }
    let hosts = first.pending();
    let started = Instant::now();
    // A little more than the longest timeout: a connect or a probe never takes longer.
    if tokio::time::timeout(bound + Duration::from_secs(1), first.wait())
        .await
        .is_err()
    {
        tracing::warn!("the first health-check round did not finish in time; serving anyway");
    }
    tracing::info!(hosts, elapsed = ?started.elapsed(), "first health-check round done");
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
    /// Serve until a reason to stop, then drain; after a restart with a rollback window, stand
    /// by, and serve again if the successor dies inside it.
    async fn serve(self, sockets: Sockets) -> Result<(), Failed> {
        let epoch_started = Instant::now();
        let signals = signals::unix().in_step(Step::Start)?;
        let (quit_tx, quit) = mpsc::channel(1);
        let (rollback_tx, rollback) = mpsc::channel(1);
        let Sockets {
            listeners,
            admin,
            restart,
            parent,
            ..
        } = sockets;
        let owned = self.own_sockets(listeners, admin);
        let resume = Resume {
            owned: owned.clone(),
            quit: quit_tx,
            rollback: rollback_tx,
            epoch_started,
            keep_sockets: Arc::new(AtomicBool::new(false)),
            serving_round: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            returning: restart::Returning::default(),
        };
        let mut serving = self
            .start_serving(&resume, Resolve::First)
            .await
            .in_step(Step::Start)?;
        // Only a generation with a parent takes connections; otherwise the workers stop
        // waiting for arrivals at once.
        let adopter = serving.workers.take_adopter().filter(|_| parent.is_some());
        self.announce_serving();
        let recent = self.sample_recent_traffic();

        // Answer a future child; this generation's own parent drains from now on.
        let (events_tx, events) = mpsc::unbounded_channel();
        let grandparent = Grandparent::default();
        let mut parent_side = restart
            .map(|listener| {
                let returning = resume.returning.clone();
                self.answer_children(listener, owned, events_tx, &grandparent, recent, returning)
            })
            .transpose()
            .in_step(Step::Start)?;
        let mut gate = None;
        if let Some(parent) = parent {
            let (cutover_tx, cutover) = tokio::sync::oneshot::channel();
            gate = self.gate(parent.parent(), cutover);
            self.drain_parent(parent, grandparent.clone(), adopter, cutover_tx);
        }

        let mut inputs = Inputs {
            signals,
            quit,
            rollback,
            give_way: None,
            gate,
            events,
            cutover: None,
            window: None,
        };
        let mut gave_way = None;
        let stop = loop {
            let stop = serve_until_stop(&mut inputs, &|| self.reopen_logs()).await;
            if stop == Stop::GiveWay {
                let Some(why) = self.give_way(&grandparent, inputs.give_way.take()).await else {
                    continue;
                };
                gave_way = Some(why);
                // The next restart names its restart socket as this generation's.
                parent_side = None;
                // Every response from now on closes its connection; idle ones go back.
                serving.drains.control.set_health_check_failed(true);
                self.hand_back(&grandparent);
            }
            self.open_window(stop, &mut inputs, &resume);
            let ended = if stop == Stop::Ended {
                DrainEnd::EndNow
            } else {
                self.drain(stop, serving, &mut inputs).await
            };
            self.settle_handover().await;
            let back = match ended {
                DrainEnd::TakeBack(back) => Some(back),
                DrainEnd::Done => self.stand_by(&mut inputs).await,
                DrainEnd::EndNow => None,
            };
            let Some(back) = back else { break stop };
            // The successor is done with (a dead one's pidfd stays readable).
            inputs.window = None;
            serving = self.roll_back(&resume, back).await.in_step(Step::Serve)?;
        };
        drop(parent_side);
        if let (Stop::GiveWay, Some(why)) = (stop, gave_way) {
            return Err(anyhow::anyhow!(
                "rolled back: this generation gave way to the previous one ({why})"
            ))
            .in_step(Step::Serve);
        }
        self.lifecycle.enter(Phase::Terminated);
        Ok(())
    }

    /// Tell the parent to drain (on a blocking thread: the RPC blocks), then take its live
    /// connections if they move. The parent stays reachable as the grandparent of a future
    /// child, which ends it.
    fn drain_parent(
        &self,
        mut parent: hotrestart_rpc::Client,
        grandparent: Grandparent,
        adopter: Option<Adopter>,
        cutover: tokio::sync::oneshot::Sender<()>,
    ) {
        let take = self.handover.enabled();
        let lifecycle = self.lifecycle.clone();
        let handover = self.handover.clone();
        tokio::task::spawn_blocking(move || match parent.drain_listeners(take, true) {
            Ok(()) => {
                tracing::info!("the previous generation is draining");
                let _ = cutover.send(());
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
        self.dataplane.reopen_access_logs();
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
                ProcessSignal::RollBack => {
                    inputs.give_way = Some(GiveWay { why: "SIGUSR2 (baton rollback)".to_owned(), request: None });
                    return Stop::GiveWay;
                }
            },
            Some(_) = inputs.quit.recv() => return Stop::Quit,
            Some(request) = inputs.rollback.recv() => {
                inputs.give_way = Some(GiveWay { why: "POST /rollback".to_owned(), request: Some(request) });
                return Stop::GiveWay;
            }
            why = gate_failed(&mut inputs.gate), if inputs.gate.is_some() => {
                tracing::warn!("{why}: giving way to the previous generation");
                inputs.give_way = Some(GiveWay { why, request: None });
                return Stop::GiveWay;
            }
            Some(ev) = inputs.events.recv() => match ev {
                ParentEvent::DrainListeners { successor, taken } => {
                    inputs.cutover = Some((successor, taken));
                    return Stop::Restart;
                }
                ParentEvent::Terminate => {
                    tracing::info!("asked to terminate by the next generation");
                    return Stop::Ended;
                }
                ParentEvent::RollBack { answer, .. } => {
                    let _ = answer.send(Err("this generation serves: there is nothing to roll back to".to_owned()));
                }
            },
            // Nothing can ask this generation to stop any more (no signal source left).
            else => return Stop::Terminate,
        }
    }
}

/// Ready with the health gate's reason when it fails (once: the gate is spent); pending
/// without a gate.
async fn gate_failed(gate: &mut Option<gate::Judging>) -> String {
    let Some(g) = gate.as_mut() else {
        return std::future::pending().await;
    };
    let why = g.await;
    *gate = None;
    why
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
