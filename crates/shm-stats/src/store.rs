//! store: the [`Store`] every part of Baton registers its stats in, and the cheap handles
//! ([`Counter`], [`Gauge`], [`Histogram`]) the hot path uses.
//!
//! A store backed by a [`Region`] puts every stat in the chain's shared region; a stat that
//! cannot get a slot (region full, name too long, region lock not taken in time) lives in process
//! memory instead, is still counted and shown by this process, and is reported once in the log
//! and in the `stats.overflow` counter. [`Store::new`] keeps everything in process memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::error::Error;
use crate::layout::{HistogramCells, Kind, HISTOGRAM_BUCKETS_MS};
use crate::region::{AllocError, Detached, Region};
use crate::sys::Cell;
use crate::table::GenerationInfo;
use crate::value::{HistogramSnapshot, Snapshot, Value};

/// Name of the counter of stats that could not get a slot in the region (Envoy's old name).
pub const OVERFLOW_COUNTER: &str = "stats.overflow";

/// The registry of every stat of a process. Cloning shares it.
#[derive(Clone, Default)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The chain's region; `None` for an in-process store.
    region: Option<Region>,
    registry: RwLock<Registry>,
    /// Serialises first registrations in this process so the registry lock is never held while
    /// waiting for the region lock.
    alloc: Mutex<()>,
    /// Gauges whose value is the newest generation's share rather than the sum.
    newest_gauges: HashSet<String>,
    overflow: Option<Counter>,
    warned: AtomicBool,
}

/// Handles by name; `bool` is true for a stat that fell back to process memory.
#[derive(Default)]
struct Registry {
    counters: HashMap<String, (Counter, bool)>,
    gauges: HashMap<String, (Gauge, bool)>,
    histograms: HashMap<String, (Histogram, bool)>,
}

/// A monotonically increasing count. Cloning shares the value; an increment is one atomic add.
#[derive(Clone)]
pub struct Counter(Cell<AtomicU64>);

/// A value that goes up and down (connections open, ...). In a region, each generation has its
/// own share: [`Gauge::value`] is this process's share, readers see the sum. Cloning shares it.
#[derive(Clone)]
pub struct Gauge(Cell<AtomicI64>);

/// A distribution of durations with fixed buckets ([`HISTOGRAM_BUCKETS_MS`]), shared by every
/// generation.
#[derive(Clone)]
pub struct Histogram(Cell<HistogramCells>);

// === impl Store ===

