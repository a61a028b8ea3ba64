//! The hot restart sequence, both sides of it.
//!
//! A child (epoch K+1) has already loaded its configuration and built its data plane when it
//! first touches its parent (epoch K): it connects to K's restart socket, negotiates versions,
//! takes the listen sockets whose addresses it keeps (the same kernel sockets, so nothing queued
//! is lost), binds the rest fresh, starts serving, and only then tells K to drain. Anything that
//! fails before that last step leaves K exactly as it was: K has only handed out duplicates of
//! its sockets.
//!
//! As a parent, every generation answers its own child from a dedicated thread
//! ([`spawn_parent_side`]): the blocking RPC never runs on a data-plane thread, and each call
//! has a timeout, so a hung child cannot stall this generation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use hotrestart_rpc::pb::{
    ListenSocketsRequest, ParentState, SocketManifest, SocketType, WantedSocket,
};
use hotrestart_rpc::{negotiate, Client, Endpoint, Listener, ParentHandler, ServeOptions};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::{Options, DEFAULT_SOCKET_PATH};

/// How long a child waits for each step of the exchange with its parent.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a generation is in its life, broadcast on every transition.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    Starting,
    Validating,
    TakingSockets,
    Serving,
    Draining,
    Terminated,
    Failed(String),
}

/// The restart status a generation publishes (admin `/hot_restart_status`, `/server_info`).
#[derive(Debug)]
pub struct Status {
    tx: watch::Sender<serde_json::Value>,
    inner: Mutex<StatusInner>,
}

#[derive(Debug)]
struct StatusInner {
    epoch: u32,
    phases: Vec<(String, u64)>,
    parent: Option<(u32, u32)>,
    drain: Option<serde_json::Value>,
    last_failure: Option<String>,
}

/// What a child took over from its parent.
#[derive(Debug)]
pub struct Inherited {
    /// Listen sockets by address, to be used instead of fresh binds.
    pub sockets: HashMap<SocketAddr, std::net::TcpListener>,
    /// When epoch 0 of the chain started.
    pub chain_started: SystemTime,
    /// The link to the parent, to tell it to drain once this generation serves.
    pub parent: Option<Client>,
}

/// Something the parent side asks of the generation's main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentEvent {
    /// The child serves: stop accepting and drain.
    DrainListeners,
    /// The child (or its successor) wants this generation gone now.
    Terminate,
}

// === impl Phase ===

impl Phase {
    pub fn name(&self) -> &str {
        match self {
            Phase::Starting => "starting",
            Phase::Validating => "validating",
            Phase::TakingSockets => "taking_sockets",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Terminated => "terminated",
            Phase::Failed(_) => "failed",
        }
    }
}

// === impl Status ===

impl Status {
    pub fn new(epoch: u32) -> (Arc<Self>, watch::Receiver<serde_json::Value>) {
        let (tx, rx) = watch::channel(serde_json::Value::Null);
        let status = Arc::new(Self {
            tx,
            inner: Mutex::new(StatusInner {
                epoch,
                phases: Vec::new(),
                parent: None,
                drain: None,
                last_failure: None,
            }),
        });
        status.set_phase(Phase::Starting);
        (status, rx)
    }

    pub fn set_phase(&self, phase: Phase) {
        let mut inner = self.inner.lock();
        tracing::info!(epoch = inner.epoch, phase = phase.name(), "restart phase");
        if let Phase::Failed(reason) = &phase {
            inner.last_failure = Some(reason.clone());
        }
        inner
            .phases
            .push((phase.name().to_owned(), unix_ms(SystemTime::now())));
        self.publish(&inner);
    }

    pub fn set_parent(&self, pid: u32, epoch: u32) {
        let mut inner = self.inner.lock();
        inner.parent = Some((pid, epoch));
        self.publish(&inner);
    }

    pub fn set_drain(&self, started: SystemTime, deadline: SystemTime, connections_left: u64) {
        let mut inner = self.inner.lock();
        inner.drain = Some(json!({
            "started_unix_ms": unix_ms(started),
            "deadline_unix_ms": unix_ms(deadline),
            "connections_left": connections_left,
        }));
        self.publish(&inner);
    }

