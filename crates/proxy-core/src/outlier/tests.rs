//! Unit tests of [`super`]: ejection decisions, their limits and their end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{self, Discovery, DnsLookupFamily, Endpoint, LbPolicy, Thresholds};

fn cluster(ports: &[u16], od: OutlierDetection) -> ClusterManager {
    let store = shm_stats::Store::new();
    let c = config::Cluster {
        name: "c".into(),
        discovery: Discovery::Static,
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        endpoints: ports
            .iter()
            .map(|p| Endpoint {
                host: "127.0.0.1".into(),
                port: *p,
                weight: 1,
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
        outlier: Some(od),
        overprovisioning_factor: config::DEFAULT_OVERPROVISIONING_FACTOR,
        upstream: Default::default(),
        original_dst: None,
    };
    ClusterManager::new(&[c], &store)
}

fn od() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: 3,
        max_ejection_percent: 50,
        base_ejection_time: Duration::from_secs(10),
        max_ejection_time: Duration::from_secs(25),
        ..OutlierDetection::default()
    }
}

#[test]
fn consecutive_5xx_are_reported_once_per_threshold_and_a_success_resets() {
    let cm = cluster(&[1], od());
    let c = cm.get(0).unwrap();
    let mut rx = c.outlier.as_ref().unwrap().take_reports().unwrap();
    let h = c.hosts().hosts[0].clone();
    c.record_outcome(&h, 500);
    c.record_outcome(&h, 500);
    c.record_outcome(&h, 200);
    c.record_outcome(&h, 500);
    c.record_outcome(&h, 500);
    assert!(rx.try_recv().is_err());
    c.record_outcome(&h, 503);
    assert_eq!(rx.try_recv().unwrap().1, Detected::Consecutive5xx);
    // 5 gateway failures in a row (Envoy's default) are detected too; the 503 was the first.
    for _ in 0..4 {
        c.record_outcome(&h, 504);
    }
    let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok().map(|r| r.1)).collect();
    assert_eq!(
        got,
        [
            Detected::Consecutive5xx,
            Detected::ConsecutiveGatewayFailure
        ]
    );
    // A 500 is a 5xx but ends a gateway-failure run.
    c.record_outcome(&h, 500);
    assert_eq!(
        h.outlier
            .consecutive_gateway_failure
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn ejections_respect_the_percent_the_roll_and_their_time() {
    let cm = cluster(&[1, 2, 3], od());
    let c = cm.get(0).unwrap();
    let hosts = c.hosts().hosts.clone();
    let cfg = od();
    let mut d = Detector::default();
    let t0 = Instant::now();
    let five = Detected::Consecutive5xx;
    assert_eq!(d.report(&hosts[0], five, 3, 0, t0, &cfg), Decision::Ejected);
    assert!(hosts[0]
        .health
        .load()
        .contains(HealthFlags::FAILED_OUTLIER_CHECK));
    assert_eq!(d.report(&hosts[0], five, 3, 0, t0, &cfg), Decision::Ignored);
    // A second of three would be 66% > 50%.
    assert_eq!(
        d.report(&hosts[1], five, 3, 0, t0, &cfg),
        Decision::Overflow
    );
    // Gateway failures are not enforced by default.
    let gw = Detected::ConsecutiveGatewayFailure;
    let mut d2 = Detector::default();
    assert_eq!(
        d2.report(&hosts[2], gw, 3, 0, t0, &cfg),
        Decision::NotEnforced
    );

    let all: Vec<usize> = hosts.iter().map(|h| Arc::as_ptr(h) as usize).collect();
    assert_eq!(d.review(t0 + Duration::from_secs(9), &all), 0);
    assert_eq!(d.review(t0 + Duration::from_secs(10), &all), 1);
    assert!(hosts[0].health.load().is_healthy());
    // Ejected again at once: twice the base time, then capped by max_ejection_time.
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(
        d.report(&hosts[0], five, 3, 99, t1, &cfg),
        Decision::Ejected
    );
    assert_eq!(d.review(t1 + Duration::from_secs(19), &all), 0);
    assert_eq!(d.review(t1 + Duration::from_secs(20), &all), 1);
    // A third time in a row: capped at max_ejection_time (25 s, not 30 s).
    let t2 = t1 + Duration::from_secs(20);
    assert_eq!(d.report(&hosts[0], five, 3, 0, t2, &cfg), Decision::Ejected);
    assert_eq!(d.review(t2 + Duration::from_secs(24), &all), 0);
    assert_eq!(d.review(t2 + Duration::from_secs(25), &all), 1);
    // Staying in lowers the multiplier one step per review.
    assert_eq!(d.hosts.values().next().unwrap().count, 3);
    d.review(t2 + Duration::from_secs(26), &all);
    d.review(t1 + Duration::from_secs(21), &all);
    d.review(t1 + Duration::from_secs(22), &all);
    assert!(d.hosts.is_empty());
}

#[test]
fn a_passing_health_check_ends_an_ejection() {
    let cm = cluster(&[1, 2], od());
    let c = cm.get(0).unwrap();
    let h = c.hosts().hosts[0].clone();
    let mut d = Detector::default();
    let now = Instant::now();
    assert_eq!(
        d.report(&h, Detected::Consecutive5xx, 2, 0, now, &od()),
        Decision::Ejected
    );
    assert_eq!(
        d.report(&h, Detected::HealthCheckPassed, 2, 0, now, &od()),
        Decision::Returned
    );
    assert!(h.health.load().is_healthy());
}
