//! Per-route filter configuration (`typed_per_filter_config` at route configuration, virtual
//! host and route levels, `envoy.config.route.v3.FilterConfig`, the HCM list's `disabled` and
//! `is_optional`) and `envoy.filters.http.buffer` (issue 19). Expected responses were taken from
//! Envoy 1.40 on the same configurations.

use http_body_util::BodyExt as _;
use serde_json::{json, Value};

use crate::support::*;

const BUFFER: &str = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer";
const BUFFER_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute";
const FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";
const HEALTH_CHECK: &str =
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}})
}

fn buffer(max: u32, disabled: bool) -> Value {
    json!({"name": "buf", "disabled": disabled,
           "typed_config": {"@type": BUFFER, "max_request_bytes": max}})
}

fn per_route_limit(max: u32) -> Value {
    json!({"@type": BUFFER_PER_ROUTE, "buffer": {"max_request_bytes": max}})
}

/// A route for `prefix` to `up` with `typed_per_filter_config`.
fn route_with(prefix: &str, per_filter: Value) -> Value {
    json!({"match": {"prefix": prefix}, "route": {"cluster": "up"},
           "typed_per_filter_config": per_filter})
}

async fn post(baton: &Baton, path: &str, len: usize) -> Resp {
    send1(
        baton.addr(),
        request("POST", "h", path, full(vec![b'a'; len])),
    )
    .await
    .expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_request_bytes_is_answered_413_as_envoy_does() {
    let up = Upstream::echo("a").await;
    let config = Config::new()
        .hcm("http_filters", json!([buffer(10, false), router()]))
        .route(json!({"name": "rn", "match": {"prefix": "/"}, "route": {"cluster": "up"},
            "response_headers_to_add": [{"header": {"key": "x-route", "value": "r"}}]}))
        .hcm(
            "access_log",
            json!([{"name": "envoy.access_loggers.stdout", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"text_format_source": {"inline_string": "LOG %RESPONSE_CODE% %ROUTE_NAME%\n"}}}}]),
        )
        .vhost(
            "response_headers_to_add",
            json!([{"header": {"key": "x-vh", "value": "v"}}]),
        )
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let r = post(&baton, "/x", 11).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.text(), "Payload Too Large");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("connection"), Some("close"));
    // Envoy gives a filter's local reply the route's response header mutations.
    assert_eq!(r.header("x-route"), Some("r"));
    assert_eq!(r.header("x-vh"), Some("v"));
    assert_eq!(up.hits(), 0);
    let r = post(&baton, "/x", 10).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().header("content-length"), Some("10"));
    // A chunked body is read whole and sent with its length, as Envoy's filter does.
    let (mut tx, body) = channel_body(4);
    let sending = tokio::spawn(async move {
        for part in ["abc", "defg"] {
            tx.send(hyper::body::Frame::data(bytes::Bytes::from(part)))
                .await
                .expect("send");
        }
    });
    let r = send1(baton.addr(), request("POST", "h", "/x", body))
        .await
        .expect("a response");
    sending.await.expect("sent");
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("content-length"), Some("7"));
    assert_eq!(seen.header("transfer-encoding"), None);
    // A request without a body gets no length.
    let r = get(baton.addr(), "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().header("content-length"), None);
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_rq_too_large")
            .await,
        Some(1)
    );
    // The route a filter's reply answered for is logged, as Envoy logs it.
    let log = baton.stdout();
    assert!(log.contains("LOG 413 rn\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_configs_override_and_enable_filters_as_envoy_does() {
    let up = Upstream::echo("a").await;
    let disabled = json!({"@type": FILTER_CONFIG, "disabled": true});
    let config = Config::new()
        // Off by default: only routes that configure it (or enable it) buffer.
        .hcm("http_filters", json!([buffer(1000, true), router()]))
        .route(route_with(
            "/wrapped",
            json!({"buf": {"@type": FILTER_CONFIG, "config": per_route_limit(5)}}),
        ))
        .route(route_with("/plain", json!({"buf": per_route_limit(5)})))
        .route(route_with(
            "/off",
            json!({"buf": {"@type": FILTER_CONFIG, "disabled": true, "config": per_route_limit(5)}}),
        ))
        .route(route_with(
            "/streamed",
            json!({"buf": {"@type": BUFFER_PER_ROUTE, "disabled": true}}),
        ))
        .route(route_with("/vh-off", json!({"buf": disabled})))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .vhost("typed_per_filter_config", json!({"buf": per_route_limit(8)}))
        .route_config("typed_per_filter_config", json!({"buf": per_route_limit(3)}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    for (path, len, status) in [
        // The route's own configuration, wrapped or not, enables the filter with its limit.
        ("/wrapped", 6, 413),
        ("/wrapped", 5, 200),
        ("/plain", 6, 413),
        // `disabled: true` wins over the configuration beside it.
        ("/off", 20, 200),
        ("/streamed", 20, 200),
        ("/vh-off", 20, 200),
        // No route entry: the virtual host's (more specific than the route configuration's).
        ("/other", 9, 413),
        ("/other", 8, 200),
    ] {
        let r = post(&baton, path, len).await;
        assert_eq!(r.status, status, "{path} with {len} bytes: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_disabled_in_the_list_runs_only_where_a_route_turns_it_on() {
    let up = Upstream::echo("a").await;
    let hc = json!({"name": "hc", "typed_config": {"@type": HEALTH_CHECK,
        "pass_through_mode": false,
        "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}]}});
    let config = Config::new()
        .hcm(
            "http_filters",
            json!([
                hc,
                buffer(4, true),
                // Optional and of a type Baton lacks: left out, as Envoy leaves out an
                // optional filter it has no implementation for.
                {"name": "opt", "is_optional": true, "typed_config": {
                    "@type": "type.googleapis.com/google.protobuf.Empty"}},
                router()
            ]),
        )
        .route(route_with(
            "/on",
            json!({"buf": {"@type": FILTER_CONFIG, "config": per_route_limit(4)},
            "nope": {"@type": FILTER_CONFIG, "is_optional": true,
                     "config": {"@type": "type.googleapis.com/google.protobuf.Empty"}}}),
        ))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    assert_eq!(post(&baton, "/x", 5).await.status, 200);
    assert_eq!(post(&baton, "/on", 5).await.status, 413);
    let r = get(baton.addr(), "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-envoy-upstream-healthchecked-cluster"), Some(""));
    assert_eq!(up.hits(), 1);
}

/// `--mode validate` on a configuration with `http_filters` and one route carrying `per_filter`;
/// its stderr.
fn refused(filters: Value, per_filter: Value) -> String {
    let text = Config::new()
        .hcm("http_filters", filters)
        .route(
            json!({"match": {"prefix": "/"}, "direct_response": {"status": 200},
            "typed_per_filter_config": per_filter}),
        )
        .render();
    let (status, err) = validate_config(&text);
    assert!(!status.success(), "accepted");
    err
}

#[test]
fn unknown_filters_and_fields_are_refused_with_their_path() {
    let base = json!([buffer(10, false), router()]);
    let vh = "virtual_hosts[0].routes[0].typed_per_filter_config";
    let err = refused(
        base.clone(),
        json!({"buf": {"@type": "type.googleapis.com/google.protobuf.Empty"}}),
    );
    assert!(err.contains(&format!("{vh}.buf.@type")), "{err}");
    let err = refused(base.clone(), json!({"buf": {"@type": FILTER_CONFIG}}));
    assert!(
        err.contains(&format!("{vh}.buf.config: is required")),
        "{err}"
    );
    let err = refused(
        base.clone(),
        json!({"buf": {"@type": BUFFER_PER_ROUTE, "buffer": {"max_request_bytes": 1, "x": 1}}}),
    );
    assert!(err.contains(&format!("{vh}.buf.buffer")), "{err}");
    let err = refused(
        base.clone(),
        json!({"buf": {"@type": FILTER_CONFIG, "config": per_route_limit(1), "extra": 1}}),
    );
    assert!(
        err.contains(&format!("{vh}.buf")) && err.contains("extra"),
        "{err}"
    );
    let err = refused(
        json!([{"name": "x", "typed_config": {"@type": "type.googleapis.com/google.protobuf.Empty"}}, router()]),
        json!({}),
    );
    assert!(err.contains("http_filters[0].typed_config.@type"), "{err}");
    let err = refused(
        json!([{"name": "buf", "typed_config": {"@type": BUFFER}}, router()]),
        json!({}),
    );
    assert!(
        err.contains("http_filters[0].typed_config.max_request_bytes: is required"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_clusters_config_is_the_most_specific() {
    let up = Upstream::echo("a").await;
    let weighted = |per_filter: Value| {
        json!({"weighted_clusters": {"clusters": [
            {"name": "up", "weight": 1, "typed_per_filter_config": per_filter}]}})
    };
    let config = Config::new()
        .hcm("http_filters", json!([buffer(100, false), router()]))
        .route(json!({"match": {"prefix": "/w"},
            "route": weighted(json!({"buf": per_route_limit(5)})),
            "typed_per_filter_config": {"buf": per_route_limit(50)}}))
        .route(json!({"match": {"prefix": "/d"},
            "route": weighted(json!({"buf": {"@type": FILTER_CONFIG, "disabled": true}}))}))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    for (path, len, status) in [
        ("/w", 6, 413),
        ("/w", 5, 200),
        ("/d", 200, 200),
        ("/x", 101, 413),
    ] {
        let r = post(&baton, path, len).await;
        assert_eq!(r.status, status, "{path} with {len} bytes: {}", r.text());
    }
}

/// The buffer filter keeps a request's trailers: they follow the buffered body to an HTTP/2
/// upstream (the echo sends them back as its response's trailers), as Envoy forwards them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_request_trailers_reach_the_upstream() {
    let up = Upstream::echo_h2("h2").await;
    let config = Config::new()
        .hcm("http_filters", json!([buffer(1024, false), router()]))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(with(
            cluster("up", &[up.port()]),
            "typed_extension_protocol_options",
            http2_options(),
        ))
        .render();
    let baton = Baton::start(&config).await;
    let mut c = H2::connect(baton.addr()).await.unwrap();
    let (mut tx, body) = channel_body(4);
    let req = request("POST", "h", "/t", body);
    let send = tokio::spawn(async move {
        let resp = c.sender.send_request(req).await.unwrap();
        resp.into_body().collect().await.unwrap()
    });
    tx.send_data(bytes::Bytes::from_static(b"hello "))
        .await
        .unwrap();
    tx.send_data(bytes::Bytes::from_static(b"world"))
        .await
        .unwrap();
    let mut t = http::HeaderMap::new();
    t.insert("x-checksum", "abc".parse().unwrap());
    tx.send_trailers(t).await.unwrap();
    drop(tx);
    let got = within(10, "the echoed body", send).await.unwrap();
    let trailers = got.trailers().cloned();
    assert_eq!(&got.to_bytes()[..], b"hello world");
    let trailers = trailers.expect("the request's trailers came back");
    assert_eq!(trailers["x-checksum"], "abc");
    // The upstream saw the length the filter set.
    assert_eq!(up.last().header("content-length"), Some("11"));
}
