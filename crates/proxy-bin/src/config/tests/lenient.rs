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
    assert!(loaded.bootstrap.listeners[0]
        .first_http()
        .unwrap()
        .access_logs
        .is_empty());
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

/// 8-4-4-4-12 lowercase hex, version 4, RFC 4122 variant.
fn is_uuid_v4(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lens == [8, 4, 4, 4, 12]
        && s.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}

#[test]
fn listeners_without_a_name_are_named_by_a_random_uuid() {
    // A running Envoy 1.40 lists such a listener as e.g.
    // `cadd9690-0e78-4db6-8319-6513357402e6::127.0.0.1:35589`, for an absent or empty name.
    let second = set(
        base(),
        "/static_resources/listeners/1",
        base()["static_resources"]["listeners"][0].clone(),
    );
    let second = set(
        second,
        "/static_resources/listeners/1/address/socket_address/port_value",
        json!(10001),
    );
    let v = remove(second, "/static_resources/listeners/0/name");
    let v = set(v, "/static_resources/listeners/1/name", json!(""));
    let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    let (a, b) = (&b.listeners[0].name, &b.listeners[1].name);
    assert!(is_uuid_v4(a) && is_uuid_v4(b), "{a} {b}");
    assert_ne!(a, b);
}

#[test]
fn enum_values_are_read_in_any_case_and_as_numbers() {
    // `envoy --mode validate` accepts `strict_dns`, `Least_Request`, `tlsv1_2`, `auto`, and
    // `type: 1` (STRICT_DNS's number).
    let v = set(base(), &format!("{CLUSTER0}/type"), json!("strict_dns"));
    let v = set(v, &format!("{CLUSTER0}/lb_policy"), json!("Least_Request"));
    let v = set(
        v,
        &format!("{CLUSTER0}/dns_lookup_family"),
        json!("v4_only"),
    );
    let v = set(v, &format!("{HCM}/codec_type"), json!("http1"));
    let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    assert_eq!(b.clusters[0].discovery, Discovery::StrictDns);
    assert_eq!(b.clusters[0].lb_policy, LbPolicy::LeastRequest);
    assert_eq!(b.clusters[0].dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(
        b.listeners[0].first_http().unwrap().codec_type,
        CodecType::Http1
    );
    let v = set(base(), &format!("{CLUSTER0}/type"), json!(1));
    let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    assert_eq!(b.clusters[0].discovery, Discovery::StrictDns);
    let v = set(
        base(),
        &format!("{CLUSTER0}/lb_policy"),
        json!("load_balancing_policy_config"),
    );
    let e = parse_value(&v).unwrap_err();
    assert_eq!(e.0[0].path, "static_resources.clusters[0].lb_policy");
    assert!(e.0[0].message.contains("Baton supports ROUND_ROBIN"), "{e}");
}

#[test]
fn node_is_kept_and_the_command_line_overrides_id_and_cluster() {
    let v = set(
        base(),
        "/node",
        json!({"id": "my-node", "cluster": "my-cluster",
            "metadata": {"a": 1, "camelCase": [true, null], "c": {"d": "x"}},
            "locality": {"region": "r1", "zone": "z1", "sub_zone": "s1"}}),
    );
    let node = parse_value(&v)
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap
        .node;
    assert_eq!(node.id, "my-node");
    assert_eq!(node.cluster, "my-cluster");
    // A Struct keeps its keys and nulls as written.
    assert_eq!(
        serde_json::Value::Object(node.metadata.clone()),
        json!({"a": 1, "camelCase": [true, null], "c": {"d": "x"}})
    );
    let loc = node.locality.clone().expect("locality");
    assert_eq!(
        (
            loc.region.as_str(),
            loc.zone.as_str(),
            loc.sub_zone.as_str()
        ),
        ("r1", "z1", "s1")
    );
    // Envoy: `--service-node cli-node --service-cluster cli-cluster --service-zone cli-zone`
    // replace id, cluster and locality.zone; empty flags do not.
    let flags = NodeOverrides {
        id: Some("cli-node"),
        cluster: Some("cli-cluster"),
        zone: Some("cli-zone"),
    };
    let o = node_with_overrides(&node, flags);
    assert_eq!(
        (o.id.as_str(), o.cluster.as_str()),
        ("cli-node", "cli-cluster")
    );
    assert_eq!(o.metadata, node.metadata);
    // `--service-zone` replaces the zone only (Envoy: region r1, zone cli-zone, sub_zone s1).
    let loc = o.locality.expect("locality");
    assert_eq!(
        (
            loc.region.as_str(),
            loc.zone.as_str(),
            loc.sub_zone.as_str()
        ),
        ("r1", "cli-zone", "s1")
    );
    let flags = NodeOverrides {
        id: Some(""),
        ..NodeOverrides::default()
    };
    let o = node_with_overrides(&node, flags);
    assert_eq!(
        (o.id.as_str(), o.cluster.as_str()),
        ("my-node", "my-cluster")
    );
    let zone_only = NodeOverrides {
        zone: Some("z"),
        ..NodeOverrides::default()
    };
    let o = node_with_overrides(&Node::default(), zone_only);
    assert_eq!(o.locality.map(|l| l.zone), Some("z".to_owned()));
    let e = parse_value(&set(base(), "/node", json!({"user_agent_name": "x"}))).unwrap_err();
    assert_eq!(e.0[0].path, "node.user_agent_name", "{e}");
    let e = parse_value(&set(base(), "/node", json!({"metadata": [1]}))).unwrap_err();
    assert_eq!(e.0[0].path, "node.metadata", "{e}");
}

#[test]
fn an_http_connection_manager_without_http_filters_is_refused_with_the_reason() {
    let e = parse_value(&remove(base(), &format!("{HCM}/http_filters"))).unwrap_err();
    assert!(e.0[0].path.ends_with("typed_config.http_filters"), "{e}");
    assert!(e.0[0].message.contains("never answers a request"), "{e}");
}

#[test]
fn metadata_is_kept_on_clusters_endpoints_routes_and_virtual_hosts() {
    let md = |ns: &str| json!({"filter_metadata": {ns: {"k": "v", "someKey": [1, null]}}});
    let vh = format!("{HCM}/route_config/virtual_hosts/0");
    let v = set(base(), &format!("{CLUSTER0}/metadata"), md("c"));
    let v = set(v, &format!("{vh}/metadata"), md("vh"));
    let v = set(v, &format!("{vh}/routes/0/metadata"), md("r"));
    let v = set(
        v,
        &format!("{CLUSTER0}/load_assignment/endpoints/0/lb_endpoints/0/metadata"),
        md("envoy.lb"),
    );
    let loaded = parse_value(&v).unwrap_or_else(|e| panic!("{e}"));
    let b = &loaded.bootstrap;
    let want = |ns: &str| {
        md(ns)["filter_metadata"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(b.clusters[0].metadata, want("c"));
    assert_eq!(b.clusters[0].endpoints[0].metadata, want("envoy.lb"));
    let vhost = &b.listeners[0]
        .first_http()
        .unwrap()
        .route_config
        .virtual_hosts[0];
    assert_eq!(vhost.metadata, want("vh"));
    assert_eq!(vhost.routes[0].metadata, want("r"));
    // Shown by /config_dump as written.
    assert_eq!(
        loaded.effective.pointer(&format!("{vh}/routes/0/metadata")),
        Some(&md("r"))
    );
    let e = parse_value(&set(
        base(),
        &format!("{CLUSTER0}/metadata"),
        json!({"typed_filter_metadata": {}}),
    ))
    .unwrap_err();
    assert_eq!(
        e.0[0].path,
        "static_resources.clusters[0].metadata.typed_filter_metadata"
    );
}

#[test]
fn endpoint_hostname_health_check_port_and_locality_are_kept() {
    let ep = format!("{CLUSTER0}/load_assignment/endpoints/0");
    let v = set(
        base(),
        &format!("{ep}/lb_endpoints/0/endpoint/hostname"),
        json!("host-a.example"),
    );
    let v = set(
        v,
        &format!("{ep}/lb_endpoints/0/endpoint/health_check_config"),
        json!({"port_value": 8081}),
    );
    let v = set(
        v,
        &format!("{ep}/locality"),
        json!({"region": "r1", "zone": "z1"}),
    );
    let v = set(v, &format!("{ep}/load_balancing_weight"), json!(5));
    let v = set(v, &format!("{ep}/priority"), json!(0));
    let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    let e = &b.clusters[0].endpoints[0];
    assert_eq!(e.hostname.as_deref(), Some("host-a.example"));
    assert_eq!(e.shown_hostname(), "host-a.example");
    assert_eq!(e.health_check_port, Some(8081));
    let loc = e.locality.as_ref().expect("locality");
    assert_eq!(
        (
            loc.region.as_str(),
            loc.zone.as_str(),
            loc.sub_zone.as_str()
        ),
        ("r1", "z1", "")
    );
    assert_eq!(e.locality_weight, Some(5));

    // Priorities are balanced as Envoy spreads load over them.
    let l = parse_value(&set(base(), &format!("{ep}/priority"), json!(2))).unwrap();
    assert_eq!(l.bootstrap.clusters[0].endpoints[0].priority, 2);
    assert_eq!(l.bootstrap.clusters[0].overprovisioning_factor, 140);
    let la = ep.rsplit_once("/endpoints/").map(|(la, _)| la).unwrap();
    let policy = |v| {
        set(
            base(),
            &format!("{la}/policy"),
            json!({"overprovisioning_factor": v}),
        )
    };
    let l = parse_value(&policy(100)).unwrap();
    assert_eq!(l.bootstrap.clusters[0].overprovisioning_factor, 100);
    let e = parse_value(&policy(0)).unwrap_err();
    assert!(
        e.0[0]
            .path
            .ends_with("load_assignment.policy.overprovisioning_factor"),
        "{e}"
    );
    let e = parse_value(&set(
        base(),
        &format!("{la}/policy"),
        json!({"drop_overloads": []}),
    ))
    .unwrap_err();
    assert!(
        e.0[0]
            .path
            .ends_with("load_assignment.policy.drop_overloads"),
        "{e}"
    );

    let bad = [
        (
            "load_balancing_weight",
            json!(0),
            "endpoints[0].load_balancing_weight",
            "at least 1",
        ),
        (
            "proximity",
            json!({}),
            "endpoints[0].proximity",
            "unsupported field",
        ),
    ];
    for (field, value, path, words) in bad {
        let e = parse_value(&set(base(), &format!("{ep}/{field}"), value)).unwrap_err();
        assert!(e.0[0].path.ends_with(path), "{e}");
        assert!(e.0[0].message.contains(words), "{e}");
    }
    let v = set(
        base(),
        &format!("{ep}/lb_endpoints/0/endpoint/health_check_config"),
        json!({"port_value": 70000}),
    );
    let e = parse_value(&v).unwrap_err();
    assert!(
        e.0[0]
            .path
            .ends_with("endpoint.health_check_config.port_value"),
        "{e}"
    );
    let v = set(
        base(),
        &format!("{ep}/lb_endpoints/0/endpoint/health_check_config"),
        json!({"hostname": "x"}),
    );
    let e = parse_value(&v).unwrap_err();
    assert!(e.0[0].path.ends_with("health_check_config.hostname"), "{e}");
}

const V1_CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tls/x509v1-cert.pem"
);
const V1_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tls/x509v1-key.pem"
);

/// The quick-start with static secrets `server` (a certificate) and `ca` (a validation
/// context), its listener's chain serving TLS with `common`.
fn with_secrets(common: serde_json::Value) -> serde_json::Value {
    let v = set(
        base(),
        "/static_resources/secrets",
        json!([
            {"name": "server", "tls_certificate": {
                "certificate_chain": {"filename": V1_CERT}, "private_key": {"filename": V1_KEY}}},
            {"name": "ca", "validation_context": {"trusted_ca": {"filename": V1_CERT}}},
            // Names are per kind, as in Envoy.
            {"name": "server", "validation_context": {"trusted_ca": {"filename": V1_CERT}}},
        ]),
    );
    set(
        v,
        "/static_resources/listeners/0/filter_chains/0/transport_socket",
        json!({"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": common}}),
    )
}

