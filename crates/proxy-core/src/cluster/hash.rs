//! Consistent-hashing tables, built as Envoy 1.40 builds them so that a key goes to the same
//! host as in Envoy: a ketama ring (`RING_HASH`) and a Maglev lookup table (`MAGLEV`), over a
//! priority level's routable hosts (the healthy ones, or every one in panic), each host
//! weighted by its share of the level's weight.
//!
//! A table is built once per host-set snapshot (when membership or health changes) and shared
//! by every worker; a pick is a binary search (ring) or one index (Maglev), with no lock and no
//! allocation.

use std::sync::Arc;

use shm_stats::{Gauge, Store};
use xxhash_rust::xxh64::xxh64;

use super::Host;
use crate::config::{HashKey, LbPolicy, Maglev, RingHash};

/// A level's table, or none for the other policies.
#[derive(Debug)]
pub enum HashTable {
    Ring(Ring),
    Maglev(MaglevTable),
}

/// Ring entries sorted by hash, each the index of its host in `hosts`.
#[derive(Debug)]
pub struct Ring {
    entries: Vec<(u64, u32)>,
    hosts: Vec<Arc<Host>>,
    /// The ring size the weights asked for (Envoy's `ring_hash_lb.size`).
    size: u64,
    /// The fewest and most entries a host got.
    per_host: (u64, u64),
}

/// `table_size` slots, each the index of its host in `hosts`.
#[derive(Debug)]
pub struct MaglevTable {
    slots: Vec<u32>,
    hosts: Vec<Arc<Host>>,
    /// The fewest and most slots a host got.
    per_host: (u64, u64),
}

/// Envoy's gauges of the last ring or table built: `cluster.<name>.ring_hash_lb.{size,
/// min_hashes_per_host,max_hashes_per_host}` or `cluster.<name>.maglev_lb.{min,max}_entries_per_host`.
#[derive(Debug)]
pub enum HashLbStats {
    Ring {
        size: Gauge,
        min_hashes_per_host: Gauge,
        max_hashes_per_host: Gauge,
    },
    Maglev {
        min_entries_per_host: Gauge,
        max_entries_per_host: Gauge,
    },
}

// === impl HashLbStats ===

impl HashLbStats {
    /// The gauges of cluster `name` under `policy`; `None` for a policy that does not hash.
    pub fn new(store: &Store, name: &str, policy: &LbPolicy) -> Option<Self> {
        let g = |s: &str| store.gauge(&format!("cluster.{name}.{s}"));
        match policy {
            LbPolicy::RingHash(_) => Some(HashLbStats::Ring {
                size: g("ring_hash_lb.size"),
                min_hashes_per_host: g("ring_hash_lb.min_hashes_per_host"),
                max_hashes_per_host: g("ring_hash_lb.max_hashes_per_host"),
            }),
            LbPolicy::Maglev(_) => Some(HashLbStats::Maglev {
                min_entries_per_host: g("maglev_lb.min_entries_per_host"),
                max_entries_per_host: g("maglev_lb.max_entries_per_host"),
            }),
            _ => None,
        }
    }

    /// Show what `table` was built with (as Envoy, each build overwrites the last).
    pub fn record(&self, table: &HashTable) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match (self, table) {
            (
                HashLbStats::Ring {
                    size,
                    min_hashes_per_host,
                    max_hashes_per_host,
                },
                HashTable::Ring(r),
            ) => {
                size.set(clamp(r.size));
                min_hashes_per_host.set(clamp(r.per_host.0));
                max_hashes_per_host.set(clamp(r.per_host.1));
            }
            (
                HashLbStats::Maglev {
                    min_entries_per_host,
                    max_entries_per_host,
                },
                HashTable::Maglev(m),
            ) => {
                min_entries_per_host.set(clamp(m.per_host.0));
                max_entries_per_host.set(clamp(m.per_host.1));
            }
            _ => {}
        }
    }
}

// === impl HashTable ===

