//! `ORIGINAL_DST` clusters and the `original_dst` listener filter: what is accepted, and what
//! is refused with its path (Envoy 1.40's own refusals quoted where it has one).

use proxy_core::config::{Discovery, LbPolicy, ListenerFilter};
use serde_json::{json, Value};

use super::{base, parse_value, set, CLUSTER0};

/// The quickstart with its cluster made an `ORIGINAL_DST` one with `extra` fields.
fn od(extra: Value) -> Value {
    let b = base();
    let name = b.pointer(&format!("{CLUSTER0}/name")).cloned().unwrap();
    let mut c = json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    set(b, CLUSTER0, c)
}

fn refused(v: &Value) -> (String, String) {
    let Err(errs) = parse_value(v) else {
        panic!("accepted: {v}");
    };
    (errs.0[0].path.clone(), errs.0[0].message.clone())
}

#[test]
fn an_original_dst_cluster_takes_envoys_defaults() {
    let loaded = parse_value(&od(json!({}))).unwrap();
    let c = &loaded.bootstrap.clusters[0];
    assert_eq!(c.discovery, Discovery::OriginalDst);
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided);
    let o = c.original_dst.as_ref().unwrap();
    assert_eq!(o.header, None);
    assert_eq!(o.port_override, None);
    assert_eq!(o.cleanup_interval, std::time::Duration::from_secs(5));

    // An empty header name is the default one (Envoy 1.40 accepts it so).
    let v = od(
        json!({"cleanup_interval": "2s", "original_dst_lb_config": {"use_http_header": true, "http_header_name": "", "upstream_port_override": 8080}}),
    );
    let loaded = parse_value(&v).unwrap();
    let o = loaded.bootstrap.clusters[0].original_dst.clone().unwrap();
    assert_eq!(o.header.unwrap().as_str(), "x-envoy-original-dst-host");
    assert_eq!(o.port_override, Some(8080));
    assert_eq!(o.cleanup_interval, std::time::Duration::from_secs(2));
    let v = od(
        json!({"original_dst_lb_config": {"use_http_header": true, "http_header_name": "X-Dst"}}),
    );
    let loaded = parse_value(&v).unwrap();
    let o = loaded.bootstrap.clusters[0].original_dst.clone().unwrap();
    assert_eq!(o.header.unwrap().as_str(), "x-dst");
}

#[test]
fn what_envoy_refuses_and_what_baton_does_not_honour_is_refused_with_its_path() {
    let c = |f: &str| format!("clusters[0].{f}");
    let table = [
        // "LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST. Only
        // 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'" (also by default).
        (od(json!({"lb_policy": "ROUND_ROBIN"})), c("lb_policy")),
        (
            super::remove(od(json!({})), &format!("{CLUSTER0}/lb_policy")),
            c("lb_policy"),
        ),
        // "ORIGINAL_DST clusters must have no load assignment configured"
        (
            od(json!({"load_assignment": {"cluster_name": "x", "endpoints": []}})),
            c("load_assignment"),
        ),
        // "invalid config http_header_name=x-foo and use_http_header is false."
        (
            od(json!({"original_dst_lb_config": {"http_header_name": "x-foo"}})),
            c("original_dst_lb_config.http_header_name"),
        ),
        // "value must be less than or equal to 65535" / "value must be greater than 0s"
        (
            od(json!({"original_dst_lb_config": {"upstream_port_override": 70000}})),
            c("original_dst_lb_config.upstream_port_override"),
        ),
        (od(json!({"cleanup_interval": "0s"})), c("cleanup_interval")),
        // Not honoured by Baton.
        (
            od(json!({"original_dst_lb_config": {"use_port_from_host_filter_state": true}})),
            c("original_dst_lb_config.use_port_from_host_filter_state"),
        ),
        (
            od(
                json!({"original_dst_lb_config": {"use_http_header": true, "http_header_name": "bad name"}}),
            ),
            c("original_dst_lb_config.http_header_name"),
        ),
        (od(json!({"outlier_detection": {}})), c("outlier_detection")),
        // "cluster provided LB specified but cluster 'c' did not provide one."
        (
            set(
                base(),
                &format!("{CLUSTER0}/lb_policy"),
                json!("CLUSTER_PROVIDED"),
            ),
            c("lb_policy"),
        ),
        (
            set(base(), &format!("{CLUSTER0}/cleanup_interval"), json!("1s")),
            c("cleanup_interval"),
        ),
    ];
    for (v, want) in table {
        let (path, message) = refused(&v);
        assert!(path.ends_with(&want), "{path} ({message}), wanted {want}");
    }
}

#[test]
fn the_original_dst_listener_filter_by_name_or_typed_config() {
    for f in [
        json!({"name": "envoy.filters.listener.original_dst"}),
        json!({"name": "o", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}),
    ] {
        let v = set(
            base(),
            "/static_resources/listeners/0/listener_filters",
            json!([f]),
        );
        let loaded = parse_value(&v).unwrap();
        assert_eq!(
            loaded.bootstrap.listeners[0].listener_filters,
            [ListenerFilter::OriginalDst]
        );
    }
}
