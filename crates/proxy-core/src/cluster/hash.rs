//! Consistent-hashing tables, built as Envoy 1.40 builds them so that a key goes to the same
//! host as in Envoy: a ketama ring (`RING_HASH`) and a Maglev lookup table (`MAGLEV`), over a
//! priority level's routable hosts (the healthy ones, or every one in panic), each host
//! weighted by its share of the level's weight.
//!
//! A table is built once per host-set snapshot (when membership or health changes) and shared
//! by every worker; a pick is a binary search (ring) or one index (Maglev), with no lock and no
//! allocation.

use std::sync::Arc;

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
}

/// `table_size` slots, each the index of its host in `hosts`.
#[derive(Debug)]
pub struct MaglevTable {
    slots: Vec<u32>,
    hosts: Vec<Arc<Host>>,
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
        let mut entries = Vec::with_capacity(scale.ceil() as usize);
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
        }
        entries.sort_unstable_by_key(|e| e.0);
        Self {
            entries,
            hosts: hosts.to_vec(),
        }
    }

    /// The first entry at or after `h` on the ring (ketama's search, as Envoy has it).
    #[inline]
    pub fn pick(&self, h: u64) -> Option<&Arc<Host>> {
        let n = self.entries.len() as i64;
        if n == 0 {
            return None;
        }
        let (mut low, mut high) = (0i64, n);
        let mid = loop {
            let mid = (low + high) / 2;
            if mid == n {
                break 0;
            }
            let val = self.entries[mid as usize].0;
            let before = if mid == 0 {
                0
            } else {
                self.entries[mid as usize - 1].0
            };
            if h <= val && h > before {
                break mid;
            }
            if val < h {
                low = mid + 1;
            } else {
                high = mid - 1;
            }
            if low > high {
                break 0;
            }
        };
        self.hosts.get(self.entries[mid as usize].1 as usize)
    }

    /// Entries on the ring.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
                filled += 1;
            }
            iteration += 1;
        }
        Self {
            slots,
            hosts: hosts.to_vec(),
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
