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
    ConnectionKind, ConnectionsAck, ConnectionsBatch, DrainListeners, ListenSocketsRequest,
    MovedConnection, ParentState, SocketManifest, SocketType, TakeConnections, WantedSocket,
};
use hotrestart_rpc::{negotiate, Client, Endpoint, Listener, ParentHandler, ServeOptions};
use parking_lot::Mutex;
use proxy_core::handover::{self, Handover, Offer};
use proxy_core::lifecycle::unix_ms;
use tokio::sync::mpsc;

use crate::cli::{Options, DEFAULT_SOCKET_PATH};

/// How long a child waits for each step of the exchange with its parent.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Live connections for the child.
    handover: Handover,
    /// The last batch handed to the child, until it answers.
    offered: Vec<Offer>,
    /// The last batch told the child there is no more: once it is answered, the hand-over
    /// ends (a connection that becomes movable later is drained instead, as no one will come
    /// for it).
    last_batch: bool,
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

    fn drain_listeners(&mut self, request: &DrainListeners) -> Result<(), String> {
        // The child holds its own copies now; this generation's are closed when it stops
        // accepting (see `OwnedSockets`).
        self.lent.clear();
        self.state.draining = true;
        // Before the drain starts, so no connection that can move is asked to close.
        if request.handover_connections && self.handover.activate() {
            tracing::info!(
                open = self.handover.open(),
                "handing live connections to the next generation"
            );
        }
        self.events
            .send(ParentEvent::DrainListeners)
            .map_err(|_| "this generation is shutting down".to_owned())
    }

    fn terminate(&mut self) -> Result<(), String> {
        self.events
            .send(ParentEvent::Terminate)
            .map_err(|_| "this generation is shutting down".to_owned())
    }

    fn take_connections(
        &mut self,
        request: &TakeConnections,
    ) -> Result<(ConnectionsBatch, Vec<BorrowedFd<'_>>), String> {
        if self.handover.mode() != handover::Mode::Active {
            return Err(if self.handover.enabled() {
                "this generation is not handing over connections (no drain with hand-over asked)"
                    .to_owned()
            } else {
                "this generation does not hand over connections (--disable-connection-handover)"
                    .to_owned()
            });
        }
        // A batch never answered stays here.
        for offer in self.offered.drain(..) {
            offer.settle(false);
        }
        let max_fds = (request.max_fds as usize).min(hotrestart_rpc::frame::MAX_FDS_PER_FRAME);
        let wait = Duration::from_millis(u64::from(request.wait_ms)).min(MAX_TAKE_WAIT);
        self.offered = self.handover.take(max_fds, wait);
        let open = self.handover.open() as u64;
        let more = open > self.offered.len() as u64;
        self.last_batch = !more;
        let batch = ConnectionsBatch {
            connections: self
                .offered
                .iter()
                .map(|o| moved_connection(&o.conn))
                .collect(),
            more,
            still_open: open,
        };
        let fds = self
            .offered
            .iter()
            .flat_map(|o| o.conn.fds.iter().map(AsFd::as_fd))
            .collect();
        Ok((batch, fds))
    }

    fn connections_ack(&mut self, ack: &ConnectionsAck) -> Result<(), String> {
        let mut taken = 0;
        for (i, offer) in self.offered.drain(..).enumerate() {
            let yes = ack.taken.get(i).copied().unwrap_or(false);
            taken += usize::from(yes);
            offer.settle(yes);
        }
        if taken > 0 {
            tracing::debug!(taken, "connections taken by the next generation");
        }
        if self.last_batch {
            tracing::info!(
                left = self.handover.open(),
                "connection hand-over complete; draining what could not move"
            );
            self.handover.end();
        }
        Ok(())
    }

    fn session_ended(&mut self) {
        for offer in self.offered.drain(..) {
            offer.settle(false);
        }
        if self.handover.mode() == handover::Mode::Active {
            // The child is gone (done, or failed): nothing more moves; what is left drains.
            tracing::info!(
                left = self.handover.open(),
                "connection hand-over ended; draining the connections left"
            );
            self.handover.end();
        }
    }
}

/// Longest a parent holds a take-connections request waiting for a connection to move.
const MAX_TAKE_WAIT: Duration = Duration::from_secs(1);

