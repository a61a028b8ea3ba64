//! `envoy.filters.http.set_metadata` and `envoy.filters.http.header_to_metadata` (issue 19):
//! the dynamic metadata they write, read by `%DYNAMIC_METADATA(...)%` in the access log and in
//! route header values. Expected values were taken from Envoy 1.40 on the same configuration
//! and requests.

use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::support::*;

const SET: &str = "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config";
const H2M: &str = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const STDOUT_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";

const FORMAT: &str = "ns1=%DYNAMIC_METADATA(ns1)% a=%DYNAMIC_METADATA(ns1:a)% n=%DYNAMIC_METADATA(ns1:n)% b=%DYNAMIC_METADATA(ns1:b)% s=%DYNAMIC_METADATA(ns1:s)% sk=%DYNAMIC_METADATA(ns1:s:k)% l=%DYNAMIC_METADATA(ns1:l)% ns2=%DYNAMIC_METADATA(ns2)% ns3=%DYNAMIC_METADATA(ns3)% nope=%DYNAMIC_METADATA(nope)% miss=%DYNAMIC_METADATA(ns1:zz)% trunc=%DYNAMIC_METADATA(ns1:a):2%\n";

fn filters() -> Value {
    json!([
        {"name": "envoy.filters.http.set_metadata", "typed_config": {"@type": SET, "metadata": [
            {"metadata_namespace": "ns1", "value": {"a": "x y", "n": 5, "b": true,
                "s": {"k": "v", "j": 2}, "l": [1, "two"]}},
            // The namespace is set: skipped (overwrite_denied).
            {"metadata_namespace": "ns1", "value": {"a": "overwritten?", "new": 1}},
            {"metadata_namespace": "ns1", "allow_overwrite": true, "value": {"n": 6}}
        ]}},
        {"name": "envoy.filters.http.header_to_metadata", "typed_config": {"@type": H2M,
            "request_rules": [
                {"header": "x-a", "remove": true,
                 "on_header_present": {"metadata_namespace": "ns2", "key": "a", "type": "STRING"},
                 "on_header_missing": {"metadata_namespace": "ns2", "key": "a_missing", "value": "none"}},
                {"header": "x-n", "on_header_present": {"metadata_namespace": "ns2", "key": "n", "type": "NUMBER"}},
                {"header": "x-b64", "on_header_present": {"metadata_namespace": "ns2", "key": "b64", "encode": "BASE64"}},
                {"header": "x-fixed", "on_header_present": {"metadata_namespace": "ns2", "key": "fixed", "value": "const"}}
            ],
            "response_rules": [
                {"header": "x-r", "remove": true, "on_header_present": {"metadata_namespace": "ns3", "key": "r"}}
            ]}},
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}
    ])
}

async fn upstream() -> Upstream {
    Upstream::custom(|_req: Request<Incoming>| async move {
        Response::builder()
            .header("x-r", "resp-val")
            .body(full("ok"))
            .unwrap()
    })
    .await
}

