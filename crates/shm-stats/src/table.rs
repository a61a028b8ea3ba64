//! table: the one codec of the region's two tables — the generation table and the stat slots.
//! Every read of an entry goes through the decoder here, generic over [`Words`] so the writer
//! side (`region`, on its writable mapping), readers outside the chain (`view`, `baton stats`, on
//! a read-only mapping) and tests (on plain bytes) decode the same way; every write of an entry
//! goes through the writers here, on a [`RwMapping`].
//!
//! Ordering: the writers store an entry's fields first and its state (then, for a slot, the
//! published-slot count) last with `Release`; the decoder loads the state (or count) first, and
//! every [`Words`] load of a mapping acquires (an `Acquire` load on the writable mapping, a
//! `Relaxed` load and an `Acquire` fence on a read-only one), so a reader sees whole entries only.
//!
//! Nothing read back from the region is trusted to stay in bounds: another process of the same
//! user may have written anything. The published-slot count is clamped to the layout's capacity
//! ([`published`]) wherever it drives a loop, and a name length to the name capacity.

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

/// Slots published so far, clamped to `layout`'s capacity: what every loop over the slots uses,
/// so a corrupt or hostile count can never index past the mapping.
pub(crate) fn published<W: Words + ?Sized>(w: &W, layout: &Layout) -> u32 {
    used(w).min(layout.max_stats)
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
    let used = published(w, layout);
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
    for i in 0..published(map, layout) {
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

#[cfg(test)]
mod tests {
    use memmap2::{MmapMut, MmapRaw};

    use super::*;

    const CREATED_NS: u64 = 1_700_000_000_123_456_789;

    fn small() -> Layout {
        Layout::new(4, 8).expect("layout")
    }

    /// A region of `layout` as plain bytes: a fresh header, zero tables.
    fn bytes(layout: &Layout) -> Vec<u8> {
        let mut b = layout::encode_header(layout, CREATED_NS);
        b.resize(layout.total_len(), 0);
        b
    }

    fn put_u32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(b: &mut [u8], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_generation(b: &mut [u8], g: usize, e: Entry) {
        let base = layout::generation_offset(g);
        put_u32(b, base + layout::GEN_STATE, e.state);
        put_u32(b, base + layout::GEN_EPOCH, e.epoch);
        put_u32(b, base + layout::GEN_PID, e.pid);
        put_u32(b, base + layout::GEN_PHASE, e.phase);
        put_u64(b, base + layout::GEN_ATTACHED_NS, e.attached_ns);
        put_u64(b, base + layout::GEN_SEQ, e.seq);
    }

    /// Slot `i` with the given state, kind code and name bytes.
    fn put_slot(b: &mut [u8], layout: &Layout, i: u32, state: u32, kind: u32, name: &[u8]) {
        let base = layout.slot_offset(i);
        put_u32(b, base + layout::SLOT_STATE, state);
        put_u32(b, base + layout::SLOT_KIND, kind);
        put_u32(b, base + layout::SLOT_NAME_LEN, name.len() as u32);
        let name_at = base + layout::SLOT_NAME;
        let n = name.len().min(layout.name_cap as usize);
        b[name_at..name_at + n].copy_from_slice(&name[..n]);
    }

    fn put_word(b: &mut [u8], layout: &Layout, i: u32, k: usize, v: u64) {
        put_u64(b, layout.value_offset(i, k), v);
    }

    fn attached_entry(epoch: u32, pid: u32, seq: u64) -> Entry {
        Entry {
            state: layout::GEN_ATTACHED,
            epoch,
            pid,
            phase: 7,
            attached_ns: 1_000 + seq,
            seq,
        }
    }

    fn info(slot: usize, e: Entry, live: bool) -> GenerationInfo {
        GenerationInfo {
            slot,
            epoch: e.epoch,
            pid: e.pid,
            phase: e.phase,
            attached: UNIX_EPOCH + Duration::from_nanos(e.attached_ns),
            seq: e.seq,
            live,
        }
    }

    fn record(name: &str, value: Value, shares: Vec<(u32, i64)>) -> StatRecord {
        StatRecord {
            name: name.to_owned(),
            value,
            shares,
        }
    }

    #[test]
    fn unix_ns_round_trips_and_clamps_before_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_nanos(CREATED_NS);
        assert_eq!(unix_ns(t), CREATED_NS);
        assert_eq!(from_unix_ns(unix_ns(t)), t);
        assert_eq!(unix_ns(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn header_counters_decode_from_bytes() {
        let layout = small();
        let mut b = bytes(&layout);
        assert_eq!(used(&b[..]), 0);
        assert_eq!(
            chain_created(&b[..]),
            UNIX_EPOCH + Duration::from_nanos(CREATED_NS)
        );
        put_u32(&mut b, layout::OFF_USED, 3);
        assert_eq!(used(&b[..]), 3);
    }

    #[test]
    fn generation_table_decodes_attached_entries_in_order() {
        let layout = small();
        let mut b = bytes(&layout);
        let older = attached_entry(3, 11, 2);
        let newer = attached_entry(4, 12, 3);
        put_generation(&mut b, 4, newer);
        put_generation(&mut b, 1, older);
        // A free entry is skipped whatever else it holds.
        put_generation(
            &mut b,
            2,
            Entry {
                state: layout::GEN_FREE,
                ..attached_entry(9, 99, 9)
            },
        );
        assert_eq!(entry(&b[..], 1), older);
        assert_eq!(entry(&b[..], 2).state, layout::GEN_FREE);
        let found: Vec<usize> = attached(&b[..]).map(|(g, _)| g).collect();
        assert_eq!(found, [1, 4]);
        assert_eq!(
            generations(&b[..], |g| g == 4),
            [info(1, older, false), info(4, newer, true)]
        );
        assert!(generations(&bytes(&layout)[..], |_| true).is_empty());
    }

    #[test]
    fn slot_keys_need_a_published_slot_a_known_kind_and_a_fitting_name() {
        let layout = small();
        let mut b = bytes(&layout);
        put_slot(&mut b, &layout, 0, layout::SLOT_PUBLISHED, 1, b"a.b");
        put_slot(&mut b, &layout, 1, 0, 1, b"unpublished");
        put_slot(&mut b, &layout, 2, layout::SLOT_PUBLISHED, 9, b"bad.kind");
        put_slot(&mut b, &layout, 3, layout::SLOT_PUBLISHED, 2, b"x");
        assert_eq!(
            slot_key(&b[..], &layout, 0),
            Some((Kind::Counter, "a.b".into()))
        );
        assert_eq!(slot_key(&b[..], &layout, 1), None);
        assert_eq!(slot_kind(&b[..], &layout, 1), Some(Kind::Counter));
        assert_eq!(slot_key(&b[..], &layout, 2), None);
        assert_eq!(slot_kind(&b[..], &layout, 2), None);
        // A name length past the capacity is not trusted.
        let len_at = layout.slot_offset(3) + layout::SLOT_NAME_LEN;
        put_u32(&mut b, len_at, layout.name_cap + 1);
        assert_eq!(slot_key(&b[..], &layout, 3), None);
        // Invalid UTF-8 decodes lossily rather than failing.
        put_slot(&mut b, &layout, 3, layout::SLOT_PUBLISHED, 2, b"g\xff");
        assert_eq!(
            slot_key(&b[..], &layout, 3),
            Some((Kind::Gauge, "g\u{fffd}".into()))
        );
    }

    #[test]
    fn stats_decode_every_kind_sorted_by_name() {
        let layout = Layout::new(5, 8).expect("layout");
        let mut b = bytes(&layout);
        let (g1, g3, g5) = (
            attached_entry(1, 10, 1),
            attached_entry(2, 20, 2),
            attached_entry(0, 5, 5),
        );
        put_generation(&mut b, 1, g1);
        put_generation(&mut b, 3, g3);
        put_generation(&mut b, 5, g5);
        let gens = generations(&b[..], |g| g != 5);

        put_slot(
            &mut b,
            &layout,
            0,
            layout::SLOT_PUBLISHED,
            Kind::Counter.code(),
            b"z.count",
        );
        put_word(&mut b, &layout, 0, 0, 42);
        put_slot(
            &mut b,
            &layout,
            1,
            layout::SLOT_PUBLISHED,
            Kind::Gauge.code(),
            b"b.sum",
        );
        put_slot(
            &mut b,
            &layout,
            2,
            layout::SLOT_PUBLISHED,
            Kind::GaugeNewest.code(),
            b"c.newest",
        );
        for slot in [1, 2] {
            put_word(&mut b, &layout, slot, 1, 7);
            put_word(&mut b, &layout, slot, 3, (-2i64) as u64);
            // The dead generation's share never counts.
            put_word(&mut b, &layout, slot, 5, 1000);
        }
        put_slot(
            &mut b,
            &layout,
            3,
            layout::SLOT_PUBLISHED,
            Kind::Histogram.code(),
            b"a.hist",
        );
        let n = HISTOGRAM_BUCKETS_MS.len();
        put_word(&mut b, &layout, 3, 0, 1);
        put_word(&mut b, &layout, 3, 2, 2);
        put_word(&mut b, &layout, 3, n, 4); // +Inf: only in the count
        put_word(&mut b, &layout, 3, n + 1, 7);
        put_word(&mut b, &layout, 3, n + 2, 12_500);
        put_slot(&mut b, &layout, 4, 0, Kind::Counter.code(), b"not.yet");
        put_u32(&mut b, layout::OFF_USED, 5);

        let mut cumulative = vec![3; n];
        cumulative[0] = 1;
        cumulative[1] = 1;
        let hist = HistogramSnapshot {
            cumulative,
            count: 7,
            sum_ms: 12.5,
        };
        assert_eq!(
            read_stats(&b[..], &layout, &gens),
            [
                record("a.hist", Value::Histogram(hist), vec![]),
                record("b.sum", Value::Gauge(5), vec![(1, 7), (2, -2)]),
                // Newest by (epoch, seq) among the live: generation slot 3.
                record("c.newest", Value::Gauge(-2), vec![(1, 7), (2, -2)]),
                record("z.count", Value::Counter(42), vec![]),
            ]
        );
        // Only the published count is read, never past the capacity.
        put_u32(&mut b, layout::OFF_USED, 1);
        assert_eq!(read_stats(&b[..], &layout, &gens).len(), 1);
        put_u32(&mut b, layout::OFF_USED, u32::MAX);
        assert_eq!(read_stats(&b[..], &layout, &gens).len(), 4);
        // No live generation: gauges read zero with no shares.
        let dead: Vec<GenerationInfo> = gens
            .iter()
            .map(|g| GenerationInfo {
                live: false,
                ..g.clone()
            })
            .collect();
        let stats = read_stats(&b[..], &layout, &dead);
        assert_eq!(stats[1], record("b.sum", Value::Gauge(0), vec![]));
        assert_eq!(stats[2], record("c.newest", Value::Gauge(0), vec![]));
    }

    /// A writable in-memory mapping holding a fresh region of `layout`.
    fn mapping(layout: &Layout) -> RwMapping {
        let anon = MmapMut::map_anon(layout.total_len()).expect("anonymous mapping");
        let map = RwMapping::new(MmapRaw::from(anon));
        for f in layout::initial_fields(layout, CREATED_NS) {
            match f {
                layout::Field::U32(off, v) => map.u32_at(off).store(v, Ordering::Relaxed),
                layout::Field::U64(off, v) => map.u64_at(off).store(v, Ordering::Relaxed),
            }
        }
        map
    }

    /// The mapping's bytes, for decoding the same region from plain memory.
    fn copy(map: &RwMapping) -> Vec<u8> {
        (0..map.len()).map(|i| map.load_u8(i)).collect()
    }

    #[test]
    fn writers_and_the_decoder_agree_on_a_mapping_and_on_its_bytes() {
        let layout = small();
        let map = mapping(&layout);
        let now = UNIX_EPOCH + Duration::from_nanos(CREATED_NS + 5);
        write_generation(&map, 0, 0, 1, now);
        write_generation(&map, 2, 1, 2, now);
        set_phase(&map, 2, 3);
        publish_slot(&map, &layout, 0, Kind::Counter, "rq");
        publish_slot(&map, &layout, 1, Kind::Gauge, "conn");
        publish_slot(&map, &layout, 2, Kind::Histogram, "t");
        map.u64_at(layout.value_offset(0, 0))
            .store(9, Ordering::Relaxed);
        map.u64_at(layout.value_offset(1, 0))
            .store(4, Ordering::Relaxed);
        map.u64_at(layout.value_offset(1, 2))
            .store(6, Ordering::Relaxed);
        map.u64_at(layout.value_offset(2, 2))
            .store(1, Ordering::Relaxed);
        map.u64_at(layout.value_offset(2, HISTOGRAM_BUCKETS_MS.len() + 1))
            .store(1, Ordering::Relaxed);

        assert_eq!(used(&map), 3);
        assert_eq!(
            slot_key(&map, &layout, 1),
            Some((Kind::Gauge, "conn".into()))
        );
        let gens = generations(&map, |_| true);
        let pid = std::process::id();
        assert_eq!(
            gens.iter()
                .map(|g| (g.slot, g.epoch, g.pid, g.phase, g.seq))
                .collect::<Vec<_>>(),
            [(0, 0, pid, 0, 1), (2, 1, pid, 3, 2)]
        );
        assert!(gens.iter().all(|g| g.attached == now));
        let stats = read_stats(&map, &layout, &gens);
        assert_eq!(
            stats[0],
            record("conn", Value::Gauge(10), vec![(0, 4), (1, 6)])
        );
        assert_eq!(stats[1], record("rq", Value::Counter(9), vec![]));

        // Plain bytes of the same region decode identically.
        let b = copy(&map);
        assert_eq!(layout::decode_header(&b[..], layout.total_size), Ok(layout));
        assert_eq!(generations(&b[..], |_| true), gens);
        assert_eq!(read_stats(&b[..], &layout, &gens), stats);
        assert_eq!(chain_created(&b[..]), chain_created(&map));

        // A generation leaving: its gauge shares go, other kinds' words in its column stay.
        zero_gauge_column(&map, &layout, 2);
        free_generation(&map, 2);
        assert_eq!(
            map.u64_at(layout.value_offset(1, 2))
                .load(Ordering::Relaxed),
            0
        );
        assert_eq!(
            map.u64_at(layout.value_offset(2, 2))
                .load(Ordering::Relaxed),
            1
        );
        let gens = generations(&map, |_| true);
        assert_eq!(gens.iter().map(|g| g.slot).collect::<Vec<_>>(), [0]);
        let stats = read_stats(&map, &layout, &gens);
        assert_eq!(stats[0], record("conn", Value::Gauge(4), vec![(0, 4)]));
    }

    #[test]
    fn a_published_slot_starts_at_zero_whatever_was_there() {
        let layout = small();
        let map = mapping(&layout);
        for w in 0..layout::VALUE_WORDS {
            map.u64_at(layout.value_offset(0, w))
                .store(u64::MAX, Ordering::Relaxed);
        }
        publish_slot(&map, &layout, 0, Kind::Histogram, "h");
        assert!((0..layout::VALUE_WORDS).all(|w| map
            .u64_at(layout.value_offset(0, w))
            .load(Ordering::Relaxed)
            == 0));
        assert_eq!(
            slot_key(&map, &layout, 0),
            Some((Kind::Histogram, "h".into()))
        );
        assert_eq!(used(&map), 1);
    }

    #[test]
    fn a_count_past_the_capacity_is_clamped_when_a_column_is_zeroed() {
        let layout = small();
        let map = mapping(&layout);
        publish_slot(&map, &layout, 0, Kind::Gauge, "g");
        map.u64_at(layout.value_offset(0, 1))
            .store(3, Ordering::Relaxed);
        map.u32_at(layout::OFF_USED)
            .store(u32::MAX, Ordering::Relaxed);
        assert_eq!(used(&map), u32::MAX);
        assert_eq!(published(&map, &layout), layout.max_stats);
        zero_gauge_column(&map, &layout, 1);
        assert_eq!(
            map.u64_at(layout.value_offset(0, 1))
                .load(Ordering::Relaxed),
            0
        );
        let b = copy(&map);
        assert_eq!(read_stats(&b[..], &layout, &[]).len(), 1);
    }

    /// A deterministic xorshift stream, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Whatever another process wrote, decoding and zeroing a column never panic and never read
    /// past the layout: a valid region with random words overwritten (most often the fields
    /// that drive loops: the count, a slot's state, kind and name length), decoded from bytes
    /// and on a mapping.
    #[test]
    fn random_corruption_never_panics_the_decoder() {
        let layout = Layout::new(6, 8).expect("layout");
        let map = mapping(&layout);
        write_generation(&map, 0, 0, 1, UNIX_EPOCH);
        write_generation(&map, 3, 1, 2, UNIX_EPOCH);
        for (i, kind) in [
            Kind::Counter,
            Kind::Gauge,
            Kind::GaugeNewest,
            Kind::Histogram,
        ]
        .into_iter()
        .enumerate()
        {
            publish_slot(&map, &layout, i as u32, kind, &format!("s{i}"));
        }
        let pristine = copy(&map);
        let hot: Vec<usize> = (0..layout.max_stats)
            .flat_map(|i| {
                let base = layout.slot_offset(i);
                [
                    base + layout::SLOT_STATE,
                    base + layout::SLOT_KIND,
                    base + layout::SLOT_NAME_LEN,
                ]
            })
            .chain([layout::OFF_USED, layout::generation_offset(3)])
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut b = pristine.clone();
            for _ in 0..1 + rng.below(6) {
                let off = if rng.below(4) == 0 {
                    rng.below(b.len() / 4) * 4
                } else {
                    hot[rng.below(hot.len())]
                };
                let v = match rng.below(4) {
                    0 => u32::MAX,
                    1 => rng.below(16) as u32,
                    2 => layout.max_stats + rng.below(4) as u32,
                    _ => rng.next() as u32,
                };
                put_u32(&mut b, off, v);
            }
            let _ = layout::decode_header(&b[..], layout.total_size);
            let gens = generations(&b[..], |g| g % 2 == 1);
            for r in read_stats(&b[..], &layout, &gens) {
                assert!(r.name.len() <= 3 * layout.name_cap as usize);
            }
            for (off, byte) in b.iter().enumerate() {
                map.u8_at(off).store(*byte, Ordering::Relaxed);
            }
            for g in 0..MAX_GENERATIONS {
                zero_gauge_column(&map, &layout, g);
            }
            assert!(published(&map, &layout) <= layout.max_stats);
        }
    }
}
