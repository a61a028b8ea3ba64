//! The parent's side (epoch K): answer one child's session with [`serve_one`], or keep a listener
//! answering children with [`serve`] (every waiting peer accepted, the first to speak served),
//! delegating every decision to a [`ParentHandler`].
//!
//! Failures of a session (a broken, slow, foreign or refused peer) are logged and end that session
//! only: they never panic and never touch the handler beyond what the child asked for, so the
//! serving generation is unaffected.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::conn::{Conn, Listener, PeerCred};
use crate::error::{Error, Result};
use crate::frame;
use crate::manifest;
use crate::negotiate;
use crate::pb::envelope::Body;
use crate::pb::{
    ConnectionsAck, ConnectionsBatch, DrainListeners, Envelope, ListenSocketsReply,
    ListenSocketsRequest, ParentState, RefusalReason, SocketManifest, StatsSnapshot, StatusReply,
    TakeConnections, UnknownMessage,
};

/// What the parent generation does when its child asks. Implemented by the binary.
pub trait ParentHandler {
    /// The state reported to the child in the handshake.
    fn state(&mut self) -> ParentState;

    /// The listen sockets to hand over for `request`, each with its manifest entry. The fds stay
    /// the handler's: they are duplicated into the child by the kernel and the handler's copies
    /// stay open (closing them is the drain's business). `Err` is sent to the child as a failed
    /// status.
    fn listen_sockets(
        &mut self,
        request: &ListenSocketsRequest,
    ) -> Result<Vec<(SocketManifest, BorrowedFd<'_>)>, String>;

    /// Stop accepting; keep serving open connections. Must not block for the drain itself.
    /// With `request.handover_connections` the child will ask for this generation's live
    /// connections next ([`ParentHandler::take_connections`]).
    fn drain_listeners(&mut self, request: &DrainListeners) -> Result<(), String>;

    /// The child asks this generation to exit. Start it, but do not exit the process here: the
    /// reply is sent first, then [`serve_one`] returns [`SessionEnd::Terminated`].
    fn terminate(&mut self) -> Result<(), String>;

    /// The child gives way (an operator rollback): serve again now if this generation can (it
    /// drains or stands by inside its rollback window). `Err` is sent to the child, which then
    /// keeps serving.
    fn roll_back(&mut self, reason: &str) -> Result<(), String> {
        let _ = reason;
        Err("this generation cannot serve again".into())
    }

    /// A stats snapshot for the child, if this generation offers one.
    fn stats(&mut self) -> Option<StatsSnapshot> {
        None
    }

    /// Connections to hand over for `request`: a batch (possibly empty; may wait up to
    /// `request.wait_ms` for one) and the fds of its connections in order, at most
    /// `request.max_fds`. The fds stay the handler's until [`ParentHandler::connections_ack`]
    /// says which the child took. `Err` is sent to the child as a failed status.
    fn take_connections(
        &mut self,
        request: &TakeConnections,
    ) -> Result<(ConnectionsBatch, Vec<BorrowedFd<'_>>), String> {
        let _ = request;
        Err("this generation does not hand over connections".into())
    }

    /// The child's answer to the last batch: which connections it took. Also called with
    /// nothing taken when the batch could not be delivered.
    fn connections_ack(&mut self, ack: &ConnectionsAck) -> Result<(), String> {
        let _ = ack;
        Ok(())
    }

    /// The child hands connections back after a rollback (see [`ParentHandler::roll_back`]):
    /// `fds` are `batch`'s in order (already checked against it). Which the handler took
    /// (`taken[i]` for `connections[i]`); those it did not take are closed here, and the child
    /// goes on serving them. `Err`: none taken.
    fn give_connections(
        &mut self,
        batch: ConnectionsBatch,
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<bool>, String> {
        let _ = (batch, fds);
        Err("this generation takes no connections back".into())
    }

    /// The reply to [`ParentHandler::connections_ack`] has been written to the child (or could
    /// not be): only now does the child know its answer was heard, so a generation must not exit
    /// between the two (the child would take a reply lost with the parent for a refusal).
    fn ack_replied(&mut self) {}

    /// A session starts with a peer whose credentials the kernel vouches for (SO_PEERCRED), before
    /// its hello is read: the handler may keep its pid (e.g. to watch the child once it serves).
    fn session_started(&mut self, peer: PeerCred) {
        let _ = peer;
    }

    /// The session with the child ended (disconnect, error, refusal or termination). Anything
    /// handed out but not acknowledged is the handler's again.
    fn session_ended(&mut self) {}
}

/// Settings of the parent's side.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// This generation's `--hot-restart-version`; a child must send the same.
    pub hot_restart_version: String,
    /// Longest wait for the child's next request; past it the session ends.
    pub idle_timeout: Duration,
    /// Longest wait for one send, and for a batch's ack.
    pub io_timeout: Duration,
    /// Longest a new peer may stay silent before its first message (its hello); past it, it is
    /// closed. [`serve`] keeps every waiting peer open meanwhile and serves the first that
    /// speaks, so a silent peer (any local process of the same user may connect) does not hold
    /// the next child up; a real child sends its hello as soon as it connects.
    pub handshake_timeout: Duration,
    /// How often [`serve`] looks at its stop flag while no child connects.
    pub accept_poll: Duration,
}

/// How a session ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The child disconnected.
    PeerClosed,
    /// The child asked this generation to terminate, and the handler agreed.
    Terminated,
}

