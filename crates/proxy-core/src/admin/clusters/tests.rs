//! Unit tests of [`super`].

use super::*;

fn sample() -> Vec<ClusterStatus> {
    vec![ClusterStatus {
        name: "backend".to_owned(),
        thresholds: Thresholds {
            max_connections: 100,
            max_pending_requests: 200,
            max_requests: 300,
            max_retries: 4,
        },
        hosts: vec![
            HostStatus {
                address: SocketAddr::from(([127, 0, 0, 1], 8080)),
                hostname: "app1".to_owned(),
                weight: 1,
                priority: 0,
                health: crate::host_health::HealthFlags::HEALTHY,
                cx_active: 2,
                cx_connect_fail: 3,
                rq_active: 1,
                rq_total: 40,
                rq_error: 5,
                rq_success: 35,
                success_rate: None,
                local_origin_success_rate: None,
            },
            HostStatus {
                address: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9090)),
                hostname: String::new(),
                weight: 3,
                priority: 0,
                health: crate::host_health::HealthFlags::FAILED_ACTIVE_HC,
                cx_active: 0,
                cx_connect_fail: 0,
                rq_active: 0,
                rq_total: 0,
                rq_error: 0,
                rq_success: 0,
                success_rate: None,
                local_origin_success_rate: None,
            },
        ],
        added_via_api: false,
        outlier_detection: false,
        success_rate_average: None,
        success_rate_threshold: None,
        local_origin_success_rate_average: None,
        local_origin_success_rate_threshold: None,
    }]
}

#[test]
fn clusters_text_form() {
    let out = clusters_text(&sample());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "backend::observability_name::backend");
    assert_eq!(lines[1], "backend::default_priority::max_connections::100");
    assert_eq!(
        lines[2],
        "backend::default_priority::max_pending_requests::200"
    );
    assert_eq!(lines[3], "backend::default_priority::max_requests::300");
    assert_eq!(lines[4], "backend::default_priority::max_retries::4");
    assert_eq!(lines[5], "backend::high_priority::max_connections::1024");
    assert_eq!(lines[8], "backend::high_priority::max_retries::3");
    assert_eq!(lines[9], "backend::added_via_api::false");
    let host1: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("backend::127.0.0.1:8080::"))
        .collect();
    assert_eq!(
        &host1[..9],
        [
            "backend::127.0.0.1:8080::cx_active::2",
            "backend::127.0.0.1:8080::cx_connect_fail::3",
            "backend::127.0.0.1:8080::rq_active::1",
            "backend::127.0.0.1:8080::rq_error::5",
            "backend::127.0.0.1:8080::rq_success::35",
            "backend::127.0.0.1:8080::rq_total::40",
            "backend::127.0.0.1:8080::hostname::app1",
            "backend::127.0.0.1:8080::health_flags::healthy",
            "backend::127.0.0.1:8080::weight::1",
        ]
    );
    assert!(lines.contains(&"backend::[::1]:9090::health_flags::/failed_active_hc"));
    assert!(lines.contains(&"backend::[::1]:9090::weight::3"));
    assert!(clusters_text(&[]).is_empty());
}

#[test]
fn outlier_detection_lines_follow_the_name_as_envoys() {
    let mut clusters = sample();
    clusters[0].outlier_detection = true;
    clusters[0].hosts[1].health = crate::host_health::HealthFlags::FAILED_OUTLIER_CHECK;
    let out = clusters_text(&clusters);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "backend::observability_name::backend",
            "backend::outlier::success_rate_average::-1",
            "backend::outlier::success_rate_ejection_threshold::-1",
            "backend::outlier::local_origin_success_rate_average::-1",
            "backend::outlier::local_origin_success_rate_ejection_threshold::-1",
        ]
    );
    assert!(lines.contains(&"backend::[::1]:9090::health_flags::/failed_outlier_check"));
    let v: Json = serde_json::from_str(&clusters_json(&clusters)).expect("JSON");
    assert_eq!(
        v["cluster_statuses"][0]["host_statuses"][1]["health_status"],
        json!({"eds_health_status": "HEALTHY", "failed_outlier_check": true})
    );
}

