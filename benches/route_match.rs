//! Micro-benchmarks of route selection (`proxy_core::router::Router::route`), the per-request
//! cost of picking a virtual host and a route: Envoy's quick-start table and a large table of 50
//! virtual hosts × 20 routes mixing exact/wildcard domains, prefix/path/regex matches and header
//! matchers.
//!
//! Run with `cargo bench -p proxy-core --bench route_match`; `-- --test` runs each once.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proxy_core::config::{
    DirectResponse, ForwardAction, HeaderMatchKind, HeaderMatcher, PathMatch, Route, RouteAction,
    RouteConfig, RouteMatch, VirtualHost,
};
use proxy_core::router::Router;
use regex::Regex;

const VHOSTS: usize = 50;
const ROUTES_PER_VHOST: usize = 20;

fn forward(cluster: &str) -> RouteAction {
    RouteAction::Forward(ForwardAction {
        cluster: proxy_core::config::ClusterSpecifier::Cluster(cluster.to_owned()),
        prefix_rewrite: None,
        host_rewrite_literal: None,
        host_rewrite_header: None,
        host_rewrite_path_regex: None,
        regex_rewrite: None,
        timeout: Some(Duration::from_secs(15)),
        retry_policy: None,
        hash_policy: Vec::new(),
        weighted_filter_configs: Vec::new(),
        cluster_not_found_response_code: http::StatusCode::SERVICE_UNAVAILABLE,
        mirrors: Vec::new(),
        idle_timeout: None,
        upgrades: Vec::new(),
    })
}

fn route(name: String, path: PathMatch, headers: Vec<HeaderMatcher>, action: RouteAction) -> Route {
    Route {
        name,
        metadata: Default::default(),
        matcher: RouteMatch {
            path,
            case_sensitive: true,
            headers,
            query_parameters: vec![],
            pseudo_headers: vec![],
            grpc: false,
            runtime_fraction: None,
            tls_context: None,
        },
        action,
        headers: Default::default(),
        filter_configs: Default::default(),
        cors: None,
    }
}

fn header(name: &'static str, kind: HeaderMatchKind, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: HeaderName::from_static(name),
        kind,
        invert,
    }
}

fn regex(re: &str) -> Regex {
    match Regex::new(re) {
        Ok(re) => re,
        Err(e) => panic!("benchmark regex {re:?} does not compile: {e}"),
    }
}

fn build(cfg: &RouteConfig) -> Router {
    match Router::new(cfg, |_| Some(0)) {
        Ok(r) => r,
        Err(e) => panic!("benchmark route table does not compile: {e}"),
    }
}

/// Envoy's quick-start: one virtual host `*`, one route `prefix: /` to a cluster.
fn quickstart() -> Router {
    build(&RouteConfig {
        name: "local_route".into(),
        virtual_hosts: vec![VirtualHost {
            name: "local_service".into(),
            metadata: Default::default(),
            domains: vec!["*".into()],
            routes: vec![route(
                "default".into(),
                PathMatch::Prefix("/".into()),
                vec![],
                forward("service_envoyproxy_io"),
            )],
            headers: Default::default(),
            filter_configs: Default::default(),
            cors: None,
        }],
        ..Default::default()
    })
}

/// The domains of virtual host `i`: a third exact (`svc7.example.com` and its `:8080` form), a
/// third suffix wildcards (`*.t8.example.net`), a third prefix wildcards (`app9.*`).
fn domains(i: usize) -> Vec<String> {
    match i % 3 {
        0 => vec![
            format!("svc{i}.example.com"),
            format!("svc{i}.example.com:8080"),
        ],
        1 => vec![format!("*.t{i}.example.net")],
        _ => vec![format!("app{i}.*")],
    }
}

/// Twenty routes, in this order, the last being `prefix: /assets/` (so an unknown path misses).
fn routes(vi: usize) -> Vec<Route> {
    let cluster = format!("cluster_{vi}");
    let n = |r: usize| format!("vh{vi}_r{r}");
    let mut out = vec![
        route(
            n(0),
            PathMatch::Exact("/healthz".into()),
            vec![],
            forward(&cluster),
        ),
        route(
            n(1),
            PathMatch::Exact("/ready".into()),
            vec![],
            forward(&cluster),
        ),
        route(
            n(2),
            PathMatch::Prefix("/api/v2/".into()),
            vec![header(
                "x-canary",
                HeaderMatchKind::Exact("true".into()),
                false,
            )],
            forward(&cluster),
        ),
        route(
            n(3),
            PathMatch::Regex(regex(r"/api/v[0-9]+/users/[0-9]+")),
            vec![],
            forward(&cluster),
        ),
        route(
            n(4),
            PathMatch::Regex(regex(r"/api/v[0-9]+/orders/[0-9a-f]{8}(/items)?")),
            vec![],
            forward(&cluster),
        ),
    ];
    for r in 5..15 {
        out.push(route(
            n(r),
            PathMatch::Prefix(format!("/service{r}/")),
            vec![],
            forward(&cluster),
        ));
    }
    out.extend([
        route(
            n(15),
            PathMatch::Prefix("/mobile/".into()),
            vec![
                header(
                    "user-agent",
                    HeaderMatchKind::Contains("Mobile".into()),
                    false,
                ),
                header("x-debug", HeaderMatchKind::Present(true), true),
            ],
            forward(&cluster),
        ),
        route(
            n(16),
            PathMatch::Prefix("/api/".into()),
            vec![
                header(
                    "content-type",
                    HeaderMatchKind::Prefix("application/grpc".into()),
                    false,
                ),
                header(
                    "x-tenant",
                    HeaderMatchKind::Regex(regex("[a-z]{3}-[0-9]{2}")),
                    false,
                ),
            ],
            forward(&cluster),
        ),
        route(
            n(17),
            PathMatch::Exact("/login".into()),
            vec![],
            RouteAction::Direct(DirectResponse {
                status: StatusCode::FORBIDDEN,
                body: None,
            }),
        ),
        route(
            n(18),
            PathMatch::Prefix("/docs".into()),
            vec![header(
                "accept",
                HeaderMatchKind::Suffix("html".into()),
                false,
            )],
            forward(&cluster),
        ),
        route(
            n(19),
            PathMatch::Prefix("/assets/".into()),
            vec![],
            forward(&cluster),
        ),
    ]);
    debug_assert_eq!(out.len(), ROUTES_PER_VHOST);
    out
}

