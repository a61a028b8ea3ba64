//! hotrestart-rpc: messages, framing, fd passing; no tokio runtime, no policy.
//!
//! One Baton generation (epoch K, the *parent*) listens on a restart socket; the next (epoch K+1,
//! the *child*) connects and drives the exchange:
//!
//! 1. `Hello` → `HelloReply`: protocol and hot restart versions and the epoch are checked
//!    ([`negotiate`]); a mismatch is a refusal with a reason, never an abort. The reply carries the
//!    parent's state (chain start, epoch, pid).
//! 2. `ListenSocketsRequest` → `ListenSocketsReply` batches of at most 253 fds (SCM_RIGHTS), each
//!    with a manifest entry per fd and acknowledged by the child before the next ([`manifest`]).
//! 3. `DrainListeners` → `StatusReply`; with `handover_connections`, then `TakeConnections` →
//!    `ConnectionsBatch` (live connections at an idle point, their sockets by SCM_RIGHTS) and
//!    `ConnectionsAck` → `StatusReply`, repeated until the parent has nothing left to hand over.
//! 4. `Terminate` → `StatusReply`; or, while the parent is inside its rollback window,
//!    `RollBack` → `StatusReply` (the parent serves again and the child gives way).
//!
//! The core ([`frame`], [`negotiate`], [`manifest`], [`pb`]) is pure functions over bytes: no
//! sockets, no clock. [`Listener`], [`Conn`], [`connect`], [`Client`] and [`serve_one`] add
//! blocking IO with a timeout on every call; run them on a dedicated thread (or
//! `spawn_blocking`), never on a data-plane thread. Peers are authenticated with SO_PEERCRED (same
//! uid, or root).
//!
//! # Example
//!
//! ```no_run
//! use std::os::fd::{AsFd, BorrowedFd};
//! use std::sync::atomic::AtomicBool;
//! use std::time::Duration;
//! use hotrestart_rpc::*;
//! use hotrestart_rpc::pb::DrainListeners;
//!
//! // Parent (epoch K), on its own thread.
//! struct Parent { sockets: Vec<(SocketManifest, std::net::TcpListener)> }
//! impl ParentHandler for Parent {
//!     fn state(&mut self) -> ParentState {
//!         ParentState { epoch: 0, pid: std::process::id(), ..Default::default() }
//!     }
//!     fn listen_sockets(&mut self, req: &ListenSocketsRequest)
//!         -> Result<Vec<(SocketManifest, BorrowedFd<'_>)>, String> {
//!         Ok(self.sockets.iter()
//!             .filter(|(m, _)| req.all || req.wanted.iter().any(|w| w.address == m.address))
//!             .map(|(m, l)| (m.clone(), l.as_fd()))
//!             .collect())
//!     }
//!     fn drain_listeners(&mut self, _: &DrainListeners) -> Result<(), String> { Ok(()) }
//!     fn terminate(&mut self) -> Result<(), String> { Ok(()) }
//! }
//! # fn main() -> Result<()> {
//! let listener = Listener::bind(&Endpoint::for_epoch(1, 0))?;
//! let stop = AtomicBool::new(false);
//! let mut parent = Parent { sockets: Vec::new() };
//! let _exit = serve(&listener, &mut parent, &ServeOptions::new("v1"), &stop);
//!
//! // Child (epoch K+1).
//! let timeout = Duration::from_secs(5);
//! let conn = connect(&Endpoint::for_epoch(1, 0), timeout)?;
//! let mut client = Client::handshake(conn, negotiate::hello("v1", 1, std::process::id()), timeout)?;
//! let sockets = client.request_listen_sockets(ListenSocketsRequest { wanted: vec![], all: true })?;
//! // ... start serving on `sockets` (manifest, OwnedFd) pairs, then:
//! client.drain_listeners(false, false)?;
//! # drop(sockets);
//! # Ok(())
//! # }
//! ```
//!
//! What this crate must never do: decide when a restart happens, bind data-plane sockets, start a
//! runtime, or know about HTTP. That is `proxy-bin`'s.
//!
//! `unsafe` is denied here and allowed in exactly one module, `io` (taking ownership of fds the
//! kernel passed with SCM_RIGHTS).
#![deny(unsafe_code)]

mod child;
mod conn;
mod endpoint;
mod error;
pub mod frame;
mod io;
pub mod manifest;
pub mod negotiate;
mod parent;
pub mod pb;

pub use child::Client;
pub use conn::{connect, peer_credentials, Conn, Listener, PeerCred, SocketFile};
pub use endpoint::{Endpoint, MAX_ABSTRACT_NAME};
pub use error::{Error, Result};
pub use parent::{
    serve, serve_one, ParentHandler, ServeExit, ServeOptions, SessionEnd, MAX_WAITING_PEERS,
};
pub use pb::envelope::Body;
pub use pb::{
    ChainIdentity, ConnectionKind, ConnectionsAck, ConnectionsBatch, Envelope, Hello, HelloReply,
    ListenSocketsReply, ListenSocketsRequest, MovedConnection, ParentState, RefusalReason,
    SocketManifest, SocketOptions, SocketType, StatsSnapshot, TakeConnections, WantedSocket,
};

/// Version of the generation-to-generation protocol. A peer speaking another version is refused
/// with a clear message, never aborted.
pub const PROTOCOL_VERSION: u32 = 1;
