//! The child side of a hot restart: find the parent, negotiate, take the listen sockets this
//! generation keeps, and — once serving — its live connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use hotrestart_rpc::{negotiate, Client};

use super::plan::{NoParent, Place, RestartPlan};
use super::{wire, Inherited, RPC_TIMEOUT};

/// As a child: find the parent of `place` and take the listen sockets at `wanted`. Epoch 0
/// (or `--skip-hot-restart-on-no-parent` with no parent, or no hot restart at all) starts the
/// chain cold.
pub fn take_over(
    plan: &RestartPlan,
    place: Place,
    wanted: &[SocketAddr],
) -> anyhow::Result<Inherited> {
    let cold = || Inherited {
        sockets: HashMap::new(),
        chain_started: SystemTime::now(),
        parent: None,
    };
    let Some(parent_epoch) = place.epoch.checked_sub(1) else {
        return Ok(cold());
    };
    let Some(parent_endpoint) = plan.endpoint(place.base_id, parent_epoch) else {
        return Ok(cold());
    };
    let conn = match hotrestart_rpc::connect(&parent_endpoint, RPC_TIMEOUT) {
        Ok(c) => c,
        Err(e) if e.is_no_peer() => {
            if plan.no_parent() == NoParent::StartCold {
                tracing::warn!(
                    epoch = place.epoch,
                    "no parent to take over from: starting cold (--skip-hot-restart-on-no-parent)"
                );
                return Ok(cold());
            }
            bail!(
                "could not find a running epoch {parent_epoch} for --base-id {} (is it running? \
                 use --restart-epoch 0 to start a new chain, or --skip-hot-restart-on-no-parent): {e}",
                place.base_id
            );
        }
        Err(e) => return Err(e).context("could not connect to the parent generation"),
    };
    let hello = negotiate::hello(&plan.hot_restart_version(), place.epoch, std::process::id());
    let mut client = Client::handshake(conn, hello, RPC_TIMEOUT)
        .context("the parent generation refused the hot restart")?;
    let parent = client.parent().clone();
    let received = client
        .request_listen_sockets(wire::Wanted::request(wanted.iter().copied()))
        .context("could not take the listen sockets from the parent generation")?;
    let sockets = received
        .into_iter()
        .map(|(manifest, fd)| wire::inherited(&manifest, fd))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    tracing::info!(
        parent_pid = parent.pid,
        parent_epoch = parent.epoch,
        inherited = sockets.len(),
        "took over listen sockets from the parent generation"
    );
    Ok(Inherited {
        sockets,
        chain_started: UNIX_EPOCH + Duration::from_millis(parent.chain_start_unix_ms),
        parent: Some(client),
    })
}

/// How long a child waits for its parent to have a connection ready before asking again.
const TAKE_WAIT: Duration = Duration::from_millis(500);

/// As a child that serves: take the parent's live connections batch by batch and serve them
/// here, until the parent has none left, refuses, or goes away. Runs on a blocking thread; the
/// client is shared with the three-generation rule, which may take it (ending this loop).
pub fn receive_connections(
    parent: &super::ParentLink,
    adopter: &proxy_core::worker::Adopter,
) -> (usize, usize) {
    let (mut moved, mut refused) = (0, 0);
    loop {
        let mut guard = parent.client();
        let Some(client) = guard.as_mut() else { break };
        let (batch, fds) = match client.take_connections(max_fds(), TAKE_WAIT) {
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
            let conn = wire::arriving_connection(c, socks).filter(|a| adopter.accepts(a));
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

/// After this generation gave way (a rollback): offer `handover`'s connections as they reach
/// an idle point, batch by batch, back to the previous generation over `link` until none is
/// open or `deadline`: (given, taken). Each is the previous generation's or stays here.
pub fn hand_back(
    handover: &proxy_core::handover::Handover,
    link: &super::Grandparent,
    deadline: std::time::Instant,
) -> (usize, usize) {
    let (mut given, mut taken) = (0, 0);
    while std::time::Instant::now() < deadline && handover.open() > 0 {
        let offers = handover.take(hotrestart_rpc::frame::MAX_FDS_PER_FRAME, GIVE_WAIT);
        if offers.is_empty() {
            continue;
        }
        let batch = hotrestart_rpc::ConnectionsBatch {
            connections: offers
                .iter()
                .map(|o| wire::moved_connection(&o.conn))
                .collect(),
            more: true,
            still_open: handover.open() as u64,
        };
        let answer = {
            let fds: Vec<_> = offers
                .iter()
                .flat_map(|o| o.conn.fds.iter().map(std::os::fd::AsFd::as_fd))
                .collect();
            let mut client = link.client();
            match client.as_mut() {
                Some(c) => c.give_connections(batch, &fds),
                None => return (given, taken),
            }
        };
        given += offers.len();
        match answer {
            Ok(yes) => {
                for (offer, t) in offers.into_iter().zip(yes) {
                    taken += usize::from(t);
                    offer.settle(t);
                }
            }
            Err(e) => {
                // A refusal took none: keep them. Otherwise the previous generation may hold
                // some: close ours rather than serve a socket twice.
                let refused = matches!(
                    e,
                    hotrestart_rpc::Error::Remote { .. }
                        | hotrestart_rpc::Error::NotSupported { .. }
                );
                tracing::warn!(error = %e, "could not hand connections back");
                for offer in offers {
                    offer.settle(!refused);
                }
                return (given, taken);
            }
        }
    }
    (given, taken)
}

/// How long one hand-back batch waits for a connection to reach an idle point.
const GIVE_WAIT: Duration = Duration::from_millis(100);

/// After a failed exchange (not a plain "no" from the parent) the session's state is unknown:
/// disconnect, so the parent takes back whatever it had offered and drains it as usual.
fn end_session_on_failure(client: &mut Option<Client>, e: &hotrestart_rpc::Error) {
    use hotrestart_rpc::Error;
    if !matches!(e, Error::Remote { .. } | Error::NotSupported { .. }) {
        drop(client.take());
    }
}

/// Fault injection for tests of a generation that dies between taking its parent's listen
/// sockets and serving: it holds this long there.
const HOLD_ENV: &str = "BATON_TEST_HOLD_AFTER_SOCKETS_MS";

/// Holds for [`HOLD_ENV`] (tests only: unset, nothing happens).
pub fn hold_after_taking_sockets() {
    let Some(ms) = std::env::var(HOLD_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    tracing::warn!(
        hold_ms = ms,
        "holding after taking the listen sockets ({HOLD_ENV}, for tests)"
    );
    std::thread::sleep(Duration::from_millis(ms));
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

/// Fault injection for tests of a slow hand-over: the child asks for batches of at most this
/// many fds (so a few connections take several batches).
const MAX_FDS_ENV: &str = "BATON_HANDOVER_MAX_FDS";

fn max_fds() -> u32 {
    let most = hotrestart_rpc::frame::MAX_FDS_PER_FRAME as u32;
    std::env::var(MAX_FDS_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(most, |n| n.clamp(2, most))
}