async fn log_lines(baton: &Baton, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = baton.stdout().lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > until {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reaches_the_access_log_and_header_values_as_envoy() {
    let up = upstream().await;
    let config = Config::new()
        .hcm("http_filters", filters())
        .hcm(
            "access_log",
            json!([{"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG,
                "log_format": {"text_format_source": {"inline_string": FORMAT}}}}]),
        )
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"},
            "request_headers_to_add": [
                {"header": {"key": "x-md", "value": "%DYNAMIC_METADATA(ns1:a)%"}},
                {"header": {"key": "x-md-ns2", "value": "%DYNAMIC_METADATA(ns2)%"}},
                {"header": {"key": "x-md-n", "value": "%DYNAMIC_METADATA(ns2:n)%"}}],
            "response_headers_to_add": [
                {"header": {"key": "x-md3", "value": "%DYNAMIC_METADATA(ns3:r)%"}},
                {"header": {"key": "x-md1", "value": "%DYNAMIC_METADATA(ns1:s)%"}}]}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let mut req = get_req("h", "/one");
    for (k, v) in [
        ("x-a", "hello"),
        ("x-n", "42"),
        ("x-b64", "aGk="),
        ("x-fixed", "whatever"),
    ] {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let r = send1(baton.addr(), req).await.unwrap();
    assert_eq!(r.status, 200);
    // Response rules run after the route's response headers: x-md3 has nothing to render.
    assert_eq!(r.header("x-md3"), None);
    assert_eq!(r.header("x-md1"), Some(r#"{"j":2,"k":"v"}"#));
    assert_eq!(r.header("x-r"), None, "removed by the response rule");
    let seen = up.last();
    assert_eq!(seen.header("x-a"), None, "removed by the request rule");
    assert_eq!(seen.header("x-md"), Some("x y"));
    assert_eq!(
        seen.header("x-md-ns2"),
        Some(r#"{"a":"hello","b64":"hi","fixed":"const","n":42}"#)
    );
    assert_eq!(seen.header("x-md-n"), Some("42"));
    // A NUMBER that does not parse is left out; a missing header's value is written.
    let mut req = get_req("h", "/two");
    req.headers_mut().insert("x-n", "notnum".parse().unwrap());
    send1(baton.addr(), req).await.unwrap();
    let seen = up.last();
    assert_eq!(seen.header("x-md-ns2"), Some(r#"{"a_missing":"none"}"#));
    assert_eq!(seen.header("x-md-n"), None);
    let lines = log_lines(&baton, 2).await;
    let ns1 = r#"ns1={"a":"x y","b":true,"l":[1,"two"],"n":6,"s":{"j":2,"k":"v"}} a=x y n=6 b=true s={"j":2,"k":"v"} sk=v l=[1,"two"]"#;
    assert_eq!(
        lines[0],
        format!(
            r#"{ns1} ns2={{"a":"hello","b64":"hi","fixed":"const","n":42}} ns3={{"r":"resp-val"}} nope=- miss=- trunc=x "#
        )
    );
    assert_eq!(
        lines[1],
        format!(
            r#"{ns1} ns2={{"a_missing":"none"}} ns3={{"r":"resp-val"}} nope=- miss=- trunc=x "#
        )
    );
    assert_eq!(
        baton
            .stat("http.ingress_http.set_metadata.overwrite_denied")
            .await,
        Some(2)
    );
}

#[test]
fn what_baton_does_not_honour_is_refused_with_its_path() {
    let refused = |filter: Value| {
        let config = Config::new()
            .hcm(
                "http_filters",
                json!([filter, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]),
            )
            .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}))
            .render();
        let (status, err) = validate_config(&config);
        assert!(!status.success());
        err
    };
    let p = "http_filters[0].typed_config";
    let err = refused(json!({"name": "m", "typed_config": {"@type": SET,
        "metadata": [{"metadata_namespace": "n", "typed_value": {"@type": "x"}}]}}));
    assert!(
        err.contains(&format!("{p}.metadata[0].typed_value")),
        "{err}"
    );
    let err = refused(json!({"name": "m", "typed_config": {"@type": H2M,
        "request_rules": [{"cookie": "c", "on_header_present": {"key": "k"}}]}}));
    assert!(
        err.contains(&format!("{p}.request_rules[0].cookie")),
        "{err}"
    );
    let err = refused(json!({"name": "m", "typed_config": {"@type": H2M,
        "request_rules": [{"header": "x", "on_header_present": {"key": "k", "type": "PROTOBUF_VALUE"}}]}}));
    assert!(
        err.contains(&format!("{p}.request_rules[0].on_header_present.type")),
        "{err}"
    );
    let err = refused(json!({"name": "m", "typed_config": {"@type": H2M,
        "response_rules": [{"header": "x", "on_header_missing": {"key": "k"}}]}}));
    assert!(
        err.contains(&format!("{p}.response_rules[0].on_header_missing.value")),
        "{err}"
    );
    let err = refused(json!({"name": "m", "typed_config": {"@type": H2M,
        "request_rules": [{"header": "x", "on_header_present": {"key": "k",
            "regex_value_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}}}]}}));
    assert!(err.contains("regex_value_rewrite"), "{err}");
}
