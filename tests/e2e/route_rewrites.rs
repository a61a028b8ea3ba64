//! Route rewrites beyond `prefix_rewrite` (issue 23): `regex_rewrite`, `host_rewrite_header`,
//! `host_rewrite_path_regex`. Expectations from Envoy 1.40 on the same routes: the regex
//! rewrites the path without its query, every match, and `x-envoy-original-path` is set even
//! when nothing matched; a host from a request field only when the field has a value; a host
//! from the path regex is the path itself when the pattern does not match.

use serde_json::json;

use crate::support::upstream::Seen;
use crate::support::*;

async fn seen_for(baton: &Baton, up: &Upstream, path: &str, extra: &[(&str, &str)]) -> Seen {
    let mut req = get_req("h", path);
    for (k, v) in extra {
        let name = http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
        req.headers_mut()
            .insert(name, v.parse().expect("header value"));
    }
    let r = send1(baton.addr(), req).await.expect("a response");
    assert_eq!(r.status, 200, "{path}");
    up.last()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_host_rewrites_as_envoy() {
    let up = Upstream::echo("up").await;
    let r = |prefix: &str, extra: serde_json::Value| route(prefix, "up", extra);
    let config = Config::new()
        .route(r(
            "/rx/",
            json!({"regex_rewrite": {"pattern": {"regex": "^/rx/(\\w+)/(\\w+)$"}, "substitution": "/\\2/\\1"}}),
        ))
        .route(r(
            "/ry/",
            json!({"regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}}),
        ))
        .route(r("/hh", json!({"host_rewrite_header": "x-host"})))
        .route(r(
            "/hp/",
            json!({"host_rewrite_path_regex": {"pattern": {"regex": "^/hp/([^/]+)/.*$"}, "substitution": "\\1"}}),
        ))
        .route(r("/", json!({})))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;

    let s = seen_for(&baton, &up, "/rx/foo/bar?q=1", &[]).await;
    assert_eq!(s.uri.to_string(), "/bar/foo?q=1");
    assert_eq!(s.header("x-envoy-original-path"), Some("/rx/foo/bar?q=1"));
    let s = seen_for(&baton, &up, "/rx/foo/bar/baz", &[]).await;
    assert_eq!(s.uri.to_string(), "/rx/foo/bar/baz");
    assert_eq!(s.header("x-envoy-original-path"), Some("/rx/foo/bar/baz"));
    let s = seen_for(&baton, &up, "/ry/aaa?a=a", &[]).await;
    assert_eq!(s.uri.to_string(), "/ry/bbb?a=a");

    let s = seen_for(&baton, &up, "/hh", &[("x-host", "other.example:81")]).await;
    assert_eq!(s.header("host"), Some("other.example:81"));
    assert_eq!(s.header("x-envoy-original-host"), Some("h"));
    let s = seen_for(&baton, &up, "/hh", &[]).await;
    assert_eq!(s.header("host"), Some("h"));
    assert_eq!(s.header("x-envoy-original-host"), None);

    let s = seen_for(&baton, &up, "/hp/newhost/x?y=1", &[]).await;
    assert_eq!(s.header("host"), Some("newhost"));
    assert_eq!(s.uri.to_string(), "/hp/newhost/x?y=1");
    assert_eq!(s.header("x-envoy-original-host"), Some("h"));
    let s = seen_for(&baton, &up, "/hp/", &[]).await;
    assert_eq!(s.header("host"), Some("/hp/"));
}

#[test]
fn conflicting_or_bad_rewrites_are_refused_with_their_path() {
    for (action, path, words) in [
        (
            json!({"prefix_rewrite": "/a", "regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}}),
            "route.regex_rewrite",
            "not both",
        ),
        (
            json!({"host_rewrite_literal": "a", "host_rewrite_header": "x-h"}),
            "route",
            "give one of",
        ),
        (
            json!({"regex_rewrite": {"pattern": {"regex": "(a"}, "substitution": "b"}}),
            "route.regex_rewrite.pattern.regex",
            "invalid regex",
        ),
        (
            json!({"regex_rewrite": {"pattern": {"regex": "(a)"}, "substitution": "\\2"}}),
            "route.regex_rewrite.substitution",
            "names no group",
        ),
        (
            json!({"host_rewrite_header": "bad header"}),
            "route.host_rewrite_header",
            "not a header name",
        ),
    ] {
        let config = Config::new()
            .route(route("/", "up", action.clone()))
            .cluster(cluster("up", &[1]))
            .render();
        let (status, out) = validate_config(&config);
        assert!(!status.success(), "{action}: refused");
        assert!(out.contains(path), "{action}: {out}");
        assert!(out.contains(words), "{action}: {out}");
    }
}
