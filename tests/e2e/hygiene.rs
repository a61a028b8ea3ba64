//! HTTP hygiene on the wire (issue 16): raw client bytes in, the status the client gets and what
//! the origin received out. `Host` rules (RFC 9112 §3.2) and the authority of an absolute-form
//! target or `:authority`; every `Connection` line honoured, and 400 for one naming a field the
//! proxy manages; `x-envoy-*` from clients removed; CONNECT answered 404; request heads over
//! `max_request_headers_kb` answered 431; response heads over 60 KiB, a `1xx` as the final
//! status and `Content-Length` with `Transfer-Encoding` from the upstream answered 502, on Baton's
//! own loop and client and on hyper's session and client alike.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A response as read off the wire: status, lower-cased fields, and whether the connection
/// closed after it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    closed: bool,
}

impl Answer {
    fn has_field(&self, name: &str) -> bool {
        self.head.lines().skip(1).any(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
    }
}

/// Send `bytes` on a fresh connection and read the first response head (and whatever follows
/// for up to 1 s, to see whether the connection is closed).
async fn exchange(baton: &Baton, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    // The server may answer and close before reading all of a long head.
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut b = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = within(5, "a response", s.read(&mut b)).await.unwrap_or(0);
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line in {head:?}"));
    let closed = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(1), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) => break false,
        }
    };
    Answer {
        status,
        head,
        closed,
    }
}

/// Baton routing everything to `up`, with HCM fields `hcm`.
async fn baton_for(up: &Upstream, hcm: &[(&str, serde_json::Value)]) -> Baton {
    let mut config = Config::new()
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]));
    for (k, v) in hcm {
        config = config.hcm(k, v.clone());
    }
    Baton::start(&config.render()).await
}