/// Why [`serve`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeExit {
    /// The stop flag was set.
    Stopped,
    /// A child asked this generation to terminate.
    Terminated,
}

// === impl ServeOptions ===

impl ServeOptions {
    /// Options with the given hot restart version and default timeouts (idle 60 s, io 5 s,
    /// handshake 500 ms).
    pub fn new(hot_restart_version: impl Into<String>) -> Self {
        Self {
            hot_restart_version: hot_restart_version.into(),
            idle_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_millis(500),
            accept_poll: Duration::from_millis(200),
        }
    }
}

/// Most connections [`serve`] holds while they have not spoken yet. Past it, new peers wait in
/// the kernel's listen queue until a held one speaks, closes or reaches its handshake deadline.
pub const MAX_WAITING_PEERS: usize = 64;

/// Answers children on `listener` until `stop` is set or a child terminates this generation.
///
/// Every waiting connection is accepted (up to [`MAX_WAITING_PEERS`]) and the first to speak is
/// served: a silent peer costs the next child nothing, and is closed when its own handshake
/// deadline passes. One session runs at a time (one child restarts this generation at a time);
/// a peer that speaks meanwhile is served when that session ends. Each session's failure is
/// logged and the next peer is served.
pub fn serve(
    listener: &Listener,
    handler: &mut impl ParentHandler,
    opts: &ServeOptions,
    stop: &AtomicBool,
) -> ServeExit {
    // Accepted connections that have not spoken, oldest first, each with its handshake
    // deadline. Held here only: dropping an entry closes its fd.
    let mut waiting: Vec<(Conn, Instant)> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        accept_waiting(listener, &mut waiting, opts);
        let ready = poll_waiting(listener, &waiting, opts);
        let now = Instant::now();
        if let Some(index) = ready {
            let (conn, _) = waiting.remove(index);
            if conn.closed_without_data() {
                // Not a session: the handler never hears of it.
                tracing::debug!(
                    peer.pid = conn.peer().pid,
                    "restart peer hung up without a word; closed"
                );
                continue;
            }
            if let Ok(SessionEnd::Terminated) = serve_one(conn, handler, opts) {
                return ServeExit::Terminated;
            }
            continue;
        }
        waiting.retain(|(conn, deadline)| {
            let keep = now < *deadline;
            if !keep {
                tracing::debug!(
                    peer.pid = conn.peer().pid,
                    "restart peer said nothing before its handshake deadline; closed"
                );
            }
            keep
        });
    }
    ServeExit::Stopped
}

/// Accepts every connection already queued on `listener`, up to [`MAX_WAITING_PEERS`] held.
fn accept_waiting(listener: &Listener, waiting: &mut Vec<(Conn, Instant)>, opts: &ServeOptions) {
    while waiting.len() < MAX_WAITING_PEERS {
        match listener.accept(Duration::ZERO) {
            Ok(conn) => waiting.push((conn, Instant::now() + opts.handshake_timeout)),
            Err(e) if e.is_timeout() => return,
            // Refused peers are logged by accept; anything else is logged here.
            Err(Error::PeerRefused { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "hot restart accept failed");
                return;
            }
        }
    }
}

/// Waits until the listener or a waiting connection is readable, the earliest handshake
/// deadline passes, or `opts.accept_poll` (to look at the stop flag). Returns the index of the
/// oldest waiting connection that spoke or hung up.
fn poll_waiting(
    listener: &Listener,
    waiting: &[(Conn, Instant)],
    opts: &ServeOptions,
) -> Option<usize> {
    let now = Instant::now();
    let wait = waiting
        .iter()
        .map(|(_, deadline)| deadline.saturating_duration_since(now))
        .fold(opts.accept_poll, Duration::min);
    let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(waiting.len() + 1);
    // A full set leaves new peers in the listen queue: do not wake for them.
    if waiting.len() < MAX_WAITING_PEERS {
        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
    }
    let first_conn = fds.len();
    fds.extend(
        waiting
            .iter()
            .map(|(conn, _)| PollFd::new(conn.as_fd(), PollFlags::POLLIN)),
    );
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not poll the restart socket");
            // Do not spin on a persistent error.
            std::thread::sleep(wait);
            return None;
        }
    }
    fds[first_conn..]
        .iter()
        .position(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
}