impl HashTable {
    /// The table `policy` asks for over `hosts` (in their order); `None` for a policy that
    /// does not hash, or no host.
    pub fn build(policy: &LbPolicy, hosts: &[Arc<Host>]) -> Option<Self> {
        if hosts.is_empty() {
            return None;
        }
        match policy {
            LbPolicy::RingHash(c) => Some(HashTable::Ring(Ring::new(c, hosts))),
            LbPolicy::Maglev(c) => Some(HashTable::Maglev(MaglevTable::new(c, hosts))),
            _ => None,
        }
    }

    /// The host `hash` falls on.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<&Arc<Host>> {
        match self {
            HashTable::Ring(r) => r.pick(hash),
            HashTable::Maglev(m) => m.pick(hash),
        }
    }
}

/// Each host's weight over the total (Envoy's normalized host weights, without locality
/// weights), with the smallest and largest.
fn normalized(hosts: &[Arc<Host>]) -> (Vec<f64>, f64, f64) {
    let sum: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
    let mut min = 1.0f64;
    let mut max = 0.0f64;
    let weights = hosts
        .iter()
        .map(|h| {
            let w = f64::from(h.weight) / sum as f64;
            min = min.min(w);
            max = max.max(w);
            w
        })
        .collect();
    (weights, min, max)
}

/// What a host is hashed as: its `envoy.lb` `hash_key`, else its address or its name.
fn key_of(host: &Host, key: HashKey) -> std::borrow::Cow<'_, str> {
    if let Some(k) = &host.hash_key {
        return k.as_str().into();
    }
    match key {
        HashKey::Address => host.addr.to_string().into(),
        HashKey::Hostname => host.hostname.as_str().into(),
    }
}

// === impl Ring ===

impl Ring {
    fn new(c: &RingHash, hosts: &[Arc<Host>]) -> Self {
        let (weights, min_w, _) = normalized(hosts);
        // The lightest host gets a whole number of entries, within the maximum ring size.
        let scale =
            ((min_w * c.minimum_ring_size as f64).ceil() / min_w).min(c.maximum_ring_size as f64);
        let size = scale.ceil() as u64;
        let mut entries = Vec::with_capacity(size as usize);
        let mut per_host = (size, 0u64);
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        let mut buf = String::new();
        for (idx, (host, w)) in hosts.iter().zip(&weights).enumerate() {
            buf.clear();
            buf.push_str(&key_of(host, c.key));
            buf.push('_');
            let stem = buf.len();
            target += scale * w;
            let mut i = 0u64;
            while current < target {
                buf.truncate(stem);
                buf.push_str(&i.to_string());
                let h = if c.murmur {
                    murmur2_64(buf.as_bytes(), MURMUR_SEED)
                } else {
                    xxh64(buf.as_bytes(), 0)
                };
                entries.push((h, idx as u32));
                i += 1;
                current += 1.0;
            }
            per_host = (per_host.0.min(i), per_host.1.max(i));
        }
        entries.sort_unstable_by_key(|e| e.0);
        Self {
            entries,
            hosts: hosts.to_vec(),
            size,
            per_host,
        }
    }

    /// The first entry at or after `h` on the ring, wrapping to the first. Envoy's ketama
    /// search finds the same entry (the first of equal hashes too): its range always holds
    /// the lowest index whose hash is at least `h`.
    #[inline]
    pub fn pick(&self, h: u64) -> Option<&Arc<Host>> {
        let (_, host) = self.entries.get(self.entry(h)?)?;
        self.hosts.get(*host as usize)
    }

    /// The index of the entry `h` falls on.
    #[inline]
    fn entry(&self, h: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let i = self.entries.partition_point(|e| e.0 < h);
        Some(if i == self.entries.len() { 0 } else { i })
    }
}

// === impl MaglevTable ===

