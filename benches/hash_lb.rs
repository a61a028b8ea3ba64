//! Micro-benchmarks of host selection (`proxy_core::cluster::WorkerLb::pick`): round robin
//! (equal and unequal weights) against RING_HASH (Envoy's default minimum ring of 1024
//! entries) and MAGLEV (65537 slots), over 4 and 100 hosts, each pick with a new hash. Also
//! what building a ring or table costs, paid once per membership or health change.
//!
//! Run with `cargo bench -p proxy-core --bench hash_lb`; `-- --test` runs each once.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use proxy_core::cluster::{ClusterManager, HashTable, Pick, WorkerLb};
use proxy_core::config::{
    Cluster, Discovery, DnsLookupFamily, Endpoint, LbPolicy, Maglev, RingHash, Thresholds,
    DEFAULT_BUFFER_LIMIT, DEFAULT_OVERPROVISIONING_FACTOR, DEFAULT_PANIC_THRESHOLD,
};
use shm_stats::Store;

fn cluster(policy: LbPolicy, hosts: u16, weighted: bool) -> Cluster {
    Cluster {
        name: "c".into(),
        discovery: Discovery::Static,
        connect_timeout: Duration::from_secs(1),
        lb_policy: policy,
        endpoints: (0..hosts)
            .map(|i| Endpoint {
                host: "127.0.0.1".into(),
                port: 10_000 + i,
                weight: if weighted { u32::from(i % 4) + 1 } else { 1 },
                ..Endpoint::default()
            })
            .collect(),
        dns_lookup_family: DnsLookupFamily::V4Only,
        dns_refresh_rate: Duration::from_secs(5),
        circuit_breakers: Thresholds::default(),
        per_connection_buffer_limit_bytes: DEFAULT_BUFFER_LIMIT,
        tls: None,
        http2: false,
        metadata: Default::default(),
        health_check: None,
        panic_threshold: DEFAULT_PANIC_THRESHOLD,
        outlier: None,
        overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
        original_dst: None,
        upstream: Default::default(),
    }
}

fn policies() -> [(&'static str, LbPolicy, bool); 4] {
    [
        ("round_robin", LbPolicy::RoundRobin, false),
        ("round_robin_weighted", LbPolicy::RoundRobin, true),
        (
            "ring_hash_1024",
            LbPolicy::RingHash(RingHash::default()),
            true,
        ),
        ("maglev_65537", LbPolicy::Maglev(Maglev::default()), true),
    ]
}

fn pick(c: &mut Criterion) {
    let store = Store::new();
    for hosts in [4u16, 100] {
        let mut g = c.benchmark_group(format!("pick/{hosts}_hosts"));
        for (name, policy, weighted) in policies() {
            let cm = ClusterManager::new(&[cluster(policy, hosts, weighted)], &store);
            let lb = WorkerLb::new(&cm);
            let cl = cm.get(0).unwrap();
            let mut hash = 0x9e37_79b9_7f4a_7c15u64;
            g.bench_function(name, |b| {
                b.iter(|| {
                    hash = hash.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let set = cl.hosts();
                    black_box(lb.pick(0, cl, &set, Pick { hash: Some(hash) }))
                })
            });
        }
        g.finish();
    }
}

fn build(c: &mut Criterion) {
    let store = Store::new();
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for hosts in [4u16, 100] {
        for (name, policy, _) in &policies()[2..] {
            let cm = ClusterManager::new(&[cluster(*policy, hosts, true)], &store);
            let set = cm.get(0).unwrap().hosts();
            let routable = &set.levels[0].routable;
            g.bench_function(format!("{name}/{hosts}_hosts"), |b| {
                b.iter(|| black_box(HashTable::build(policy, routable)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, pick, build);
criterion_main!(benches);
