//! The child's side (epoch K+1): a [`Client`] drives the exchange with its parent (epoch K):
//! handshake, take listen sockets, tell the parent to drain, and later to terminate.
//!
//! Each request carries a fresh id and its reply must echo it; a reply of the wrong kind, a failed
//! status or an "unknown message" answer is a typed error. Calls block up to the client's timeout.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::manifest;
use crate::manifest::BatchAssembler;
use crate::negotiate;
use crate::pb::envelope::Body;
use crate::pb::{
    BatchAck, ConnectionsAck, ConnectionsBatch, DrainListeners, Envelope, GiveConnections, Hello,
    ListenSocketsRequest, ParentState, RollBack, SocketManifest, StatsRequest, StatsSnapshot,
    TakeConnections, Terminate,
};

/// A child's accepted session with its parent. Owns the connection; dropping it disconnects,
/// which the parent takes as the end of the session.
#[derive(Debug)]
pub struct Client {
    conn: Conn,
    next_id: u64,
    timeout: Duration,
    parent: ParentState,
}

// === impl Client ===

impl Client {
    /// Sends `hello` on `conn` and waits up to `timeout` for the parent's answer. A refusal
    /// (version or epoch mismatch) is [`Error::Refused`] with the parent's explanation.
    /// `timeout` also bounds every later call on this client.
    pub fn handshake(mut conn: Conn, hello: Hello, timeout: Duration) -> Result<Self> {
        let id = 1;
        conn.send(&Envelope::new(id, Body::Hello(hello)), &[], timeout)?;
        let (reply, fds) = conn.recv(timeout)?;
        expect_no_fds(&reply, fds)?;
        check_id(id, &reply)?;
        let parent = match reply.body {
            Some(Body::HelloReply(r)) => negotiate::check_reply(r)?,
            other => return Err(unexpected("hello_reply", other.as_ref())),
        };
        tracing::info!(
            parent.epoch = parent.epoch,
            parent.pid = parent.pid,
            "hot restart handshake accepted"
        );
        Ok(Self {
            conn,
            next_id: id + 1,
            timeout,
            parent,
        })
    }

    /// The parent's state as it answered the handshake.
    pub fn parent(&self) -> &ParentState {
        &self.parent
    }

    /// Asks for listen sockets; returns each with its manifest entry, in the parent's order. Every
    /// batch is checked (count, order, manifest vs fds) and acknowledged before the next comes.
    pub fn request_listen_sockets(
        &mut self,
        request: ListenSocketsRequest,
    ) -> Result<Vec<(SocketManifest, OwnedFd)>> {
        const OP: &str = "take listen sockets";
        let id = self.send(Body::ListenSocketsRequest(request))?;
        let mut assembler = BatchAssembler::new();
        let mut out = Vec::new();
        loop {
            let (reply, fds) = self.conn.recv(self.timeout)?;
            check_id(id, &reply)?;
            let batch = match reply.body {
                Some(Body::ListenSocketsReply(batch)) => batch,
                other => {
                    drop(fds);
                    return Err(status_error(OP, "listen_sockets_reply", other));
                }
            };
            let last = assembler.accept(&batch, fds.len())?;
            out.extend(batch.sockets.into_iter().zip(fds));
            let ack = BatchAck {
                batch_index: batch.batch_index,
            };
            self.conn
                .send(&Envelope::new(id, Body::BatchAck(ack)), &[], self.timeout)?;
            if last {
                return Ok(out);
            }
        }
    }

    /// Tells the parent to stop accepting (it keeps serving its open connections). With
    /// `handover` the parent keeps the connections it could hand over open for
    /// [`Client::take_connections`]; with `tcp_proxy` as well its `tcp_proxy` connections
    /// (an older parent ignores it and drains those).
    pub fn drain_listeners(&mut self, handover: bool, tcp_proxy: bool) -> Result<()> {
        self.status_call(
            "tell the parent to drain",
            Body::DrainListeners(DrainListeners {
                handover_connections: handover,
                handover_tcp_proxy: handover && tcp_proxy,
            }),
        )
    }

    /// Asks for connections that have reached an idle point; the parent may wait up to `wait`
    /// (which must be shorter than this client's timeout) before answering with an empty batch.
    /// The fds are checked against the batch (one per HTTP/1 connection, two per tunnel). Every
    /// batch must be answered with [`Client::ack_connections`], even an empty one.
    pub fn take_connections(
        &mut self,
        max_fds: u32,
        wait: Duration,
    ) -> Result<(ConnectionsBatch, Vec<OwnedFd>)> {
        const OP: &str = "take connections";
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let id = self.send(Body::TakeConnections(TakeConnections { max_fds, wait_ms }))?;
        let (reply, fds) = self.conn.recv(self.timeout + wait)?;
        check_id(id, &reply)?;
        let batch = match reply.body {
            Some(Body::ConnectionsBatch(b)) => b,
            other => {
                drop(fds);
                return Err(status_error(OP, "connections_batch", other));
            }
        };
        let expected = manifest::connection_fds(&batch)?;
        if expected != fds.len() || fds.len() > max_fds as usize {
            return Err(Error::BadBatch {
                reason: format!(
                    "{} connections need {expected} fds, the frame carried {} (at most {max_fds} \
                     asked)",
                    batch.connections.len(),
                    fds.len()
                ),
            });
        }
        Ok((batch, fds))
    }

