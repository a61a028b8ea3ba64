//! table: the one codec of the region's two tables — the generation table and the stat slots.
//! Every read of an entry goes through the decoder here, generic over [`Words`] so the writer
//! side (`region`, on its writable mapping), readers outside the chain (`view`, `baton stats`, on
//! a read-only mapping) and tests (on plain bytes) decode the same way; every write of an entry
//! goes through the writers here, on a [`RwMapping`].
//!
//! Ordering: the writers store an entry's fields first and its state (then, for a slot, the
//! published-slot count) last with `Release`; the decoder loads the state (or count) first, and
//! every [`Words`] load of a mapping is `Acquire`, so a reader sees whole entries only.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::layout::{self, Kind, Layout, Words, HISTOGRAM_BUCKETS_MS, MAX_GENERATIONS};
use crate::sys::RwMapping;
use crate::value::{HistogramSnapshot, Value};

/// A generation's entry in the region's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationInfo {
    /// Index in the table (also the byte its liveness lock covers).
    pub slot: usize,
    pub epoch: u32,
    pub pid: u32,
    /// Owner-defined state (e.g. the server state), set with
    /// [`Region::set_phase`](crate::Region::set_phase).
    pub phase: u32,
    pub attached: SystemTime,
    /// Order of attachment over the chain's life (1 for the first generation).
    pub seq: u64,
    /// Whether its liveness lock is held (false: it died without detaching).
    pub live: bool,
}

/// One stat of a region.
#[derive(Clone, Debug, PartialEq)]
pub struct StatRecord {
    pub name: String,
    pub value: Value,
    /// For gauges: each live generation's share as (epoch, value); empty for other kinds.
    pub shares: Vec<(u32, i64)>,
}

/// A generation-table entry as stored, whatever its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub state: u32,
    pub epoch: u32,
    pub pid: u32,
    pub phase: u32,
    pub attached_ns: u64,
    pub seq: u64,
}

/// Nanoseconds since the Unix epoch, as the region stores times (0 before 1970).
pub(crate) fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_unix_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

// === decoder ===

/// When the chain's first generation created the region.
pub(crate) fn chain_created<W: Words + ?Sized>(w: &W) -> SystemTime {
    from_unix_ns(w.load_u64(layout::OFF_CREATED_NS))
}

/// Slots published so far, as the header says (not clamped to the capacity).
pub(crate) fn used<W: Words + ?Sized>(w: &W) -> u32 {
    w.load_u32(layout::OFF_USED)
}

/// Generation entry `g`, its state loaded first.
pub(crate) fn entry<W: Words + ?Sized>(w: &W, g: usize) -> Entry {
    let base = layout::generation_offset(g);
    let state = w.load_u32(base + layout::GEN_STATE);
    Entry {
        state,
        epoch: w.load_u32(base + layout::GEN_EPOCH),
        pid: w.load_u32(base + layout::GEN_PID),
        phase: w.load_u32(base + layout::GEN_PHASE),
        attached_ns: w.load_u64(base + layout::GEN_ATTACHED_NS),
        seq: w.load_u64(base + layout::GEN_SEQ),
    }
}

/// The attached entries of the generation table with their indexes, in table order.
pub(crate) fn attached<W: Words + ?Sized>(w: &W) -> impl Iterator<Item = (usize, Entry)> + '_ {
    (0..MAX_GENERATIONS)
        .map(|g| (g, entry(w, g)))
        .filter(|(_, e)| e.state == layout::GEN_ATTACHED)
}

/// The attached entries of the generation table; `is_live(g)` tells whether slot `g` proves it
/// is alive.
pub(crate) fn generations<W: Words + ?Sized>(
    w: &W,
    is_live: impl Fn(usize) -> bool,
) -> Vec<GenerationInfo> {
    attached(w)
        .map(|(g, e)| GenerationInfo {
            slot: g,
            epoch: e.epoch,
            pid: e.pid,
            phase: e.phase,
            attached: from_unix_ns(e.attached_ns),
            seq: e.seq,
            live: is_live(g),
        })
        .collect()
}

/// The kind slot `i` says it holds, without looking at its state (for slots below the published
/// count, read under the region lock).
pub(crate) fn slot_kind<W: Words + ?Sized>(w: &W, layout: &Layout, i: u32) -> Option<Kind> {
    Kind::from_code(w.load_u32(layout.slot_offset(i) + layout::SLOT_KIND))
}

