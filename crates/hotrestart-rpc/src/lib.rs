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
//! 3. `DrainListeners` → `StatusReply`, later `Terminate` → `StatusReply`.
//!
//! The core ([`frame`], [`negotiate`], [`manifest`], [`pb`]) is pure functions over bytes: no
//! sockets, no clock. [`Listener`], [`Conn`], [`connect`], [`Client`] and [`serve_one`] add
//! blocking IO with a timeout on every call; run them on a dedicated thread (or
//! `spawn_blocking`), never on a data-plane thread. Peers are authenticated with SO_PEERCRED (same
//! uid, or root).
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
pub use conn::{connect, peer_credentials, Conn, Listener, PeerCred};
pub use endpoint::{Endpoint, MAX_ABSTRACT_NAME};
pub use error::{Error, Result};
pub use parent::{serve, serve_one, ParentHandler, ServeExit, ServeOptions, SessionEnd};
pub use pb::envelope::Body;
pub use pb::{
    Envelope, Hello, HelloReply, ListenSocketsReply, ListenSocketsRequest, ParentState,
    RefusalReason, SocketManifest, SocketOptions, SocketType, StatsSnapshot, WantedSocket,
};

/// Version of the generation-to-generation protocol. A peer speaking another version is refused
/// with a clear message, never aborted.
pub const PROTOCOL_VERSION: u32 = 1;