    /// Tells the parent which connections of the last batch this generation took.
    pub fn ack_connections(&mut self, taken: Vec<bool>) -> Result<()> {
        self.status_call(
            "acknowledge connections",
            Body::ConnectionsAck(ConnectionsAck { taken }),
        )
    }

    /// Tells the parent to exit.
    pub fn terminate(&mut self) -> Result<()> {
        self.status_call(
            "tell the parent to terminate",
            Body::Terminate(Terminate {}),
        )
    }

    /// Asks the parent (still in its rollback window) to serve again, as this generation gives
    /// way; `reason` goes to its log. `Ok` once it accepts again.
    pub fn roll_back(&mut self, reason: &str) -> Result<()> {
        self.status_call(
            "ask the parent to serve again",
            Body::RollBack(RollBack {
                reason: reason.to_owned(),
            }),
        )
    }

    /// After a [`Client::roll_back`] the parent accepted: hands `batch`'s connections (their
    /// `fds` in order, as [`Client::take_connections`] receives them) back to the parent. Which
    /// it took (`taken[i]` for `connections[i]`): this generation closes its copies of those.
    pub fn give_connections(
        &mut self,
        batch: ConnectionsBatch,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Vec<bool>> {
        const OP: &str = "hand connections back to the parent";
        let expected = manifest::connection_fds(&batch)?;
        if expected != fds.len() {
            return Err(Error::BadBatch {
                reason: format!(
                    "{} connections need {expected} fds, {} given",
                    batch.connections.len(),
                    fds.len()
                ),
            });
        }
        let count = batch.connections.len();
        let id = self.next_id;
        self.next_id += 1;
        let body = Body::GiveConnections(GiveConnections { batch: Some(batch) });
        self.conn
            .send(&Envelope::new(id, body), fds, self.timeout)?;
        match self.recv_reply(id)? {
            Some(Body::ConnectionsAck(ack)) if ack.taken.len() == count => Ok(ack.taken),
            Some(Body::ConnectionsAck(ack)) => Err(Error::BadBatch {
                reason: format!("{} answers for {count} connections", ack.taken.len()),
            }),
            other => Err(status_error(OP, "connections_ack", other)),
        }
    }

    /// Asks for the parent's stats.
    pub fn stats(&mut self) -> Result<StatsSnapshot> {
        const OP: &str = "read the parent's stats";
        let id = self.send(Body::StatsRequest(StatsRequest {}))?;
        match self.recv_reply(id)? {
            Some(Body::StatsSnapshot(s)) => Ok(s),
            other => Err(status_error(OP, "stats_snapshot", other)),
        }
    }

    /// Sends an arbitrary request and returns the reply with its fds (after checking its id), for
    /// requests this client has no helper for.
    pub fn call(&mut self, body: Body) -> Result<(Envelope, Vec<OwnedFd>)> {
        let id = self.send(body)?;
        let (reply, fds) = self.conn.recv(self.timeout)?;
        check_id(id, &reply)?;
        Ok((reply, fds))
    }

    /// Gives back the connection (e.g. to keep it open as a liveness link).
    pub fn into_conn(self) -> Conn {
        self.conn
    }

    fn send(&mut self, body: Body) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.conn
            .send(&Envelope::new(id, body), &[], self.timeout)?;
        Ok(id)
    }

    fn recv_reply(&mut self, id: u64) -> Result<Option<Body>> {
        let (reply, fds) = self.conn.recv(self.timeout)?;
        expect_no_fds(&reply, fds)?;
        check_id(id, &reply)?;
        Ok(reply.body)
    }

    fn status_call(&mut self, op: &'static str, body: Body) -> Result<()> {
        let id = self.send(body)?;
        match self.recv_reply(id)? {
            Some(Body::StatusReply(s)) if s.ok => Ok(()),
            other => Err(status_error(op, "status_reply", other)),
        }
    }
}

impl AsFd for Client {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.conn.as_fd()
    }
}

fn check_id(expected: u64, reply: &Envelope) -> Result<()> {
    if reply.id != expected {
        return Err(Error::IdMismatch {
            expected,
            got: reply.id,
        });
    }
    Ok(())
}

fn expect_no_fds(reply: &Envelope, fds: Vec<OwnedFd>) -> Result<()> {
    if !fds.is_empty() {
        return Err(Error::UnexpectedMessage {
            expected: "a reply without fds",
            got: reply.kind(),
        });
    }
    Ok(())
}

fn unexpected(expected: &'static str, got: Option<&Body>) -> Error {
    Error::UnexpectedMessage {
        expected,
        got: got.map_or("none", Body::kind),
    }
}

/// The error for a reply that is not the expected success: the parent's failure text, its
/// "unknown message" answer, or a reply of the wrong kind.
fn status_error(op: &'static str, expected: &'static str, got: Option<Body>) -> Error {
    match got {
        Some(Body::StatusReply(s)) if !s.ok => Error::Remote { op, error: s.error },
        Some(Body::UnknownMessage(u)) => Error::NotSupported {
            op,
            detail: u.detail,
        },
        other => unexpected(expected, other.as_ref()),
    }
}