fn moved_connection(c: &handover::Leaving) -> MovedConnection {
    let (upstream, cluster) = c
        .upstream
        .as_ref()
        .map(|(a, n)| (a.to_string(), n.clone()))
        .unwrap_or_default();
    MovedConnection {
        kind: match c.kind {
            handover::Kind::Http1 => ConnectionKind::Http1,
            handover::Kind::Tunnel => ConnectionKind::Tunnel,
        }
        .into(),
        listener_address: c.listener.to_string(),
        peer_address: c.peer.to_string(),
        read_buf: c.read_buf.to_vec(),
        idle_ms: u64::try_from(c.idle.as_millis()).unwrap_or(u64::MAX),
        requests: c.requests,
        upstream_address: upstream,
        cluster,
    }
}

/// How long a child waits for its parent to have a connection ready before asking again.
const TAKE_WAIT: Duration = Duration::from_millis(500);

/// As a child that serves: take the parent's live connections batch by batch and serve them
/// here, until the parent has none left, refuses, or goes away. Runs on a blocking thread; the
/// client is shared with the three-generation rule, which may take it (ending this loop).
pub fn receive_connections(
    parent: &Mutex<Option<Client>>,
    adopter: &proxy_core::server::Adopter,
) -> (usize, usize) {
    let (mut moved, mut refused) = (0, 0);
    loop {
        let mut guard = parent.lock();
        let Some(client) = guard.as_mut() else { break };
        let (batch, fds) = match client
            .take_connections(hotrestart_rpc::frame::MAX_FDS_PER_FRAME as u32, TAKE_WAIT)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(error = %e, "not taking connections from the previous generation");
                end_session_on_failure(&mut guard, &e);
                break;
            }
        };
        let mut fds = fds.into_iter();
        let mut arriving = Vec::with_capacity(batch.connections.len());
        let mut taken = Vec::with_capacity(batch.connections.len());
        for c in &batch.connections {
            let n = hotrestart_rpc::manifest::fds_of_kind(c.kind).unwrap_or(0);
            let socks: Vec<_> = fds.by_ref().take(n).collect();
            let conn = arriving_connection(c, socks).filter(|a| adopter.accepts(a.listener));
            taken.push(conn.is_some());
            arriving.push(conn);
        }
        if !batch.connections.is_empty() {
            if let Some(delay) = ack_delay() {
                tracing::warn!(
                    delay_ms = delay.as_millis(),
                    "holding the acknowledgement of taken connections ({ACK_DELAY_ENV}, for tests)"
                );
                std::thread::sleep(delay);
            }
        }
        // Acknowledged before anything is read from them: until the parent has the answer, the
        // connections are its (it resumes them if this generation dies first).
        if let Err(e) = client.ack_connections(taken) {
            tracing::warn!(error = %e, "could not acknowledge connections; the previous generation keeps them");
            end_session_on_failure(&mut guard, &e);
            break;
        }
        drop(guard);
        for conn in arriving {
            let Some(conn) = conn else {
                refused += 1;
                continue;
            };
            if adopter.adopt(conn) {
                moved += 1;
            } else {
                tracing::warn!("this generation stopped serving; a taken connection is closed");
            }
        }
        if !batch.more {
            break;
        }
    }
    (moved, refused)
}

/// After a failed exchange (not a plain "no" from the parent) the session's state is unknown:
/// disconnect, so the parent takes back whatever it had offered and drains it as usual.
fn end_session_on_failure(client: &mut Option<Client>, e: &hotrestart_rpc::Error) {
    use hotrestart_rpc::Error;
    if !matches!(e, Error::Remote { .. } | Error::NotSupported { .. }) {
        drop(client.take());
    }
}

/// Fault injection for tests of a failed hand-over: the child holds each batch this long
/// before acknowledging it (so a test can kill it in between).
const ACK_DELAY_ENV: &str = "BATON_HANDOVER_ACK_DELAY_MS";

fn ack_delay() -> Option<Duration> {
    std::env::var(ACK_DELAY_ENV)
        .ok()?
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}

fn arriving_connection(
    c: &MovedConnection,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Option<handover::Arriving> {
    let kind = match c.kind() {
        ConnectionKind::Http1 => handover::Kind::Http1,
        ConnectionKind::Tunnel => handover::Kind::Tunnel,
        ConnectionKind::Unspecified => return None,
    };
    let listener: SocketAddr = c.listener_address.parse().ok()?;
    Some(handover::Arriving {
        kind,
        listener,
        read_buf: bytes::Bytes::copy_from_slice(&c.read_buf),
        idle: Duration::from_millis(c.idle_ms),
        requests: c.requests,
        cluster: c.cluster.clone(),
        fds,
    })
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
    handover: Handover,
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
        handover,
        offered: Vec::new(),
        last_batch: false,
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