impl MaglevTable {
    fn new(c: &Maglev, hosts: &[Arc<Host>]) -> Self {
        struct Entry {
            host: u32,
            offset: u64,
            skip: u64,
            weight: f64,
            target: f64,
            next: u64,
            count: u64,
        }
        let size = c.table_size;
        let (weights, _, max_w) = normalized(hosts);
        // Filled in the order of the hosts' keys, so the table does not depend on theirs.
        let mut keyed: Vec<(std::borrow::Cow<'_, str>, usize)> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (key_of(h, c.key), i))
            .collect();
        keyed.sort();
        let mut entries: Vec<Entry> = keyed
            .iter()
            .map(|(k, i)| Entry {
                host: *i as u32,
                offset: xxh64(k.as_bytes(), 0) % size,
                skip: xxh64(k.as_bytes(), 1) % (size - 1) + 1,
                weight: weights[*i],
                target: 0.0,
                next: 0,
                count: 0,
            })
            .collect();
        let mut slots = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        let mut iteration = 1u32;
        while filled < size {
            for e in entries.iter_mut() {
                if filled >= size {
                    break;
                }
                // A host of the largest weight takes a slot every round, one of a third of
                // it every third round.
                if f64::from(iteration) * e.weight < e.target {
                    continue;
                }
                e.target += max_w;
                let mut slot = (e.offset + e.skip * e.next) % size;
                while slots[slot as usize] != u32::MAX {
                    e.next += 1;
                    slot = (e.offset + e.skip * e.next) % size;
                }
                slots[slot as usize] = e.host;
                e.next += 1;
                e.count += 1;
                filled += 1;
            }
            iteration += 1;
        }
        let per_host = entries
            .iter()
            .fold((size, 0), |(lo, hi), e| (lo.min(e.count), hi.max(e.count)));
        Self {
            slots,
            hosts: hosts.to_vec(),
            per_host,
        }
    }

    #[inline]
    pub fn pick(&self, h: u64) -> Option<&Arc<Host>> {
        let slot = *self.slots.get((h % self.slots.len() as u64) as usize)?;
        self.hosts.get(slot as usize)
    }
}

/// libstdc++'s `std::hash<std::string>` seed, which Envoy's `MURMUR_HASH_2` ring uses.
const MURMUR_SEED: u64 = 0xc70f_6907;

/// MurmurHash2 64-bit as libstdc++'s `_Hash_bytes` computes it (Envoy's `murmurHash2`): whole
/// 8-byte words little-endian, then the tail bytes as one little-endian word.
pub fn murmur2_64(key: &[u8], seed: u64) -> u64 {
    const MUL: u64 = 0xc6a4_a793_5bd1_e995;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let mut hash = seed ^ (key.len() as u64).wrapping_mul(MUL);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let data = shift_mix(u64::from_le_bytes(b).wrapping_mul(MUL)).wrapping_mul(MUL);
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let data = tail
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}

/// Is `n` a prime (a Maglev table size must be)?
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    /// Envoy's ring search (ketama's), written as Envoy has it: the index picked for `h`.
    fn ketama(ring: &[u64], h: u64) -> usize {
        let (mut low, mut high) = (0i64, ring.len() as i64);
        loop {
            let mid = (low + high) / 2;
            if mid == ring.len() as i64 {
                return 0;
            }
            let val = ring[mid as usize];
            let before = if mid == 0 { 0 } else { ring[mid as usize - 1] };
            if h <= val && h > before {
                return mid as usize;
            }
            if val < h {
                low = mid + 1;
            } else {
                high = mid - 1;
            }
            if low > high {
                return 0;
            }
        }
    }

    /// [`super::Ring::entry`] on a ring of `hashes` (sorted).
    fn entry(hashes: &[u64], h: u64) -> usize {
        let ring = super::Ring {
            entries: hashes.iter().map(|e| (*e, 0)).collect(),
            hosts: Vec::new(),
            size: 0,
            per_host: (0, 0),
        };
        ring.entry(h).unwrap()
    }

    #[test]
    fn the_pick_is_ketamas() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in [1usize, 2, 3, 10, 1030] {
            let mut ring: Vec<u64> = (0..n).map(|_| rng.u64(..)).collect();
            // Equal hashes and the ends of the range too.
            if n > 2 {
                ring[1] = ring[0];
                ring[2] = u64::MAX;
            }
            ring.sort_unstable();
            let mut probes: Vec<u64> = vec![0, 1, u64::MAX];
            probes.extend(
                ring.iter()
                    .flat_map(|e| [*e, e.wrapping_sub(1), e.wrapping_add(1)]),
            );
            probes.extend((0..2000).map(|_| rng.u64(..)));
            for h in probes {
                assert_eq!(entry(&ring, h), ketama(&ring, h), "n={n} h={h}");
            }
        }
    }
}
