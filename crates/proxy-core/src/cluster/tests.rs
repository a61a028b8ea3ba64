//! Unit tests of [`super`]: balancing, health-aware host sets, membership, DNS.
use super::*;
use crate::config::{Endpoint, LbPolicy, Thresholds};

fn cluster(policy: LbPolicy, eps: &[(&str, u16, u32)]) -> config::Cluster {
    config::Cluster {
        name: "c".into(),
        discovery: Discovery::Static,
        connect_timeout: Duration::from_secs(1),
        lb_policy: policy,
        endpoints: eps
            .iter()
            .map(|(h, p, w)| Endpoint {
                host: (*h).into(),
                port: *p,
                weight: *w,
                ..Endpoint::default()
            })
            .collect(),
        dns_lookup_family: DnsLookupFamily::V4Only,
        dns_refresh_rate: Duration::from_secs(5),
        circuit_breakers: Thresholds::default(),
        per_connection_buffer_limit_bytes: config::DEFAULT_BUFFER_LIMIT,
        tls: None,
        http2: false,
        metadata: Default::default(),
        health_check: None,
        panic_threshold: config::DEFAULT_PANIC_THRESHOLD,
        outlier: None,
        overprovisioning_factor: config::DEFAULT_OVERPROVISIONING_FACTOR,
        upstream: Default::default(),
        original_dst: None,
    }
}

fn counts(policy: LbPolicy, eps: &[(&str, u16, u32)], n: usize) -> HashMap<u16, usize> {
    let store = Store::new();
    let cm = ClusterManager::new(&[cluster(policy, eps)], &store);
    let lb = WorkerLb::new(&cm);
    let c = cm.get(0).unwrap();
    let mut out = HashMap::new();
    for _ in 0..n {
        let set = c.hosts();
        let h = lb.pick(0, c, &set).unwrap();
        *out.entry(h.addr.port()).or_default() += 1;
    }
    out
}

#[test]
fn round_robin_is_even_and_weighted_is_proportional() {
    let even = counts(
        LbPolicy::RoundRobin,
        &[
            ("127.0.0.1", 1, 1),
            ("127.0.0.1", 2, 1),
            ("127.0.0.1", 3, 1),
        ],
        300,
    );
    assert!(even.values().all(|c| *c == 100), "{even:?}");
    let weighted = counts(
        LbPolicy::RoundRobin,
        &[("127.0.0.1", 1, 1), ("127.0.0.1", 2, 3)],
        400,
    );
    assert_eq!(weighted[&1], 100);
    assert_eq!(weighted[&2], 300);
}

#[test]
fn random_and_least_request_reach_every_host() {
    for policy in [LbPolicy::Random, LbPolicy::LeastRequest] {
        let c = counts(policy, &[("127.0.0.1", 1, 1), ("127.0.0.1", 2, 1)], 400);
        assert!(c[&1] > 100 && c[&2] > 100, "{policy:?} {c:?}");
    }
}

#[test]
fn static_hosts_and_membership() {
    let store = Store::new();
    let cm = ClusterManager::new(
        &[cluster(
            LbPolicy::RoundRobin,
            &[("127.0.0.1", 1, 1), ("::1", 2, 1)],
        )],
        &store,
    );
    let c = cm.get(cm.index("c").unwrap()).unwrap();
    assert_eq!(c.hosts().hosts.len(), 2);
    assert_eq!(c.stats.membership_total.value(), 2);
}

#[test]
fn max_retries_breaker_admits_up_to_the_limit() {
    let store = Store::new();
    let mut cfg = cluster(LbPolicy::RoundRobin, &[("127.0.0.1", 1, 1)]);
    cfg.circuit_breakers.max_retries = 2;
    let cm = ClusterManager::new(&[cfg], &store);
    let c = cm.get(0).unwrap();
    let a = c.try_retry().expect("first retry");
    let b = c.try_retry().expect("second retry");
    assert!(c.try_retry().is_none());
    assert_eq!(c.stats.upstream_rq_retry_overflow.value(), 1);
    drop(a);
    assert!(c.try_retry().is_some());
    drop(b);
}

/// Mark the hosts on `down` ports failed and publish.
fn fail(c: &Cluster, down: &[u16]) {
    for h in &c.hosts().hosts {
        let failed = down.contains(&h.addr.port());
        h.health
            .store(HealthFlags::HEALTHY.with(HealthFlags::FAILED_ACTIVE_HC, failed));
    }
    c.publish_health();
}

#[test]
fn unhealthy_hosts_are_skipped_until_panic() {
    let store = Store::new();
    let eps: Vec<(&str, u16, u32)> = (1..=5).map(|p| ("127.0.0.1", p, 1)).collect();
    let cm = ClusterManager::new(&[cluster(LbPolicy::RoundRobin, &eps)], &store);
    let lb = WorkerLb::new(&cm);
    let c = cm.get(0).unwrap();
    let picks = |n: usize| -> HashMap<u16, usize> {
        let mut out = HashMap::new();
        for _ in 0..n {
            let h = lb.pick(0, c, &c.hosts()).unwrap();
            *out.entry(h.addr.port()).or_default() += 1;
        }
        out
    };
    // 3 of 5 healthy (60%): only they are used.
    fail(c, &[1, 2]);
    let p = picks(300);
    assert_eq!(
        p.keys().copied().collect::<std::collections::BTreeSet<_>>(),
        [3, 4, 5].into()
    );
    assert_eq!(c.stats.membership_healthy.value(), 3);
    assert_eq!(c.stats.lb_healthy_panic.value(), 0);
    // 2 of 5 (40% < 50%): panic, every host, as Envoy.
    fail(c, &[1, 2, 3]);
    assert_eq!(picks(500).len(), 5);
    assert_eq!(c.stats.lb_healthy_panic.value(), 500);
    // Back to all healthy.
    fail(c, &[]);
    assert!(!c.hosts().levels[0].panic);
    assert_eq!(c.hosts().levels[0].routable.len(), 5);
}

