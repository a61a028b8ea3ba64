//! The hot path of a stat: one counter increment in the shared region against a process-local
//! `AtomicU64` on the heap (the target: at most 1.1x).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use shm_stats::{Backing, OpenMode, Region, RegionOptions, Store};

fn counters(c: &mut Criterion) {
    // A base id no chain uses: derived from this process, unlinked when the store drops.
    let base_id = 3_900_000_000 + std::process::id() % 100_000;
    let region = Region::open(RegionOptions {
        backing: Backing::for_base_id(base_id),
        base_id,
        epoch: 0,
        mode: OpenMode::Create,
        max_stats: 1024,
        max_obj_name_len: 60,
        lock_timeout: Duration::from_millis(100),
        attach_timeout: Duration::from_secs(2),
    });
    let Ok(region) = region else {
        eprintln!("could not create the bench region: {region:?}");
        return;
    };
    let store = Store::with_region(region, &[]);
    let shm = store.counter("bench.rq_total");
    let heap = Arc::new(AtomicU64::new(0));

    let mut g = c.benchmark_group("counter_inc");
    g.bench_function("shm", |b| b.iter(|| black_box(&shm).inc()));
    g.bench_function("heap_atomic", |b| {
        b.iter(|| black_box(&heap).fetch_add(1, Ordering::Relaxed))
    });
    g.finish();
    let _ = store.detach();
}

criterion_group!(benches, counters);
criterion_main!(benches);
