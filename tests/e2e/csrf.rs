//! `envoy.filters.http.csrf` (issue 19): the source origin (`Origin`, else `Referer`) against
//! the request's authority and `additional_origins`, enforced or shadowed, per route; stats.
//! Expected responses were taken from Envoy 1.40 on the same configuration.

use serde_json::json;

use crate::support::*;

const CSRF: &str = "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const NAME: &str = "envoy.filters.http.csrf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_checks_origins_as_envoy_does() {
    let up = Upstream::echo("a").await;
    let config = Config::new()
        .hcm(
            "http_filters",
            json!([{"name": NAME, "typed_config": {"@type": CSRF,
                "filter_enabled": {"default_value": {"numerator": 100}},
                "additional_origins": [{"prefix": "a.ok"}]}},
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]),
        )
        .route(
            json!({"match": {"prefix": "/shadow"}, "route": {"cluster": "up"},
            "typed_per_filter_config": {NAME: {"@type": CSRF,
                "filter_enabled": {"default_value": {"numerator": 0}},
                "shadow_enabled": {"default_value": {"numerator": 100}}}}}),
        )
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let own = format!("http://{}", baton.addr());
    let host = baton.addr().to_string();
    let send = |method: &'static str, path: &'static str, headers: Vec<(&'static str, String)>| {
        let host = host.clone();
        let addr = baton.addr();
        async move {
            let mut req = request(method, &host, path, empty());
            for (k, v) in headers {
                req.headers_mut().insert(k, v.parse().unwrap());
            }
            send1(addr, req).await.expect("a response")
        }
    };
    let evil = || vec![("origin", "http://evil".to_owned())];
    for (method, path, headers, status) in [
        ("GET", "/x", evil(), 200),
        ("POST", "/x", vec![], 403),
        ("POST", "/x", evil(), 403),
        ("POST", "/x", vec![("origin", own.clone())], 200),
        // The scheme is not compared; host and port are.
        (
            "POST",
            "/x",
            vec![("origin", own.replace("http:", "https:"))],
            200,
        ),
        (
            "POST",
            "/x",
            vec![("origin", "http://127.0.0.1".to_owned())],
            403,
        ),
        ("POST", "/x", vec![("referer", format!("{own}/a/b"))], 200),
        (
            "POST",
            "/x",
            vec![("referer", "http://evil/x".to_owned())],
            403,
        ),
        (
            "POST",
            "/x",
            vec![("origin", "http://a.ok.example".to_owned())],
            200,
        ),
        (
            "POST",
            "/x",
            vec![("origin", "http://A.OK.example".to_owned())],
            403,
        ),
        ("DELETE", "/x", evil(), 403),
        ("PUT", "/x", evil(), 403),
        ("PATCH", "/x", evil(), 403),
        ("OPTIONS", "/x", evil(), 200),
        ("POST", "/x", vec![("origin", "null".to_owned())], 403),
        // Origin first: a bad Referer beside a good Origin does not matter.
        (
            "POST",
            "/x",
            vec![
                ("origin", own.clone()),
                ("referer", "http://evil/".to_owned()),
            ],
            200,
        ),
        ("POST", "/shadow", evil(), 200),
    ] {
        let r = send(method, path, headers.clone()).await;
        assert_eq!(r.status, status, "{method} {path} {headers:?}");
        if status == 403 {
            assert_eq!(r.text(), "Invalid origin");
            assert_eq!(r.header("content-type"), Some("text/plain"));
        }
    }
    let p = "http.ingress_http.csrf";
    assert_eq!(
        baton.stat(&format!("{p}.missing_source_origin")).await,
        Some(2)
    );
    assert_eq!(baton.stat(&format!("{p}.request_invalid")).await, Some(8));
    assert_eq!(baton.stat(&format!("{p}.request_valid")).await, Some(5));
}
