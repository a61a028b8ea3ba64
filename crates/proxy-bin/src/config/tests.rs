use std::time::Duration;

use proxy_core::config::{
    AccessLogSink, ClusterSpecifier, CodecType, Discovery, DnsLookupFamily, HeaderMatchKind,
    LbPolicy, PathMatch, RouteAction,
};
use serde_json::{json, Value};

use super::*;

const QUICKSTART: &str = include_str!("../../../../tests/fixtures/envoy-quickstart.yaml");
const HCM: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";
const ROUTE0: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes/0";
const CLUSTER0: &str = "/static_resources/clusters/0";

fn base() -> Value {
    source::parse_yaml(QUICKSTART, "fixture").expect("fixture is valid YAML")
}

fn set(mut v: Value, ptr: &str, new: Value) -> Value {
    let (parent, key) = ptr.rsplit_once('/').expect("pointer has a parent");
    match v.pointer_mut(parent).expect("parent exists") {
        Value::Object(m) => {
            m.insert(key.to_owned(), new);
        }
        Value::Array(a) => {
            let i: usize = key.parse().expect("index");
            if i == a.len() {
                a.push(new);
            } else {
                a[i] = new;
            }
        }
        _ => panic!("parent of {ptr} is a scalar"),
    }
    v
}

fn remove(mut v: Value, ptr: &str) -> Value {
    let (parent, key) = ptr.rsplit_once('/').expect("pointer has a parent");
    if let Some(Value::Object(m)) = v.pointer_mut(parent) {
        m.remove(key);
    }
    v
}

fn parse_value(v: &Value) -> Result<Loaded, ConfigErrors> {
    parse_str(&v.to_string())
}

#[test]
fn quickstart_fixture_validates_with_envoy_defaults() {
    let loaded = parse_str(QUICKSTART).unwrap_or_else(|e| panic!("{e}"));
    let b = &loaded.bootstrap;
    assert_eq!(
        b.admin.as_ref().map(|a| a.address),
        Some("0.0.0.0:9901".parse().unwrap())
    );
    assert_eq!(b.listeners.len(), 1);
    let l = &b.listeners[0];
    assert_eq!(l.name, "listener_0");
    assert_eq!(l.address, "0.0.0.0:10000".parse().unwrap());
    assert_eq!(l.per_connection_buffer_limit_bytes, 1024 * 1024);
    let h = l.first_http().unwrap();
    assert_eq!(h.stat_prefix, "ingress_http");
    assert_eq!(h.codec_type, CodecType::Auto);
    assert!(h.generate_request_id);
    assert!(!h.use_remote_address);
    assert_eq!(h.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(h.stream_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(h.request_timeout, None);
    assert_eq!(h.request_headers_timeout, Some(Duration::from_secs(60)));
    assert!(!h.suppress_envoy_headers);
    assert_eq!(h.max_request_headers_kb, 60);
    assert_eq!(h.access_logs.len(), 1);
    assert_eq!(h.access_logs[0].sink, AccessLogSink::Stdout);
    assert_eq!(h.access_logs[0].format, None);
    assert_eq!(h.route_config.name, "local_route");
    let vh = &h.route_config.virtual_hosts[0];
    assert_eq!(vh.domains, vec!["*".to_owned()]);
    let r = &vh.routes[0];
    assert!(matches!(&r.matcher.path, PathMatch::Prefix(p) if p == "/"));
    assert!(r.matcher.case_sensitive);
    match &r.action {
        RouteAction::Forward(f) => {
            assert_eq!(
                f.cluster,
                ClusterSpecifier::Cluster("service_backend".into())
            );
            assert_eq!(f.host_rewrite_literal.as_deref(), Some("localhost"));
            assert_eq!(f.timeout, Some(Duration::from_secs(15)));
            assert!(f.retry_policy.is_none());
        }
        other => panic!("unexpected action {other:?}"),
    }
    let c = &b.clusters[0];
    assert_eq!(c.name, "service_backend");
    assert_eq!(c.discovery, Discovery::LogicalDns);
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.dns_refresh_rate, Duration::from_secs(5));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.endpoints.len(), 1);
    assert_eq!(
        (
            c.endpoints[0].host.as_str(),
            c.endpoints[0].port,
            c.endpoints[0].weight
        ),
        ("127.0.0.1", 8080, 1)
    );
    assert!(!c.http2);
    assert_eq!(c.circuit_breakers, Default::default());
    assert_eq!(loaded.effective, base());
}

