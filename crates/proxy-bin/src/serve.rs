//! `--mode serve`: build everything from the validated configuration, bind, start the workers
//! and the admin interface, then map signals until the generation drains and exits.
//!
//! Order matters for a production proxy: every listen socket is bound and every cluster resolved
//! before the first connection is accepted, so a bad address fails the start (exit 1) instead
//! of half-serving.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use proxy_core::admin::{self, AdminState, ListenerStatus, ServerInfo, ServerState};
use proxy_core::cluster::ClusterManager;
use proxy_core::server::Dataplane;
use shm_stats::Store;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::cli::Options;
use crate::config::Loaded;
use crate::listen;
use crate::logging::LogHandle;

/// Why the generation stopped serving.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Terminate,
    Interrupt,
    Quit,
}

/// Serve until SIGTERM, SIGINT or `POST /quitquitquit`, then drain (bounded by
/// `--drain-time-s`) and return.
pub fn run(opts: Options, loaded: Loaded, log: LogHandle) -> anyhow::Result<()> {
    let store = Store::new();
    let bootstrap = loaded.bootstrap;
    let clusters = Arc::new(ClusterManager::new(&bootstrap.clusters, &store));
    let dataplane = Dataplane::new(&bootstrap, clusters.clone(), &store)
        .context("could not build the data plane")?;
    let sockets = bootstrap
        .listeners
        .iter()
        .map(|l| {
            listen::bind_tcp(l.address)
                .with_context(|| format!("could not start listener '{}'", l.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let admin_socket = bootstrap
        .admin
        .as_ref()
        .map(|a| listen::bind_tcp(a.address).context("could not start the admin listener"))
        .transpose()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("baton-main")
        .enable_all()
        .build()
        .context("could not start the main runtime")?;
    rt.block_on(async move {
        let epoch_started = Instant::now();
        let (state_tx, state_rx) = watch::channel(ServerState::Initializing);
        let (drain_signal, drain_watch) = drain::channel();
        let (admin_signal, admin_watch) = drain::channel();
        let mut term = signal(SignalKind::terminate()).context("could not handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("could not handle SIGINT")?;
        let mut usr1 = signal(SignalKind::user_defined1()).context("could not handle SIGUSR1")?;
        let mut hup = signal(SignalKind::hangup()).context("could not handle SIGHUP")?;

        let (quit_tx, mut quit_rx) = mpsc::channel(1);
        if let Some(sock) = admin_socket {
            let listener = tokio::net::TcpListener::from_std(sock)
                .context("could not use the admin socket")?;
            let state = Arc::new(AdminState {
                stats: store.clone(),
                server: ServerInfo {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    hot_restart_version: opts.hot_restart_version(),
                    command_line_options: opts.to_json(),
                    epoch: opts.restart_epoch,
                    concurrency: u32::try_from(opts.concurrency).unwrap_or(u32::MAX),
                    epoch_started,
                    chain_started: SystemTime::now(),
                },
                state: state_rx.clone(),
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
            });
            tokio::spawn(admin::serve(listener, state, admin_watch));
        } else {
            drop(admin_watch);
        }

        // Clusters are resolved before the first request can arrive.
        clusters.resolve_all().await;
        tokio::spawn(clusters.clone().run_dns_refresh(drain_watch.clone()));
        let workers = dataplane
            .spawn_workers(sockets, opts.concurrency, drain_watch)
            .context("could not start workers")?;
        let _ = state_tx.send(ServerState::Live);
        tracing::info!(
            listeners = bootstrap.listeners.len(),
            clusters = bootstrap.clusters.len(),
            concurrency = opts.concurrency,
            epoch = opts.restart_epoch,
            "baton is serving"
        );

        let stop = loop {
            tokio::select! {
                _ = term.recv() => break Stop::Terminate,
                _ = int.recv() => break Stop::Interrupt,
                Some(_) = quit_rx.recv() => break Stop::Quit,
                _ = usr1.recv() => {
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
                _ = hup.recv() => {
                    tracing::info!("SIGHUP ignored: restarts are started with --restart-epoch");
                }
            }
        };
        tracing::info!(
            ?stop,
            drain_time_s = opts.drain_time.as_secs(),
            "draining: no new connections, finishing open requests"
        );
        let _ = state_tx.send(ServerState::Draining);
        let drained = tokio::time::timeout(opts.drain_time, drain_signal.drain())
            .await
            .is_ok();
        if drained {
            // Every connection has closed: the workers are finishing.
            tokio::task::spawn_blocking(move || workers.join())
                .await
                .ok();
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("drain time elapsed with connections still open; closing them");
        }
        admin_signal.drain_now();
        Ok(())
    })
}
