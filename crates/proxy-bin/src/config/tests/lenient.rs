//! The leniencies Envoy 1.40 has in reading a bootstrap, each checked against what
//! `envoy --mode validate` (and a running Envoy's admin) showed.

use serde_json::json;

use super::*;

#[test]
fn null_lists_and_objects_are_absent_fields() {
    // Envoy validates `listeners: null`, `load_assignment: null`, `access_log: null`, ...
    let v = set(
        base(),
        "/static_resources/listeners/0/per_connection_buffer_limit_bytes",
        json!(null),
    );
    let v = set(v, &format!("{HCM}/access_log"), json!(null));
    let v = set(v, &format!("{HCM}/upgrade_configs"), json!(null));
    let v = set(
        v,
        &format!("{HCM}/common_http_protocol_options"),
        json!(null),
    );
    let v = set(v, &format!("{CLUSTER0}/circuit_breakers"), json!(null));
    let v = set(v, &format!("{CLUSTER0}/lb_policy"), json!(null));
    let loaded = parse_value(&v).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.bootstrap.listeners[0].http.access_logs.is_empty());
    // `/config_dump` shows the bootstrap as Envoy parsed it: without the nulls.
    assert!(loaded
        .effective
        .pointer(&format!("{HCM}/access_log"))
        .is_none());
    let v = set(base(), "/static_resources/listeners", json!(null));
    let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    assert!(b.listeners.is_empty());
    // A null list element is not a field: Envoy rejects it too.
    let v = set(base(), "/static_resources/clusters/1", json!(null));
    let e = parse_value(&v).unwrap_err();
    assert_eq!(e.0[0].path, "static_resources.clusters[1]", "{e}");
}

#[test]
fn ignore_tagged_keys_hold_anchors_the_bootstrap_uses() {
    let text = "\
!ignore defs:
  addr: &addr {socket_address: {address: 127.0.0.1, port_value: 9901}}
admin:
  !ignore note: {unknown: fields, of: any kind}
  address: *addr
";
    let loaded = parse_str(text).unwrap_or_else(|e| panic!("{e}"));
    let admin = loaded.bootstrap.admin.expect("admin");
    assert_eq!(admin.address, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(loaded.effective.get("defs"), None);
    // A tagged value (not key) stays, as in Envoy: here an unknown field.
    let e = parse_str("defs: !ignore {a: 1}\n").unwrap_err();
    assert_eq!(e.0[0].path, "defs", "{e}");
}
