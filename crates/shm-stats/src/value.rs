//! value: the plain values a reading returns — [`Value`], [`HistogramSnapshot`] and
//! [`Snapshot`] — with no knowledge of where they were read from.

use crate::layout::HISTOGRAM_BUCKETS_MS;

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

// === impl HistogramSnapshot ===

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