#[test]
fn tls_contexts_take_static_secrets_by_name() {
    // `envoy --mode validate` accepts this; a wrong name fails with "Unknown static secret".
    let v = with_secrets(json!({
        "tls_certificate_sds_secret_configs": [{"name": "server"}],
        "validation_context_sds_secret_config": {"name": "ca"},
    }));
    let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    assert!(b.listeners[0].filter_chains[0].tls.is_some());

    let ctx = "filter_chains[0].transport_socket.typed_config.common_tls_context";
    let bad = [
        (
            json!({"tls_certificate_sds_secret_configs": [{"name": "nope"}]}),
            format!("{ctx}.tls_certificate_sds_secret_configs[0].name"),
            "unknown static secret `nope`",
        ),
        (
            json!({"tls_certificate_sds_secret_configs": [{"name": "ca"}]}),
            format!("{ctx}.tls_certificate_sds_secret_configs[0].name"),
            "unknown static secret `ca`",
        ),
        (
            json!({"validation_context_sds_secret_config": {"name": "nope"}}),
            format!("{ctx}.validation_context_sds_secret_config.name"),
            "unknown static certificate validation context",
        ),
        (
            json!({"tls_certificate_sds_secret_configs": [{"name": "server",
                "sds_config": {"path_config_source": {"path": "/x"}}}]}),
            format!("{ctx}.tls_certificate_sds_secret_configs[0].sds_config"),
            "no SDS client",
        ),
        (
            json!({"validation_context_sds_secret_config": {"name": "ca"},
                "validation_context": {"trusted_ca": {"filename": V1_CERT}}}),
            format!("{ctx}.validation_context_sds_secret_config"),
            "not both",
        ),
    ];
    for (common, path, words) in bad {
        let e = parse_value(&with_secrets(common)).unwrap_err();
        assert!(e.0[0].path.ends_with(&path), "{path}: {e}");
        assert!(e.0[0].message.contains(words), "{e}");
    }
}

