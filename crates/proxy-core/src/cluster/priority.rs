//! Priority levels (`endpoints[].priority`) and how the load spreads over them, as Envoy 1.40
//! does: a level's health is `overprovisioning_factor` percent of its healthy share, capped at
//! 100; levels take load in order, each as much as its health allows of what is left (scaled up
//! when the levels' total health is under 100), the rounding rest going to the first level
//! with health. While the total is under 100, a level whose healthy share is under
//! `healthy_panic_threshold` is in panic (its hosts are all used); when every level is, the
//! load follows the levels' host counts instead.

use std::sync::Arc;

use super::Host;

type Hosts = Vec<Arc<Host>>;

/// One priority level of a host-set snapshot.
#[derive(Debug, Default)]
pub struct Level {
    /// The hosts to balance across: the healthy ones, or every host of the level in panic.
    pub routable: Vec<Arc<Host>>,
    /// Fewer hosts are healthy than `healthy_panic_threshold` asks for.
    pub panic: bool,
    /// The percent of requests this level takes (the levels' loads add up to 100).
    pub load: u32,
    /// RING_HASH's ring or MAGLEV's table over `routable` (for those policies only).
    pub table: Option<super::HashTable>,
}

/// One level's host counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counts {
    pub healthy: usize,
    pub total: usize,
}

/// The levels of `hosts` (levels 0 to the highest priority number, empty ones included).
pub(super) fn levels(hosts: &[Arc<Host>], opf: u32, panic_threshold: f64) -> Vec<Level> {
    let top = hosts.iter().map(|h| h.priority).max().unwrap_or(0) as usize;
    // Per level: every host, and the healthy ones.
    let mut by_level: Vec<(Hosts, Hosts)> = vec![Default::default(); top + 1];
    for h in hosts {
        let (all, healthy) = &mut by_level[h.priority as usize];
        all.push(h.clone());
        if h.health.load().is_healthy() {
            healthy.push(h.clone());
        }
    }
    let counts: Vec<Counts> = by_level
        .iter()
        .map(|(all, healthy)| Counts {
            healthy: healthy.len(),
            total: all.len(),
        })
        .collect();
    let spread = spread(&counts, opf, panic_threshold);
    by_level
        .into_iter()
        .zip(spread)
        .map(|((all, healthy), (load, panic))| Level {
            routable: if panic { all } else { healthy },
            panic,
            load,
            table: None,
        })
        .collect()
}

/// Each level's load and panic, from its host counts.
pub(super) fn spread(counts: &[Counts], opf: u32, panic_threshold: f64) -> Vec<(u32, bool)> {
    let health: Vec<u32> = counts
        .iter()
        .map(|c| {
            if c.total == 0 {
                return 0;
            }
            let h = u64::from(opf) * c.healthy as u64 / c.total as u64;
            h.min(100) as u32
        })
        .collect();
    let normalized = health.iter().sum::<u32>().min(100);
    let shares: Vec<u64> = health.iter().map(|h| u64::from(*h)).collect();
    let mut loads = distribute(&shares, u64::from(normalized));
    if panic_threshold == 0.0 && normalized == 0 {
        loads[0] = 100;
        return loads.into_iter().map(|l| (l, false)).collect();
    }
    let panics: Vec<bool> = counts
        .iter()
        .map(|c| {
            // An empty level counts as 0% healthy.
            let healthy = if c.total == 0 {
                0.0
            } else {
                c.healthy as f64 * 100.0 / c.total as f64
            };
            normalized < 100 && healthy < panic_threshold
        })
        .collect();
    if panics.iter().all(|p| *p) {
        let shares: Vec<u64> = counts.iter().map(|c| c.total as u64).collect();
        loads = distribute(&shares, shares.iter().sum());
        if shares.iter().all(|s| *s == 0) {
            loads[0] = 100;
        }
    }
    loads.into_iter().zip(panics).collect()
}

/// 100 percent over `shares` in order, each `share / scale` of 100 at most what is left, the
/// rounding rest to the first non-zero share; all 0 when `scale` is.
fn distribute(shares: &[u64], scale: u64) -> Vec<u32> {
    let mut loads = vec![0u32; shares.len()];
    let mut left = 100u32;
    for (load, share) in loads.iter_mut().zip(shares) {
        let Some(part) = (share * 100).checked_div(scale) else {
            return loads;
        };
        *load = left.min(u32::try_from(part).unwrap_or(u32::MAX));
        left -= *load;
    }
    if let Some(first) = shares.iter().position(|s| *s > 0) {
        loads[first] += left;
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(healthy: usize, total: usize) -> Counts {
        Counts { healthy, total }
    }

    #[test]
    fn one_level_takes_everything() {
        assert_eq!(spread(&[c(3, 3)], 140, 50.0), [(100, false)]);
        // Half healthy: not under the 50% threshold.
        assert_eq!(spread(&[c(1, 2)], 140, 50.0), [(100, false)]);
        assert_eq!(spread(&[c(0, 2)], 140, 50.0), [(100, true)]);
        assert_eq!(spread(&[c(0, 2)], 140, 0.0), [(100, false)]);
    }

    #[test]
    fn load_spills_to_the_next_level_by_overprovisioned_health() {
        // 1 of 2 healthy: 70% health, so 30% goes to priority 1.
        assert_eq!(
            spread(&[c(1, 2), c(2, 2)], 140, 50.0),
            [(70, false), (30, false)]
        );
        // 4 of 5 healthy: 112% capped at 100, nothing spills.
        assert_eq!(
            spread(&[c(4, 5), c(2, 2)], 140, 50.0),
            [(100, false), (0, false)]
        );
        // No overprovisioning: 4 of 5 is 80%.
        assert_eq!(
            spread(&[c(4, 5), c(2, 2)], 100, 50.0),
            [(80, false), (20, false)]
        );
        // Priority 0 down: all to priority 1, priority 0 in panic but not every level.
        assert_eq!(
            spread(&[c(0, 2), c(2, 2)], 140, 50.0),
            [(0, false), (100, false)]
        );
    }

    #[test]
    fn under_full_health_levels_scale_up_and_may_panic() {
        // Healths 28 and 70 (98 in all): loads 28 and 71 scaled, the rest to the first;
        // only the level under the threshold is in panic.
        assert_eq!(
            spread(&[c(1, 5), c(1, 2)], 140, 50.0),
            [(29, true), (71, false)]
        );
        // Total health 100 or more: nobody panics, however few a level has.
        assert_eq!(
            spread(&[c(1, 5), c(2, 3)], 140, 50.0),
            [(28, false), (72, false)]
        );
    }

    #[test]
    fn when_every_level_panics_the_load_follows_host_counts() {
        assert_eq!(
            spread(&[c(1, 5), c(1, 3)], 140, 50.0),
            [(63, true), (37, true)]
        );
        assert_eq!(spread(&[c(0, 0)], 140, 50.0), [(100, true)]);
    }
}