/// The `host` values the origin received with its last request.
fn hosts(up: &Upstream) -> Vec<String> {
    up.last()
        .headers
        .get_all("host")
        .iter()
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_host_must_be_there_once_and_an_absolute_target_wins() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[]).await;
    // No Host in HTTP/1.1, with and without a body (Baton's loop and hyper's session).
    for raw in [
        &b"GET /none HTTP/1.1\r\n\r\n"[..],
        b"POST /none HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi",
        b"GET /two HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"POST /two HTTP/1.1\r\nHost: a.example\r\ncontent-length: 2\r\nHost: a.example\r\n\r\nhi",
        b"GET http://admin.internal@public.example/ HTTP/1.1\r\nHost: public.example\r\n\r\n",
    ] {
        let a = exchange(&baton, raw).await;
        assert_eq!(a.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert!(a.closed, "the connection closes after a refused head");
        assert!(a.has_field("connection"), "and says so: {}", a.head);
    }
    assert_eq!(up.hits(), 0, "nothing refused reached the origin");
    // HTTP/1.0 is refused by default (426, as Envoy); accepted, it needs no Host.
    let a = exchange(&baton, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(a.status, 426);
    let accept = json!({"accept_http_10": true});
    let baton = baton_for(&up, &[("http_protocol_options", accept)]).await;
    let a = exchange(&baton, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(a.status, 200);
    // The absolute-form target's authority is the one routed and the one sent.
    let a = exchange(
        &baton,
        b"GET http://public.example/abs HTTP/1.1\r\nHost: admin.internal\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().uri.path(), "/abs");
    assert_eq!(hosts(&up), ["public.example"]);
    // A plain request keeps its Host.
    let a = exchange(
        &baton,
        b"GET /plain HTTP/1.1\r\nHost: plain.example\r\n\r\n",
    )
    .await;
    assert_eq!((a.status, a.closed), (200, false));
    assert_eq!(hosts(&up), ["plain.example"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_replaces_a_differing_host() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[]).await;
    let mut c = H2::connect(baton.addr()).await.expect("h2 connect");
    let req = http::Request::builder()
        .uri("http://public.example/h2")
        .header("host", "admin.internal")
        .body(empty())
        .expect("request");
    let r = c.send(req).await.expect("h2 response");
    assert_eq!(r.status, 200);
    assert_eq!(hosts(&up), ["public.example"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_line_counts_and_managed_names_are_refused() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[("generate_request_id", json!(true))]).await;
    // Tokens from a second line are honoured, on Baton's loop (GET) and hyper's session (POST).
    for raw in [
        &b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: x-bar\r\nX-Bar: 1\r\nX-Baz: 2\r\nConnection: X-Baz\r\n\r\n"[..],
        b"POST /c HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\ncontent-length: 2\r\nConnection: x-bar\r\nX-Bar: 1\r\nX-Baz: 2\r\nConnection: X-Baz\r\n\r\nhi",
    ] {
        let a = exchange(&baton, raw).await;
        assert_eq!(a.status, 200);
        let seen = up.last();
        assert_eq!(seen.header("x-bar"), None);
        assert_eq!(seen.header("x-baz"), None);
        assert_eq!(seen.header("connection"), None);
    }
    let hits = up.hits();
    for name in [
        "host",
        "Host",
        "x-request-id",
        "x-forwarded-for",
        "X-Forwarded-Proto",
        "x-envoy-original-path",
    ] {
        for raw in [
            format!("GET /m HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, {name}\r\n\r\n"),
            format!(
                "POST /m HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: {name}\r\ncontent-length: 0\r\n\r\n"
            ),
        ] {
            let a = exchange(&baton, raw.as_bytes()).await;
            assert_eq!(a.status, 400, "{raw:?}");
        }
    }
    assert_eq!(up.hits(), hits, "nothing refused reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_headers_from_clients_are_removed() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[("use_remote_address", json!(true))]).await;
    for method in ["GET", "POST"] {
        let raw = format!(
            "{method} /e HTTP/1.1\r\nHost: h\r\nX-Envoy-Internal: true\r\n\
             X-Envoy-Original-Path: /admin\r\nx-envoy-expected-rq-timeout-ms: 1\r\n\
             x-envoy-retry-on: 5xx\r\nx-kept: yes\r\ncontent-length: 0\r\n\r\n"
        );
        let a = exchange(&baton, raw.as_bytes()).await;
        assert_eq!(a.status, 200);
        let seen = up.last();
        assert_eq!(seen.header("x-kept"), Some("yes"));
        assert_eq!(seen.header("x-envoy-internal"), None, "{method}");
        assert_eq!(seen.header("x-envoy-original-path"), None, "{method}");
        assert_eq!(seen.header("x-envoy-retry-on"), None, "{method}");
        // Baton's own value (the route timeout, 15 s by default), never the client's.
        assert_eq!(
            seen.header("x-envoy-expected-rq-timeout-ms"),
            Some("15000"),
            "{method}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_clients_keep_their_envoy_headers_and_are_marked_internal() {
    let up = Upstream::echo("a").await;
    // 127.0.0.0/8 is internal: the test's client is.
    let internal = json!({"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]});
    let baton = baton_for(
        &up,
        &[
            ("use_remote_address", json!(true)),
            ("internal_address_config", internal),
        ],
    )
    .await;
    for method in ["GET", "POST"] {
        let raw = format!(
            "{method} /e HTTP/1.1\r\nHost: h\r\nX-Envoy-Original-Path: /admin\r\n\
             x-envoy-retry-on: 5xx\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(exchange(&baton, raw.as_bytes()).await.status, 200);
        let seen = up.last();
        assert_eq!(
            seen.header("x-envoy-original-path"),
            Some("/admin"),
            "{method}"
        );
        // Read by the router (an internal client may ask for retries) and taken off, as
        // Envoy 1.40 does.
        assert_eq!(seen.header("x-envoy-retry-on"), None, "{method}");
        assert_eq!(seen.header("x-envoy-internal"), Some("true"), "{method}");
    }
    // Another range: the client is external again, and nothing marks it internal.
    let elsewhere = json!({"cidr_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]});
    let baton = baton_for(
        &up,
        &[
            ("use_remote_address", json!(true)),
            ("internal_address_config", elsewhere),
        ],
    )
    .await;
    let raw = b"GET /e HTTP/1.1\r\nHost: h\r\nX-Envoy-Internal: true\r\n\r\n";
    assert_eq!(exchange(&baton, raw).await.status, 200);
    assert_eq!(up.last().header("x-envoy-internal"), None);
}

/// Requests refused for their framing, target form, `Host` or version: what, bytes, status
/// (Envoy 1.40's for each, on the same bytes).
fn refused_forms() -> Vec<(&'static str, Vec<u8>, u16)> {
    let post = |fields: &str, body: &str| {
        format!("POST /s HTTP/1.1\r\nHost: a\r\n{fields}\r\n{body}").into_bytes()
    };
    vec![
        (
            "CL then TE",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nX",
            ),
            400,
        ),
        (
            "TE then CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "0\r\n\r\n",
            ),
            400,
        ),
        (
            "gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            501,
        ),
        (
            "xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            501,
        ),
        (
            "two TE lines",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            501,
        ),
        (
            "fragment",
            b"GET /s#f HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "fragment, with a body",
            b"POST /s#f HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            400,
        ),
        (
            "asterisk-form GET",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "authority-form GET",
            b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "no slash",
            b"GET s HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Host with a space",
            b"GET /s HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Host with userinfo",
            b"GET /s HTTP/1.1\r\nHost: u@a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Host with a path",
            b"POST /s HTTP/1.1\r\nHost: a/b\r\ncontent-length: 0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/1.0",
            b"GET /s HTTP/1.0\r\nHost: a\r\n\r\n".to_vec(),
            426,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_target_and_host_forms_are_refused_as_envoy_refuses_them() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[]).await;
    for (what, raw, status) in &refused_forms() {
        let a = exchange(&baton, raw).await;
        assert_eq!(a.status, *status, "{what}: {}", a.head);
        assert!(a.closed, "{what}: the connection closes");
    }
    assert_eq!(up.hits(), 0, "nothing refused reached the origin");
    // `Upgrade: h2c` is no switch: served over HTTP/1.1 as it is, without the field.
    let a = exchange(
        &baton,
        b"GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().header("upgrade"), None);
    assert_eq!(up.last().header("http2-settings"), None);
    // OPTIONS * is fine.
    let a = exchange(&baton, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_ne!(a.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_on_an_ordinary_route_is_404() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[]).await;
    let a = exchange(
        &baton,
        b"CONNECT public.example:443 HTTP/1.1\r\nHost: public.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 404);
    assert_eq!(up.hits(), 0, "CONNECT is not forwarded");
    // The connection still serves the next request.
    let a = exchange(
        &baton,
        b"CONNECT public.example:443 HTTP/1.1\r\nHost: public.example:443\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 404);
}

/// A request head of about `kb` KiB (one long field), GET or POST.
fn long_head(method: &str, kb: usize) -> Vec<u8> {
    format!(
        "{method} /big HTTP/1.1\r\nHost: h\r\nx-long: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(kb * 1024)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_max_request_headers_kb_are_431() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[]).await;
    for method in ["GET", "POST"] {
        assert_eq!(exchange(&baton, &long_head(method, 50)).await.status, 200);
        let a = exchange(&baton, &long_head(method, 100)).await;
        assert_eq!(
            a.status, 431,
            "{method} with a 100 KiB head (default 60 KiB)"
        );
    }
    assert_eq!(up.hits(), 2);
    // Configured lower.
    let baton = baton_for(&up, &[("max_request_headers_kb", json!(16))]).await;
    for method in ["GET", "POST"] {
        assert_eq!(exchange(&baton, &long_head(method, 8)).await.status, 200);
        assert_eq!(exchange(&baton, &long_head(method, 20)).await.status, 431);
    }
}

/// A raw upstream answering by request path (after reading the head and a chunked or
/// `content-length` body), recording each head.
async fn scripted(heads: Arc<Mutex<Vec<String>>>) -> Upstream {
    Upstream::raw(move |mut s, _| {
        let heads = heads.clone();
        async move {
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match s.read(&mut b).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&b[..n]),
                    _ => return,
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            if head.contains("transfer-encoding: chunked") {
                while !buf.ends_with(b"0\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&b[..n]),
                        _ => return,
                    }
                }
            }
            let path = head.split(' ').nth(1).unwrap_or("").to_owned();
            heads.lock().expect("heads").push(head);
            let reply: Vec<u8> = match path.as_str() {
                "/big-head" => format!(
                    "HTTP/1.1 200 OK\r\nx-long: {}\r\ncontent-length: 2\r\n\r\nok",
                    "b".repeat(100 * 1024)
                )
                .into_bytes(),
                "/fine-head" => format!(
                    "HTTP/1.1 200 OK\r\nx-long: {}\r\ncontent-length: 2\r\n\r\nok",
                    "b".repeat(40 * 1024)
                )
                .into_bytes(),
                "/switch" => b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
                "/both" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nHELLO\r\n0\r\n\r\n".to_vec(),
                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            };
            let _ = s.write_all(&reply).await;
            let _ = s.shutdown().await;
        }
    })
    .await
}

/// `path` as a bodiless GET (Baton's own client) or a POST with a chunked body (hyper's).
fn upstream_probe(method: &str, path: &str) -> Vec<u8> {
    match method {
        "GET" => format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes(),
        _ => format!(
            "POST {path} HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )
        .into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_heads_over_60_kib_and_bad_framing_are_502() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let up = scripted(heads.clone()).await;
    let baton = baton_for(&up, &[]).await;
    for method in ["GET", "POST"] {
        let a = exchange(&baton, &upstream_probe(method, "/fine-head")).await;
        assert_eq!(a.status, 200, "{method} /fine-head");
        assert!(a.has_field("x-long"));
        for path in ["/big-head", "/switch", "/both"] {
            let a = exchange(&baton, &upstream_probe(method, path)).await;
            assert_eq!(a.status, 502, "{method} {path}");
        }
    }
    // Through HTTP/2 downstream too (a request body: hyper's client).
    let mut c = H2::connect(baton.addr()).await.expect("h2 connect");
    for path in ["/switch", "/both"] {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://h{path}"))
            .body(full("hi"))
            .expect("request");
        let r = c.send(req).await.expect("h2 response");
        assert_eq!(r.status, 502, "h2 POST {path}");
    }
    // Every probe reached the origin (the 502s are about its answers).
    assert_eq!(heads.lock().expect("heads").len(), 10);
}

/// A chunked request `body` (after the head).
fn chunked(body: &str) -> Vec<u8> {
    format!("POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_request_bodies_are_400_and_never_reach_the_origin() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[]).await;
    for body in [
        // Seventeen hex digits: more than 64 bits.
        "10000000000000000\r\nhello\r\n0\r\n\r\n",
        // A size that wraps a 64-bit counter.
        "fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        // Bare LF ending a size line, and a chunk's data.
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        // The CRLF after a chunk's data missing.
        "5\r\nhello0\r\n\r\n",
        // Not a size at all.
        "zz\r\nhello\r\n0\r\n\r\n",
    ] {
        let a = exchange(&baton, &chunked(body)).await;
        assert_eq!(a.status, 400, "{body:?}: {}", a.head);
        assert!(
            a.closed,
            "{body:?}: the connection closes after a framing error"
        );
    }
    assert_eq!(up.hits(), 0, "nothing malformed reached the origin");
    // A well-formed chunked body with an extension still goes through.
    let a = exchange(&baton, &chunked("5;ext=1\r\nhello\r\n0\r\n\r\n")).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.hits(), 1);
    assert_eq!(
        baton.stat("http.ingress_http.downstream_rq_4xx").await,
        Some(6)
    );
    baton
        .wait_stat("http.ingress_http.downstream_cx_protocol_error", 6)
        .await;
}

/// Send `first`, wait until the origin has the request, then send `then` (and close our side
/// when `half_close`); the status Baton answers.
async fn body_in_two_parts(
    baton: &Baton,
    up: &Upstream,
    first: &[u8],
    then: &[u8],
    half_close: bool,
) -> u16 {
    let hits = up.hits();
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    s.write_all(first).await.expect("write");
    within(5, "the request at the origin", async {
        while up.hits() == hits {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    s.write_all(then).await.expect("write");
    if half_close {
        s.shutdown().await.expect("shutdown");
    }
    let mut buf = Vec::new();
    within(5, "the response", s.read_to_end(&mut buf))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_that_goes_wrong_on_the_way_is_400_not_an_upstream_failure() {
    let up = Upstream::echo("a").await;
    let baton = baton_for(&up, &[]).await;
    // The origin echoes the body after 2 s: no response is under way when the body fails.
    let head = "POST /delay/2000 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let first = format!("{head}5\r\nhello\r\n").into_bytes();
    // The upstream already has the head and the first chunk when the framing goes wrong.
    let status = body_in_two_parts(&baton, &up, &first, b"zz\r\n", false).await;
    assert_eq!(status, 400);
    // The client stops half-way (and closes its side).
    let status = body_in_two_parts(&baton, &up, &first, b"", true).await;
    assert_eq!(status, 400);
    assert_eq!(
        baton.stat("http.ingress_http.downstream_rq_5xx").await,
        Some(0)
    );
    baton
        .wait_stat("http.ingress_http.downstream_cx_protocol_error", 1)
        .await;
    assert_eq!(
        baton.stat("http.ingress_http.downstream_rq_rx_reset").await,
        Some(1)
    );
}
