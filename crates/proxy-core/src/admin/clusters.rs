//! `/clusters` and `/listeners` in Envoy's text and JSON forms.
//!
//! Localities are not shown per host, so the fields Envoy prints for those carry the values
//! Envoy prints when they are not configured (empty zone); success rates are the outlier detector's, `-1` when it has none. High-priority circuit breakers are not
//! configurable in Baton, so they are Envoy's defaults.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{json, Value as Json};

use super::{ClusterStatus, HostStatus, ListenerStatus};
use crate::config::Thresholds;
use crate::host_health::HealthFlags;

/// The per-host stats, in the name order Envoy prints them, as (name, value, is gauge).
fn host_stats(h: &HostStatus) -> [(&'static str, u64, bool); 6] {
    [
        ("cx_active", h.cx_active, true),
        ("cx_connect_fail", h.cx_connect_fail, false),
        ("rq_active", h.rq_active, true),
        ("rq_error", h.rq_error, false),
        ("rq_success", h.rq_success, false),
        ("rq_total", h.rq_total, false),
    ]
}

fn write_thresholds(out: &mut String, cluster: &str, priority: &str, t: &Thresholds) {
    for (name, v) in [
        ("max_connections", t.max_connections),
        ("max_pending_requests", t.max_pending_requests),
        ("max_requests", t.max_requests),
        ("max_retries", t.max_retries),
    ] {
        let _ = writeln!(out, "{cluster}::{priority}::{name}::{v}");
    }
}

/// A success rate as Envoy prints it; `-1` for none.
fn rate(v: Option<f64>) -> String {
    crate::outlier::format_rate(v.unwrap_or(-1.0))
}

/// A rate as Envoy's JSON has it (`google.protobuf.DoubleValue`: `{"value": …}`, the value
/// left out when 0, as proto3 does, and integral values printed without a fraction).
fn rate_json(v: f64) -> Json {
    if v == 0.0 {
        json!({})
    } else if v == v.trunc() && v.abs() < 1e15 {
        json!({ "value": v as i64 })
    } else {
        json!({ "value": v })
    }
}

/// Envoy's `/clusters` text form.
pub(super) fn clusters_text(clusters: &[ClusterStatus]) -> String {
    let mut out = String::new();
    for c in clusters {
        let name = &c.name;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        if c.outlier_detection {
            for (line, v) in [
                ("success_rate_average", c.success_rate_average),
                ("success_rate_ejection_threshold", c.success_rate_threshold),
                (
                    "local_origin_success_rate_average",
                    c.local_origin_success_rate_average,
                ),
                (
                    "local_origin_success_rate_ejection_threshold",
                    c.local_origin_success_rate_threshold,
                ),
            ] {
                let _ = writeln!(out, "{name}::outlier::{line}::{}", rate(v));
            }
        }
        write_thresholds(&mut out, name, "default_priority", &c.thresholds);
        write_thresholds(&mut out, name, "high_priority", &Thresholds::default());
        let _ = writeln!(out, "{name}::added_via_api::{}", c.added_via_api);
        for h in &c.hosts {
            let host = format!("{name}::{}", h.address);
            for (stat, v, _) in host_stats(h) {
                let _ = writeln!(out, "{host}::{stat}::{v}");
            }
            let _ = writeln!(out, "{host}::hostname::{}", h.hostname);
            let _ = writeln!(out, "{host}::health_flags::{}", h.health.render());
            let _ = writeln!(out, "{host}::weight::{}", h.weight);
            let _ = writeln!(out, "{host}::region::");
            let _ = writeln!(out, "{host}::zone::");
            let _ = writeln!(out, "{host}::sub_zone::");
            let _ = writeln!(out, "{host}::canary::false");
            let _ = writeln!(out, "{host}::priority::{}", h.priority);
            let _ = writeln!(out, "{host}::success_rate::{}", rate(h.success_rate));
            let _ = writeln!(
                out,
                "{host}::local_origin_success_rate::{}",
                rate(h.local_origin_success_rate)
            );
        }
    }
    out
}

/// `{"socket_address":{"address","port_value"}}` (Envoy's `config.core.v3.Address`).
fn socket_address(addr: SocketAddr) -> Json {
    json!({
        "socket_address": {
            "address": addr.ip().to_string(),
            "port_value": addr.port(),
        }
    })
}

fn thresholds_json(t: &Thresholds, priority: Option<&str>) -> Json {
    let mut v = json!({
        "max_connections": t.max_connections,
        "max_pending_requests": t.max_pending_requests,
        "max_requests": t.max_requests,
        "max_retries": t.max_retries,
    });
    if let (Some(p), Some(obj)) = (priority, v.as_object_mut()) {
        obj.insert("priority".to_owned(), Json::from(p));
    }
    v
}

fn host_json(h: &HostStatus) -> Json {
    // Envoy's `admin.v3.SimpleMetric`: uint64 values are strings in proto3 JSON.
    let stats: Vec<Json> = host_stats(h)
        .iter()
        .map(|(name, v, gauge)| {
            json!({
                "name": name,
                "type": if *gauge { "GAUGE" } else { "COUNTER" },
                "value": v.to_string(),
            })
        })
        .collect();
    // Envoy's `admin.v3.HostHealthStatus`: a flag appears only when set.
    let mut health = serde_json::Map::new();
    for (flag, name) in [
        (HealthFlags::FAILED_ACTIVE_HC, "failed_active_health_check"),
        (HealthFlags::FAILED_OUTLIER_CHECK, "failed_outlier_check"),
        (HealthFlags::ACTIVE_HC_TIMEOUT, "active_hc_timeout"),
    ] {
        if h.health.contains(flag) {
            health.insert(name.to_owned(), Json::Bool(true));
        }
    }
    health.insert("eds_health_status".to_owned(), Json::from("HEALTHY"));
    let mut v = json!({
        "address": socket_address(h.address),
        "stats": stats,
        "health_status": health,
        "weight": h.weight,
        "locality": {},
    });
    // proto3 JSON leaves an empty string out.
    if !h.hostname.is_empty() {
        v["hostname"] = Json::from(h.hostname.clone());
    }
    if let Some(r) = h.success_rate {
        v["success_rate"] = rate_json(r);
    }
    // proto3 JSON leaves priority 0 out.
    if h.priority != 0 {
        v["priority"] = Json::from(h.priority);
    }
    if let Some(r) = h.local_origin_success_rate {
        v["local_origin_success_rate"] = rate_json(r);
    }
    v
}

/// Envoy's `/clusters?format=json` (`admin.v3.Clusters`), pretty-printed.
pub(super) fn clusters_json(clusters: &[ClusterStatus]) -> String {
    let statuses: Vec<Json> = clusters
        .iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name,
                "observability_name": c.name,
                "added_via_api": c.added_via_api,
                "circuit_breakers": {
                    "thresholds": [
                        thresholds_json(&c.thresholds, None),
                        thresholds_json(&Thresholds::default(), Some("HIGH")),
                    ]
                },
                "host_statuses": c.hosts.iter().map(host_json).collect::<Vec<_>>(),
            });
            if let Some(t) = c.success_rate_threshold {
                v["success_rate_ejection_threshold"] = rate_json(t);
            }
            if let Some(t) = c.local_origin_success_rate_threshold {
                v["local_origin_success_rate_ejection_threshold"] = rate_json(t);
            }
            v
        })
        .collect();
    pretty(&json!({ "cluster_statuses": statuses }))
}

/// Envoy's `/listeners` text form: `name::address` per line.
pub(super) fn listeners_text(listeners: &[ListenerStatus]) -> String {
    let mut out = String::new();
    for l in listeners {
        for a in std::iter::once(&l.address).chain(&l.additional_addresses) {
            let _ = writeln!(out, "{}::{a}", l.name);
        }
    }
    out
}

/// Envoy's `/listeners?format=json` (`admin.v3.Listeners`), pretty-printed.
pub(super) fn listeners_json(listeners: &[ListenerStatus]) -> String {
    let statuses: Vec<Json> = listeners
        .iter()
        .map(|l| {
            let mut v = json!({ "name": l.name, "local_address": socket_address(l.address) });
            if !l.additional_addresses.is_empty() {
                let more: Vec<Json> = l
                    .additional_addresses
                    .iter()
                    .map(|a| socket_address(*a))
                    .collect();
                v["additional_local_addresses"] = Json::Array(more);
            }
            v
        })
        .collect();
    pretty(&json!({ "listener_statuses": statuses }))
}

/// `v` pretty-printed with a final newline.
pub(super) fn pretty(v: &Json) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