#[test]
fn a_bad_static_secret_is_reported_at_the_secret() {
    let common = json!({"tls_certificate_sds_secret_configs": [{"name": "server"}]});
    // A duplicate name of one kind.
    let v = set(
        with_secrets(common.clone()),
        "/static_resources/secrets/3",
        json!({"name": "ca", "validation_context": {}}),
    );
    let e = parse_value(&v).unwrap_err();
    assert_eq!(e.0[0].path, "static_resources.secrets[3].name", "{e}");
    // A key that is not the certificate's: named at the secret, not at the reference.
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let v = set(
        with_secrets(common.clone()),
        "/static_resources/secrets/0/tls_certificate/private_key",
        json!({"inline_string": other}),
    );
    let e = parse_value(&v).unwrap_err();
    assert_eq!(
        e.0[0].path, "static_resources.secrets[0].tls_certificate.private_key.inline_string",
        "{e}"
    );
    assert!(e.0[0].message.contains("does not match"), "{e}");
    let v = set(
        with_secrets(common),
        "/static_resources/secrets/0/tls_certificate/certificate_chain",
        json!({}),
    );
    let e = parse_value(&v).unwrap_err();
    assert_eq!(
        e.0[0].path, "static_resources.secrets[0].tls_certificate.certificate_chain.filename",
        "{e}"
    );
    let e = parse_value(&set(
        base(),
        "/static_resources/secrets",
        json!([{"name": "x"}]),
    ))
    .unwrap_err();
    assert!(e.0[0].message.contains("exactly one of"), "{e}");
}

