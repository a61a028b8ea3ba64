//! HTTP connection manager options (issue 23): `server_name` / `server_header_transformation`,
//! `via`, `always_set_request_id_in_response`, `preserve_external_request_id`,
//! `skip_xff_append`, `merge_slashes` and `common_http_protocol_options`'
//! `max_requests_per_connection`, `max_connection_duration`, `max_headers_count`,
//! `headers_with_underscores_action`, `add_user_agent` and `delayed_close_timeout`. The expected answers are what Envoy 1.40 gave on the same
//! configuration (one listener per option set, the same requests, an origin that may send its
//! own `server`).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A response read off a raw connection: the head's fields (lower-case names, in order) and
/// the body.
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Raw {
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Write `req` on `s` and read one response (framed by `content-length`).
async fn exchange_on(s: &mut TcpStream, req: &str) -> Raw {
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut b = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = within(5, "a response head", s.read(&mut b))
            .await
            .expect("read");
        assert!(n > 0, "closed before a response");
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let fields: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = fields
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = within(5, "a response body", s.read(&mut b))
            .await
            .expect("read");
        assert!(n > 0, "closed inside a body");
        body.extend_from_slice(&b[..n]);
    }
    Raw {
        status,
        fields,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One request on a fresh connection.
pub(crate) async fn exchange(baton: &Baton, req: &str) -> Raw {
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    exchange_on(&mut s, req).await
}

pub(crate) fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: h\r\n{extra}\r\n")
}

/// Baton with HCM fields `hcm`: `/d` answered directly, the rest to the echo origin `up`.
async fn baton_with(up: &Upstream, hcm: Value) -> Baton {
    let mut config = Config::new()
        .route(json!({"match": {"prefix": "/d"}, "direct_response": {"status": 200, "body": {"inline_string": "hi"}}}))
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]));
    if let Value::Object(fields) = hcm {
        for (k, v) in fields {
            config = config.hcm(&k, v);
        }
    }
    Baton::start(&config.render()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_field_as_envoy_writes_it() {
    let up = Upstream::echo("up").await;
    let origin = "x-reply-server: origin\r\n";
    // (HCM fields, [origin's server kept?, server with no origin server, direct reply's])
    let cases = [
        (json!({}), [Some("envoy"), Some("envoy"), Some("envoy")]),
        (
            json!({"server_name": "baton-test"}),
            [Some("baton-test"), Some("baton-test"), Some("baton-test")],
        ),
        (
            json!({"server_header_transformation": "APPEND_IF_ABSENT"}),
            [Some("origin"), Some("envoy"), Some("envoy")],
        ),
        (
            json!({"server_header_transformation": "PASS_THROUGH"}),
            [Some("origin"), None, None],
        ),
    ];
    for (hcm, want) in cases {
        let baton = baton_with(&up, hcm.clone()).await;
        let got = [
            exchange(&baton, &get("/x", origin)).await,
            exchange(&baton, &get("/x", "")).await,
            exchange(&baton, &get("/d", "")).await,
        ];
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.status, 200);
            assert_eq!(g.field("server"), w, "{hcm} request {i}");
            let servers = g.fields.iter().filter(|(n, _)| n == "server").count();
            assert!(servers <= 1, "{hcm} request {i}: one server field");
        }
        // A refusal of the codec's gets it too (431 over `max_headers_count`: see below).
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_request_ids_and_forwarding_fields() {
    let up = Upstream::echo("up").await;
    let client = "x-request-id: client-id\r\nx-forwarded-for: 1.2.3.4\r\nvia: 1.0 front\r\n";
    let baton = baton_with(
        &up,
        json!({
            "via": "1.1 vproxy",
            "always_set_request_id_in_response": true,
            "use_remote_address": true,
            "skip_xff_append": true,
        }),
    )
    .await;
    let r = exchange(&baton, &get("/x", client)).await;
    let seen = up.last();
    assert_eq!(seen.header("via"), Some("1.0 front, 1.1 vproxy"));
    assert_eq!(r.field("via"), Some("1.1 vproxy"));
    // An edge request (use_remote_address, external client): the client's id is replaced.
    let id = seen.header("x-request-id").expect("an id").to_owned();
    assert_ne!(id, "client-id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(r.field("x-request-id"), Some(id.as_str()));
    // skip_xff_append: as the client sent it; the trusted client address told apart.
    assert_eq!(seen.header("x-forwarded-for"), Some("1.2.3.4"));
    assert_eq!(seen.header("x-envoy-external-address"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    // A direct reply carries the id and `via` too.
    let d = exchange(&baton, &get("/d", "")).await;
    assert_eq!(d.field("via"), Some("1.1 vproxy"));
    assert_eq!(d.field("x-request-id").map(str::len), Some(36));
    drop(baton);

    let baton = baton_with(
        &up,
        json!({"use_remote_address": true, "preserve_external_request_id": true}),
    )
    .await;
    let r = exchange(&baton, &get("/x", client)).await;
    let seen = up.last();
    assert_eq!(seen.header("x-request-id"), Some("client-id"));
    assert_eq!(seen.header("x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
    assert_eq!(seen.header("via"), Some("1.0 front"));
    // Not asked to: no id in the response, no `via` added.
    assert_eq!(r.field("x-request-id"), None);
    assert_eq!(r.field("via"), None);
    drop(baton);

    // Without use_remote_address the client's id stays, and no external address is told.
    let baton = baton_with(&up, json!({})).await;
    exchange(&baton, &get("/x", client)).await;
    let seen = up.last();
    assert_eq!(seen.header("x-request-id"), Some("client-id"));
    assert_eq!(seen.header("x-envoy-external-address"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_and_paths() {
    let up = Upstream::echo("up").await;
    let baton = baton_with(
        &up,
        json!({
            "server_name": "baton-test",
            "merge_slashes": true,
            "always_set_request_id_in_response": true,
            "common_http_protocol_options": {
                "max_requests_per_connection": 2,
                "max_headers_count": 5,
                "headers_with_underscores_action": "REJECT_REQUEST",
            },
        }),
    )
    .await;
    // Six fields (host and five more) are one over: 431 with Envoy's words, the connection
    // closes; no request id in a refusal of the codec's.
    let six = "a: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n";
    let r = exchange(&baton, &get("/x", six)).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.body, "Request Header Fields Too Large");
    assert_eq!(r.field("content-type"), Some("text/plain"));
    assert_eq!(r.field("connection"), Some("close"));
    assert_eq!(r.field("server"), Some("baton-test"));
    assert_eq!(r.field("x-request-id"), None);
    let five = "a: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n";
    assert_eq!(exchange(&baton, &get("/x", five)).await.status, 200);

    // REJECT_REQUEST: 400 `Bad Request`, closed.
    let r = exchange(&baton, &get("/u", "my_h: 1\r\n")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, "Bad Request");
    assert_eq!(r.field("connection"), Some("close"));

    // merge_slashes: the origin gets one slash per run; the query is left alone.
    exchange(&baton, &get("//a///b?x=//y", "")).await;
    assert_eq!(up.last().uri.to_string(), "/a/b?x=//y");

    // max_requests_per_connection 2: the second response closes the connection.
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let first = exchange_on(&mut s, &get("/1", "")).await;
    assert_eq!(first.field("connection"), None);
    let second = exchange_on(&mut s, &get("/2", "")).await;
    assert_eq!(second.field("connection"), Some("close"));
    let mut b = [0u8; 64];
    let n = within(5, "the close", s.read(&mut b)).await.unwrap_or(0);
    assert_eq!(n, 0, "closed after the second response");
    baton
        .wait_stat("http.ingress_http.downstream_cx_max_requests_reached", 1)
        .await;
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_cx_drain_close")
            .await,
        Some(0),
        "a limit of the connection's own is no drain"
    );
    drop(baton);

    // DROP_HEADER: the field is removed, the request goes on.
    let baton = baton_with(
        &up,
        json!({"common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"}}),
    )
    .await;
    let r = exchange(&baton, &get("/u", "my_h: 1\r\nother: 2\r\n")).await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("my_h"), None);
    assert_eq!(seen.header("other"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closes_at_max_connection_duration() {
    let up = Upstream::echo("up").await;
    let baton = baton_with(
        &up,
        json!({"common_http_protocol_options": {"max_connection_duration": "0.5s"}}),
    )
    .await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let r = exchange_on(&mut s, &get("/1", "")).await;
    assert_eq!(r.status, 200);
    let started = std::time::Instant::now();
    let mut b = [0u8; 64];
    let n = within(10, "the close", s.read(&mut b)).await.unwrap_or(0);
    assert_eq!(n, 0, "closed by the server");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at the duration, not at the idle timeout"
    );
    baton
        .wait_stat("http.ingress_http.downstream_cx_max_duration_reached", 1)
        .await;
}

#[test]
fn bad_option_values_are_refused_with_their_path() {
    for (field, value, path, words) in [
        (
            "common_http_protocol_options",
            json!({"max_headers_count": 0}),
            "common_http_protocol_options.max_headers_count",
            "at least 1",
        ),
        ("via", json!("a\nb"), ".via", "not a header value"),
        (
            "server_name",
            json!(""),
            ".server_name",
            "not a header value",
        ),
        (
            "server_header_transformation",
            json!("REPLACE"),
            "server_header_transformation",
            "REPLACE",
        ),
    ] {
        let config = Config::new()
            .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}))
            .hcm(field, value)
            .render();
        let (status, out) = validate_config(&config);
        assert!(!status.success(), "{field}: refused");
        assert!(out.contains(path), "{field}: {out}");
        assert!(out.contains(words), "{field}: {out}");
    }
}

/// `add_user_agent`: what the origin got (`user-agent`, `x-envoy-downstream-service-cluster`)
/// for each request, as Envoy 1.40 forwarded them, with `--service-cluster svc` and without
/// (an empty service cluster: both fields empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_user_agent_names_the_service_cluster() {
    let up = Upstream::echo("up").await;
    let config = Config::new()
        .hcm("add_user_agent", json!(true))
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]))
        .render();
    for (args, sc) in [(&["--service-cluster", "svc"][..], "svc"), (&[][..], "")] {
        let baton = Baton::start_with(&config, args).await;
        let cases = [
            ("", sc),
            ("user-agent: curl/1\r\n", "curl/1"),
            (
                "user-agent: curl/1\r\nx-envoy-downstream-service-cluster: other\r\n",
                "curl/1",
            ),
            ("x-envoy-downstream-service-cluster: other\r\n", sc),
        ];
        for (extra, ua) in cases {
            let r = exchange(&baton, &get("/p", extra)).await;
            assert_eq!(r.status, 200);
            let seen = up.last();
            assert_eq!(seen.header("user-agent"), Some(ua), "{args:?} {extra}");
            assert_eq!(
                seen.header("x-envoy-downstream-service-cluster"),
                Some(sc),
                "{args:?} {extra}"
            );
        }
    }
    // Off by default: the client's fields go on as sent (its `x-envoy-*` removed, as it is
    // external).
    let plain = baton_with(&up, json!({})).await;
    exchange(
        &plain,
        &get("/p", "x-envoy-downstream-service-cluster: other\r\n"),
    )
    .await;
    assert_eq!(up.last().header("user-agent"), None);
    assert_eq!(up.last().header("x-envoy-downstream-service-cluster"), None);
}

/// After a `connection: close` response, write to the closed connection for `for_ms`: whether
/// the peer reset it (it no longer reads what arrives).
async fn reset_after_close(baton: &Baton, for_ms: u64) -> bool {
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let r = exchange_on(
        &mut s,
        "GET /d HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let mut b = [0u8; 64];
    // Baton's FIN.
    while within(5, "the close", s.read(&mut b)).await.unwrap_or(0) > 0 {}
    let end = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    while tokio::time::Instant::now() < end {
        if s.write_all(b"more bytes").await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(e) = s.read(&mut b).await {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
            return true;
        }
    }
    false
}

/// `delayed_close_timeout`: Baton keeps reading (and discarding) after closing an HTTP/1.1
/// connection for that long (Envoy's default 1 s), so late client bytes draw no reset; `0s`
/// closes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_close_timeout_bounds_the_lingering_close() {
    let up = Upstream::echo("up").await;
    let lingering = baton_with(&up, json!({"delayed_close_timeout": "3s"})).await;
    assert!(!reset_after_close(&lingering, 500).await);
    let at_once = baton_with(&up, json!({"delayed_close_timeout": "0s"})).await;
    assert!(reset_after_close(&at_once, 2000).await);
}
