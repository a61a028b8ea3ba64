//! drain: how a generation stops taking traffic, and how it knows it has stopped.
//!
//! The crate owns the *decisions* of a drain and nothing else:
//!
//! - **when each connection is asked to close**, with Envoy's two strategies: [`Strategy::Gradual`]
//!   (the chance that a connection asked at a natural point — e.g. about to write a response —
//!   must close rises linearly from 0 to 1 over the drain time, and each connection also gets
//!   its own "close by" moment spread uniformly over the window, so idle connections are closed
//!   spread out too) and [`Strategy::Immediate`] (every connection at once; a drain time of
//!   zero behaves the same);
//! - **when listeners stop accepting**, a signal distinct from "close connections" (Envoy's
//!   `/drain_listeners`, with `?graceful` and `?inboundonly`);
//! - **the health-check-failed state** (Envoy's `/healthcheck/fail`): listeners keep accepting
//!   and every "should I close now?" answers yes;
//! - **when the generation is done**: every connection, listener task and other piece of work
//!   holds a `#[must_use]` release token, and [`Signal::released`] completes once every token is
//!   gone; the generation's [`Phase`] is broadcast on a tokio `watch` so tests and the admin
//!   interface wait on phases, never on sleeps.
//!
//! The token shape: a [`Signal`] held by the owner of a generation (`proxy-bin`), a [`Control`]
//! handle for whoever else may start a drain (the admin interface), a [`Watch`] cloned into each
//! task (accept loops, background tasks), a [`Conn`] per downstream connection, and [`Release`]
//! tokens for work that outlives its connection (tunnels, long transfers).
//!
//! ```
//! use std::time::Duration;
//! use drain::{Config, Direction, Scope, Strategy};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let (signal, watch) = drain::new(Config::new(Strategy::Gradual, Duration::from_secs(600)));
//! // Per accepted connection (the accept loop holds `watch`):
//! let mut conn = watch.connection(Direction::Unspecified);
//! let service_side = conn.clone(); // asks `drain_close()` before each response
//! let task = tokio::spawn(async move {
//!     // ... select! this against the connection's own future ...
//!     conn.close_requested().await; // then: graceful close, and drop `conn` when done
//! });
//! drop(watch);
//!
//! // The owner, on a restart or SIGTERM:
//! let control = signal.control();
//! control.stop_accepting(Scope::All);
//! control.start_drain(Scope::All);
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
//! if service_side.drain_close() {
//!     // HTTP/1: this response carries `Connection: close`.
//! }
//! drop(service_side);
//! task.await.unwrap();
//! assert_eq!(signal.wait_released(deadline).await, drain::Outcome::Released);
//! # }
//! ```
//!
//! It must never touch a socket, speak a protocol (no HTTP, no `Connection: close`, no GOAWAY:
//! those live in `proxy-core`, which asks this crate what to do), spawn a task, read a signal or
//! sleep for a fixed time: every phase ends on an event or a deadline. Time is tokio's, so
//! everything is deterministic under `tokio::time::pause()`, and the randomness comes from a
//! seedable [`Config::seed`].
#![forbid(unsafe_code)]

mod conn;
mod phase;
mod shared;
mod signal;
mod watch;

use std::sync::Arc;
use std::time::Duration;

pub use conn::Conn;
pub use phase::{Counts, Phase};
pub use signal::{Control, Outcome, Signal};
pub use watch::{Release, Watch};

use shared::Shared;

/// Envoy's `--drain-strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The chance that a connection is asked to close rises linearly from 0 at the start of the
    /// drain to 1 at its end (`--drain-time-s` later).
    Gradual,
    /// Every connection is asked to close as soon as the drain starts.
    Immediate,
}

/// How a generation drains: fixed when the [`Signal`] is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--drain-strategy`.
    pub strategy: Strategy,
    /// `--drain-time-s`: the window over which connections are asked to close. Zero asks every
    /// connection at once, whatever the strategy.
    pub drain_time: Duration,
    /// Seed for the draws of the gradual strategy; `None` seeds from the process's entropy.
    /// Tests set it so that runs are reproducible.
    pub seed: Option<u64>,
}

/// Which listeners a drain or a stop applies to (Envoy's `/drain_listeners?inboundonly`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Only listeners whose `traffic_direction` is `INBOUND`, and their connections.
    InboundOnly,
    /// Every listener and connection.
    All,
}

/// A listener's `traffic_direction`, which decides whether an inbound-only drain applies to it
/// and to its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    #[default]
    Unspecified,
    Inbound,
    Outbound,
}

/// Create a drain for one generation: the owner's [`Signal`] and a first [`Watch`].
pub fn new(config: Config) -> (Signal, Watch) {
    let shared = Arc::new(Shared::new(config));
    let watch = Watch::new(shared.clone());
    (Signal::new(shared), watch)
}

/// Create a drain that asks every connection to close at once (drain time zero): the behaviour
/// of this crate before strategies existed, kept for callers that need no window (e.g. the
/// admin listener).
pub fn channel() -> (Signal, Watch) {
    new(Config::immediate())
}

// === impl Config ===

impl Config {
    /// A drain with the given strategy and window, seeded from the process's entropy.
    pub fn new(strategy: Strategy, drain_time: Duration) -> Self {
        Self {
            strategy,
            drain_time,
            seed: None,
        }
    }

    /// Every connection asked at once.
    pub fn immediate() -> Self {
        Self::new(Strategy::Immediate, Duration::ZERO)
    }

    /// The same configuration with reproducible draws.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

// === impl Scope ===

impl Scope {
    /// Whether a drain or stop of this scope applies to a listener with `direction`.
    pub fn applies_to(self, direction: Direction) -> bool {
        match self {
            Scope::All => true,
            Scope::InboundOnly => direction == Direction::Inbound,
        }
    }

    fn index(self) -> usize {
        match self {
            Scope::InboundOnly => 0,
            Scope::All => 1,
        }
    }

    const EACH: [Scope; 2] = [Scope::InboundOnly, Scope::All];
}

#[cfg(test)]
mod tests;
