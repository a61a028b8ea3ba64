//! Envoy bootstrap builders for the tests. Configurations are built as JSON (a subset of YAML)
//! with `{{LISTEN}}` and `{{ADMIN}}` placeholders that [`super::Baton`] fills with free ports.

use serde_json::{json, Map, Value};

/// The HCM type URL.
const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// One listener (`listener_0`, stat prefix `ingress_http`, domains `*`) on `{{LISTEN}}`, the
/// admin on `{{ADMIN}}`, and the routes and clusters added.
#[derive(Debug, Clone, Default)]
pub struct Config {
    hcm: Map<String, Value>,
    router: Map<String, Value>,
    routes: Vec<Value>,
    clusters: Vec<Value>,
    route_config: Map<String, Value>,
    vhost: Map<String, Value>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a field of the HTTP connection manager (e.g. `use_remote_address`).
    pub fn hcm(mut self, key: &str, value: Value) -> Self {
        self.hcm.insert(key.to_owned(), value);
        self
    }

    /// Set a field of the `route_config` (e.g. `request_headers_to_add`).
    pub fn route_config(mut self, key: &str, value: Value) -> Self {
        self.route_config.insert(key.to_owned(), value);
        self
    }

    /// Set a field of the one virtual host.
    pub fn vhost(mut self, key: &str, value: Value) -> Self {
        self.vhost.insert(key.to_owned(), value);
        self
    }

    /// Set a field of the router filter (e.g. `suppress_envoy_headers`).
    pub fn router(mut self, key: &str, value: Value) -> Self {
        self.router.insert(key.to_owned(), value);
        self
    }

    /// Append a route (matched in order).
    pub fn route(mut self, route: Value) -> Self {
        self.routes.push(route);
        self
    }

    pub fn cluster(mut self, cluster: Value) -> Self {
        self.clusters.push(cluster);
        self
    }

    /// The bootstrap text (JSON, which YAML parsers accept), placeholders unquoted.
    pub fn render(&self) -> String {
        let mut router = self.router.clone();
        router.insert("@type".into(), json!(ROUTER));
        let mut hcm = self.hcm.clone();
        hcm.insert("@type".into(), json!(HCM));
        hcm.insert("stat_prefix".into(), json!("ingress_http"));
        let mut vhost = self.vhost.clone();
        vhost.insert("name".into(), json!("all"));
        vhost.insert("domains".into(), json!(["*"]));
        vhost.insert("routes".into(), json!(self.routes));
        let mut route_config = self.route_config.clone();
        route_config.insert("name".into(), json!("local_route"));
        route_config.insert("virtual_hosts".into(), json!([vhost]));
        hcm.insert("route_config".into(), Value::Object(route_config));
        hcm.insert(
            "http_filters".into(),
            json!([{"name": "envoy.filters.http.router", "typed_config": router}]),
        );
        let v = json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "{{ADMIN}}"}}},
            "static_resources": {
                "listeners": [{
                    "name": "listener_0",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": "{{LISTEN}}"}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": hcm,
                    }]}],
                }],
                "clusters": self.clusters,
            },
        });
        serde_json::to_string_pretty(&v)
            .expect("config serializes")
            .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
            .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
    }
}

/// A route matching `prefix` to `cluster`, with extra `route` action fields merged in.
pub fn route(prefix: &str, cluster: &str, extra: Value) -> Value {
    let mut action = json!({"cluster": cluster});
    if let (Some(a), Value::Object(e)) = (action.as_object_mut(), extra) {
        a.extend(e);
    }
    json!({"match": {"prefix": prefix}, "route": action})
}

/// A STATIC ROUND_ROBIN cluster on 127.0.0.1 `ports` (1 s connect timeout).
pub fn cluster(name: &str, ports: &[u16]) -> Value {
    weighted_cluster(name, &ports.iter().map(|p| (*p, 1)).collect::<Vec<_>>())
}

/// A STATIC ROUND_ROBIN cluster on 127.0.0.1 `(port, weight)` endpoints.
pub fn weighted_cluster(name: &str, endpoints: &[(u16, u32)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(port, w)| {
            json!({
                "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}},
                "load_balancing_weight": w,
            })
        })
        .collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]},
    })
}

/// `cluster` with `key` set to `value`.
pub fn with(mut cluster: Value, key: &str, value: Value) -> Value {
    if let Some(o) = cluster.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
    cluster
}

/// Cluster option: the upstream speaks HTTP/2 (prior knowledge).
pub fn http2_options() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    })
}

/// Every path answered by Baton itself with `body` (a direct response).
pub fn direct(body: &str) -> String {
    Config::new()
        .route(json!({
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
        }))
        .render()
}
