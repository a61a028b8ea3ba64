//! shm-stats: Baton's statistics — counters, gauges and histograms allocated by name — and, with
//! the shared-memory issue, the only crate that maps shared memory, so that every generation of a
//! restart chain adds to the same values.
//!
//! Today the values live in process memory behind the API the shared-memory region will back:
//! callers resolve a name once to a cheap handle ([`Counter`], [`Gauge`], [`Histogram`]) and the
//! hot path only touches an atomic. Readers take a [`Store::snapshot`]. This crate never knows
//! what a stat means (no HTTP, no Envoy naming rules): callers pick the names.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Upper bounds, in milliseconds, of the histogram buckets (Envoy's default set). Values above
/// the last bound only count in `+Inf`.
pub const HISTOGRAM_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The registry of every stat of a process. Cloning shares it.
#[derive(Clone, Default)]
pub struct Store {
    inner: Arc<RwLock<Registry>>,
}

#[derive(Default)]
struct Registry {
    counters: HashMap<String, Counter>,
    gauges: HashMap<String, Gauge>,
    histograms: HashMap<String, Histogram>,
}

/// A monotonically increasing count. Cloning shares the value.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

/// A value that goes up and down (connections open, ...). Cloning shares the value.
#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

/// A distribution of durations with fixed buckets ([`HISTOGRAM_BUCKETS_MS`]).
#[derive(Clone, Default)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Default)]
struct HistogramCells {
    /// One cell per bound in [`HISTOGRAM_BUCKETS_MS`], plus one for values above the last.
    buckets: [AtomicU64; HISTOGRAM_BUCKETS_MS.len() + 1],
    count: AtomicU64,
    /// Sum in microseconds, so that sub-millisecond samples are not lost.
    sum_us: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bound in [`HISTOGRAM_BUCKETS_MS`].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_ms: f64,
}

/// One stat's value at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(HistogramSnapshot),
}

/// Every stat's value at one moment, sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub stats: Vec<(String, Value)>,
}

// === impl Store ===

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter named `name`, created at zero on first use.
    pub fn counter(&self, name: &str) -> Counter {
        if let Some(c) = self.inner.read().counters.get(name) {
            return c.clone();
        }
        self.inner
            .write()
            .counters
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The gauge named `name`, created at zero on first use.
    pub fn gauge(&self, name: &str) -> Gauge {
        if let Some(g) = self.inner.read().gauges.get(name) {
            return g.clone();
        }
        self.inner
            .write()
            .gauges
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The histogram named `name`, created empty on first use.
    pub fn histogram(&self, name: &str) -> Histogram {
        if let Some(h) = self.inner.read().histograms.get(name) {
            return h.clone();
        }
        self.inner
            .write()
            .histograms
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Every stat, sorted by name.
    pub fn snapshot(&self) -> Snapshot {
        let reg = self.inner.read();
        let mut stats =
            Vec::with_capacity(reg.counters.len() + reg.gauges.len() + reg.histograms.len());
        stats.extend(
            reg.counters
                .iter()
                .map(|(n, c)| (n.clone(), Value::Counter(c.value()))),
        );
        stats.extend(
            reg.gauges
                .iter()
                .map(|(n, g)| (n.clone(), Value::Gauge(g.value()))),
        );
        stats.extend(
            reg.histograms
                .iter()
                .map(|(n, h)| (n.clone(), Value::Histogram(h.snapshot()))),
        );
        drop(reg);
        stats.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot { stats }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.inner.read();
        f.debug_struct("Store")
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
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
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
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn value(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
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
        self.0.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_us
            .fetch_add((ms * 1000.0).max(0.0) as u64, Ordering::Relaxed);
    }

    /// Record one sample of `d`.
    #[inline]
    pub fn record(&self, d: std::time::Duration) {
        self.record_ms(d.as_secs_f64() * 1000.0);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(HISTOGRAM_BUCKETS_MS.len());
        let mut acc = 0;
        for cell in &self.0.buckets[..HISTOGRAM_BUCKETS_MS.len()] {
            acc += cell.load(Ordering::Relaxed);
            cumulative.push(acc);
        }
        HistogramSnapshot {
            cumulative,
            count: self.0.count.load(Ordering::Relaxed),
            sum_ms: self.0.sum_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Histogram").field(&self.snapshot()).finish()
    }
}

impl HistogramSnapshot {
    /// The value below which `q` (0..=1) of the samples fall, interpolated within its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut lower = 0.0;
        let mut below = 0;
        for (bound, cum) in HISTOGRAM_BUCKETS_MS.iter().zip(&self.cumulative) {
            if *cum >= target {
                let in_bucket = (cum - below).max(1) as f64;
                let frac = (target - below) as f64 / in_bucket;
                return Some(lower + (bound - lower) * frac);
            }
            lower = *bound;
            below = *cum;
        }
        Some(*HISTOGRAM_BUCKETS_MS.last().expect("buckets are not empty"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_values_by_name() {
        let store = Store::new();
        store.counter("a.b").inc();
        store.counter("a.b").add(2);
        store.gauge("g").inc();
        store.gauge("g").inc();
        store.gauge("g").dec();
        store.histogram("h").record_ms(3.0);
        store.histogram("h").record_ms(70000.0);
        let snap = store.snapshot();
        let names: Vec<_> = snap.stats.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.b", "g", "h"]);
        assert_eq!(snap.stats[0].1, Value::Counter(3));
        assert_eq!(snap.stats[1].1, Value::Gauge(1));
        let Value::Histogram(h) = &snap.stats[2].1 else {
            panic!("not a histogram")
        };
        assert_eq!(h.count, 2);
        assert_eq!(h.cumulative[2], 1); // <= 5 ms
        assert_eq!(h.cumulative[14], 1); // <= 60000 ms
        assert_eq!(h.cumulative[15], 2); // <= 300000 ms
        assert!((h.sum_ms - 70003.0).abs() < 0.01);
    }

    #[test]
    fn quantile_interpolates() {
        let h = Histogram::default();
        for _ in 0..100 {
            h.record_ms(7.0);
        }
        let q = h.snapshot().quantile(0.5).unwrap();
        assert!((5.0..=10.0).contains(&q), "{q}");
        assert_eq!(Histogram::default().snapshot().quantile(0.5), None);
    }
}
