//! The stats store of a generation: the chain's shared region for its restart plan, or
//! process memory without hot restart.

use std::time::Duration;

use anyhow::Context as _;
use shm_stats::{OpenMode, Region, RegionOptions, Store};

use crate::restart::plan::{BaseId, NoParent, Place, RestartPlan};

/// Envoy's gauges that describe one process ("never import" in Envoy's hot restart): during a
/// restart they show the newest generation's value, not the sum of both.
const NEWEST_GENERATION_GAUGES: &[&str] = &[
    "server.uptime",
    "server.live",
    "server.state",
    "server.concurrency",
    "server.hot_restart_epoch",
    "server.hot_restart_generation",
    "server.parent_connections",
    "server.version",
];

/// The stats store of generation `epoch` and its place in the chain: the chain's shared region
/// (created by epoch 0, attached to by later epochs), sized by `--max-stats` and
/// `--max-obj-name-len`.
///
/// With `--disable-hot-restart` the stats stay in process memory, as Envoy's did (its
/// shared-memory stats were part of hot restart): such an instance occupies no base id, so many
/// can run on one host without `--base-id`, and `baton stats` cannot see it.
pub(super) fn open_store(plan: &RestartPlan, epoch: u32) -> anyhow::Result<(Store, Place)> {
    let Some(chain) = plan.chain() else {
        let place = Place {
            epoch,
            base_id: plan.requested_base_id(),
        };
        return Ok((Store::new(), place));
    };
    let region_opts = |base_id: u32, mode: OpenMode| RegionOptions {
        // A plan with a chain always has a backing.
        backing: plan
            .stats_backing(base_id)
            .unwrap_or_else(|| shm_stats::Backing::for_base_id(base_id)),
        base_id,
        epoch,
        mode,
        max_stats: chain.max_stats,
        max_obj_name_len: chain.max_obj_name_len,
        lock_timeout: Duration::from_millis(50),
        attach_timeout: Duration::from_secs(5),
    };
    let (region, base_id) = match chain.base_id {
        // The CLI allows this only with epoch 0. A base id taken between the look-up and the
        // create is refused by the create: try the next one.
        BaseId::Dynamic { from } => {
            let mut next = from;
            loop {
                let id = shm_stats::pick_free_base_id(next, next.saturating_add(10_000))?;
                match Region::open(region_opts(id, OpenMode::Create)) {
                    Ok(r) => break (r, id),
                    Err(shm_stats::Error::ChainLive { .. }) if id < u32::MAX => next = id + 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        BaseId::Fixed(id) if epoch == 0 => (Region::open(region_opts(id, OpenMode::Create))?, id),
        BaseId::Fixed(id) => match Region::open(region_opts(id, OpenMode::Attach)) {
            Err(shm_stats::Error::NoRegion { .. }) if chain.no_parent == NoParent::StartCold => {
                (Region::open(region_opts(id, OpenMode::Create))?, id)
            }
            other => (other?, id),
        },
    };
    if let Some(path) = &chain.base_id_path {
        std::fs::write(path, base_id.to_string())
            .with_context(|| format!("could not write the base id to {}", path.display()))?;
    }
    tracing::info!(
        region = region.path(),
        base_id,
        epoch,
        "stats in the shared region"
    );
    // With --use-dynamic-base-id the restart socket is named from the chosen id too, so that a
    // later epoch given `--base-id <chosen>` finds this generation.
    let place = Place { epoch, base_id };
    Ok((Store::with_region(region, NEWEST_GENERATION_GAUGES), place))
}
