//! `--mode serve`: build everything from the validated configuration, take over from the
//! previous generation (or bind), start the workers and the admin interface, then map signals
//! and restart requests until the generation drains and exits.
//!
//! Order matters for a production proxy: every listen socket is bound or inherited and every
//! cluster resolved before the first connection is accepted, so a bad configuration or address
//! fails the start (exit 1) without disturbing a running generation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use parking_lot::Mutex;
use proxy_core::admin::{self, AdminState, ListenerStatus, ServerInfo};
use proxy_core::cluster::ClusterManager;
use proxy_core::lifecycle::{GenerationStatus, Lifecycle, Peer, Phase, Step};
use proxy_core::server::Dataplane;
use shm_stats::{Backing, OpenMode, Region, RegionOptions, Store};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::{DrainStrategy, Options};
use crate::config::Loaded;
use crate::listen;
use crate::logging::LogHandle;
use crate::restart::{self, Inherited, ParentEvent};

/// On SIGTERM/SIGINT with a short `--drain-time-s`, requests already in flight still get this
/// long to finish.
const MIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the restart status refreshes the count of connections left while draining.
const DRAIN_STATUS_PERIOD: Duration = Duration::from_secs(1);

/// Why the generation stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Terminate,
    Interrupt,
    Quit,
    /// The next generation serves and asked this one to drain.
    Restart,
}