/// As Envoy 1.40 shows an interval with three hosts at 100% and one at 0% (measured).
#[test]
fn success_rates_as_envoy_prints_them() {
    let mut clusters = sample();
    let c = &mut clusters[0];
    c.outlier_detection = true;
    c.success_rate_average = Some(75.0);
    c.success_rate_threshold = Some(31.698_729_810_778_07);
    c.hosts[0].success_rate = Some(100.0);
    c.hosts[1].success_rate = Some(0.0);
    let out = clusters_text(&clusters);
    for line in [
        "backend::outlier::success_rate_average::75",
        "backend::outlier::success_rate_ejection_threshold::31.6987",
        "backend::outlier::local_origin_success_rate_average::-1",
        "backend::127.0.0.1:8080::success_rate::100",
        "backend::[::1]:9090::success_rate::0",
        "backend::[::1]:9090::local_origin_success_rate::-1",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line} in:\n{out}");
    }
    let v: Json = serde_json::from_str(&clusters_json(&clusters)).expect("JSON");
    let c = &v["cluster_statuses"][0];
    assert_eq!(
        c["success_rate_ejection_threshold"],
        json!({"value": 31.698_729_810_778_07})
    );
    assert_eq!(c["host_statuses"][0]["success_rate"], json!({"value": 100}));
    // proto3 JSON leaves a zero value out.
    assert_eq!(c["host_statuses"][1]["success_rate"], json!({}));
    // No value: no field.
    let v: Json = serde_json::from_str(&clusters_json(&sample())).expect("JSON");
    let c = &v["cluster_statuses"][0];
    assert!(c.get("success_rate_ejection_threshold").is_none());
    assert!(c["host_statuses"][0].get("success_rate").is_none());
}

/// As Envoy 1.40 shows a priority-1 host: `priority::1` in text, `"priority": 1` in JSON, and
/// no field for priority 0 (measured).
#[test]
fn priorities_as_envoy_shows_them() {
    let mut clusters = sample();
    clusters[0].hosts[1].priority = 1;
    let out = clusters_text(&clusters);
    assert!(out
        .lines()
        .any(|l| l == "backend::127.0.0.1:8080::priority::0"));
    assert!(out.lines().any(|l| l == "backend::[::1]:9090::priority::1"));
    let v: Json = serde_json::from_str(&clusters_json(&clusters)).expect("JSON");
    let hosts = &v["cluster_statuses"][0]["host_statuses"];
    assert!(hosts[0].get("priority").is_none());
    assert_eq!(hosts[1]["priority"], 1);
}

#[test]
fn clusters_json_form() -> Result<(), Box<dyn std::error::Error>> {
    let v: Json = serde_json::from_str(&clusters_json(&sample()))?;
    let c = &v["cluster_statuses"][0];
    assert_eq!(c["name"], "backend");
    assert_eq!(c["added_via_api"], false);
    assert_eq!(
        c["circuit_breakers"]["thresholds"][0]["max_connections"],
        100
    );
    assert_eq!(c["circuit_breakers"]["thresholds"][1]["priority"], "HIGH");
    let h = &c["host_statuses"][0];
    assert_eq!(
        h["address"],
        json!({"socket_address": {"address": "127.0.0.1", "port_value": 8080}})
    );
    assert_eq!(h["health_status"], json!({"eds_health_status": "HEALTHY"}));
    assert_eq!(h["weight"], 1);
    assert_eq!(h["hostname"], "app1");
    let stats = h["stats"].as_array().ok_or("no stats")?;
    assert!(stats.contains(&json!({"name": "rq_total", "type": "COUNTER", "value": "40"})));
    assert!(stats.contains(&json!({"name": "cx_active", "type": "GAUGE", "value": "2"})));
    let h2 = &c["host_statuses"][1];
    assert_eq!(h2["address"]["socket_address"]["address"], "::1");
    assert_eq!(h2["health_status"]["failed_active_health_check"], true);
    Ok(())
}

#[test]
fn listeners_forms() -> Result<(), Box<dyn std::error::Error>> {
    let listeners = vec![
        ListenerStatus {
            name: "listener_0".to_owned(),
            address: "0.0.0.0:10000".parse()?,
            additional_addresses: vec![],
        },
        ListenerStatus {
            name: "v6".to_owned(),
            address: "[::1]:10001".parse()?,
            additional_addresses: vec!["127.0.0.1:10002".parse()?],
        },
    ];
    assert_eq!(
        listeners_text(&listeners),
        // As Envoy 1.40: one line per address, the listener's name on each.
        "listener_0::0.0.0.0:10000\nv6::[::1]:10001\nv6::127.0.0.1:10002\n"
    );
    let v: Json = serde_json::from_str(&listeners_json(&listeners))?;
    assert_eq!(
        v,
        json!({"listener_statuses": [
            {"name": "listener_0", "local_address": {"socket_address": {"address": "0.0.0.0", "port_value": 10000}}},
            {"name": "v6", "local_address": {"socket_address": {"address": "::1", "port_value": 10001}},
                "additional_local_addresses": [{"socket_address": {"address": "127.0.0.1", "port_value": 10002}}]},
        ]})
    );
    Ok(())
}
