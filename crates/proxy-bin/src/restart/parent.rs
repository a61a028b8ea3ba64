//! The parent side of a hot restart: every generation answers its own child from a dedicated
//! thread, so the blocking RPC never runs on a data-plane thread, and each call has a timeout,
//! so a hung child cannot stall this generation.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hotrestart_rpc::pb::{
    ConnectionsAck, ConnectionsBatch, DrainListeners, ListenSocketsRequest, ParentState,
    RecentTraffic, SocketManifest, TakeConnections,
};
use hotrestart_rpc::{Listener, ParentHandler, PeerCred, ServeOptions};
use proxy_core::handover::{self, Handover, Offer};
use proxy_core::lifecycle::unix_ms;
use proxy_core::tally::Recent;
use tokio::sync::mpsc;

use super::successor::Successor;
use super::{wire, Grandparent, OwnedSockets, ParentEvent, Returning};

/// The parent side of this generation: answers its child's requests on a dedicated thread,
/// which stops (at its next accept poll) when this is dropped.
pub struct ParentSide {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The restart socket's file (`--hot-restart-file`), removed when this is dropped unless a
    /// successor has renamed its own over it: the last generation of a chain leaves no file.
    /// (The listener's own drop would, but its thread ends with the process.)
    socket_file: Option<hotrestart_rpc::SocketFile>,
}

/// What the parent side needs: who this generation is, what it can lend, and where to report.
#[derive(Debug)]
pub struct Answering {
    /// This generation's restart socket, bound before it served.
    pub listener: Listener,
    /// This generation's hot restart compatibility string.
    pub hot_restart_version: String,
    pub epoch: u32,
    pub chain_started: SystemTime,
    /// Worker threads (reported to the child).
    pub concurrency: usize,
    /// The listen sockets to lend.
    pub sockets: OwnedSockets,
    /// The generation's main loop: told when the child serves or wants this one gone. The
    /// main loop holds the receiver until the process ends.
    pub events: mpsc::UnboundedSender<ParentEvent>,
    /// This generation's own parent while it still drains.
    pub grandparent: Grandparent,
    /// Live connections for the child.
    pub handover: Handover,
    /// `--rollback-window-s`: when not zero, the child that asks this generation to drain is
    /// watched (a pidfd sent with the drain event), and the session may idle that long.
    pub rollback_window: Duration,
    /// This generation's traffic over its last minute, told to a child (its health gate's
    /// baseline).
    pub recent: Arc<Recent>,
    /// Where connections the child hands back after a rollback go.
    pub returning: Returning,
    /// The upstream hosts, whose health the child starts with.
    pub clusters: Arc<proxy_core::cluster::ClusterManager>,
}