/// Serve until SIGTERM, SIGINT, `POST /quitquitquit` or a successor's drain request, then drain
/// and return.
pub fn run(mut opts: Options, loaded: Loaded, log: LogHandle) -> anyhow::Result<()> {
    if opts.hot_restart_file.is_some() && !opts.disable_hot_restart {
        opts.restart_epoch = restart::epoch_from_chain(&stats_backing(&opts, opts.base_id));
    }
    let status = Arc::new(Lifecycle::new(opts.restart_epoch));
    status.enter(Phase::Validating);
    let store = open_store(&mut opts)?;
    // Leaves the region when serving ends (the region's drop would too, but only once every
    // clone held by tasks is gone).
    let store_at_exit = store.clone();
    let bootstrap = loaded.bootstrap;
    let clusters = Arc::new(ClusterManager::new(&bootstrap.clusters, &store));
    // Live connections move to the next generation on a restart unless turned off (or there is
    // no hot restart at all).
    let handover = proxy_core::handover::Handover::new(
        !opts.disable_connection_handover && !opts.disable_hot_restart,
        &store,
    );
    let dataplane = Dataplane::new(&bootstrap, clusters.clone(), &store)
        .context("could not build the data plane")?
        .with_handover(handover.clone());

    // Everything this generation listens on, as (name, address).
    let mut wanted: Vec<(String, SocketAddr)> = bootstrap
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.address))
        .collect();
    if let Some(a) = &bootstrap.admin {
        wanted.push(("admin".to_owned(), a.address));
    }
    status.enter(Phase::TakingSockets);
    let (epoch, mut inherited) = if opts.disable_hot_restart {
        (
            opts.restart_epoch,
            Inherited {
                sockets: Default::default(),
                chain_started: SystemTime::now(),
                parent: None,
            },
        )
    } else {
        restart::take_over(&opts, &wanted)?
    };
    if let Some(p) = inherited.parent.as_ref().map(|c| c.parent().clone()) {
        status.set_parent(Peer {
            pid: p.pid,
            epoch: p.epoch,
        });
    }
    let mut take_or_bind = |name: &str, addr: SocketAddr| match inherited.sockets.remove(&addr) {
        Some(s) => {
            s.set_nonblocking(true)
                .with_context(|| format!("could not use the inherited socket for {addr}"))?;
            Ok(s)
        }
        None => {
            listen::bind_tcp(addr).with_context(|| format!("could not start listener '{name}'"))
        }
    };
    let sockets = bootstrap
        .listeners
        .iter()
        .map(|l| take_or_bind(&l.name, l.address))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let admin_socket = bootstrap
        .admin
        .as_ref()
        .map(|a| take_or_bind("admin", a.address).context("could not start the admin listener"))
        .transpose()?;
    // Inherited sockets this configuration no longer uses are closed here; the parent closes
    // its own copies when it drains.
    drop(inherited.sockets);
    let restart_listener = if opts.disable_hot_restart {
        None
    } else {
        Some(restart::bind_restart_socket(&opts, epoch)?)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("baton-main")
        .enable_all()
        .build()
        .context("could not start the main runtime")?;
    let chain_started = store.chain_created().unwrap_or(inherited.chain_started);
    let parent = inherited.parent.take();
    let status_main = status.clone();
    let result = rt.block_on(async move {
        let status = status_main;
        let epoch_started = Instant::now();
        let strategy = match opts.drain_strategy {
            DrainStrategy::Gradual => drain::Strategy::Gradual,
            DrainStrategy::Immediate => drain::Strategy::Immediate,
        };
        let (drain_signal, drain_watch) = drain::new(drain::Config::new(strategy, opts.drain_time));
        let control = drain_signal.control();
        let (admin_signal, admin_watch) = drain::channel();
        let mut term = signal(SignalKind::terminate()).context("could not handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("could not handle SIGINT")?;
        let mut usr1 = signal(SignalKind::user_defined1()).context("could not handle SIGUSR1")?;
        let mut hup = signal(SignalKind::hangup()).context("could not handle SIGHUP")?;

        let (quit_tx, mut quit_rx) = mpsc::channel(1);
        if let Some(sock) = &admin_socket {
            let listener = tokio::net::TcpListener::from_std(
                sock.try_clone().context("could not use the admin socket")?,
            )
            .context("could not use the admin socket")?;
            let state = Arc::new(AdminState {
                stats: store.clone(),
                server: ServerInfo {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    hot_restart_version: opts.hot_restart_version(),
                    command_line_options: opts.to_json(),
                    epoch,
                    concurrency: u32::try_from(opts.concurrency).unwrap_or(u32::MAX),
                    epoch_started,
                    chain_started,
                },
                generation: status.subscribe(),
                config_dump: loaded.effective,
                listeners: bootstrap
                    .listeners
                    .iter()
                    .map(|l| ListenerStatus {
                        name: l.name.clone(),
                        address: l.address,
                    })
                    .collect(),
                clusters: clusters.clone(),
                quit: quit_tx,
                drain: Some(control.clone()),
            });
            tokio::spawn(admin::serve(listener, state, admin_watch));
        } else {
            drop(admin_watch);
        }

        // Clusters are resolved before the first request can arrive.
        clusters.resolve_all().await;
        tokio::spawn(clusters.clone().run_dns_refresh(drain_watch.clone()));
        let stop_watch = drain_watch.clone();
        let mut workers = dataplane
            .spawn_workers(&sockets, opts.concurrency, drain_watch)
            .context("could not start workers")?;
        // Only a generation with a parent takes connections; otherwise the workers stop
        // waiting for arrivals at once.
        let adopter = workers.take_adopter().filter(|_| parent.is_some());
        tokio::spawn(notify_ready_when_serving(status.subscribe()));
        status.enter(Phase::Serving);
        tracing::info!(
            listeners = bootstrap.listeners.len(),
            clusters = bootstrap.clusters.len(),
            concurrency = opts.concurrency,
            epoch,
            "baton is serving"
        );

        // Answer a future child; this generation's own parent drains from now on.
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let grandparent = Arc::new(Mutex::new(None));
        let mut named: Vec<(SocketAddr, String, std::net::TcpListener)> = bootstrap
            .listeners
            .iter()
            .zip(sockets)
            .map(|(l, s)| (l.address, l.name.clone(), s))
            .collect();
        if let (Some(a), Some(s)) = (&bootstrap.admin, admin_socket) {
            named.push((a.address, "admin".to_owned(), s));
        }
        let named: restart::OwnedSockets = Arc::new(Mutex::new(named));
        {
            // Once this generation stops accepting (a successor serves, /drain_listeners, a
            // shutdown), nothing accepts on its sockets: close them so new connections are
            // refused (or go to the successor's copies) rather than queue unanswered.
            let named = named.clone();
            let mut w = stop_watch;
            let draining = store.gauge("listener_manager.total_listeners_draining");
            let active = store.gauge("listener_manager.total_listeners_active");
            let listeners = bootstrap.listeners.len() as i64;
            tokio::spawn(async move {
                w.accept_stopped(drain::Direction::Unspecified).await;
                drop(w);
                named.lock().clear();
                active.set(0);
                draining.set(listeners);
            });
        }
        let _parent_side = match restart_listener {
            Some(listener) => Some(restart::spawn_parent_side(
                listener,
                &opts,
                epoch,
                chain_started,
                named,
                events_tx,
                grandparent.clone(),
                handover.clone(),
            )?),
            None => None,
        };
        if let Some(mut parent) = parent {
            let gp = grandparent.clone();
            let take = handover.enabled();
            let status = status.clone();
            let handover = handover.clone();
            tokio::task::spawn_blocking(move || match parent.drain_listeners(take) {
                Ok(()) => {
                    tracing::info!("the previous generation is draining");
                    *gp.lock() = Some(parent);
                    if let (true, Some(adopter)) = (take, adopter) {
                        let started = Instant::now();
                        // While connections arrive this generation does not finish handing
                        // its own over (a restart right behind this one): they follow.
                        let _arriving = handover.register();
                        let (moved, refused) = restart::receive_connections(&gp, &adopter);
                        tracing::info!(
                            moved,
                            refused,
                            took_ms = started.elapsed().as_millis(),
                            "took live connections from the previous generation"
                        );
                        status.set_handover(moved, refused);
                    }
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "could not tell the previous generation to drain; both serve until it stops"
                ),
            });
        }

        let stop = loop {
            tokio::select! {
                _ = term.recv() => break Stop::Terminate,
                _ = int.recv() => break Stop::Interrupt,
                Some(_) = quit_rx.recv() => break Stop::Quit,
                Some(ev) = events.recv() => match ev {
                    ParentEvent::DrainListeners => break Stop::Restart,
                    ParentEvent::Terminate => {
                        tracing::info!("asked to terminate by the next generation");
                        status.enter(Phase::Terminated);
                        return Ok(());
                    }
                },
                _ = usr1.recv() => reopen_logs(&log, &dataplane),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP ignored: restarts are started with --restart-epoch");
                }
            }
        };

        // Drain: stop accepting, ask connections to close over the drain time, and exit as
        // soon as the last one has gone (or at the deadline).
        let started = SystemTime::now();
        let budget = if stop == Stop::Restart {
            opts.parent_shutdown_time
        } else {
            opts.drain_time.max(MIN_SHUTDOWN_GRACE)
        };
        tracing::info!(
            ?stop,
            drain_time_s = opts.drain_time.as_secs(),
            deadline_s = budget.as_secs(),
            "draining: no new connections, finishing open ones"
        );
        status.enter(Phase::Draining);
        if handover.mode() == proxy_core::handover::Mode::Active {
            // Every worker knows its connections move before any is asked to close.
            handover
                .workers_see_active(opts.concurrency.max(1), Duration::from_millis(200))
                .await;
        }
        control.stop_accepting(drain::Scope::All);
        control.start_drain(drain::Scope::All);
        admin_signal.drain_now();
        let deadline = tokio::time::Instant::now() + budget;
        let released = drain_signal.wait_released(deadline);
        tokio::pin!(released);
        let mut tick = tokio::time::interval(DRAIN_STATUS_PERIOD);
        let outcome = loop {
            tokio::select! {
                o = &mut released => break Some(o),
                Some(ParentEvent::Terminate) = events.recv() => {
                    tracing::info!("asked to terminate by the next generation while draining");
                    break None;
                }
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                _ = usr1.recv() => reopen_logs(&log, &dataplane),
                _ = tick.tick() => {
                    status.set_drain(started, started + budget, control.counts().remaining);
                }
            }
        };
        match outcome {
            Some(drain::Outcome::Released) => {
                // Every connection has closed: the workers are finishing.
                tokio::task::spawn_blocking(move || workers.join())
                    .await
                    .ok();
                tracing::info!(
                    lived_ms = started.elapsed().map_or(0, |d| d.as_millis()),
                    "drained; exiting"
                );
            }
            Some(drain::Outcome::TimedOut { remaining }) => {
                tracing::warn!(
                    remaining,
                    "drain deadline passed with connections open; closing them"
                );
            }
            None => tracing::info!(
                remaining = control.counts().remaining,
                "ending now; closing the connections left"
            ),
        }
        status.enter(Phase::Terminated);
        Ok(())
    });
    if let Err(e) = &result {
        status.fail(Step::Serve, format!("{e:#}"));
    }
    // Worker threads still serving connections past the deadline end with the process.
    rt.shutdown_timeout(Duration::from_millis(100));
    match store_at_exit.detach() {
        Ok(Some(shm_stats::Detached::Removed)) => {
            tracing::info!("last generation out: removed the stats region");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    result
}

fn reopen_logs(log: &LogHandle, dataplane: &Dataplane) {
    tracing::info!("SIGUSR1: reopening logs");
    if let Err(e) = log.reopen() {
        tracing::error!("could not reopen the log file: {e:#}");
    }
    for l in dataplane.listeners() {
        if let Some(logs) = &l.access_logs {
            logs.reopen();
        }
    }
}

/// Envoy's gauges that describe one process ("never import" in Envoy's hot restart): during a
/// restart they show the newest generation's value, not the sum of both.
const NEWEST_GENERATION_GAUGES: &[&str] = &[
    "server.uptime",
    "server.live",
    "server.state",
    "server.concurrency",
    "server.hot_restart_epoch",
    "server.hot_restart_generation",
    "server.parent_connections",
    "server.version",
];

/// The stats store of this generation: the chain's shared region for `--base-id` (created by
/// epoch 0, attached to by later epochs), sized by `--max-stats` and `--max-obj-name-len`.
///
/// With `--disable-hot-restart` the stats stay in process memory, as Envoy's did (its
/// shared-memory stats were part of hot restart): such an instance occupies no base id, so many
/// can run on one host without `--base-id`, and `baton stats` cannot see it.
fn open_store(opts: &mut Options) -> anyhow::Result<Store> {
    if opts.disable_hot_restart {
        return Ok(Store::new());
    }
    let region_opts = |base_id: u32, mode: OpenMode| RegionOptions {
        backing: stats_backing(opts, base_id),
        base_id,
        epoch: opts.restart_epoch,
        mode,
        max_stats: opts.max_stats,
        max_obj_name_len: opts.max_obj_name_len,
        lock_timeout: Duration::from_millis(50),
        attach_timeout: Duration::from_secs(5),
    };
    let (region, base_id) = if opts.use_dynamic_base_id {
        // The CLI allows this only with epoch 0. A base id taken between the look-up and the
        // create is refused by the create: try the next one.
        let mut next = opts.base_id;
        loop {
            let id = shm_stats::pick_free_base_id(next, next.saturating_add(10_000))?;
            match Region::open(region_opts(id, OpenMode::Create)) {
                Ok(r) => break (r, id),
                Err(shm_stats::Error::ChainLive { .. }) if id < u32::MAX => next = id + 1,
                Err(e) => return Err(e.into()),
            }
        }
    } else if opts.restart_epoch == 0 {
        (
            Region::open(region_opts(opts.base_id, OpenMode::Create))?,
            opts.base_id,
        )
    } else {
        match Region::open(region_opts(opts.base_id, OpenMode::Attach)) {
            Err(shm_stats::Error::NoRegion { .. }) if opts.skip_hot_restart_on_no_parent => (
                Region::open(region_opts(opts.base_id, OpenMode::Create))?,
                opts.base_id,
            ),
            other => (other?, opts.base_id),
        }
    };
    if let Some(path) = &opts.base_id_path {
        std::fs::write(path, base_id.to_string())
            .with_context(|| format!("could not write the base id to {}", path.display()))?;
    }
    // With --use-dynamic-base-id the restart socket is named from the chosen id too, so that a
    // later epoch given `--base-id <chosen>` finds this generation.
    opts.base_id = base_id;
    tracing::info!(
        region = region.path(),
        base_id,
        epoch = opts.restart_epoch,
        "stats in the shared region"
    );
    Ok(Store::with_region(region, NEWEST_GENERATION_GAUGES))
}

/// Where the chain's stats live: `/dev/shm/baton_<base-id>`, or beside the `--hot-restart-file`
/// socket (`<file>.stats`) for a chain that is named by its file.
fn stats_backing(opts: &Options, base_id: u32) -> Backing {
    match &opts.hot_restart_file {
        Some(file) => {
            let mut path = file.clone().into_os_string();
            path.push(".stats");
            Backing::File(path.into())
        }
        None => Backing::for_base_id(base_id),
    }
}

/// Tell a supervising `baton restarter` that this generation serves, once its phase says so:
/// a `READY=1` datagram to the abstract socket it named in `BATON_READY_SOCKET`, independent of
/// log level and log file.
async fn notify_ready_when_serving(mut status: tokio::sync::watch::Receiver<GenerationStatus>) {
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