#[test]
fn panic_threshold_zero_means_no_host_when_none_is_healthy() {
    let store = Store::new();
    let mut cfg = cluster(
        LbPolicy::Random,
        &[("127.0.0.1", 1, 1), ("127.0.0.1", 2, 1)],
    );
    cfg.panic_threshold = 0.0;
    let cm = ClusterManager::new(&[cfg], &store);
    let lb = WorkerLb::new(&cm);
    let c = cm.get(0).unwrap();
    fail(c, &[1]);
    for _ in 0..50 {
        assert_eq!(lb.pick(0, c, &c.hosts()).unwrap().addr.port(), 2);
    }
    fail(c, &[1, 2]);
    assert!(lb.pick(0, c, &c.hosts()).is_none());
}

#[test]
fn checked_hosts_start_failed_and_use_the_check_port() {
    let store = Store::new();
    let mut cfg = cluster(LbPolicy::RoundRobin, &[("127.0.0.1", 1, 1)]);
    cfg.endpoints[0].health_check_port = Some(9);
    cfg.health_check = Some(config::HealthCheck {
        timeout: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        interval_jitter: Duration::ZERO,
        unhealthy_threshold: 1,
        healthy_threshold: 1,
        no_traffic_interval: Duration::from_secs(1),
        no_traffic_healthy_interval: Duration::from_secs(1),
        interval_jitter_percent: 0,
        reuse_connection: true,
        unhealthy_interval: Duration::from_secs(1),
        unhealthy_edge_interval: Duration::from_secs(1),
        healthy_edge_interval: Duration::from_secs(1),
        always_log_failures: false,
        kind: config::CheckKind::Tcp(config::TcpCheck::default()),
    });
    let cm = ClusterManager::new(&[cfg], &store);
    let c = cm.get(0).unwrap();
    let set = c.hosts();
    assert_eq!(set.hosts[0].check_addr, "127.0.0.1:9".parse().unwrap());
    assert_eq!(set.hosts[0].health.load(), HealthFlags::FAILED_ACTIVE_HC);
    // The only host is down: panic mode still routes to it (Envoy's default).
    assert!(set.levels[0].panic);
    assert_eq!(c.stats.membership_healthy.value(), 0);
    assert_eq!(c.health_stats.as_ref().unwrap().healthy.value(), 0);
}

#[tokio::test]
async fn dns_clusters_resolve_localhost() {
    let store = Store::new();
    let mut cfg = cluster(LbPolicy::RoundRobin, &[("localhost", 8080, 1)]);
    cfg.discovery = Discovery::LogicalDns;
    let cm = ClusterManager::new(&[cfg], &store);
    cm.resolve_all().await;
    let set = cm.get(0).unwrap().hosts();
    assert_eq!(set.hosts.len(), 1);
    assert_eq!(set.hosts[0].addr, "127.0.0.1:8080".parse().unwrap());
}

#[test]
fn original_dst_hosts_are_made_on_demand_and_swept_after_an_unused_interval() {
    let mut cfg = cluster(LbPolicy::ClusterProvided, &[]);
    cfg.discovery = Discovery::OriginalDst;
    cfg.original_dst = Some(config::OriginalDst {
        header: Some(http::HeaderName::from_static("x-dst")),
        port_override: None,
        cleanup_interval: Duration::from_secs(5),
    });
    let store = Store::new();
    let cm = ClusterManager::new(&[cfg], &store);
    let c = cm.get(0).unwrap();
    let restored: SocketAddr = "10.0.0.1:80".parse().unwrap();
    assert!(c.original_dst_host(None, None).is_none());
    let a = c.original_dst_host(None, Some(restored)).unwrap();
    assert_eq!(a.addr, restored);
    assert_eq!(a.hostname, "c10.0.0.1:80");
    // The header wins over the connection's destination; the same address is the same host.
    let mut h = http::HeaderMap::new();
    h.insert("x-dst", http::HeaderValue::from_static("[::1]:8080"));
    let b = c.original_dst_host(Some(&h), Some(restored)).unwrap();
    assert_eq!(b.addr, "[::1]:8080".parse().unwrap());
    assert!(Arc::ptr_eq(
        &a,
        &c.original_dst_host(None, Some(restored)).unwrap()
    ));
    // An invalid header is counted and the connection's destination used.
    h.insert("x-dst", http::HeaderValue::from_static("::1"));
    let again = c.original_dst_host(Some(&h), Some(restored)).unwrap();
    assert!(Arc::ptr_eq(&a, &again));
    assert_eq!(c.stats.original_dst_host_invalid.value(), 1);
    assert_eq!(c.hosts().hosts.len(), 2);
    assert_eq!(c.stats.membership_change.value(), 2);

    // Used since the last sweep: kept (and unmarked); unused through a whole one: removed.
    c.original_dst_sweep();
    assert_eq!(c.hosts().hosts.len(), 2);
    c.original_dst_host(None, Some(restored)).unwrap();
    c.original_dst_sweep();
    let left: Vec<_> = c.hosts().hosts.iter().map(|h| h.addr).collect();
    assert_eq!(left, [restored]);
    assert_eq!(c.stats.membership_total.value(), 1);
    assert_eq!(c.stats.membership_change.value(), 3);
    c.original_dst_sweep();
    assert!(c.hosts().hosts.is_empty());
}