    fn publish(&self, inner: &StatusInner) {
        let phase = inner.phases.last().map_or("starting", |p| p.0.as_str());
        let value = json!({
            "epoch": inner.epoch,
            "pid": std::process::id(),
            "phase": phase,
            "phases": inner.phases.iter().map(|(p, at)| json!({"phase": p, "at_unix_ms": at})).collect::<Vec<_>>(),
            "parent": inner.parent.map(|(pid, epoch)| json!({"pid": pid, "epoch": epoch})),
            "drain": inner.drain,
            "last_failure": inner.last_failure,
        });
        self.tx.send_replace(value);
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The restart socket of generation `epoch` of this chain.
pub fn endpoint(opts: &Options, epoch: u32) -> Endpoint {
    if let Some(file) = &opts.hot_restart_file {
        // One socket for the whole chain: the newest generation listens on it.
        return Endpoint::path(file.clone(), Some(opts.socket_mode));
    }
    let base_id = u64::from(opts.base_id);
    if opts.socket_path == DEFAULT_SOCKET_PATH {
        Endpoint::for_epoch(base_id, epoch)
    } else if let Some(name) = opts.socket_path.strip_prefix('@') {
        Endpoint::Abstract(format!("{name}_{base_id}_{epoch}").into_bytes())
    } else {
        Endpoint::path_for_epoch(
            std::path::Path::new(&opts.socket_path),
            base_id,
            epoch,
            Some(opts.socket_mode),
        )
    }
}

/// As a child: find the parent, negotiate, and take the listen sockets for `wanted`.
/// Returns the epoch this generation runs as and what it inherited. Epoch 0 (or
/// `--skip-hot-restart-on-no-parent` with no parent) starts the chain cold.
pub fn take_over(
    opts: &Options,
    wanted: &[(String, SocketAddr)],
) -> anyhow::Result<(u32, Inherited)> {
    let cold = |epoch| {
        (
            epoch,
            Inherited {
                sockets: HashMap::new(),
                chain_started: SystemTime::now(),
                parent: None,
            },
        )
    };
    if opts.restart_epoch == 0 {
        return Ok(cold(0));
    }
    let parent_endpoint = endpoint(opts, opts.restart_epoch - 1);
    let conn = match hotrestart_rpc::connect(&parent_endpoint, RPC_TIMEOUT) {
        Ok(c) => c,
        Err(e) if e.is_no_peer() => {
            if opts.skip_hot_restart_on_no_parent {
                tracing::warn!(
                    epoch = opts.restart_epoch,
                    "no parent to take over from: starting cold (--skip-hot-restart-on-no-parent)"
                );
                return Ok(cold(opts.restart_epoch));
            }
            bail!(
                "could not find a running epoch {} for --base-id {} (is it running? use \
                 --restart-epoch 0 to start a new chain, or --skip-hot-restart-on-no-parent): {e}",
                opts.restart_epoch - 1,
                opts.base_id
            );
        }
        Err(e) => return Err(e).context("could not connect to the parent generation"),
    };
    let hello = negotiate::hello(
        &opts.hot_restart_version(),
        opts.restart_epoch,
        std::process::id(),
    );
    let mut client = Client::handshake(conn, hello, RPC_TIMEOUT)
        .context("the parent generation refused the hot restart")?;
    let parent = client.parent().clone();
    let epoch = opts.restart_epoch;
    let request = ListenSocketsRequest {
        wanted: wanted
            .iter()
            .map(|(_, addr)| WantedSocket {
                address: addr.to_string(),
                socket_type: SocketType::Tcp as i32,
            })
            .collect(),
        all: false,
    };
    let received = client
        .request_listen_sockets(request)
        .context("could not take the listen sockets from the parent generation")?;
    let mut sockets = HashMap::new();
    for (manifest, fd) in received {
        let addr: SocketAddr = manifest.address.parse().with_context(|| {
            format!(
                "the parent sent a socket with an unusable address {:?}",
                manifest.address
            )
        })?;
        if manifest.socket_type != SocketType::Tcp as i32 {
            bail!("the parent sent a non-TCP socket for {addr}");
        }
        sockets.insert(addr, std::net::TcpListener::from(fd));
    }
    tracing::info!(
        parent_pid = parent.pid,
        parent_epoch = parent.epoch,
        inherited = sockets.len(),
        "took over listen sockets from the parent generation"
    );
    let chain_started = UNIX_EPOCH + Duration::from_millis(parent.chain_start_unix_ms);
    Ok((
        epoch,
        Inherited {
            sockets,
            chain_started,
            parent: Some(client),
        },
    ))
}

/// The parent side of this generation: answers its child's requests on a dedicated thread.
pub struct ParentSide {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The listen sockets a generation owns (its workers hold duplicates), by address and name:
/// kept for a successor to take over, and closed when the generation stops accepting, so a
/// socket nobody accepts on refuses connections instead of queueing them.
pub type OwnedSockets = Arc<Mutex<Vec<(SocketAddr, String, std::net::TcpListener)>>>;

struct Handler {
    state: ParentState,
    sockets: OwnedSockets,
    /// Duplicates lent to the child in the last hand-over (the reply borrows from them).
    lent: Vec<(SocketManifest, std::net::TcpListener)>,
    /// Addresses the child took; the others are closed when the drain starts.
    taken: Vec<SocketAddr>,
    events: mpsc::UnboundedSender<ParentEvent>,
    /// This generation's own parent while it still drains: ended when a grandchild arrives, so
    /// no more than three generations ever overlap.
    grandparent: Arc<Mutex<Option<Client>>>,
}

impl std::fmt::Debug for ParentSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentSide").finish_non_exhaustive()
    }
}

impl ParentHandler for Handler {
    fn state(&mut self) -> ParentState {
        if let Some(mut old) = self.grandparent.lock().take() {
            tracing::info!("a new generation is starting: ending the generation still draining");
            if let Err(e) = old.terminate() {
                // Usually it has already drained and exited.
                tracing::debug!(error = %e, "could not end the draining generation");
            }
        }
        self.state.clone()
    }

