//! Micro-benchmarks of what the HTTP filters do per request, on their public pieces: the
//! per-route lookup each filter makes (`ResolvedFilterConfigs`, four filters named), the
//! local rate limit's token bucket (uncontended), the percentage roll of the fault and
//! local rate limit filters, and the RBAC rules of a typical policy evaluated on a request, and the compressor filter's per-response work: a library set up,
//! a 1 KiB and a 16 KiB text body compressed (one flushed piece) and finished, per library. The whole request through a filter chain is measured by
//! `benches/load/callgrind.sh --filter …` (instructions per request; see its README).
//!
//! Run with `cargo bench -p proxy-core --bench filters`; `-- --test` runs each once.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use proxy_core::config::{
    BrotliMode, BrotliParams, BufferFilter, BufferPerRoute, CompressorLibrary, FilterConfigs,
    FractionalPercent, GzipParams, PerFilter, ResolvedFilterConfigs, RouteFilterConfig,
    TokenBucket, ZstdParams,
};
use proxy_core::stats::CompressorStats;

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

/// A typical RBAC policy set (ALLOW): admins by mTLS name, reads of `/api/` from the internal
/// network, health checks from anywhere; evaluated on a read from the internal network (the
/// second policy matches), and on a request no policy matches (all are tried).
fn rbac(c: &mut Criterion) {
    use proxy_core::config::{
        FilterHeaderMatcher, HeaderMatchKind, MatchedField, Permission, Principal, RbacAction,
        RbacPolicy, RbacRules,
    };
    use proxy_core::rbac::{evaluate, RequestHead, Subject};
    let method = |m: &str| {
        Permission::Header(FilterHeaderMatcher {
            field: MatchedField::Method,
            kind: HeaderMatchKind::Exact(m.into()),
            invert: false,
        })
    };
    let rules = RbacRules {
        action: RbacAction::Allow,
        policies: vec![
            (
                "admins".into(),
                RbacPolicy {
                    permissions: vec![Permission::Any],
                    principals: vec![Principal::Authenticated(Some(HeaderMatchKind::Suffix(
                        ".admin.example".into(),
                    )))],
                },
            ),
            (
                "internal-reads".into(),
                RbacPolicy {
                    permissions: vec![Permission::And(vec![
                        Permission::Or(vec![method("GET"), method("HEAD")]),
                        Permission::UrlPath(HeaderMatchKind::Prefix("/api/".into())),
                    ])],
                    principals: vec![
                        Principal::RemoteIp("10.0.0.0/8".parse().unwrap()),
                        Principal::RemoteIp("192.168.0.0/16".parse().unwrap()),
                    ],
                },
            ),
            (
                "health".into(),
                RbacPolicy {
                    permissions: vec![Permission::UrlPath(HeaderMatchKind::Exact(
                        "/healthz".into(),
                    ))],
                    principals: vec![Principal::Any],
                },
            ),
        ],
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "api.example".parse().unwrap());
    headers.insert("user-agent", "bench".parse().unwrap());
    let uri: http::Uri = "/api/v1/items?page=2".parse().unwrap();
    let denied_uri: http::Uri = "/admin/users".parse().unwrap();
    let subject = |uri, remote: &str| Subject {
        local: "10.1.1.1:8080".parse().unwrap(),
        direct_remote: remote.parse().unwrap(),
        remote: remote.parse().unwrap(),
        tls: None,
        sni: None,
        request: Some(RequestHead {
            method: &http::Method::GET,
            uri,
            headers: &headers,
        }),
    };
    let allowed = subject(&uri, "10.2.3.4:40000");
    assert!(evaluate(&rules, &allowed).allowed);
    c.bench_function("rbac_typical_policy_allowed", |b| {
        b.iter(|| black_box(evaluate(black_box(&rules), black_box(&allowed))))
    });
    let denied = subject(&denied_uri, "203.0.113.9:40000");
    assert!(!evaluate(&rules, &denied).allowed);
    c.bench_function("rbac_typical_policy_denied", |b| {
        b.iter(|| black_box(evaluate(black_box(&rules), black_box(&denied))))
    });
}

/// `n` bytes of log-like text (compressible about 4:1).
fn text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while out.len() < n {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(
            format!(
                "{:06} GET /api/v1/items id={} took={}ms ok\n",
                out.len(),
                i >> 44,
                i % 997
            )
            .as_bytes(),
        );
    }
    out.truncate(n);
    out
}

fn compressors(c: &mut Criterion) {
    // Envoy's defaults for each library.
    let libraries = [
        CompressorLibrary::Gzip(GzipParams {
            level: 6,
            window_bits: 12,
            chunk_size: 4096,
        }),
        CompressorLibrary::Brotli(BrotliParams {
            quality: 3,
            window_bits: 18,
            input_block_bits: 24,
            disable_literal_context_modeling: false,
            mode: BrotliMode::Generic,
            chunk_size: 4096,
        }),
        CompressorLibrary::Zstd(ZstdParams {
            level: 3,
            enable_checksum: false,
            strategy: 0,
            chunk_size: 4096,
        }),
    ];
    let store = shm_stats::Store::new();
    let stats = CompressorStats::new(&store, "bench", "lib", "any", false).response;
    for size in [1024, 16 * 1024] {
        let body = text(size);
        for lib in &libraries {
            let name = format!("compress_{}_{}k", lib.stat_name(), size / 1024);
            c.bench_function(&name, |b| {
                b.iter(|| {
                    let mut coder =
                        proxy_core::compression::compressor(lib, stats.clone()).expect("coder");
                    black_box(coder.data(black_box(&body)).expect("data"));
                    black_box(coder.finish().expect("finish"))
                })
            });
        }
    }
}

criterion_group!(benches, lookups, bucket, percent, rbac, compressors);
criterion_main!(benches);