#[test]
fn traffic_direction_decides_what_an_inbound_only_drain_stops() {
    let l0 = "/static_resources/listeners/0";
    for (value, want) in [
        (json!("INBOUND"), drain::Direction::Inbound),
        (json!("outbound"), drain::Direction::Outbound),
        (json!("UNSPECIFIED"), drain::Direction::Unspecified),
    ] {
        let v = set(base(), &format!("{l0}/traffic_direction"), value);
        let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
        assert_eq!(b.listeners[0].direction, want);
    }
    assert_eq!(
        parse_str(QUICKSTART).unwrap().bootstrap.listeners[0].direction,
        drain::Direction::Unspecified
    );
    let e = parse_value(&set(
        base(),
        &format!("{l0}/traffic_direction"),
        json!("SIDEWAYS"),
    ))
    .unwrap_err();
    assert_eq!(
        e.0[0].path, "static_resources.listeners[0].traffic_direction",
        "{e}"
    );
}

#[test]
fn freebind_is_carried_to_the_listener() {
    let p = "/static_resources/listeners/0/freebind";
    let b = parse_value(&set(base(), p, json!(true))).unwrap().bootstrap;
    assert!(b.listeners[0].freebind);
    assert!(!parse_str(QUICKSTART).unwrap().bootstrap.listeners[0].freebind);
}