/// Kind and name of published slot `i`.
pub(crate) fn slot_key<W: Words + ?Sized>(
    w: &W,
    layout: &Layout,
    i: u32,
) -> Option<(Kind, String)> {
    let base = layout.slot_offset(i);
    if w.load_u32(base + layout::SLOT_STATE) != layout::SLOT_PUBLISHED {
        return None;
    }
    let kind = slot_kind(w, layout, i)?;
    let len = w.load_u32(base + layout::SLOT_NAME_LEN) as usize;
    if len > layout.name_cap as usize {
        return None;
    }
    let bytes: Vec<u8> = (0..len)
        .map(|k| w.load_u8(base + layout::SLOT_NAME + k))
        .collect();
    Some((kind, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Every published slot's value, sorted by name. Gauges sum the shares of the live generations
/// in `gens` (or take the newest one's, for [`Kind::GaugeNewest`]).
pub(crate) fn read_stats<W: Words + ?Sized>(
    w: &W,
    layout: &Layout,
    gens: &[GenerationInfo],
) -> Vec<StatRecord> {
    let live: Vec<&GenerationInfo> = gens.iter().filter(|g| g.live).collect();
    let newest = live.iter().max_by_key(|g| (g.epoch, g.seq)).map(|g| g.slot);
    let used = used(w).min(layout.max_stats);
    let mut out = Vec::with_capacity(used as usize);
    for i in 0..used {
        let Some((kind, name)) = slot_key(w, layout, i) else {
            continue;
        };
        let word = |k: usize| w.load_u64(layout.value_offset(i, k));
        let (value, shares) = slot_value(kind, word, &live, newest);
        out.push(StatRecord {
            name,
            value,
            shares,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A slot's value from its words (`word(k)` loads value word `k`), with the gauge shares of the
/// `live` generations; `newest` is the table index of the newest live one.
fn slot_value(
    kind: Kind,
    word: impl Fn(usize) -> u64,
    live: &[&GenerationInfo],
    newest: Option<usize>,
) -> (Value, Vec<(u32, i64)>) {
    match kind {
        Kind::Counter => (Value::Counter(word(0)), Vec::new()),
        Kind::Gauge | Kind::GaugeNewest => {
            let shares: Vec<(u32, i64)> = live
                .iter()
                .map(|g| (g.epoch, word(g.slot) as i64))
                .collect();
            let v = if kind == Kind::Gauge {
                shares.iter().map(|(_, v)| *v).fold(0i64, i64::wrapping_add)
            } else {
                newest.map_or(0, |g| word(g) as i64)
            };
            (Value::Gauge(v), shares)
        }
        Kind::Histogram => {
            let n = HISTOGRAM_BUCKETS_MS.len();
            let mut acc = 0u64;
            let cumulative = (0..n)
                .map(|k| {
                    acc = acc.wrapping_add(word(k));
                    acc
                })
                .collect();
            let h = HistogramSnapshot {
                cumulative,
                count: word(n + 1),
                sum_ms: word(n + 2) as f64 / 1000.0,
            };
            (Value::Histogram(h), Vec::new())
        }
    }
}

// === writers (under the region lock, except `set_phase`) ===

/// Fill generation entry `g` for this process and mark it attached (last, `Release`).
pub(crate) fn write_generation(map: &RwMapping, g: usize, epoch: u32, seq: u64, now: SystemTime) {
    let base = layout::generation_offset(g);
    map.u32_at(base + layout::GEN_EPOCH)
        .store(epoch, Ordering::Relaxed);
    map.u32_at(base + layout::GEN_PID)
        .store(std::process::id(), Ordering::Relaxed);
    map.u32_at(base + layout::GEN_PHASE)
        .store(0, Ordering::Relaxed);
    map.u64_at(base + layout::GEN_ATTACHED_NS)
        .store(unix_ns(now), Ordering::Relaxed);
    map.u64_at(base + layout::GEN_SEQ)
        .store(seq, Ordering::Relaxed);
    map.u32_at(base + layout::GEN_STATE)
        .store(layout::GEN_ATTACHED, Ordering::Release);
}

/// Mark generation entry `g` free.
pub(crate) fn free_generation(map: &RwMapping, g: usize) {
    map.u32_at(layout::generation_offset(g) + layout::GEN_STATE)
        .store(layout::GEN_FREE, Ordering::Release);
}

/// Publish generation `g`'s owner-defined state.
pub(crate) fn set_phase(map: &RwMapping, g: usize, phase: u32) {
    map.u32_at(layout::generation_offset(g) + layout::GEN_PHASE)
        .store(phase, Ordering::Release);
}

/// Set generation `g`'s share of every gauge to zero.
pub(crate) fn zero_gauge_column(map: &RwMapping, layout: &Layout, g: usize) {
    for i in 0..used(map) {
        if matches!(
            slot_kind(map, layout, i),
            Some(Kind::Gauge | Kind::GaugeNewest)
        ) {
            map.u64_at(layout.value_offset(i, g))
                .store(0, Ordering::Relaxed);
        }
    }
}

/// Write slot `idx` (the first unpublished one) as `kind` named `name`, every value word zero,
/// then publish it: its state, then the published count `idx + 1`, both `Release`. The name must
/// fit the layout's name capacity.
pub(crate) fn publish_slot(map: &RwMapping, layout: &Layout, idx: u32, kind: Kind, name: &str) {
    let base = layout.slot_offset(idx);
    map.u32_at(base + layout::SLOT_KIND)
        .store(kind.code(), Ordering::Relaxed);
    map.u32_at(base + layout::SLOT_NAME_LEN)
        .store(name.len() as u32, Ordering::Relaxed);
    for (i, b) in name.bytes().enumerate() {
        map.u8_at(base + layout::SLOT_NAME + i)
            .store(b, Ordering::Relaxed);
    }
    for w in 0..layout::VALUE_WORDS {
        map.u64_at(layout.value_offset(idx, w))
            .store(0, Ordering::Relaxed);
    }
    map.u32_at(base + layout::SLOT_STATE)
        .store(layout::SLOT_PUBLISHED, Ordering::Release);
    map.u32_at(layout::OFF_USED)
        .store(idx + 1, Ordering::Release);
}
