//! view: reading a region without any lock — the generation table and every published slot —
//! from a generation's own mapping or from a read-only one ([`RegionView`], used by
//! `baton stats`, which never writes and never takes the region's lock).

use std::fs::File;
use std::io;
use std::time::SystemTime;

use memmap2::MmapOptions;

use crate::error::Error;
use crate::layout::{self, Kind, Layout, Words, HISTOGRAM_BUCKETS_MS, MAX_GENERATIONS};
use crate::region::{from_unix_ns, live_slots, GenerationInfo};
use crate::shm::Backing;
use crate::sys::RoMapping;
use crate::value::{HistogramSnapshot, Snapshot, Value};

/// One stat of a region.
#[derive(Clone, Debug, PartialEq)]
pub struct StatRecord {
    pub name: String,
    pub value: Value,
    /// For gauges: each live generation's share as (epoch, value); empty for other kinds.
    pub shares: Vec<(u32, i64)>,
}

/// Everything a region holds at one moment.
#[derive(Clone, Debug)]
pub struct RegionReport {
    pub path: String,
    pub chain_created: SystemTime,
    pub max_stats: u32,
    pub max_obj_name_len: u32,
    pub used: u32,
    pub generations: Vec<GenerationInfo>,
    pub stats: Vec<StatRecord>,
}

/// A read-only mapping of a chain's region, for inspection from outside the chain.
#[derive(Debug)]
pub struct RegionView {
    path: String,
    /// Opened read-only; used to test the generations' liveness locks (never to take one).
    file: File,
    map: RoMapping,
    layout: Layout,
}

// === impl RegionView ===

impl RegionView {
    /// Map `backing` read-only and check its header: [`Error::NoRegion`],
    /// [`Error::PermissionDenied`], [`Error::Version`] or [`Error::Corrupt`] otherwise.
    pub fn open(backing: &Backing) -> Result<RegionView, Error> {
        let path = backing.display();
        let file = match backing.open(false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoRegion { path }),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("inspect", &path, e))?
            .len();
        if len < layout::HEADER_SIZE as u64 {
            return Err(Error::Corrupt {
                path,
                what: format!("{len} bytes, shorter than a header"),
            });
        }
        let map = MmapOptions::new()
            .len(usize::try_from(len).unwrap_or(usize::MAX))
            .map_raw_read_only(&file)
            .map_err(|e| Error::io("map", &path, e))?;
        let map = RoMapping::new(map);
        let layout = layout::decode_header(&map, len).map_err(|e| match e {
            layout::HeaderError::Version(found) => Error::Version {
                path: path.clone(),
                found,
                expected: layout::LAYOUT_VERSION,
            },
            other => Error::Corrupt {
                path: path.clone(),
                what: format!("{other:?}"),
            },
        })?;
        Ok(RegionView {
            path,
            file,
            map,
            layout,
        })
    }

    /// Read everything, without locking; gauges merge the generations whose liveness lock is
    /// held.
    pub fn read(&self) -> RegionReport {
        let live = live_slots(&self.file).unwrap_or_default();
        let generations = generations(&self.map, |g| live.contains(&g));
        RegionReport {
            path: self.path.clone(),
            chain_created: from_unix_ns(self.map.load_u64(layout::OFF_CREATED_NS)),
            max_stats: self.layout.max_stats,
            max_obj_name_len: self.layout.max_obj_name_len(),
            used: self.map.load_u32(layout::OFF_USED),
            stats: read_stats(&self.map, &self.layout, &generations),
            generations,
        }
    }
}

impl RegionReport {
    /// The merged values, in the store's snapshot form.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stats: self
                .stats
                .iter()
                .map(|r| (r.name.clone(), r.value.clone()))
                .collect(),
        }
    }
}

/// The attached entries of the generation table; `is_live(g)` tells whether slot `g` proves it
/// is alive.
pub(crate) fn generations<W: Words + ?Sized>(
    w: &W,
    is_live: impl Fn(usize) -> bool,
) -> Vec<GenerationInfo> {
    (0..MAX_GENERATIONS)
        .filter_map(|g| {
            let base = layout::generation_offset(g);
            if w.load_u32(base + layout::GEN_STATE) != layout::GEN_ATTACHED {
                return None;
            }
            Some(GenerationInfo {
                slot: g,
                epoch: w.load_u32(base + layout::GEN_EPOCH),
                pid: w.load_u32(base + layout::GEN_PID),
                phase: w.load_u32(base + layout::GEN_PHASE),
                attached: from_unix_ns(w.load_u64(base + layout::GEN_ATTACHED_NS)),
                seq: w.load_u64(base + layout::GEN_SEQ),
                live: is_live(g),
            })
        })
        .collect()
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
    let kind = Kind::from_code(w.load_u32(base + layout::SLOT_KIND))?;
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
    let used = w.load_u32(layout::OFF_USED).min(layout.max_stats);
    let mut out = Vec::with_capacity(used as usize);
    for i in 0..used {
        let Some((kind, name)) = slot_key(w, layout, i) else {
            continue;
        };
        let word = |k: usize| w.load_u64(layout.value_offset(i, k));
        let (value, shares) = match kind {
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
        };
        out.push(StatRecord {
            name,
            value,
            shares,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
