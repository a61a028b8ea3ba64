//! Plain HTTP/1.1 proxying: what reaches the upstream (authority, forwarded headers, request ID,
//! hop-by-hop headers removed, rewrites) and what comes back (`x-envoy-upstream-service-time`).

use serde_json::json;

use crate::support::*;

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn basics_config(echo: &Upstream, extra_router: Option<bool>) -> String {
    let mut c = Config::new()
        .hcm("use_remote_address", json!(true))
        .route(route("/rw/", "echo", json!({"prefix_rewrite": "/new/"})))
        .route(json!({"match": {"path": "/exact/path"},
            "route": {"cluster": "echo", "prefix_rewrite": "/new"}}))
        .route(json!({"match": {"safe_regex": {"regex": "/re/.*"}},
            "route": {"cluster": "echo", "prefix_rewrite": "/x"}}))
        .route(route(
            "/hr/",
            "echo",
            json!({"host_rewrite_literal": "rewritten.example"}),
        ))
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[echo.port()]));
    if let Some(s) = extra_router {
        c = c.router("suppress_envoy_headers", json!(s));
    }
    c.render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_request_with_envoy_headers_and_strips_hop_by_hop() {
    let echo = Upstream::echo("e").await;
    let baton = Baton::start(&basics_config(&echo, None)).await;

    let req = http::Request::get("/hello?x=1")
        .header("host", "svc.example:1234")
        .header("connection", "keep-alive, x-foo")
        .header("x-foo", "must go")
        .header("te", "gzip")
        .header("proxy-connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-kept", "yes")
        .body(empty())
        .unwrap();
    let resp = within(10, "GET", send1(baton.addr(), req)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-upstream"), Some("e"));
    let st = resp
        .header("x-envoy-upstream-service-time")
        .expect("x-envoy-upstream-service-time on the response");
    assert!(st.parse::<u64>().is_ok(), "service time {st:?}");

    let seen = echo.last();
    assert_eq!(seen.uri.path_and_query().unwrap().as_str(), "/hello?x=1");
    assert_eq!(seen.header("host"), Some("svc.example:1234"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(seen.header("x-kept"), Some("yes"));
    let id = seen.header("x-request-id").expect("x-request-id generated");
    assert!(is_uuid(id), "x-request-id {id:?} is not a UUID");
    assert_eq!(seen.header("x-envoy-expected-rq-timeout-ms"), Some("15000"));
    for gone in ["x-foo", "te", "proxy-connection", "keep-alive"] {
        assert!(seen.header(gone).is_none(), "{gone} reached the upstream");
    }
    if let Some(c) = seen.header("connection") {
        assert!(!c.contains("x-foo"), "connection: {c}");
    }

    // An external client's own request ID is replaced on an edge listener
    // (use_remote_address), as Envoy 1.40 does (kept with preserve_external_request_id: see
    // hcm_options).
    let req = http::Request::get("/again")
        .header("host", "svc.example")
        .header("x-request-id", "my-id-1")
        .body(empty())
        .unwrap();
    let resp = send1(baton.addr(), req).await.unwrap();
    assert_eq!(resp.status, 200);
    let id = echo.last().header("x-request-id").map(str::to_owned);
    assert!(id.as_deref().is_some_and(is_uuid), "replaced: {id:?}");
    // Two generated IDs differ.
    get(baton.addr(), "/a").await;
    let a = echo.last().header("x-request-id").unwrap().to_owned();
    get(baton.addr(), "/b").await;
    let b = echo.last().header("x-request-id").unwrap().to_owned();
    assert_ne!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_rewrite_and_host_rewrite() {
    let echo = Upstream::echo("e").await;
    let baton = Baton::start(&basics_config(&echo, None)).await;

    let resp = get(baton.addr(), "/rw/abc?q=1").await;
    assert_eq!(resp.status, 200);
    let seen = echo.last();
    assert_eq!(seen.uri.path_and_query().unwrap().as_str(), "/new/abc?q=1");
    assert_eq!(seen.header("x-envoy-original-path"), Some("/rw/abc?q=1"));
    assert_eq!(seen.header("host"), Some("test.local"));

    let resp = get(baton.addr(), "/hr/x").await;
    assert_eq!(resp.status, 200);
    let seen = echo.last();
    assert_eq!(seen.uri.path(), "/hr/x");
    assert_eq!(seen.header("host"), Some("rewritten.example"));
    assert_eq!(seen.header("x-envoy-original-host"), Some("test.local"));
    assert!(seen.header("x-envoy-original-path").is_none());

    // What a `path` or `safe_regex` match matched is the whole path: prefix_rewrite replaces
    // it, the query stays (Envoy 1.40 on the same routes).
    for (path, want) in [("/exact/path?a=1", "/new?a=1"), ("/re/abc?q", "/x?q")] {
        assert_eq!(get(baton.addr(), path).await.status, 200);
        let seen = echo.last();
        assert_eq!(seen.uri.path_and_query().unwrap().as_str(), want);
        assert_eq!(seen.header("x-envoy-original-path"), Some(path));
        assert!(seen.header("x-envoy-original-host").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppress_envoy_headers_removes_service_time() {
    let echo = Upstream::echo("e").await;
    let baton = Baton::start(&basics_config(&echo, Some(true))).await;
    let resp = get(baton.addr(), "/x").await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("x-envoy-upstream-service-time").is_none());
    assert!(echo
        .last()
        .header("x-envoy-expected-rq-timeout-ms")
        .is_none());
}