const FULL: &str = r#"
static_resources:
  listeners:
  - name: l6
    address: {socket_address: {address: "::", port_value: "8443", protocol: TCP}}
    per_connection_buffer_limit_bytes: 32768
    filter_chains:
    - name: only
      filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          max_request_headers_kb: 96
          codec_type: HTTP2
          generate_request_id: false
          use_remote_address: true
          common_http_protocol_options: {idle_timeout: 0s}
          stream_idle_timeout: {seconds: 1, nanos: 500000000}
          request_timeout: 0.25s
          request_headers_timeout: 0s
          upgrade_configs: [{upgrade_type: WebSocket}]
          access_log:
          - name: f
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /tmp/a.log
              format: "%START_TIME%\n"
          - typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format: {text_format_source: {inline_string: "%PROTOCOL%\n"}}
          http_filters:
          - name: envoy.filters.http.router
          route_config:
            virtual_hosts:
            - name: a
              domains: ["*.example.com", "example.*", "example.com:8443"]
              routes:
              - name: re
                match:
                  safe_regex: {google_re2: {}, regex: "/item/[0-9]+"}
                  headers:
                  - {name: X-Mode, string_match: {exact: fast}}
                  - {name: x-legacy, prefix_match: ab, invert_match: true}
                  - {name: x-any}
                  - {name: x-absent, present_match: false}
                  - {name: x-re, safe_regex_match: {regex: "v[12]"}}
                route:
                  cluster: static_c
                  prefix_rewrite: /new
                  timeout: 0s
                  retry_policy:
                    retry_on: "5xx, reset,retriable-status-codes"
                    num_retries: 3
                    per_try_timeout: 2s
                    retriable_status_codes: [409, "429"]
              - match: {path: /exact, case_sensitive: false}
                direct_response: {status: 204}
              - match: {prefix: /old}
                redirect: {https_redirect: true, host_redirect: new.example, port_redirect: 8443, prefix_rewrite: /n, response_code: PERMANENT_REDIRECT, strip_query: true}
            - name: b
              domains: ["*"]
              routes:
              - match: {prefix: /}
                direct_response: {status: 503, body: {inline_string: down}}
  clusters:
  - name: static_c
    connect_timeout: 1.5s
    lb_policy: LEAST_REQUEST
    per_connection_buffer_limit_bytes: 4096
    circuit_breakers:
      thresholds: [{priority: DEFAULT, max_connections: 10, max_requests: "20"}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: static_c
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9000}}}
          load_balancing_weight: 3
        - endpoint: {address: {socket_address: {address: "::1", port_value: 9001}}}
  - name: dns_c
    type: STRICT_DNS
    lb_policy: RANDOM
    dns_lookup_family: ALL
    dns_refresh_rate: 30s
    load_assignment:
      cluster_name: dns_c
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: backend.local, port_value: 80}}}
"#;

