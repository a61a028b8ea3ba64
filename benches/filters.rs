//! Micro-benchmarks of what the HTTP filters do per request, on their public pieces: the
//! per-route lookup each filter makes (`ResolvedFilterConfigs`, four filters named), the
//! local rate limit's token bucket (uncontended), and the percentage roll of the fault and
//! local rate limit filters. The whole request through a filter chain is measured by
//! `benches/load/callgrind.sh --filter …` (instructions per request; see its README).
//!
//! Run with `cargo bench -p proxy-core --bench filters`; `-- --test` runs each once.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use proxy_core::config::{
    BufferFilter, BufferPerRoute, FilterConfigs, FractionalPercent, PerFilter,
    ResolvedFilterConfigs, RouteFilterConfig, TokenBucket,
};

fn level(names: &[&str]) -> FilterConfigs {
    names
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                PerFilter {
                    disabled: false,
                    config: Some(RouteFilterConfig::Buffer(BufferPerRoute::Buffer(
                        BufferFilter {
                            max_request_bytes: 1024,
                        },
                    ))),
                },
            )
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let route = level(&["envoy.filters.http.buffer"]);
    let vhost = level(&[
        "envoy.filters.http.fault",
        "envoy.filters.http.local_ratelimit",
    ]);
    let mut cors = level(&[]);
    cors.push((
        "envoy.filters.http.cors".to_owned(),
        PerFilter {
            disabled: false,
            config: Some(RouteFilterConfig::Cors(Box::default())),
        },
    ));
    let resolved =
        ResolvedFilterConfigs::resolve(&[&route, &vhost, &cors], [None, None]).expect("entries");
    let chain = [
        "envoy.filters.http.health_check",
        "envoy.filters.http.fault",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.cors",
        "envoy.filters.http.buffer",
    ];
    c.bench_function("per_route_lookup_5_filters", |b| {
        b.iter(|| {
            for name in chain {
                black_box(resolved.disabled(black_box(name)));
                black_box(resolved.config(black_box(name)));
            }
        })
    });
}

fn bucket(c: &mut Criterion) {
    let b = TokenBucket::new(u32::MAX, u32::MAX, Duration::from_secs(1));
    c.bench_function("token_bucket_consume", |bch| {
        bch.iter(|| black_box(b.consume(Instant::now())))
    });
}

fn percent(c: &mut Criterion) {
    let p = FractionalPercent {
        numerator: 5000,
        denominator: 10_000,
    };
    c.bench_function("fractional_percent_roll", |b| {
        b.iter(|| black_box(p.hit(fastrand::u64(..))))
    });
}

criterion_group!(benches, lookups, bucket, percent);
criterion_main!(benches);