    fn listen_sockets(
        &mut self,
        request: &ListenSocketsRequest,
    ) -> Result<Vec<(SocketManifest, BorrowedFd<'_>)>, String> {
        self.lent.clear();
        for (addr, name, sock) in self.sockets.lock().iter() {
            let wanted = request.all
                || request
                    .wanted
                    .iter()
                    .any(|w| w.address.parse::<SocketAddr>().is_ok_and(|a| a == *addr));
            if !wanted {
                continue;
            }
            let dup = sock
                .try_clone()
                .map_err(|e| format!("could not duplicate the socket for {addr}: {e}"))?;
            if !self.taken.contains(addr) {
                self.taken.push(*addr);
            }
            self.lent.push((
                SocketManifest {
                    address: addr.to_string(),
                    socket_type: SocketType::Tcp as i32,
                    worker_index: 0,
                    options: None,
                    name: name.clone(),
                },
                dup,
            ));
        }
        Ok(self
            .lent
            .iter()
            .map(|(m, sock)| (m.clone(), sock.as_fd()))
            .collect())
    }

    fn drain_listeners(&mut self) -> Result<(), String> {
        // The child holds its own copies now; this generation's are closed when it stops
        // accepting (see `OwnedSockets`).
        self.lent.clear();
        self.state.draining = true;
        self.events
            .send(ParentEvent::DrainListeners)
            .map_err(|_| "this generation is shutting down".to_owned())
    }

    fn terminate(&mut self) -> Result<(), String> {
        self.events
            .send(ParentEvent::Terminate)
            .map_err(|_| "this generation is shutting down".to_owned())
    }
}

/// Bind this generation's restart socket (before serving, so a clash fails the start).
pub fn bind_restart_socket(opts: &Options, epoch: u32) -> anyhow::Result<Listener> {
    let ep = endpoint(opts, epoch);
    let bound = if opts.hot_restart_file.is_some() {
        // The parent still listens on the file: bind beside it and rename over it.
        Listener::bind_replacing(&ep)
    } else {
        Listener::bind(&ep)
    };
    bound.with_context(|| {
        format!(
            "could not bind the hot restart socket for --base-id {} epoch {epoch} (is another \
             Baton using this base id?)",
            opts.base_id
        )
    })
}

/// Start answering this generation's future child.
#[allow(clippy::too_many_arguments)]
pub fn spawn_parent_side(
    listener: Listener,
    opts: &Options,
    epoch: u32,
    chain_started: SystemTime,
    sockets: OwnedSockets,
    events: mpsc::UnboundedSender<ParentEvent>,
    grandparent: Arc<Mutex<Option<Client>>>,
) -> anyhow::Result<ParentSide> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handler = Handler {
        state: ParentState {
            chain_start_unix_ms: unix_ms(chain_started),
            epoch,
            pid: std::process::id(),
            concurrency: u32::try_from(opts.concurrency).unwrap_or(u32::MAX),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            draining: false,
        },
        sockets,
        lent: Vec::new(),
        taken: Vec::new(),
        events,
        grandparent,
    };
    let serve_opts = ServeOptions::new(opts.hot_restart_version());
    let stop_flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("baton-restart".to_owned())
        .spawn(move || {
            let exit = hotrestart_rpc::serve(&listener, &mut handler, &serve_opts, &stop_flag);
            tracing::debug!(?exit, "hot restart socket closed");
        })
        .context("could not start the hot restart thread")?;
    Ok(ParentSide {
        stop,
        thread: Some(thread),
    })
}

impl Drop for ParentSide {
    fn drop(&mut self) {
        // The thread stops at its next accept poll; a session in progress ends with the
        // process, so nothing waits for it here.
        self.stop.store(true, Ordering::Release);
        drop(self.thread.take());
    }
}

/// With `--hot-restart-file` there is no `--restart-epoch`: this generation's epoch is one past
/// the newest live generation attached to the chain's stats region, or 0 when none is (a stale
/// file left by a crashed chain is not trusted).
pub fn epoch_from_chain(backing: &shm_stats::Backing) -> u32 {
    shm_stats::RegionView::open(backing)
        .ok()
        .and_then(|view| {
            view.read()
                .generations
                .iter()
                .filter(|g| g.live)
                .map(|g| g.epoch)
                .max()
        })
        .map_or(0, |e| e.saturating_add(1))
}