#[test]
fn every_supported_field_is_converted() {
    let b = parse_str(FULL).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    assert!(b.admin.is_none());
    let l = &b.listeners[0];
    assert_eq!(l.address, "[::]:8443".parse().unwrap());
    assert_eq!(l.per_connection_buffer_limit_bytes, 32768);
    let h = l.first_http().unwrap();
    assert_eq!(h.codec_type, CodecType::Http2);
    assert_eq!(h.max_request_headers_kb, 96);
    assert!(!h.generate_request_id);
    assert!(h.use_remote_address);
    assert_eq!(h.idle_timeout, None);
    assert_eq!(h.stream_idle_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(h.request_timeout, Some(Duration::from_millis(250)));
    assert_eq!(
        h.request_headers_timeout, None,
        "0s turns the head deadline off"
    );
    assert_eq!(h.upgrade_types, vec!["websocket".to_owned()]);
    assert_eq!(
        h.access_logs[0].sink,
        AccessLogSink::File("/tmp/a.log".into())
    );
    assert_eq!(h.access_logs[0].format.as_deref(), Some("%START_TIME%\n"));
    assert_eq!(h.access_logs[1].sink, AccessLogSink::Stderr);
    assert_eq!(h.access_logs[1].format.as_deref(), Some("%PROTOCOL%\n"));
    assert_eq!(h.route_config.name, "");

    let routes = &h.route_config.virtual_hosts[0].routes;
    let m = &routes[0].matcher;
    match &m.path {
        PathMatch::Regex(re) => {
            assert!(re.is_match("/item/42"));
            assert!(!re.is_match("/item/42/x"), "regex must be anchored");
            assert!(!re.is_match("/x/item/42"), "regex must be anchored");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.headers[0].name.as_str(), "x-mode");
    assert!(matches!(&m.headers[0].kind, HeaderMatchKind::Exact(s) if s == "fast"));
    assert!(matches!(&m.headers[1].kind, HeaderMatchKind::Prefix(s) if s == "ab"));
    assert!(m.headers[1].invert);
    assert!(matches!(m.headers[2].kind, HeaderMatchKind::Present(true)));
    assert!(matches!(m.headers[3].kind, HeaderMatchKind::Present(false)));
    assert!(
        matches!(&m.headers[4].kind, HeaderMatchKind::Regex(r) if r.is_match("v2") && !r.is_match("v22"))
    );
    match &routes[0].action {
        RouteAction::Forward(f) => {
            assert_eq!(f.prefix_rewrite.as_deref(), Some("/new"));
            assert_eq!(f.timeout, None);
            let r = f.retry_policy.as_ref().expect("retry policy");
            assert!(r.retry_on.five_xx && r.retry_on.reset && r.retry_on.retriable_status_codes);
            assert!(!r.retry_on.gateway_error && !r.retry_on.connect_failure);
            assert_eq!(r.num_retries, 3);
            assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
            assert_eq!(r.retriable_status_codes, vec![409, 429]);
        }
        other => panic!("{other:?}"),
    }
    assert!(!routes[1].matcher.case_sensitive);
    assert!(matches!(&routes[1].matcher.path, PathMatch::Exact(p) if p == "/exact"));
    match &routes[1].action {
        RouteAction::Direct(d) => {
            assert_eq!(d.status.as_u16(), 204);
            assert!(d.body.is_none());
        }
        other => panic!("{other:?}"),
    }
    match &routes[2].action {
        RouteAction::Redirect(r) => {
            assert_eq!(r.scheme_redirect.as_deref(), Some("https"));
            assert_eq!(r.host_redirect.as_deref(), Some("new.example"));
            assert_eq!(r.port_redirect, Some(8443));
            assert_eq!(r.prefix_rewrite.as_deref(), Some("/n"));
            assert_eq!(r.path_redirect, None);
            assert_eq!(r.response_code.as_u16(), 308);
            assert!(r.strip_query);
        }
        other => panic!("{other:?}"),
    }
    match &h.route_config.virtual_hosts[1].routes[0].action {
        RouteAction::Direct(d) => assert_eq!(d.body.as_deref(), Some(&b"down"[..])),
        other => panic!("{other:?}"),
    }

    let c = &b.clusters[0];
    assert_eq!(c.discovery, Discovery::Static);
    assert_eq!(c.connect_timeout, Duration::from_millis(1500));
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(c.per_connection_buffer_limit_bytes, 4096);
    assert!(c.http2);
    assert_eq!(c.circuit_breakers.max_connections, 10);
    assert_eq!(c.circuit_breakers.max_requests, 20);
    assert_eq!(c.circuit_breakers.max_pending_requests, 1024);
    assert_eq!(c.circuit_breakers.max_retries, 3);
    assert_eq!(c.endpoints[0].weight, 3);
    assert_eq!(
        (c.endpoints[1].host.as_str(), c.endpoints[1].port),
        ("::1", 9001)
    );
    let d = &b.clusters[1];
    assert_eq!(d.discovery, Discovery::StrictDns);
    assert_eq!(d.lb_policy, LbPolicy::Random);
    assert_eq!(d.dns_lookup_family, DnsLookupFamily::All);
    assert_eq!(d.dns_refresh_rate, Duration::from_secs(30));
    assert_eq!(d.endpoints[0].host, "backend.local");
}

/// Each bad configuration and a substring its first error's path must contain.
fn bad_table() -> Vec<(&'static str, Value, &'static str)> {
    let hcm = |p: &str| format!("{HCM}{p}");
    let r0 = |p: &str| format!("{ROUTE0}{p}");
    let c0 = |p: &str| format!("{CLUSTER0}{p}");
    let second_cluster = {
        let b = base();
        let c = b.pointer(CLUSTER0).cloned().unwrap_or_default();
        set(b, "/static_resources/clusters/1", c)
    };
    let second_listener = |name: &str, port: u64| {
        let b = base();
        let mut l = b
            .pointer("/static_resources/listeners/0")
            .cloned()
            .unwrap_or_default();
        l["name"] = json!(name);
        l["address"]["socket_address"]["port_value"] = json!(port);
        set(b, "/static_resources/listeners/1", l)
    };
    let second_vhost = {
        let b = base();
        let vh = b
            .pointer(&hcm("/route_config/virtual_hosts/0"))
            .cloned()
            .unwrap_or_default();
        set(b, &hcm("/route_config/virtual_hosts/1"), vh)
    };
    vec![
        ("unknown top-level field", set(base(), "/overload_manager", json!({})), "overload_manager"),
        ("unknown cluster field", set(base(), &c0("/lb_subset_config"), json!({})), "static_resources.clusters[0].lb_subset_config"),
        ("bad duration", set(base(), &c0("/connect_timeout"), json!("5")), "static_resources.clusters[0].connect_timeout"),
        ("negative duration", set(base(), &hcm("/stream_idle_timeout"), json!("-1s")), "typed_config.stream_idle_timeout"),
        ("zero connect timeout", set(base(), &c0("/connect_timeout"), json!("0s")), "clusters[0].connect_timeout"),
        ("unknown cluster in route", set(base(), &r0("/route/cluster"), json!("nope")), "virtual_hosts[0].routes[0].route.cluster"),
        ("bad lb_policy", set(base(), &c0("/lb_policy"), json!("CLUSTER_PROVIDED")), "static_resources.clusters[0].lb_policy"),
        ("two actions", set(base(), &r0("/direct_response"), json!({"status": 200})), "virtual_hosts[0].routes[0]"),
        ("no action", remove(base(), &r0("/route")), "virtual_hosts[0].routes[0]"),
        ("bad regex", set(base(), &r0("/match"), json!({"safe_regex": {"regex": "("}})), "routes[0].match.safe_regex.regex"),
        ("regex valid only when wrapped", set(base(), &r0("/match"), json!({"safe_regex": {"regex": "a)|(b"}})), "routes[0].match.safe_regex.regex"),
        ("prefix and path", set(base(), &r0("/match/path"), json!("/x")), "routes[0].match"),
        ("bad address", set(base(), "/static_resources/listeners/0/address/socket_address/address", json!("1.2.3")), "listeners[0].address.socket_address.address"),
        ("bracketed ipv6", set(base(), "/admin/address/socket_address/address", json!("[::1]")), "admin.address.socket_address.address"),
        ("port out of range", set(base(), "/static_resources/listeners/0/address/socket_address/port_value", json!(70000)), "listeners[0].address.socket_address.port_value"),
        ("udp", set(base(), "/static_resources/listeners/0/address/socket_address/protocol", json!("UDP")), "socket_address.protocol"),
        ("duplicate cluster", second_cluster, "static_resources.clusters[1].name"),
        ("duplicate listener name", second_listener("listener_0", 10001), "static_resources.listeners[1].name"),
        ("duplicate listener address", second_listener("listener_1", 10000), "static_resources.listeners[1].address"),
        ("wrong hcm type", set(base(), &hcm("/@type"), json!("type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy")), "filters[0].typed_config.@type"),
        ("unsupported http filter", set(base(), &hcm("/http_filters/0"), json!({"name": "envoy.filters.http.decompressor", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor"}})), "http_filters[0].typed_config.@type"),
        ("router not last", set(base(), &hcm("/http_filters/1"), json!({"name": "envoy.filters.http.router"})), "http_filters[0]"),
        ("no http filters", set(base(), &hcm("/http_filters"), json!([])), "typed_config.http_filters"),
        ("missing stat_prefix", remove(base(), &hcm("/stat_prefix")), "typed_config.stat_prefix"),
        ("missing route_config", remove(base(), &hcm("/route_config")), "typed_config.route_config"),
        ("rds", set(base(), &hcm("/rds"), json!({})), "typed_config.rds"),
        ("codec http3", set(base(), &hcm("/codec_type"), json!("HTTP3")), "typed_config.codec_type"),
        ("static with name", set(set(base(), &c0("/type"), json!("STATIC")), &c0("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/address"), json!("backend.local")), "lb_endpoints[0].endpoint.address.socket_address.address"),
        ("logical dns two endpoints", set(base(), &c0("/load_assignment/endpoints/1"), json!({"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "b", "port_value": 1}}}}]})), "clusters[0].load_assignment.endpoints"),
        ("endpoint port 0", set(base(), &c0("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value"), json!(0)), "socket_address.port_value"),
        ("bad wildcard domain", set(base(), &hcm("/route_config/virtual_hosts/0/domains/0"), json!("a*b")), "virtual_hosts[0].domains[0]"),
        ("duplicate domain", second_vhost, "virtual_hosts[1].domains[0]"),
        ("bad retry_on", set(base(), &r0("/route/retry_policy"), json!({"retry_on": "5xx,magic"})), "route.retry_policy.retry_on"),
        ("bad direct status", set(remove(base(), &r0("/route")), &r0("/direct_response"), json!({"status": 700})), "routes[0].direct_response.status"),
        ("bad header name", set(base(), &r0("/match/headers"), json!([{"name": "bad header", "exact_match": "x"}])), "match.headers[0].name"),
        ("two header matchers", set(base(), &r0("/match/headers"), json!([{"name": "x", "exact_match": "x", "prefix_match": "y"}])), "match.headers[0].prefix_match"),
        ("ignore_case", set(base(), &r0("/match/headers"), json!([{"name": "x", "string_match": {"exact": "x", "ignore_case": true}}])), "string_match.ignore_case"),
        ("admin access log", set(base(), "/admin/access_log_path", json!("/tmp/admin.log")), "admin.access_log_path"),
        ("two filter chains", set(base(), "/static_resources/listeners/0/filter_chains/1", json!({"filters": []})), "listeners[0].filter_chains[1]"),
        ("filter_chain_match", set(base(), "/static_resources/listeners/0/filter_chains/0/filter_chain_match", json!({"direct_source_prefix_ranges": []})), "filter_chains[0].filter_chain_match.direct_source_prefix_ranges"),
        ("destination port 0", set(base(), "/static_resources/listeners/0/filter_chains/0/filter_chain_match", json!({"destination_port": 0})), "filter_chains[0].filter_chain_match.destination_port"),
        ("source port out of range", set(base(), "/static_resources/listeners/0/filter_chains/0/filter_chain_match", json!({"source_ports": [70000]})), "filter_chain_match.source_ports[0]"),
        ("overlapping chains", set(base(), "/static_resources/listeners/0/filter_chains/1", base()["static_resources"]["listeners"][0]["filter_chains"][0].clone()), "listeners[0].filter_chains[1].filter_chain_match"),
        ("tcp_proxy without cluster", set(base(), "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config", json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "t"})), "filters[0].typed_config"),
        ("tcp_proxy connect attempts", set(base(), "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config", json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "t", "cluster": "c", "max_connect_attempts": 0})), "typed_config.max_connect_attempts"),
        ("tcp_proxy access log", set(base(), "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config", json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "t", "cluster": "c", "access_log_options": {}})), "typed_config.access_log_options"),
        ("listener filter", set(base(), "/static_resources/listeners/0/listener_filters", json!([{"name": "envoy.filters.listener.local_ratelimit"}])), "listener_filters[0].name"),
        ("original_dst traffic_direction", set(base(), "/static_resources/listeners/0/listener_filters", json!([{"name": "o", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst", "traffic_direction": "INBOUND"}}])), "listener_filters[0].typed_config.traffic_direction"),
        ("proxy protocol rules", set(base(), "/static_resources/listeners/0/listener_filters", json!([{"name": "p", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol", "rules": []}}])), "listener_filters[0].typed_config.rules"),
        ("transport socket name", set(base(), "/static_resources/listeners/0/filter_chains/0/transport_socket", json!({"name": "envoy.transport_sockets.alts", "typed_config": {}})), "filter_chains[0].transport_socket.name"),
        ("tls context field", set(base(), "/static_resources/listeners/0/filter_chains/0/transport_socket", json!({"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", "ocsp_staple_policy": "LENIENT_STAPLING"}})), "transport_socket.typed_config.ocsp_staple_policy"),
        ("tls missing cert file", set(base(), "/static_resources/listeners/0/filter_chains/0/transport_socket", json!({"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", "common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/nonexistent/c.pem"}, "private_key": {"filename": "/nonexistent/k.pem"}}]}}})), "common_tls_context.tls_certificates[0].certificate_chain.filename"),
        ("tls version", set(base(), "/static_resources/listeners/0/filter_chains/0/transport_socket", json!({"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", "common_tls_context": {"tls_params": {"tls_minimum_protocol_version": "TLSv1_0"}}}})), "tls_params.tls_minimum_protocol_version"),
        ("upstream cipher", set(base(), &c0("/transport_socket"), json!({"name": "envoy.transport_sockets.tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "common_tls_context": {"tls_params": {"cipher_suites": ["ECDHE-RSA-AES128-SHA"]}}}})), "clusters[0].transport_socket.typed_config.common_tls_context.tls_params.cipher_suites[0]"),
        ("high priority", set(base(), &c0("/circuit_breakers"), json!({"thresholds": [{"priority": "HIGH"}]})), "circuit_breakers.thresholds[0].priority"),
        ("protocol options key", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions": {}})), "typed_extension_protocol_options.envoy.extensions.upstreams.tcp"),
        ("http2 option not applied", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http2_protocol_options": {"hpack_table_size": 10}}}})), "explicit_http_config.http2_protocol_options.hpack_table_size"),
        // Envoy 1.40: "value must be inside range [65535, 2147483647]".
        ("http2 window", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http2_protocol_options": {"initial_stream_window_size": 100}}}})), "http2_protocol_options.initial_stream_window_size"),
        // Envoy 1.40: KeepaliveSettingsValidationError.Timeout: value is required.
        ("http2 keepalive timeout", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http2_protocol_options": {"connection_keepalive": {"interval": "1s"}}}}})), "connection_keepalive.timeout"),
        // Envoy 1.40: "ALPN configured for cluster c which has a non-ALPN transport socket".
        ("auto_config cleartext", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}})), "HttpProtocolOptions.auto_config"),
        ("auto_config one protocol", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "auto_config": {"http2_protocol_options": {}}}})), "auto_config.http_protocol_options"),
        ("common option not applied", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http_protocol_options": {}}, "common_http_protocol_options": {"max_headers_count": 5}}})), "common_http_protocol_options.max_headers_count"),
        ("upstream_http_protocol_options", set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http_protocol_options": {}}, "upstream_http_protocol_options": {"override_auto_sni_header": "x-sni"}}})), "upstream_http_protocol_options.override_auto_sni_header"),
        ("deprecated and typed", set(set(base(), &c0("/typed_extension_protocol_options"), json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http_protocol_options": {}}}})), &c0("/max_requests_per_connection"), json!(3)), "clusters[0].max_requests_per_connection"),
        ("keepalive zero", set(base(), &c0("/upstream_connection_options"), json!({"tcp_keepalive": {"keepalive_time": 0}})), "upstream_connection_options.tcp_keepalive.keepalive_time"),
        ("connection option not applied", set(base(), &c0("/upstream_connection_options"), json!({"happy_eyeballs_config": {}})), "upstream_connection_options.happy_eyeballs_config"),
        ("access log type", set(base(), &hcm("/access_log/0/typed_config/@type"), json!("type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig")), "access_log[0].typed_config.@type"),
        ("access log filter", set(base(), &hcm("/access_log/0/filter"), json!({})), "access_log[0].filter"),
        ("weighted clusters", set(base(), &r0("/route/weighted_clusters"), json!({})), "routes[0].route.weighted_clusters"),
        ("redirect code", set(remove(base(), &r0("/route")), &r0("/redirect"), json!({"response_code": "MOVED"})), "redirect.response_code"),
        ("zero weight", set(base(), &c0("/load_assignment/endpoints/0/lb_endpoints/0/load_balancing_weight"), json!(0)), "lb_endpoints[0].load_balancing_weight"),
        ("string where number", set(base(), &c0("/per_connection_buffer_limit_bytes"), json!("lots")), "clusters[0].per_connection_buffer_limit_bytes"),
        ("bad dns family", set(base(), &c0("/dns_lookup_family"), json!("V5_ONLY")), "clusters[0].dns_lookup_family"),
        ("unknown static_resources field", set(base(), "/static_resources/runtime", json!([])), "static_resources.runtime"),
        ("retriable status code", set(base(), &r0("/route/retry_policy"), json!({"retriable_status_codes": [99]})), "retry_policy.retriable_status_codes[0]"),
        ("google_re2 field", set(base(), &r0("/match"), json!({"safe_regex": {"google_re2": {"max_program_size": 10}, "regex": "x"}})), "safe_regex.google_re2.max_program_size"),
        ("missing cluster name", remove(base(), &c0("/name")), "clusters[0].name"),
        ("zero header limit", set(base(), &hcm("/max_request_headers_kb"), json!(0)), "max_request_headers_kb"),
        ("header limit over 8192", set(base(), &hcm("/max_request_headers_kb"), json!(8193)), "max_request_headers_kb"),
    ]
}

#[test]
fn bad_configs_name_the_offending_path() {
    let table = bad_table();
    assert!(table.len() >= 20);
    for (what, value, want) in table {
        let errs = match parse_value(&value) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e,
        };
        assert!(
            errs.0[0].path.contains(want),
            "{what}: first error's path does not contain `{want}`; got:\n{errs}"
        );
        // One mistake, one error (a nameless cluster also leaves its routes dangling).
        assert!(errs.0.len() <= 2, "{what}: too many errors:\n{errs}");
        for e in &errs.0 {
            assert!(!e.message.is_empty(), "{what}: empty message");
            assert!(
                !e.to_string().contains('\n'),
                "{what}: multi-line error {e}"
            );
        }
    }
}

#[test]
fn unknown_fields_end_with_the_field_name_and_say_unsupported() {
    let v = set(base(), &format!("{CLUSTER0}/lb_subset_config"), json!({}));
    let errs = parse_value(&v).unwrap_err();
    assert_eq!(errs.0.len(), 1);
    assert_eq!(
        errs.0[0].path,
        "static_resources.clusters[0].lb_subset_config"
    );
    assert!(
        errs.0[0]
            .message
            .starts_with("unsupported field (Baton does not implement it)"),
        "{}",
        errs.0[0].message
    );
    let e = parse_str("nonsense: 1\n").unwrap_err();
    assert_eq!(e.0[0].path, "nonsense");
}

#[test]
fn semantic_errors_are_all_collected() {
    let mut v = base();
    v = set(v, &format!("{ROUTE0}/route/cluster"), json!("missing"));
    v = set(v, &format!("{CLUSTER0}/connect_timeout"), json!("0s"));
    v = set(
        v,
        "/static_resources/clusters/1",
        json!({"name": "other", "lb_policy": "NOPE"}),
    );
    v = set(
        v,
        &format!("{HCM}/route_config/virtual_hosts/0/domains/1"),
        json!("*"),
    );
    let errs = parse_value(&v).unwrap_err();
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("routes[0].route.cluster")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"static_resources.clusters[0].connect_timeout"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"static_resources.clusters[1].lb_policy"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("virtual_hosts[0].domains[1]")),
        "{paths:?}"
    );
    assert_eq!(errs.to_string().lines().count(), errs.0.len());
}

#[test]
fn camel_case_field_names_are_accepted() {
    let text = QUICKSTART
        .replace("port_value", "portValue")
        .replace("stat_prefix", "statPrefix")
        .replace("dns_lookup_family", "dnsLookupFamily");
    let b = parse_str(&text).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    assert_eq!(b.listeners[0].address.port(), 10000);
    assert_eq!(
        b.listeners[0].first_http().unwrap().stat_prefix,
        "ingress_http"
    );
    assert_eq!(b.clusters[0].dns_lookup_family, DnsLookupFamily::V4Only);
    // Overlay in one spelling over a file in the other.
    let path = temp_file("camel.yaml", QUICKSTART);
    let overlay = "admin: {address: {socketAddress: {portValue: 9903}}}";
    let b = load(Some(&path), Some(overlay))
        .unwrap_or_else(|e| panic!("{e}"))
        .bootstrap;
    assert_eq!(b.admin.map(|a| a.address.port()), Some(9903));
    let _ = std::fs::remove_file(path);
}

#[test]
fn display_formats() {
    let e = ConfigError::new("a.b", "bad");
    assert_eq!(e.to_string(), "a.b: bad");
    let e = ConfigError::new("", "whole");
    assert_eq!(e.to_string(), "whole");
    let all = ConfigErrors(vec![ConfigError::new("x", "1"), ConfigError::new("y", "2")]);
    assert_eq!(all.to_string(), "x: 1\ny: 2");
}

#[test]
fn yaml_syntax_errors_have_no_path_but_a_position() {
    let e = parse_str("static_resources:\n  listeners: [\n").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].path, "");
    assert!(e.0[0].message.contains("line"), "{}", e.0[0].message);
}

#[test]
fn empty_document_is_an_error_and_braces_an_empty_bootstrap() {
    // Envoy 1.40: "Unable to convert YAML as JSON" for an empty file; `{}` validates.
    let e = parse_str("").unwrap_err();
    assert!(e.0[0].message.contains("holds no configuration"), "{e}");
    assert!(parse_str("# nothing\n").is_err());
    let b = parse_str("{}").unwrap_or_else(|e| panic!("{e}")).bootstrap;
    assert!(b.admin.is_none() && b.listeners.is_empty() && b.clusters.is_empty());
    assert!(parse_str("admin: {}\n").is_ok());
    assert!(parse_str("[1, 2]").is_err());
    assert!(parse_str("42").is_err());
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("baton-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp file");
    p
}

#[test]
fn load_merges_config_yaml_over_the_file() {
    let path = temp_file("qs.yaml", QUICKSTART);
    let overlay = r#"
admin: {address: {socket_address: {port_value: 9902}}}
static_resources:
  clusters:
  - name: extra
    load_assignment: {cluster_name: extra, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]}
"#;
    let loaded = load(Some(&path), Some(overlay)).unwrap_or_else(|e| panic!("{e}"));
    let b = &loaded.bootstrap;
    assert_eq!(
        b.admin.as_ref().map(|a| a.address),
        Some("0.0.0.0:9902".parse().unwrap())
    );
    let names: Vec<&str> = b.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["service_backend", "extra"]);
    assert_eq!(
        loaded.effective["static_resources"]["clusters"][1]["name"],
        "extra"
    );

    // --config-yaml alone.
    assert!(load(None, Some(QUICKSTART)).is_ok());
    // Neither.
    let e = load(None, None).unwrap_err();
    assert!(e.to_string().contains("no configuration"), "{e}");
    // Missing file.
    let e = load(Some(std::path::Path::new("/nonexistent/baton.yaml")), None).unwrap_err();
    assert!(e.to_string().contains("could not read"), "{e}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn load_reads_json_files() {
    let path = temp_file("qs.json", &base().to_string());
    let loaded = load(Some(&path), None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.bootstrap.listeners[0].name, "listener_0");
    let bad = temp_file("bad.json", "{\"admin\": ");
    let e = load(Some(&bad), None).unwrap_err();
    assert!(e.to_string().contains("JSON"), "{e}");
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(bad);
}

#[test]
fn garbage_and_truncated_input_never_panics() {
    // Every prefix of the fixture.
    let mut cut = 0;
    while cut < QUICKSTART.len() {
        if QUICKSTART.is_char_boundary(cut) {
            let _ = parse_str(&QUICKSTART[..cut]);
        }
        cut += 1;
    }
    // Pseudo-random byte soup drawn from YAML-significant characters.
    let alphabet = b"{}[]:,-'\"&*!|>#%@ \n\tab0.9s";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        let mut s = String::new();
        for _ in 0..64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let i = (state >> 33) as usize % alphabet.len();
            s.push(char::from(alphabet[i]));
        }
        let _ = parse_str(&s);
    }
    // Deep nesting is refused, not a stack overflow.
    assert!(parse_str(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))).is_err());
    assert!(parse_str(&format!(
        "a: {}1{}",
        "{b: ".repeat(10_000),
        "}".repeat(10_000)
    ))
    .is_err());
    let deep_json = temp_file(
        "deep.json",
        &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    );
    assert!(load(Some(&deep_json), None).is_err());
    let _ = std::fs::remove_file(deep_json);
    // Wrong types everywhere the model has structure.
    for v in [
        json!(null),
        json!([]),
        json!("x"),
        json!(1),
        json!({"@type": 3}),
    ] {
        for ptr in [
            "/admin",
            "/static_resources",
            "/static_resources/listeners/0",
            HCM,
            ROUTE0,
            CLUSTER0,
            &format!("{ROUTE0}/match"),
            &format!("{CLUSTER0}/load_assignment"),
        ] {
            let _ = parse_value(&set(base(), ptr, v.clone()));
        }
    }
}

#[test]
fn internal_address_config_cidr_ranges() {
    let ranges = json!({"unix_sockets": false, "cidr_ranges": [
        {"address_prefix": "10.1.2.3", "prefix_len": 8},
        {"address_prefix": "::1"},
    ]});
    let v = set(base(), &format!("{HCM}/internal_address_config"), ranges);
    let b = parse_value(&v).unwrap_or_else(|e| panic!("{e}")).bootstrap;
    let h = b.listeners[0].first_http().unwrap();
    assert!(h.is_internal("10.200.0.1".parse().unwrap()));
    assert!(h.is_internal("::1".parse().unwrap()));
    assert!(!h.is_internal("11.0.0.1".parse().unwrap()));
    let bad = json!({"cidr_ranges": [
        {"address_prefix": "10.0.0.0", "prefix_len": 33},
        {"address_prefix": "ten"},
    ]});
    let v = set(base(), &format!("{HCM}/internal_address_config"), bad);
    let errs = parse_value(&v).unwrap_err();
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths[0].ends_with("internal_address_config.cidr_ranges[0].prefix_len"),
        "{paths:?}"
    );
    assert!(
        paths[1].ends_with("internal_address_config.cidr_ranges[1].address_prefix"),
        "{paths:?}"
    );
}

mod lenient;

#[test]
fn a_chain_is_identified_by_its_name_and_a_digest_of_its_configuration() {
    let chain = |v: &Value| {
        let loaded = parse_value(v).expect("valid");
        let l = &loaded.bootstrap.listeners[0];
        (
            l.filter_chains[0].id(),
            l.default_filter_chain.as_ref().map(|c| c.id()),
        )
    };
    let (a, none) = chain(&base());
    assert_eq!(none, None);
    assert_ne!(a.digest, [0; 32]);
    // The same configuration, written in camelCase and with its keys in another order: the
    // same chain.
    let camel = set(
        base(),
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/statPrefix",
        json!("ingress_http"),
    );
    let camel = remove(
        camel,
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/stat_prefix",
    );
    assert_eq!(chain(&camel).0, a);
    // A changed route is the same chain (a connection between requests is routed by the new
    // configuration); another codec is not.
    let routed = set(
        base(),
        &format!("{ROUTE0}/match"),
        json!({"prefix": "/other"}),
    );
    assert_eq!(chain(&routed).0, a);
    let h2 = set(base(), &format!("{HCM}/codec_type"), json!("HTTP2"));
    assert_ne!(chain(&h2).0.digest, a.digest);
    let named = set(
        base(),
        "/static_resources/listeners/0/filter_chains/0/name",
        json!("web"),
    );
    let n = chain(&named).0;
    assert_eq!((n.name.as_str(), n.digest), ("web", a.digest));
    // A `tcp_proxy` chain is its whole filter configuration.
    let tcp = |cluster: &str| {
        let cluster_name = base()["static_resources"]["clusters"][0]["name"].clone();
        let v = set(
            base(),
            HCM,
            json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "t",
                "cluster": cluster_name,
            }),
        );
        let v = set(v, &format!("{HCM}/stat_prefix"), json!(cluster));
        chain(&v).0
    };
    assert_eq!(tcp("t"), tcp("t"));
    assert_ne!(tcp("t").digest, tcp("u").digest);
    assert_ne!(tcp("t").digest, a.digest);
    // The default chain has its own.
    let chains = base()["static_resources"]["listeners"][0]["filter_chains"][0].clone();
    let with_default = set(
        base(),
        "/static_resources/listeners/0/default_filter_chain",
        chains,
    );
    let (first, default) = chain(&with_default);
    assert_eq!(first, a);
    assert_eq!(default.map(|d| d.digest), Some(a.digest));
}

mod original_dst;
mod upstream_options;