/// Answers one child's requests until it disconnects, terminates this generation, or fails.
/// The first message must be a Hello; a refused handshake is answered, then the session ends with
/// [`Error::Refused`]. Errors are logged here as well as returned.
pub fn serve_one(
    mut conn: Conn,
    handler: &mut impl ParentHandler,
    opts: &ServeOptions,
) -> Result<SessionEnd> {
    let span = tracing::info_span!("hotrestart_child", child.pid = conn.peer().pid);
    let _enter = span.enter();
    handler.session_started(conn.peer());
    let result = session(&mut conn, handler, opts);
    handler.session_ended();
    match &result {
        Ok(end) => tracing::info!(?end, "hot restart session ended"),
        Err(e) => tracing::warn!(error = %e, "hot restart session dropped"),
    }
    result
}

fn session(
    conn: &mut Conn,
    handler: &mut impl ParentHandler,
    opts: &ServeOptions,
) -> Result<SessionEnd> {
    handshake(conn, handler, opts)?;
    loop {
        let (msg, fds) = match conn.recv(opts.idle_timeout) {
            Ok(m) => m,
            Err(e) if e.is_clean_close() => return Ok(SessionEnd::PeerClosed),
            Err(e) => return Err(e),
        };
        let id = msg.id;
        if let Some(Body::GiveConnections(give)) = msg.body {
            receive_connections(conn, id, give.batch.unwrap_or_default(), fds, handler, opts)?;
            continue;
        }
        if !fds.is_empty() {
            // A request never carries fds; they are closed by dropping them.
            drop(fds);
            reply_status(conn, id, Err("requests carry no fds".into()), opts)?;
            continue;
        }
        match msg.body {
            Some(Body::ListenSocketsRequest(req)) => send_sockets(conn, id, &req, handler, opts)?,
            Some(Body::DrainListeners(req)) => {
                tracing::info!(
                    handover = req.handover_connections,
                    "child asks this generation to drain"
                );
                let result = handler.drain_listeners(&req);
                reply_status(conn, id, result, opts)?;
            }
            Some(Body::TakeConnections(req)) => send_connections(conn, id, &req, handler, opts)?,
            Some(Body::ConnectionsAck(ack)) => {
                let result = handler.connections_ack(&ack);
                let replied = reply_status(conn, id, result, opts);
                handler.ack_replied();
                replied?;
            }
            Some(Body::Terminate(_)) => {
                tracing::info!("child asks this generation to terminate");
                let result = handler.terminate();
                let ok = result.is_ok();
                reply_status(conn, id, result, opts)?;
                if ok {
                    return Ok(SessionEnd::Terminated);
                }
            }
            Some(Body::RollBack(req)) => {
                tracing::info!(reason = %req.reason, "child asks this generation to serve again");
                let result = handler.roll_back(&req.reason);
                reply_status(conn, id, result, opts)?;
            }
            Some(Body::StatsRequest(_)) => match handler.stats() {
                Some(s) => send(conn, id, Body::StatsSnapshot(s), opts)?,
                None => send(
                    conn,
                    id,
                    Body::UnknownMessage(UnknownMessage {
                        detail: "this generation offers no stats".into(),
                    }),
                    opts,
                )?,
            },
            Some(Body::Hello(_)) => reply_status(conn, id, Err("already greeted".into()), opts)?,
            Some(other) => {
                let kind = other.kind();
                reply_status(conn, id, Err(format!("{kind} is not a request")), opts)?;
            }
            None => {
                tracing::debug!(id, "unknown request from the child");
                send(
                    conn,
                    id,
                    Body::UnknownMessage(UnknownMessage {
                        detail: "unknown request".into(),
                    }),
                    opts,
                )?;
            }
        }
    }
}

fn handshake(conn: &mut Conn, handler: &mut impl ParentHandler, opts: &ServeOptions) -> Result<()> {
    let (msg, fds) = conn.recv(opts.handshake_timeout)?;
    drop(fds);
    let reply = match &msg.body {
        Some(Body::Hello(hello)) => {
            tracing::info!(
                child.epoch = hello.epoch,
                child.protocol_version = hello.protocol_version,
                "hot restart hello"
            );
            negotiate::answer_hello(&opts.hot_restart_version, &handler.state(), hello)
        }
        _ => negotiate::refuse(
            &opts.hot_restart_version,
            RefusalReason::NotHello,
            format!("first message must be hello, got {}", msg.kind()),
        ),
    };
    let accepted = reply.accepted;
    let reason = reply.reason();
    let detail = reply.detail.clone();
    send(conn, msg.id, Body::HelloReply(reply), opts)?;
    if accepted {
        Ok(())
    } else {
        Err(Error::Refused { reason, detail })
    }
}

