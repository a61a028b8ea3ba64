//! `envoy.filters.http.local_ratelimit` (issue 19): the token bucket (shared, per route, per
//! connection), `filter_enabled` / `filter_enforced`, `response_headers_to_add`,
//! `request_headers_to_add_when_not_enforced`, `x-ratelimit-*` (DRAFT_VERSION_03), `status`,
//! stats and the `RL` flag. Expected responses were taken from Envoy 1.40 on the same
//! configuration.

use serde_json::{json, Value};

use crate::support::*;

const LRL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const STDOUT_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const NAME: &str = "envoy.filters.http.local_ratelimit";

/// Two tokens, refilled one a minute (none within a test), enabled and enforced for all.
fn lrl(extra: Value) -> Value {
    let mut v = json!({"@type": LRL, "stat_prefix": "lrl",
        "token_bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": "60s"},
        "filter_enabled": {"runtime_key": "x_en", "default_value": {"numerator": 100}},
        "filter_enforced": {"runtime_key": "x_enf", "default_value": {"numerator": 100}},
        "response_headers_to_add": [{"header": {"key": "x-rl", "value": "yes"}}],
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

fn per_route(prefix: &str, extra: Value) -> Value {
    json!({"match": {"prefix": prefix}, "route": {"cluster": "up"},
           "typed_per_filter_config": {NAME: lrl(extra)}})
}

fn config(up: &Upstream) -> String {
    let one = json!({"max_tokens": 1, "fill_interval": "60s"});
    let mut not_enabled = lrl(json!({"stat_prefix": "noen"}));
    let o = not_enabled.as_object_mut().unwrap();
    o.remove("filter_enabled");
    o.remove("filter_enforced");
    Config::new()
        .hcm(
            "http_filters",
            json!([{"name": NAME, "typed_config": lrl(json!({}))},
                   {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]),
        )
        .hcm(
            "access_log",
            json!([{"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG,
                "log_format": {"text_format_source": {"inline_string": "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}}}]),
        )
        .route(per_route(
            "/route",
            json!({"stat_prefix": "route", "status": {"code": 503}, "token_bucket": one}),
        ))
        .route(json!({"match": {"prefix": "/noen"}, "route": {"cluster": "up"},
            "typed_per_filter_config": {NAME: not_enabled}}))
        .route(per_route(
            "/shadow",
            json!({"stat_prefix": "shadow",
                "filter_enforced": {"runtime_key": "q", "default_value": {"numerator": 0}},
                "request_headers_to_add_when_not_enforced": [{"header": {"key": "x-shadow", "value": "1"}}]}),
        ))
        .route(per_route(
            "/conn",
            json!({"stat_prefix": "conn", "token_bucket": one,
                   "local_rate_limit_per_downstream_connection": true}),
        ))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render()
}

fn ratelimit_headers(r: &Resp) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        r.header("x-ratelimit-limit"),
        r.header("x-ratelimit-remaining"),
        r.header("x-ratelimit-reset"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_limits_as_envoy_does() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up)).await;
    let r = get(baton.addr(), "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(ratelimit_headers(&r), (Some("2"), Some("1"), Some("0")));
    assert_eq!(r.header("x-rl"), None);
    let r = get(baton.addr(), "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(ratelimit_headers(&r), (Some("2"), Some("0"), Some("60")));
    let r = get(baton.addr(), "/x").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "local_rate_limited");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-rl"), Some("yes"));
    assert_eq!(ratelimit_headers(&r), (Some("2"), Some("0"), Some("60")));
    assert_eq!(up.hits(), 2);
    // A route's own configuration: its bucket, status and stats.
    let r = get(baton.addr(), "/route").await;
    assert_eq!(ratelimit_headers(&r), (Some("1"), Some("0"), Some("60")));
    let r = get(baton.addr(), "/route").await;
    assert_eq!((r.status, r.header("x-rl")), (503, Some("yes")));
    for (prefix, enabled, enforced, ok, limited) in [("lrl", 3, 1, 2, 1), ("route", 2, 1, 1, 1)] {
        let p = format!("{prefix}.http_local_rate_limit");
        assert_eq!(baton.stat(&format!("{p}.enabled")).await, Some(enabled));
        assert_eq!(baton.stat(&format!("{p}.enforced")).await, Some(enforced));
        assert_eq!(baton.stat(&format!("{p}.ok")).await, Some(ok));
        assert_eq!(
            baton.stat(&format!("{p}.rate_limited")).await,
            Some(limited)
        );
        assert_eq!(baton.stat(&format!("{p}.shadow_mode")).await, Some(0));
    }
    let log = baton.stdout();
    assert!(log.contains("/x 429 RL\n"), "{log}");
    assert!(log.contains("/route 503 RL\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unenabled_and_unenforced_limits_let_requests_through() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up)).await;
    // No filter_enabled: 0%, the filter does nothing (no headers, no stats).
    for _ in 0..3 {
        let r = get(baton.addr(), "/noen").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), None);
    }
    assert_eq!(
        baton.stat("noen.http_local_rate_limit.enabled").await,
        Some(0)
    );
    // Not enforced: counted, passed on with the configured request header.
    for i in 0..3 {
        let r = get(baton.addr(), "/shadow").await;
        assert_eq!(r.status, 200);
        let marked = up.last().header("x-shadow") == Some("1");
        assert_eq!(marked, i == 2, "request {i}");
    }
    let p = "shadow.http_local_rate_limit";
    assert_eq!(baton.stat(&format!("{p}.rate_limited")).await, Some(1));
    assert_eq!(baton.stat(&format!("{p}.enforced")).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_per_connection_when_asked() {
    let up = Upstream::echo("a").await;
    let baton = Baton::start(&config(&up)).await;
    for _ in 0..2 {
        let mut c = H1::connect(baton.addr()).await.expect("connect");
        let r = c.send(get_req("h", "/conn")).await.expect("send");
        assert_eq!(r.status, 200);
        let r = c.send(get_req("h", "/conn")).await.expect("send");
        assert_eq!(r.status, 429);
    }
}

#[test]
fn local_rate_limit_configs_are_checked() {
    let check = |tc: Value| {
        let text = Config::new()
            .hcm(
                "http_filters",
                json!([{"name": NAME, "typed_config": tc},
                       {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]),
            )
            .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}))
            .render();
        let (status, err) = validate_config(&text);
        assert!(!status.success(), "accepted {tc}");
        err
    };
    let p = "http_filters[0].typed_config";
    let err = check(lrl(
        json!({"descriptors": [{"entries": [{"key": "a", "value": "b"}]}]}),
    ));
    assert!(err.contains(&format!("{p}.descriptors")), "{err}");
    let err = check(lrl(
        json!({"token_bucket": {"max_tokens": 0, "fill_interval": "1s"}}),
    ));
    assert!(
        err.contains(&format!("{p}.token_bucket.max_tokens")),
        "{err}"
    );
    let err = check(lrl(json!({"stat_prefix": ""})));
    assert!(err.contains(&format!("{p}.stat_prefix")), "{err}");
    let err = check(lrl(json!({"always_consume_default_token_bucket": true})));
    assert!(err.contains("always_consume_default_token_bucket"), "{err}");
}
