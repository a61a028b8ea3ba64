//! The hot restart sequence, both sides of it.
//!
//! A child (epoch K+1) has already loaded its configuration and built its data plane when it
//! first touches its parent (epoch K): it connects to K's restart socket, negotiates versions,
//! takes the listen sockets whose addresses it keeps (the same kernel sockets, so nothing queued
//! is lost), binds the rest fresh, starts serving, and only then tells K to drain. Anything that
//! fails before that last step leaves K exactly as it was: K has only handed out duplicates of
//! its sockets.
//!
//! - [`plan`]: the restart options, decided once from the command line;
//! - [`child`]: taking over from the parent, then receiving its live connections;
//! - [`parent`]: answering this generation's own child, on a thread of its own;
//! - [`successor`]: watching that child through the rollback window (a pidfd);
//! - `wire`: the RPC messages' addresses, parsed once where they arrive.

pub mod child;
pub mod parent;
pub mod plan;
#[allow(unsafe_code)]
pub mod successor;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hotrestart_rpc::{Client, Listener};
use parking_lot::{Condvar, Mutex, MutexGuard};

use plan::{Place, RestartPlan};

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
#[derive(Debug)]
pub enum ParentEvent {
    /// The child serves: stop accepting and drain.
    DrainListeners {
        /// The child, watched through the rollback window (`None` without one).
        successor: Option<successor::Successor>,
        /// The addresses whose listen sockets the child took.
        taken: Vec<SocketAddr>,
    },
    /// The child (or its successor) wants this generation gone now.
    Terminate,
    /// The child gives way (an operator rollback): serve again now if inside the rollback
    /// window, then answer (the child waits for it on the restart session).
    RollBack {
        reason: String,
        answer: RollbackAnswer,
    },
}

/// Where the main loop answers a [`ParentEvent::RollBack`]: `Ok` once it accepts again. The
/// parent side waits on the other end (bounded), then replies to the child.
pub type RollbackAnswer = std::sync::mpsc::SyncSender<Result<(), String>>;

/// One listen socket a generation owns (its workers hold duplicates).
#[derive(Debug)]
pub struct OwnedSocket {
    /// The configured address, the key a successor asks for.
    pub addr: SocketAddr,
    /// The listener's name (`admin` for the admin interface).
    pub name: String,
    pub socket: std::net::TcpListener,
}

/// The listen sockets a generation owns: kept for a successor to take over (the parent side
/// lends duplicates), and cleared when the generation stops accepting, so a socket nobody
/// accepts on refuses connections instead of queueing them.
pub type OwnedSockets = Arc<Mutex<Vec<OwnedSocket>>>;

/// Where the live connections a successor hands back after a rollback go: the workers of this
/// generation serving again (set by the rollback, emptied when that successor's session ends,
/// so the workers are not kept waiting for arrivals past it).
pub type Returning = Arc<Mutex<Option<proxy_core::worker::Adopter>>>;

/// This generation's own parent while it still drains, shared by the thread that receives its
/// connections and the parent side, which ends it when a grandchild arrives (so no more than
/// three generations ever overlap).
pub type Grandparent = Arc<ParentLink>;

/// The link to this generation's parent once it drains (see [`Grandparent`]).
#[derive(Debug, Default)]
pub struct ParentLink {
    /// `None` once ended or never had. Held by the receiving thread for each batch (take and
    /// acknowledge), so the parent is never ended between the two.
    client: Mutex<Option<Client>>,
    /// True while the parent's live connections are being received.
    receiving: Mutex<bool>,
    /// Signalled when receiving ends.
    received: Condvar,
}

// === impl ParentLink ===

impl ParentLink {
    /// Keep the link to the draining parent; `receiving` when its live connections come next
    /// (until [`ParentLink::done_receiving`]).
    pub fn keep(&self, client: Client, receiving: bool) {
        *self.receiving.lock() = receiving;
        *self.client.lock() = Some(client);
    }

    /// The parent's client, for one exchange; `None` once ended.
    pub fn client(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock()
    }

    /// Nothing more comes from the parent (it had no more, refused, or went away).
    pub fn done_receiving(&self) {
        *self.receiving.lock() = false;
        self.received.notify_all();
    }

    /// A grandchild arrives: end the parent (three-generation rule), but first let it finish
    /// handing its live connections over (at most `within`), so that a connection stopped at an
    /// idle point for this generation is not closed with the parent. `None` when there is no
    /// parent left to end.
    pub fn end(&self, within: Duration) -> Option<Result<(), hotrestart_rpc::Error>> {
        let deadline = std::time::Instant::now() + within;
        let mut receiving = self.receiving.lock();
        while *receiving {
            if self
                .received
                .wait_until(&mut receiving, deadline)
                .timed_out()
            {
                tracing::warn!(
                    waited_ms = within.as_millis(),
                    "the draining generation is still handing connections over; ending it anyway"
                );
                break;
            }
        }
        drop(receiving);
        let mut old = self.client.lock().take()?;
        Some(old.terminate())
    }
}

/// What the parent knows of its upstream hosts, from its restart state.
pub fn inherited_health(parent: &Client) -> Vec<proxy_core::cluster::HostHealth> {
    wire::inherited_health(parent.parent())
}

/// Bind this generation's restart socket (before serving, so a clash fails the start); `None`
/// without hot restart.
pub fn bind_restart_socket(plan: &RestartPlan, place: Place) -> anyhow::Result<Option<Listener>> {
    let Some(ep) = plan.endpoint(place.base_id, place.epoch) else {
        return Ok(None);
    };
    let bound = if plan.replaces_parent_socket() {
        // The parent still listens on the file: bind beside it and rename over it.
        Listener::bind_replacing(&ep)
    } else {
        Listener::bind(&ep)
    };
    let listener = bound.with_context(|| {
        format!(
            "could not bind the hot restart socket for --base-id {} epoch {} (is another \
             Baton using this base id?)",
            place.base_id, place.epoch
        )
    })?;
    Ok(Some(listener))
}

/// This generation's epoch: the one the command line gives, or with `--hot-restart-file` (no
/// `--restart-epoch`) one past the newest live generation attached to the chain's stats region,
/// or 0 when none is (a stale file left by a crashed chain is not trusted).
pub fn epoch(plan: &RestartPlan) -> u32 {
    if let Some(epoch) = plan.given_epoch() {
        return epoch;
    }
    plan.stats_backing(plan.requested_base_id())
        .and_then(|backing| shm_stats::RegionView::open(&backing).ok())
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