#[test]
fn additional_addresses_are_listener_addresses_too() {
    let p = "/static_resources/listeners/0/additional_addresses";
    let addr = |port: u16| json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}});
    let b = parse_value(&set(base(), p, json!([addr(10001), addr(10002)])))
        .unwrap()
        .bootstrap;
    let want: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:10001".parse().unwrap(),
        "127.0.0.1:10002".parse().unwrap(),
    ];
    assert_eq!(b.listeners[0].additional_addresses, want);
    assert_eq!(b.listeners[0].addresses().count(), 3);
    // The quick-start listens on 0.0.0.0:10000; the admin on 0.0.0.0:9901.
    let e = parse_value(&set(base(), p, json!([addr(10001), addr(10001)]))).unwrap_err();
    assert_eq!(
        e.0[0].path, "static_resources.listeners[0].additional_addresses[1].address",
        "{e}"
    );
    let dup = json!([{"address": {"socket_address": {"address": "0.0.0.0", "port_value": 9901}}}]);
    let e = parse_value(&set(base(), p, dup)).unwrap_err();
    assert_eq!(e.0[0].path, "admin.address", "{e}");
    let bad = json!([{"address": {"socket_address": {"address": "nowhere", "port_value": 1}}}]);
    let e = parse_value(&set(base(), p, bad)).unwrap_err();
    assert_eq!(
        e.0[0].path,
        "static_resources.listeners[0].additional_addresses[0].address.socket_address.address",
        "{e}"
    );
    let e = parse_value(&set(
        base(),
        p,
        json!([{"address": addr(1)["address"], "socket_options": {}}]),
    ))
    .unwrap_err();
    assert_eq!(
        e.0[0].path, "static_resources.listeners[0].additional_addresses[0].socket_options",
        "{e}"
    );
}

#[test]
fn listener_filters_timeout_bounds_the_tls_inspector_as_in_envoy() {
    let l0 = "/static_resources/listeners/0";
    let inspector = json!([{"name": "envoy.filters.listener.tls_inspector"}]);
    let tls = |v| {
        let v = set(v, &format!("{l0}/listener_filters"), inspector.clone());
        set(
            v,
            &format!("{l0}/filter_chains/0/transport_socket"),
            json!({"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"tls_certificates": [{
                    "certificate_chain": {"filename": V1_CERT}, "private_key": {"filename": V1_KEY}}]}}}),
        )
    };
    let timeout = |v: &serde_json::Value| {
        parse_value(v)
            .unwrap_or_else(|e| panic!("{e}"))
            .bootstrap
            .listeners[0]
            .listener_filters_timeout
    };
    // Envoy's default, 15 s, once there is a listener filter; none without one.
    assert_eq!(timeout(&tls(base())), Some(Duration::from_secs(15)));
    assert_eq!(timeout(&base()), None);
    let set_to = |d: &str| {
        tls(set(
            base(),
            &format!("{l0}/listener_filters_timeout"),
            json!(d),
        ))
    };
    assert_eq!(timeout(&set_to("0.5s")), Some(Duration::from_millis(500)));
    assert_eq!(timeout(&set_to("0s")), None);
    // A cleartext listener with the TLS inspector waits for the first bytes as long; without
    // a listener filter the setting bounds nothing, in Envoy as here.
    let v = set(base(), &format!("{l0}/listener_filters"), inspector.clone());
    let v = set(v, &format!("{l0}/listener_filters_timeout"), json!("1s"));
    assert_eq!(timeout(&v), Some(Duration::from_secs(1)));
    let v = set(
        base(),
        &format!("{l0}/listener_filters_timeout"),
        json!("1s"),
    );
    assert_eq!(timeout(&v), None);
}