impl Store {
    /// A store in process memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose stats live in `region`. Gauges named in `newest_gauges` report the newest
    /// live generation's value instead of the sum of all generations' shares (for gauges that
    /// describe one process, like Envoy's `server.live`).
    pub fn with_region(region: Region, newest_gauges: &[&str]) -> Self {
        let overflow = region
            .find_or_alloc(Kind::Counter, OVERFLOW_COUNTER)
            .ok()
            .map(|slot| Counter(region.counter_cell(slot)));
        Store {
            inner: Arc::new(Inner {
                region: Some(region),
                registry: RwLock::default(),
                alloc: Mutex::new(()),
                newest_gauges: newest_gauges.iter().map(|s| (*s).to_owned()).collect(),
                overflow,
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// The region behind this store, if any.
    pub fn region(&self) -> Option<&Region> {
        self.inner.region.as_ref()
    }

    /// Leave the region (see [`Region::detach`]); `None` for an in-process store. Handles keep
    /// working afterwards but their gauge shares no longer count.
    pub fn detach(&self) -> Result<Option<Detached>, Error> {
        self.inner.region.as_ref().map(Region::detach).transpose()
    }

    /// The region's generation table (empty for an in-process store).
    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.inner
            .region
            .as_ref()
            .map(Region::generations)
            .unwrap_or_default()
    }

    /// When the chain started, if the store is in a region.
    pub fn chain_created(&self) -> Option<SystemTime> {
        self.inner.region.as_ref().map(Region::chain_created)
    }

    /// The counter named `name`, created at zero on first use.
    pub fn counter(&self, name: &str) -> Counter {
        self.get(
            name,
            |r| &r.counters,
            |r| &mut r.counters,
            |region| {
                region
                    .find_or_alloc(Kind::Counter, name)
                    .map(|slot| Counter(region.counter_cell(slot)))
            },
            || Counter(Cell::heap(AtomicU64::new(0))),
        )
    }

    /// The gauge named `name`, created at zero on first use.
    pub fn gauge(&self, name: &str) -> Gauge {
        let kind = if self.inner.newest_gauges.contains(name) {
            Kind::GaugeNewest
        } else {
            Kind::Gauge
        };
        self.get(
            name,
            |r| &r.gauges,
            |r| &mut r.gauges,
            |region| {
                region
                    .find_or_alloc(kind, name)
                    .map(|slot| Gauge(region.gauge_cell(slot)))
            },
            || Gauge(Cell::heap(AtomicI64::new(0))),
        )
    }

    /// The histogram named `name`, created empty on first use.
    pub fn histogram(&self, name: &str) -> Histogram {
        self.get(
            name,
            |r| &r.histograms,
            |r| &mut r.histograms,
            |region| {
                region
                    .find_or_alloc(Kind::Histogram, name)
                    .map(|slot| Histogram(region.counter_cell(slot)))
            },
            Histogram::default,
        )
    }

    fn get<H: Clone>(
        &self,
        name: &str,
        map: impl Fn(&Registry) -> &HashMap<String, (H, bool)>,
        map_mut: impl Fn(&mut Registry) -> &mut HashMap<String, (H, bool)>,
        shared: impl FnOnce(&Region) -> Result<H, AllocError>,
        local: impl FnOnce() -> H,
    ) -> H {
        if let Some((h, _)) = map(&self.inner.registry.read()).get(name) {
            return h.clone();
        }
        let _alloc = self.inner.alloc.lock();
        if let Some((h, _)) = map(&self.inner.registry.read()).get(name) {
            return h.clone();
        }
        let (h, is_local) = match self.inner.region.as_ref().map(shared) {
            None => (local(), true),
            Some(Ok(h)) => (h, false),
            Some(Err(why)) => {
                self.overflowed(name, &why);
                (local(), true)
            }
        };
        map_mut(&mut self.inner.registry.write()).insert(name.to_owned(), (h.clone(), is_local));
        h
    }

    fn overflowed(&self, name: &str, why: &AllocError) {
        if let Some(c) = &self.inner.overflow {
            c.inc();
        }
        if !self.inner.warned.swap(true, Ordering::Relaxed) {
            let why = match why {
                AllocError::Full => "the region is full (raise --max-stats)".to_owned(),
                AllocError::NameTooLong => {
                    "the name is too long (raise --max-obj-name-len)".to_owned()
                }
                AllocError::Lock(e) | AllocError::Unusable(e) => e.clone(),
            };
            tracing::warn!(
                stat = name,
                "could not put a stat in the shared stats region: {why}; it is kept in this \
                 process only (counted in {OVERFLOW_COUNTER}; further ones are not logged)"
            );
        }
    }

    /// Every stat, sorted by name: the region's (gauges merged over the live generations) plus
    /// this process's fallbacks.
    pub fn snapshot(&self) -> Snapshot {
        let reg = self.inner.registry.read();
        let mut merged: BTreeMap<(String, u8), Value> = BTreeMap::new();
        let mut add = |name: &str, v: Value| {
            let tag = match v {
                Value::Counter(_) => 0,
                Value::Gauge(_) => 1,
                Value::Histogram(_) => 2,
            };
            match merged.entry((name.to_owned(), tag)) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => merge(e.get_mut(), v),
            }
        };
        let all = self.inner.region.is_none();
        for (n, (c, local)) in &reg.counters {
            if all || *local {
                add(n, Value::Counter(c.value()));
            }
        }
        for (n, (g, local)) in &reg.gauges {
            if all || *local {
                add(n, Value::Gauge(g.value()));
            }
        }
        for (n, (h, local)) in &reg.histograms {
            if all || *local {
                add(n, Value::Histogram(h.snapshot()));
            }
        }
        drop(reg);
        if let Some(region) = &self.inner.region {
            for r in region.read() {
                add(&r.name, r.value);
            }
        }
        Snapshot {
            stats: merged.into_iter().map(|((n, _), v)| (n, v)).collect(),
        }
    }
}

/// Add `v` into `into` (same kind).
fn merge(into: &mut Value, v: Value) {
    match (into, v) {
        (Value::Counter(a), Value::Counter(b)) => *a = a.wrapping_add(b),
        (Value::Gauge(a), Value::Gauge(b)) => *a = a.wrapping_add(b),
        (Value::Histogram(a), Value::Histogram(b)) => {
            for (x, y) in a.cumulative.iter_mut().zip(b.cumulative) {
                *x = x.wrapping_add(y);
            }
            a.count = a.count.wrapping_add(b.count);
            a.sum_ms += b.sum_ms;
        }
        _ => {}
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.inner.registry.read();
        f.debug_struct("Store")
            .field("region", &self.inner.region.as_ref().map(Region::path))
            .field("counters", &reg.counters.len())
            .field("gauges", &reg.gauges.len())
            .field("histograms", &reg.histograms.len())
            .finish()
    }
}

// === impl Counter ===

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.get().fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.get().fetch_add(n, Ordering::Relaxed);
    }

    pub fn value(&self) -> u64 {
        self.0.get().load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter(Cell::heap(AtomicU64::new(0)))
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counter").field(&self.value()).finish()
    }
}

// === impl Gauge ===

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.get().fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.get().fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn add(&self, n: i64) {
        self.0.get().fetch_add(n, Ordering::Relaxed);
    }

    /// Set this process's share.
    pub fn set(&self, v: i64) {
        self.0.get().store(v, Ordering::Relaxed);
    }

    /// This process's share (the whole value for an in-process store).
    pub fn value(&self) -> i64 {
        self.0.get().load(Ordering::Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Gauge(Cell::heap(AtomicI64::new(0)))
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Gauge").field(&self.value()).finish()
    }
}

// === impl Histogram ===

impl Histogram {
    /// Record one sample of `ms` milliseconds.
    #[inline]
    pub fn record_ms(&self, ms: f64) {
        let idx = HISTOGRAM_BUCKETS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(HISTOGRAM_BUCKETS_MS.len());
        let cells = self.0.get();
        cells.buckets[idx].fetch_add(1, Ordering::Relaxed);
        cells.count.fetch_add(1, Ordering::Relaxed);
        cells
            .sum_us
            .fetch_add((ms * 1000.0).max(0.0) as u64, Ordering::Relaxed);
    }

    /// Record one sample of `d`.
    #[inline]
    pub fn record(&self, d: std::time::Duration) {
        self.record_ms(d.as_secs_f64() * 1000.0);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let cells = self.0.get();
        let mut cumulative = Vec::with_capacity(HISTOGRAM_BUCKETS_MS.len());
        let mut acc = 0;
        for cell in &cells.buckets[..HISTOGRAM_BUCKETS_MS.len()] {
            acc += cell.load(Ordering::Relaxed);
            cumulative.push(acc);
        }
        HistogramSnapshot {
            cumulative,
            count: cells.count.load(Ordering::Relaxed),
            sum_ms: cells.sum_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram(Cell::heap(HistogramCells::default()))
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Histogram").field(&self.snapshot()).finish()
    }
}
