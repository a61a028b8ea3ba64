//! shm-stats: Baton's statistics — counters, gauges and histograms allocated by name — and the
//! only crate that maps shared memory.
//!
//! Every generation of a restart chain maps one region, named from `--base-id`
//! (`/dev/shm/baton_<base-id>`, mode 0600), so that counters keep counting across hot restarts,
//! gauges stay exact while two generations run (each keeps its own share; a generation that
//! exits takes its share with it) and histograms keep their buckets. Callers resolve a name once
//! to a cheap handle ([`Counter`], [`Gauge`], [`Histogram`]); the hot path is one atomic
//! instruction on the mapped memory. Readers take a [`Store::snapshot`], or map the region
//! read-only from outside the chain ([`RegionView`], `baton stats`) without any lock.
//!
//! The story of a chain: epoch 0 creates the region ([`OpenMode::Create`]; a region left by a
//! crashed chain is reclaimed, one of a live chain refused naming its pid); each hot restart
//! attaches as a new generation ([`OpenMode::Attach`]); every generation proves it is alive by an
//! OFD lock it holds on the region's file; the last one to detach removes the region, deciding
//! so under the region's robust mutex so an attach racing with it is never lost.
//!
//! This crate never knows what a stat means (no HTTP, no Envoy naming rules, no flags): callers
//! pick the names and pass the capacities in. It must never block a request on another process:
//! the region lock is taken with a timeout on every path that can serve requests.
//!
//! Modules, bottom layer first, each with what it imports (only modules listed above it):
//!
//! - `layout` (nothing): every field's offset, the header codec, [`HISTOGRAM_BUCKETS_MS`].
//! - `error` (layout): [`Error`], what can go wrong with a region.
//! - `value` (layout): the plain values a reading returns ([`Value`], [`Snapshot`]).
//! - `shm` (error, layout): the backing object ([`Backing`]), the checks that make an existing
//!   one trusted (owner, mode, size), and the OFD liveness locks.
//! - `sys` (layout): the only unsafe code: atomics on a mapping, the hot-path cell, the mutex.
//! - `table` (layout, sys, value): the one decoder (and writer) of the generation table and slots.
//! - `region` (error, layout, shm, sys, table): a generation's life in its chain's [`Region`].
//! - `view` (error, layout, shm, sys, table, value): the read-only, lock-free [`RegionView`].
//! - `store` (error, layout, region, sys, table, value): [`Store`] and the hot-path handles.
//!
//! A region is shared with every process of the same user, so nothing read back from it is
//! trusted: an existing region is used only if this user owns it and nobody else can write it
//! ([`Error::Untrusted`]), its file size is checked against its layout before the mapping is read
//! past the header and before every read or detach afterwards ([`Error::Shrunk`]: a page past the
//! end of a shrunk file would fault with SIGBUS), and counts are clamped to the capacity, so a
//! corrupt or hostile region gives an error or is ignored, never a panic (not even in `Drop`).
//!
//! Unsafe code is denied at the crate root and allowed in exactly one module, `sys` (atomics over
//! the mapping, the hot-path cell, the pthread mutex); every block there states its invariant.
#![deny(unsafe_code)]

mod error;
mod layout;
mod region;
mod shm;
mod store;
#[allow(unsafe_code)]
mod sys;
mod table;
mod value;
mod view;

pub use error::Error;
pub use layout::{
    encode_header, Layout, HEADER_SIZE, HISTOGRAM_BUCKETS_MS, LAYOUT_VERSION, MAX_GENERATIONS,
    MAX_STAT_SUFFIX_LEN,
};
pub use region::{
    pick_free_base_id, Detached, OpenMode, Region, RegionOptions, DEFAULT_MAX_OBJ_NAME_LEN,
    DEFAULT_MAX_STATS,
};
pub use shm::Backing;
pub use store::{Counter, Gauge, Histogram, Store, OVERFLOW_COUNTER};
pub use table::{GenerationInfo, StatRecord};
pub use value::{HistogramSnapshot, Snapshot, Value};
pub use view::{RegionReport, RegionView};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
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