fn send_sockets(
    conn: &mut Conn,
    id: u64,
    request: &ListenSocketsRequest,
    handler: &mut impl ParentHandler,
    opts: &ServeOptions,
) -> Result<()> {
    let sockets = match handler.listen_sockets(request) {
        Ok(s) => s,
        Err(e) => return reply_status(conn, id, Err(e), opts),
    };
    let total = u32::try_from(sockets.len()).map_err(|_| Error::TooManyFds {
        count: sockets.len(),
        max: u32::MAX as usize,
    })?;
    let batches = manifest::batches(&sockets);
    let batch_count = u32::try_from(batches.len()).unwrap_or(u32::MAX);
    tracing::info!(
        sockets = sockets.len(),
        batches = batch_count,
        "handing over listen sockets"
    );
    for (index, batch) in (0u32..).zip(batches) {
        let reply = ListenSocketsReply {
            batch_index: index,
            batch_count,
            total_sockets: total,
            sockets: batch.iter().map(|(m, _)| m.clone()).collect(),
        };
        let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|(_, fd)| *fd).collect();
        conn.send(
            &Envelope::new(id, Body::ListenSocketsReply(reply)),
            &fds,
            opts.io_timeout,
        )?;
        let (ack, ack_fds) = conn.recv(opts.io_timeout)?;
        drop(ack_fds);
        match ack.body {
            Some(Body::BatchAck(a)) if ack.id == id && a.batch_index == index => {}
            Some(Body::BatchAck(a)) => {
                return Err(Error::BadBatch {
                    reason: format!(
                        "ack for batch {} of request {}, expected batch {index} of request {id}",
                        a.batch_index, ack.id
                    ),
                })
            }
            other => {
                return Err(Error::UnexpectedMessage {
                    expected: "batch_ack",
                    got: other.as_ref().map_or("none", Body::kind),
                })
            }
        }
    }
    Ok(())
}

fn send_connections(
    conn: &mut Conn,
    id: u64,
    request: &TakeConnections,
    handler: &mut impl ParentHandler,
    opts: &ServeOptions,
) -> Result<()> {
    let sent = match handler.take_connections(request) {
        Ok((batch, fds)) => {
            let max = (request.max_fds as usize).min(frame::MAX_FDS_PER_FRAME);
            if fds.len() > max {
                Err(Error::TooManyFds {
                    count: fds.len(),
                    max,
                })
            } else {
                conn.send(
                    &Envelope::new(id, Body::ConnectionsBatch(batch)),
                    &fds,
                    opts.io_timeout,
                )
            }
        }
        Err(e) => return reply_status(conn, id, Err(e), opts),
    };
    if let Err(e) = sent {
        // Not delivered: the connections stay this generation's.
        let _ = handler.connections_ack(&ConnectionsAck { taken: Vec::new() });
        return Err(e);
    }
    Ok(())
}

/// A child hands connections back: check the fds against the batch, let the handler take them,
/// answer which it took.
fn receive_connections(
    conn: &mut Conn,
    id: u64,
    batch: ConnectionsBatch,
    fds: Vec<OwnedFd>,
    handler: &mut impl ParentHandler,
    opts: &ServeOptions,
) -> Result<()> {
    match manifest::connection_fds(&batch) {
        Ok(n) if n == fds.len() => {}
        Ok(n) => {
            let error = format!("{n} fds expected, {} came", fds.len());
            return reply_status(conn, id, Err(error), opts);
        }
        Err(e) => return reply_status(conn, id, Err(e.to_string()), opts),
    }
    tracing::info!(
        connections = batch.connections.len(),
        "the child hands connections back"
    );
    match handler.give_connections(batch, fds) {
        Ok(taken) => send(
            conn,
            id,
            Body::ConnectionsAck(ConnectionsAck { taken }),
            opts,
        ),
        Err(e) => reply_status(conn, id, Err(e), opts),
    }
}

fn reply_status(
    conn: &mut Conn,
    id: u64,
    result: Result<(), String>,
    opts: &ServeOptions,
) -> Result<()> {
    let status = match result {
        Ok(()) => StatusReply {
            ok: true,
            error: String::new(),
        },
        Err(error) => StatusReply { ok: false, error },
    };
    send(conn, id, Body::StatusReply(status), opts)
}

fn send(conn: &mut Conn, id: u64, body: Body, opts: &ServeOptions) -> Result<()> {
    conn.send(&Envelope::new(id, body), &[], opts.io_timeout)
}