/// 50 virtual hosts × 20 routes; no `*` host, so an unknown authority misses.
fn large() -> Router {
    build(&RouteConfig {
        name: "large".into(),
        virtual_hosts: (0..VHOSTS)
            .map(|i| VirtualHost {
                name: format!("vh{i}"),
                metadata: Default::default(),
                domains: domains(i),
                routes: routes(i),
                headers: Default::default(),
                filter_configs: Default::default(),
                cors: None,
            })
            .collect(),
        ..Default::default()
    })
}

fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn expect_route(router: &Router, authority: &str, path: &str, headers: &HeaderMap, want: &str) {
    let got = router
        .route(authority, path, headers)
        .map(|r| r.name.as_str());
    assert_eq!(got, Some(want), "{authority}{path} routed wrongly");
}

fn bench_quickstart(c: &mut Criterion) {
    let router = quickstart();
    let headers = browser_headers();
    expect_route(&router, "localhost:10000", "/", &headers, "default");
    let mut g = c.benchmark_group("route_match/quickstart");
    g.bench_function("hit_prefix_slash", |b| {
        b.iter(|| {
            router.route(
                black_box("localhost:10000"),
                black_box("/index.html?lang=en"),
                black_box(&headers),
            )
        })
    });
    g.finish();
}

fn bench_large(c: &mut Criterion) {
    let router = large();
    let plain = browser_headers();
    let mut canary = plain.clone();
    canary.insert(
        HeaderName::from_static("x-canary"),
        HeaderValue::from_static("true"),
    );
    let mut grpc = plain.clone();
    grpc.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc+proto"),
    );
    grpc.insert(
        HeaderName::from_static("x-tenant"),
        HeaderValue::from_static("abc-42"),
    );

    // (name, authority, path, headers, expected route or None for a 404)
    let last = VHOSTS - 1; // 49: `*.t49.example.net`, the suffix-wildcard scan
    let cases: [(&str, &str, &str, &HeaderMap, Option<String>); 9] = [
        (
            "hit_first_route_exact_host",
            "svc48.example.com",
            "/healthz",
            &plain,
            Some("vh48_r0".into()),
        ),
        (
            "hit_last_route_exact_host",
            "svc48.example.com",
            "/assets/app.js",
            &plain,
            Some("vh48_r19".into()),
        ),
        (
            "hit_first_route_suffix_host",
            "www.t49.example.net",
            "/healthz",
            &plain,
            Some(format!("vh{last}_r0")),
        ),
        (
            "hit_first_route_prefix_host",
            "app47.internal",
            "/healthz",
            &plain,
            Some("vh47_r0".into()),
        ),
        (
            "hit_regex_route",
            "svc48.example.com",
            "/api/v1/orders/deadbeef/items?limit=10",
            &plain,
            Some("vh48_r4".into()),
        ),
        (
            "hit_header_exact_route",
            "svc48.example.com",
            "/api/v2/users",
            &canary,
            Some("vh48_r2".into()),
        ),
        (
            "hit_header_prefix_regex_route",
            "svc48.example.com",
            "/api/grpc.Health/Check",
            &grpc,
            Some("vh48_r16".into()),
        ),
        (
            "miss_path_404",
            "svc48.example.com",
            "/no/such/path",
            &plain,
            None,
        ),
        (
            "miss_host_404",
            "unknown.example.org",
            "/healthz",
            &plain,
            None,
        ),
    ];
    for (name, authority, path, headers, want) in &cases {
        let got = router
            .route(authority, path, headers)
            .map(|r| r.name.clone());
        assert_eq!(&got, want, "{name}: {authority}{path} routed wrongly");
    }

    let mut g = c.benchmark_group("route_match/50vhosts_x_20routes");
    for (name, authority, path, headers, _) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| router.route(black_box(authority), black_box(path), black_box(headers)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_quickstart, bench_large
}
criterion_main!(benches);