struct Handler {
    state: ParentState,
    recent: Arc<Recent>,
    returning: Returning,
    clusters: Arc<proxy_core::cluster::ClusterManager>,
    sockets: OwnedSockets,
    /// Duplicates lent to the child in the last hand-over (the reply borrows from them).
    lent: Vec<(SocketManifest, std::net::TcpListener)>,
    /// Addresses the child of this session took; the others are closed when the drain starts.
    taken: Vec<SocketAddr>,
    /// The process of this session's child (SO_PEERCRED).
    child_pid: Option<u32>,
    /// Whether to watch the child that asks to drain (a rollback window is set).
    watch_child: bool,
    events: mpsc::UnboundedSender<ParentEvent>,
    /// This generation's own parent while it still drains: ended when a grandchild arrives, so
    /// no more than three generations ever overlap.
    grandparent: Grandparent,
    /// Live connections for the child.
    handover: Handover,
    /// The last batch handed to the child, until it answers.
    offered: Vec<Offer>,
    /// The last batch, answered, until the child has the reply to its answer: this generation
    /// does not exit in between (see [`Handover::settled`]).
    answered: Vec<handover::Answered>,
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
        let (counts, span) = self.recent.last_minute(std::time::Instant::now());
        ParentState {
            recent: Some(RecentTraffic {
                answered: counts.answered,
                upstream_failed: counts.upstream_failed,
                span_ms: u64::try_from(span.as_millis()).unwrap_or(u64::MAX),
            }),
            hosts: wire::host_health(&self.clusters.host_health()),
            ..self.state.clone()
        }
    }

    fn listen_sockets(
        &mut self,
        request: &ListenSocketsRequest,
    ) -> Result<Vec<(SocketManifest, BorrowedFd<'_>)>, String> {
        // A child this generation accepted is starting: the generation still draining behind
        // this one goes first (not on a mere hello, which may be refused).
        match self.grandparent.end(GRANDPARENT_HANDOVER_WAIT) {
            Some(Ok(())) => {
                tracing::info!("a new generation is starting: ended the generation still draining")
            }
            // Usually it has already drained and exited.
            Some(Err(e)) => tracing::debug!(error = %e, "could not end the draining generation"),
            None => {}
        }
        self.lent.clear();
        let wanted = wire::Wanted::from_request(request);
        for owned in self.sockets.lock().iter() {
            let addr = owned.addr;
            if !wanted.contains(&addr) {
                continue;
            }
            let dup = owned
                .socket
                .try_clone()
                .map_err(|e| format!("could not duplicate the socket for {addr}: {e}"))?;
            if !self.taken.contains(&addr) {
                self.taken.push(addr);
            }
            self.lent.push((wire::manifest(addr, &owned.name), dup));
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
        let successor = self.open_successor()?;
        self.lent.clear();
        self.state.draining = true;
        // Before the drain starts, so no connection that can move is asked to close.
        let tcp_proxy = request.handover_tcp_proxy;
        if request.handover_connections && self.handover.activate(tcp_proxy) {
            tracing::info!(
                open = self.handover.open(),
                tcp_proxy,
                "handing live connections to the next generation"
            );
        }
        self.events
            .send(ParentEvent::DrainListeners {
                successor,
                taken: self.taken.clone(),
            })
            .map_err(|_| "this generation is shutting down".to_owned())
    }

    fn terminate(&mut self) -> Result<(), String> {
        self.events
            .send(ParentEvent::Terminate)
            .map_err(|_| "this generation is shutting down".to_owned())
    }

    fn roll_back(&mut self, reason: &str) -> Result<(), String> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.events
            .send(ParentEvent::RollBack {
                reason: reason.to_owned(),
                answer,
            })
            .map_err(|_| "this generation is shutting down".to_owned())?;
        answered
            .recv_timeout(ROLLBACK_ANSWER_WAIT)
            .unwrap_or_else(|_| Err("this generation did not serve again in time".to_owned()))
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
                .map(|o| wire::moved_connection(&o.conn))
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
            self.answered.push(offer.answer(yes));
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

    fn give_connections(
        &mut self,
        batch: ConnectionsBatch,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<Vec<bool>, String> {
        let returning = self.returning.lock();
        let Some(adopter) = returning.as_ref() else {
            return Err("this generation is not serving again after a rollback".to_owned());
        };
        let mut fds = fds.into_iter();
        let taken: Vec<bool> = batch
            .connections
            .iter()
            .map(|c| {
                let n = hotrestart_rpc::manifest::fds_of_kind(c.kind).unwrap_or(0);
                let socks: Vec<_> = fds.by_ref().take(n).collect();
                wire::arriving_connection(c, socks)
                    .filter(|a| adopter.accepts(a))
                    .is_some_and(|conn| adopter.adopt(conn))
            })
            .collect();
        tracing::info!(
            given = taken.len(),
            taken = taken.iter().filter(|t| **t).count(),
            "took connections back from the generation that gave way"
        );
        Ok(taken)
    }

    fn ack_replied(&mut self) {
        self.answered.clear();
    }

    fn session_started(&mut self, peer: PeerCred) {
        self.child_pid = u32::try_from(peer.pid).ok().filter(|p| *p > 0);
        self.taken.clear();
    }

    fn session_ended(&mut self) {
        // A successor that handed connections back is done with this generation.
        self.returning.lock().take();
        for offer in self.offered.drain(..) {
            offer.settle(false);
        }
        self.answered.clear();
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

// === impl Handler ===

impl Handler {
    /// A pidfd on the child asking to drain, when this generation has a rollback window. The
    /// child is blocked on that request, so its pid still names it.
    /// `Err` when the child has already exited: this generation does not drain for a dead
    /// child (nobody would read the reply) and goes on serving.
    fn open_successor(&self) -> Result<Option<Successor>, String> {
        let Some(pid) = self.child_pid.filter(|_| self.watch_child) else {
            return Ok(None);
        };
        let epoch = self.state.epoch.saturating_add(1);
        match Successor::open(pid, epoch) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                tracing::warn!(
                    pid,
                    "the next generation exited before this one drained; serving on"
                );
                Err(format!("the child (pid {pid}) has exited"))
            }
            Err(e) => {
                tracing::warn!(
                    pid,
                    error = %e,
                    "could not watch the next generation (pidfd_open); no rollback this time"
                );
                Ok(None)
            }
        }
    }
}

/// Longest a generation waits, when a grandchild arrives, for its parent to finish handing its
/// live connections over before ending it. Shorter than the grandchild's RPC timeout (it waits
/// for its listen sockets meanwhile).
const GRANDPARENT_HANDOVER_WAIT: Duration = Duration::from_secs(2);

/// Longest the parent side waits for the main loop to serve again on a child's rollback
/// request. Shorter than the child's RPC timeout.
const ROLLBACK_ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Longest a parent holds a take-connections request waiting for a connection to move.
const MAX_TAKE_WAIT: Duration = Duration::from_secs(1);

/// Start answering this generation's future child.
pub fn spawn(a: Answering) -> anyhow::Result<ParentSide> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handler = Handler {
        state: ParentState {
            chain_start_unix_ms: unix_ms(a.chain_started),
            epoch: a.epoch,
            pid: std::process::id(),
            concurrency: u32::try_from(a.concurrency).unwrap_or(u32::MAX),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            draining: false,
            rollback_window_ms: u64::try_from(a.rollback_window.as_millis()).unwrap_or(u64::MAX),
            recent: None,
            hosts: Vec::new(),
            takes_tcp_proxy: true,
        },
        recent: a.recent,
        returning: a.returning,
        clusters: a.clusters,
        sockets: a.sockets,
        lent: Vec::new(),
        taken: Vec::new(),
        child_pid: None,
        watch_child: !a.rollback_window.is_zero(),
        events: a.events,
        grandparent: a.grandparent,
        handover: a.handover,
        offered: Vec::new(),
        answered: Vec::new(),
        last_batch: false,
    };
    let mut serve_opts = ServeOptions::new(a.hot_restart_version);
    // The child's session stays open through the window: its successor ends this generation
    // over it (three-generation rule).
    serve_opts.idle_timeout += a.rollback_window;
    let stop_flag = stop.clone();
    let listener = a.listener;
    let socket_file = listener.socket_file();
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
        socket_file,
    })
}

impl Drop for ParentSide {
    fn drop(&mut self) {
        // The thread stops at its next accept poll; a session in progress ends with the
        // process, so nothing waits for it here.
        self.stop.store(true, Ordering::Release);
        drop(self.thread.take());
        if let Some(file) = &self.socket_file {
            file.remove_if_ours();
            if !file.path().exists() {
                tracing::info!(path = %file.path().display(), "removed the hot restart socket");
            }
        }
    }
}
