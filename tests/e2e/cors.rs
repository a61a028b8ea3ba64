//! `envoy.filters.http.cors` (issue 19) with per-filter `CorsPolicy` at virtual host and route
//! (merged field by field) and the legacy `cors` of virtual hosts and route actions. Expected
//! responses were taken from Envoy 1.40 on the same configurations.

use serde_json::{json, Value};

use crate::support::*;

const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
const POLICY: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const NAME: &str = "envoy.filters.http.cors";

fn filters() -> Value {
    json!([{"name": NAME, "typed_config": {"@type": CORS}},
           {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}])
}

fn typed_config(up: &Upstream) -> String {
    Config::new()
        .hcm("http_filters", filters())
        .route(json!({"match": {"prefix": "/r"}, "route": {"cluster": "up"},
            "typed_per_filter_config": {NAME: {"@type": POLICY,
                "allow_origin_string_match": [{"exact": "https://r.example"}],
                "expose_headers": "x-r"}}}))
        .route(json!({"match": {"prefix": "/nf"}, "route": {"cluster": "up"},
            "typed_per_filter_config": {NAME: {"@type": POLICY,
                "forward_not_matching_preflights": false,
                "allow_origin_string_match": [{"exact": "https://a.example"}]}}}))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .vhost(
            "typed_per_filter_config",
            json!({NAME: {"@type": POLICY,
                "allow_origin_string_match": [{"exact": "https://a.example"}, {"suffix": ".b.example"}],
                "allow_methods": "GET, POST", "allow_headers": "x-a, x-b", "expose_headers": "x-e",
                "max_age": "600", "allow_credentials": true}}),
        )
        .cluster(cluster("up", &[up.port()]))
        .render()
}

async fn send(baton: &Baton, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = request(method, "h", path, empty());
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    send1(baton.addr(), req).await.expect("a response")
}

fn acao(r: &Resp) -> Option<&str> {
    r.header("access-control-allow-origin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_policies_answer_as_envoy_does() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&typed_config(&up)).await;
    let a = ("origin", "https://a.example");
    let preflight = ("access-control-request-method", "POST");
    let r = send(&baton, "GET", "/x", &[a]).await;
    assert_eq!(r.header("x-upstream"), Some("a"));
    assert_eq!(acao(&r), Some("https://a.example"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-e"));
    assert_eq!(r.header("access-control-allow-methods"), None);
    // A preflight is answered here.
    let r = send(&baton, "OPTIONS", "/x", &[a, preflight]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), None);
    assert_eq!(acao(&r), Some("https://a.example"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-a, x-b"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-e"));
    assert_eq!(r.header("content-length"), Some("0"));
    let z = ("origin", "https://z.b.example");
    let r = send(&baton, "OPTIONS", "/x", &[z, preflight]).await;
    assert_eq!(acao(&r), Some("https://z.b.example"));
    // An OPTIONS without access-control-request-method is no preflight: forwarded.
    let r = send(&baton, "OPTIONS", "/x", &[a]).await;
    assert_eq!(r.header("x-upstream"), Some("a"));
    assert_eq!(acao(&r), Some("https://a.example"));
    // Another origin: forwarded untouched, preflight too.
    let evil = ("origin", "https://evil");
    let r = send(&baton, "GET", "/x", &[evil]).await;
    assert_eq!((r.header("x-upstream"), acao(&r)), (Some("a"), None));
    let r = send(&baton, "OPTIONS", "/x", &[evil, preflight]).await;
    assert_eq!((r.header("x-upstream"), acao(&r)), (Some("a"), None));
    // The route's policy over the virtual host's, field by field.
    let ro = ("origin", "https://r.example");
    let r = send(&baton, "OPTIONS", "/r", &[ro, preflight]).await;
    assert_eq!(acao(&r), Some("https://r.example"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-r"));
    let r = send(&baton, "GET", "/r", &[a]).await;
    assert_eq!(acao(&r), None);
    // forward_not_matching_preflights: false answers another origin's preflight here,
    // without an allowed origin.
    let r = send(&baton, "OPTIONS", "/nf", &[evil, preflight]).await;
    assert_eq!(
        (r.status, r.header("x-upstream"), acao(&r)),
        (200, None, None)
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let p = "http.ingress_http.cors";
    assert_eq!(baton.stat(&format!("{p}.origin_valid")).await, Some(5));
    assert_eq!(baton.stat(&format!("{p}.origin_invalid")).await, Some(4));
    // No Origin: no CORS request at all.
    let r = send(&baton, "GET", "/x", &[]).await;
    assert_eq!(acao(&r), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_cors_fields_apply_merged() {
    let up = Upstream::echo("a").await;
    let config = Config::new()
        .hcm("http_filters", filters())
        .route(json!({"match": {"prefix": "/r"}, "route": {"cluster": "up",
            "cors": {"allow_origin_string_match": [{"exact": "https://r.example"}]}}}))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .vhost(
            "cors",
            json!({"allow_origin_string_match": [{"exact": "https://a.example"}],
                   "allow_methods": "GET", "expose_headers": "x-e"}),
        )
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let preflight = ("access-control-request-method", "POST");
    let r = send(
        &baton,
        "OPTIONS",
        "/x",
        &[("origin", "https://a.example"), preflight],
    )
    .await;
    assert_eq!(acao(&r), Some("https://a.example"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-e"));
    let r = send(
        &baton,
        "OPTIONS",
        "/r",
        &[("origin", "https://r.example"), preflight],
    )
    .await;
    assert_eq!(acao(&r), Some("https://r.example"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
    let r = send(
        &baton,
        "OPTIONS",
        "/r",
        &[("origin", "https://a.example"), preflight],
    )
    .await;
    assert_eq!((r.header("x-upstream"), acao(&r)), (Some("a"), None));
}
