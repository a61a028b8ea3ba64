//! `route.cluster_header` and `cluster_not_found_response_code` (issue 23). Envoy 1.40 on the
//! same routes: the cluster named by the field serves the request; a missing field or an
//! unknown name is answered with the route's code (503 by default, 404, 500) and an empty body
//! (`content-length: 0`), flag `NC`, counted in `http.<prefix>.no_cluster`.

use serde_json::json;

use crate::support::*;

const STDOUT_LOG: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";

fn by_header(prefix: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut action = json!({"cluster_header": "x-cluster"});
    if let (Some(a), serde_json::Value::Object(e)) = (action.as_object_mut(), extra) {
        a.extend(e);
    }
    json!({"match": {"prefix": prefix}, "route": action})
}

async fn send(baton: &Baton, path: &str, cluster: Option<&str>) -> Resp {
    let mut req = get_req("h", path);
    if let Some(c) = cluster {
        req.headers_mut()
            .insert("x-cluster", c.parse().expect("header value"));
    }
    send1(baton.addr(), req).await.expect("a response")
}

fn config(a: &Upstream, b: &Upstream, filters: bool) -> String {
    let mut config = Config::new()
        .hcm(
            "access_log",
            json!([{"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG,
                "log_format": {"text_format_source": {"inline_string": "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER%\n"}}}}]),
        )
        .route(by_header(
            "/nf",
            json!({"cluster_not_found_response_code": "NOT_FOUND"}),
        ))
        .route(by_header(
            "/ise",
            json!({"cluster_not_found_response_code": "INTERNAL_SERVER_ERROR"}),
        ))
        .route(by_header("/", json!({})))
        .cluster(cluster("a", &[a.port()]))
        .cluster(cluster("b", &[b.port()]));
    if filters {
        // With an HTTP filter before the router the cluster is picked before the filters run.
        config = config.hcm(
            "http_filters",
            json!([
                {"name": "envoy.filters.http.cors", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
                {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
            ]),
        );
    }
    config.render()
}

async fn check(filters: bool) {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let baton = Baton::start(&config(&a, &b, filters)).await;

    let r = send(&baton, "/x", Some("a")).await;
    assert_eq!((r.status, a.hits(), b.hits()), (200, 1, 0));
    let r = send(&baton, "/nf/y", Some("b")).await;
    assert_eq!((r.status, a.hits(), b.hits()), (200, 1, 1));
    assert_eq!(b.last().uri.path(), "/nf/y");

    for (path, cluster, status) in [
        ("/x", Some("zz"), 503),
        ("/x", None, 503),
        ("/nf", Some("zz"), 404),
        ("/ise", None, 500),
        // Names are compared exactly, as Envoy does.
        ("/x", Some("A"), 503),
    ] {
        let r = send(&baton, path, cluster).await;
        assert_eq!(r.status, status, "{path} {cluster:?}");
        assert_eq!(r.text(), "", "{path} {cluster:?}");
        assert_eq!(r.header("content-length"), Some("0"), "{path} {cluster:?}");
    }
    assert_eq!((a.hits(), b.hits()), (1, 1));
    assert_eq!(baton.stat("http.ingress_http.no_cluster").await, Some(5));
    assert_eq!(baton.stat("http.ingress_http.no_route").await, Some(0));
    let log = baton.stdout();
    assert!(log.contains("/x 200 - a\n"), "{log}");
    assert!(log.contains("/nf/y 200 - b\n"), "{log}");
    assert!(log.contains("/x 503 NC -\n"), "{log}");
    assert!(log.contains("/nf 404 NC -\n"), "{log}");
    assert!(log.contains("/ise 500 NC -\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_from_a_request_field_as_envoy() {
    check(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_from_a_request_field_with_filters() {
    check(true).await;
}

#[test]
fn bad_cluster_header_is_refused_with_its_path() {
    for (action, path, words) in [
        (
            json!({"cluster": "up", "cluster_header": "x-c"}),
            "route.cluster_header",
            "give one of",
        ),
        (
            json!({"cluster_header": "bad header"}),
            "route.cluster_header",
            "not a header name",
        ),
        (
            json!({"cluster_header": ":authority"}),
            "route.cluster_header",
            "pseudo-header",
        ),
        (
            json!({"cluster_header": "x-c", "cluster_not_found_response_code": "TEAPOT"}),
            "cluster_not_found_response_code",
            "",
        ),
    ] {
        let config = Config::new()
            .route(json!({"match": {"prefix": "/"}, "route": action.clone()}))
            .cluster(cluster("up", &[1]))
            .render();
        let (status, out) = validate_config(&config);
        assert!(!status.success(), "{action}: refused");
        assert!(out.contains(path), "{action}: {out}");
        assert!(out.contains(words), "{action}: {out}");
    }
}
