//! The generation-level phase of a drain, broadcast on a tokio `watch`, and the counters the
//! owner and the admin interface read.

use tokio::time::Instant;

use crate::Scope;

/// Where a generation is in its drain. Only ever moves forward: `Serving`, then `Draining`
/// (whose scope may widen from inbound-only to all), then `Drained` or `Abandoned`
/// (`Abandoned` may still become `Drained` if the last token goes after the deadline).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No drain has started.
    Serving,
    /// Connections are being asked to close.
    Draining {
        /// The widest drain started so far.
        scope: Scope,
        /// When that drain started.
        started: Instant,
        /// When every connection in its scope will have been asked to close (`started` plus
        /// the drain time).
        deadline: Instant,
    },
    /// A drain started and every release token has since been dropped.
    Drained,
    /// The owner stopped waiting at its deadline with tokens still held
    /// ([`crate::Signal::wait_released`]).
    Abandoned {
        /// Release tokens still held at the deadline.
        remaining: u64,
    },
}

/// A snapshot of a drain's counters. Each field is read on its own (they are not one atomic
/// snapshot), which is all that stats and tests need.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections ([`crate::Conn`]) currently open.
    pub open: u64,
    /// Connections that have been asked to close since the drain was created, each counted
    /// once (whether asked by a drain or by a failed health check). Feeds
    /// `downstream_cx_drain_close`.
    pub asked_to_close: u64,
    /// Release tokens still held: open connections, [`crate::Watch`]es and [`crate::Release`]
    /// tokens. [`crate::Signal::released`] completes when this reaches zero.
    pub remaining: u64,
}

// === impl Phase ===

impl Phase {
    /// True once a drain has started (draining, drained or abandoned).
    pub fn is_draining(&self) -> bool {
        !matches!(self, Phase::Serving)
    }

    /// True once every token was released after a drain started.
    pub fn is_drained(&self) -> bool {
        matches!(self, Phase::Drained)
    }
}
