//! Baton's own upstream HTTP/1.1 client (requests whose body is in memory, to a cleartext
//! HTTP/1.1 cluster) against a scripted raw upstream writing exact bytes: body framing
//! (chunked with extensions and trailers, close-delimited, Content-Length, none for HEAD / 204 /
//! 304), informational responses, protocol errors (502), truncated bodies, when a connection
//! is reused and when not, large bodies, and the request body and length it sends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const PREFIX: &str = "upstream connect error or disconnect/reset before headers";

/// One request as the raw upstream read it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    /// Header lines as `(lowercase name, value)`, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Which connection of the upstream it came on (0, 1, ... in accept order).
    conn: usize,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the scripted upstream does with one request.
struct Reply {
    /// Written in order, with a pause of 100 ms between parts (so the proxy forwards what came
    /// before the pause first).
    parts: Vec<Vec<u8>>,
    /// Close the connection after the reply (otherwise wait for the next request).
    close: bool,
}

impl Reply {
    fn keep(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            parts: vec![bytes.into()],
            close: false,
        }
    }

    fn close(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            parts: vec![bytes.into()],
            close: true,
        }
    }
}

/// A raw HTTP/1.1 upstream answering each request with `script(request)`, recording every
/// request; `hits` counts requests, `conns` connections.
struct Scripted {
    up: Upstream,
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Scripted {
    async fn start(script: fn(&Req) -> Reply) -> Self {
        let seen: Arc<Mutex<Vec<Req>>> = Arc::default();
        let log = seen.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let up = Upstream::raw(move |mut s, st| {
            let log = log.clone();
            let conn = accepted.fetch_add(1, Ordering::SeqCst);
            async move {
                while let Some(mut req) = read_request(&mut s).await {
                    req.conn = conn;
                    st.hits.fetch_add(1, Ordering::SeqCst);
                    let reply = script(&req);
                    log.lock().expect("seen lock").push(req);
                    for (i, part) in reply.parts.iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        if s.write_all(part).await.is_err() {
                            return;
                        }
                    }
                    if reply.close {
                        let _ = s.shutdown().await;
                        return;
                    }
                }
            }
        })
        .await;
        Self { up, seen }
    }

    fn seen(&self) -> Vec<Req> {
        self.seen.lock().expect("seen lock").clone()
    }
}

/// Read one request: the head to its blank line, then a `content-length` body. `None` on EOF,
/// an error, or a request the test upstream does not expect (a chunked request body).
async fn read_request(s: &mut TcpStream) -> Option<Req> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let mut req = Req {
        method,
        target,
        headers,
        body: Vec::new(),
        conn: 0,
    };
    if req.header("transfer-encoding").is_some() {
        return None;
    }
    let len: usize = match req.header("content-length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    req.body = vec![0u8; len];
    s.read_exact(&mut req.body).await.ok()?;
    Some(req)
}

/// Baton routing `/retry/` (retry on 5xx once) and everything else to cluster `up`.
async fn baton_for(up: &Upstream) -> Baton {
    let config = Config::new()
        .route(route(
            "/retry/",
            "up",
            json!({"retry_policy": {"retry_on": "5xx", "num_retries": 1}}),
        ))
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]))
        .render();
    Baton::start(&config).await
}

/// `total` bytes of [`pattern`] as one chunked body in 64 KiB chunks.
fn chunked_pattern(total: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total + total / 1000 + 64);
    let mut off = 0;
    while off < total {
        let len = (total - off).min(64 * 1024);
        out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
        out.extend_from_slice(&pattern(off, len));
        out.extend_from_slice(b"\r\n");
        off += len;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

const BIG: usize = 3 * 1024 * 1024;

/// The responses of the framing tests, by path.
fn framing_script(req: &Req) -> Reply {
    match req.target.as_str() {
        "/ext" => Reply::keep(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5;ext=1\r\nhello\r\n1;a=b;c=\"d e\"\r\n \r\n6 ; x\r\nworld!\r\n0;last\r\n\r\n",
        ),
        "/trailers" => Reply::keep(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
             3\r\nabc\r\nA\r\n0123456789\r\n0\r\nx-checksum: 42\r\nx-other: y\r\n\r\n",
        ),
        "/hop" => Reply::keep(
            "HTTP/1.1 200 OK\r\nX-Secret: named\r\nConnection: keep-alive, X-Secret, x-later\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
             TE: gzip\r\nx-later: named too\r\nx-kept: yes\r\ncontent-length: 3\r\n\r\nhop",
        ),
        "/te-trailers" => {
            Reply::keep("HTTP/1.1 200 OK\r\nte: trailers\r\ncontent-length: 2\r\n\r\nok")
        }
        "/empty-chunked" => {
            Reply::keep("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
        }
        "/split" => Reply {
            parts: [
                "HTTP/1.1 200 OK\r\ntransfer-enc",
                "oding: chunked\r\n\r\n5",
                ";e=1\r\nhel",
                "lo\r",
                "\n0\r\nx-tr",
                "ailer: 1\r",
                "\n\r\n",
            ]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
            close: false,
        },
        "/te-not-chunked" => {
            Reply::close("HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nuntil the close")
        }
        "/length" => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nlength"),
        "/length-zero" => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        "/equal-lengths" => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\n\r\nsame"),
        "/close-delimited" => Reply::close(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nread until the upstream closes",
        ),
        "/head" => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
        "/204" => Reply::keep("HTTP/1.1 204 No Content\r\nx-empty:\r\nx-blank: \r\n\r\n"),
        "/304" => Reply::keep("HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n"),
        "/continue" => Reply::keep(
            "HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-final: yes\r\n\r\nfinal",
        ),
        "/continue-split" => Reply {
            parts: vec![
                b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nlater".to_vec(),
            ],
            close: false,
        },
        "/conn-close" => {
            Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nclosing")
        }
        "/http10" => Reply::keep("HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nold!"),
        "/http10-keep-alive" => Reply::keep(
            "HTTP/1.0 200 OK\r\ncontent-length: 4\r\nconnection: keep-alive\r\n\r\nkept",
        ),
        "/then-close" => Reply::close("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nquiet"),
        "/extra-bytes" => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"),
        "/big-length" => {
            let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n").into_bytes();
            r.extend_from_slice(&pattern(0, BIG));
            Reply::keep(r)
        }
        "/big-chunked" => {
            let mut r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(&chunked_pattern(BIG));
            Reply::keep(r)
        }
        _ => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    }
}

/// The responses of the error tests, by path.
fn error_script(req: &Req) -> Reply {
    match req.target.as_str() {
        "/te-and-length" => Reply::keep(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n",
        ),
        "/two-lengths" => {
            Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!")
        }
        "/length-list" => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!"),
        "/bad-length" => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\nhello"),
        "/http10-te" => Reply::close(
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        "/switching" => Reply::keep("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
        "/bad-head" => Reply::keep("HTTP/1.1 200 OK\r\nbad header line\r\n\r\n"),
        "/bad-chunk" => Reply {
            parts: vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
                b"zz\r\nhello\r\n0\r\n\r\n".to_vec(),
            ],
            close: false,
        },
        "/short" => Reply {
            parts: vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec(),
                Vec::new(),
            ],
            close: true,
        },
        "/closed-before-head" => Reply::close(Vec::new()),
        "/partial-head" => Reply::close("HTTP/1.1 200 OK\r\ncontent-le"),
        _ => Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    }
}

/// GET `path` on `c`; the whole response, or a panic naming the path.
async fn get_on(c: &mut H1, path: &str) -> Resp {
    c.send(get_req("test.local", path))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_with_extensions_and_trailers_reuse_one_connection() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for round in 0..3 {
        let r = get_on(&mut c, "/ext").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hello world!"),
            "{round}"
        );
        let r = get_on(&mut c, "/trailers").await;
        assert_eq!((r.status, r.text().as_str()), (200, "abc0123456789"));
        let r = get_on(&mut c, "/empty-chunked").await;
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = get_on(&mut c, "/length").await;
        assert_eq!(r.text(), "length");
        let r = get_on(&mut c, "/length-zero").await;
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = get_on(&mut c, "/equal-lengths").await;
        assert_eq!(r.text(), "same");
    }
    // Head and body cut at every awkward place: mid-header, mid-size line, mid-CRLF, mid-trailer.
    let r = get_on(&mut c, "/split").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(s.up.hits(), 19);
    assert_eq!(
        s.up.conns(),
        1,
        "every body was read to its end and the connection reused\nstderr:\n{}",
        baton.stderr()
    );
    baton.wait_stat("cluster.up.upstream_cx_total", 1).await;
    baton.wait_stat("cluster.up.upstream_rq_total", 19).await;
    baton.wait_stat("cluster.up.upstream_rq_rx_reset", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_body_is_complete_and_the_next_request_reconnects() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let r = get_on(&mut c, "/close-delimited").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "read until the upstream closes");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = get_on(&mut c, "/close-delimited").await;
    assert_eq!(r.text(), "read until the upstream closes");
    // A transfer coding other than a final `chunked` also runs to the close.
    let r = get_on(&mut c, "/te-not-chunked").await;
    assert_eq!((r.status, r.text().as_str()), (200, "until the close"));
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(s.up.hits(), 4);
    assert_eq!(
        s.up.conns(),
        4,
        "a close-delimited response ends its connection"
    );
    baton.wait_stat("cluster.up.upstream_rq_rx_reset", 0).await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_5xx", 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_has_no_body_and_keeps_the_connection() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for _ in 0..2 {
        let r = c
            .send(request("HEAD", "test.local", "/head", empty()))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("100"));
        let r = get_on(&mut c, "/length").await;
        assert_eq!((r.status, r.text().as_str()), (200, "length"));
    }
    let seen = s.seen();
    let methods: Vec<&str> = seen.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["HEAD", "GET", "HEAD", "GET"]);
    assert_eq!(
        s.up.conns(),
        1,
        "HEAD's response left the connection usable"
    );
}

/// Hop-by-hop fields of a response, and those its Connection field names (before or after
/// it), are not forwarded; the connection stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_fields_are_not_forwarded() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for _ in 0..2 {
        let r = get_on(&mut c, "/hop").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hop");
        assert_eq!(r.header("x-kept"), Some("yes"));
        for gone in [
            "x-secret",
            "x-later",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "te",
        ] {
            assert_eq!(r.header(gone), None, "{gone} was forwarded");
        }
        let r = get_on(&mut c, "/te-trailers").await;
        assert_eq!(r.text(), "ok");
        assert_eq!(r.header("te"), Some("trailers"), "te: trailers is kept");
    }
    assert_eq!(s.up.conns(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_have_no_body_and_keep_the_connection() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for _ in 0..2 {
        let r = get_on(&mut c, "/204").await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
        assert_eq!(r.header("x-empty"), Some(""));
        assert_eq!(r.header("x-blank"), Some(""));
        let r = get_on(&mut c, "/304").await;
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some("\"v1\""));
    }
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(s.up.hits(), 5);
    assert_eq!(s.up.conns(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_responses_are_skipped() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let r = get_on(&mut c, "/continue").await;
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    assert_eq!(r.header("x-final"), Some("yes"));
    assert_eq!(
        r.header("link"),
        None,
        "the 103's header is not the final's"
    );
    let r = get_on(&mut c, "/continue-split").await;
    assert_eq!((r.status, r.text().as_str()), (200, "later"));
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(s.up.conns(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_invalid_response_heads_are_502() {
    let s = Scripted::start(error_script).await;
    let baton = baton_for(&s.up).await;
    let paths = [
        "/te-and-length",
        "/two-lengths",
        "/length-list",
        "/bad-length",
        "/http10-te",
        "/switching",
        "/bad-head",
    ];
    for path in paths {
        let r = get(baton.addr(), path).await;
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        let body = r.text();
        assert!(
            body.contains(PREFIX) && body.contains("protocol error"),
            "{path}: {body}"
        );
    }
    // Not one of those connections was reused: each request opened its own.
    assert_eq!(s.up.conns(), paths.len());
    let r = get(baton.addr(), "/fine").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    baton
        .wait_stat("http.ingress_http.downstream_rq_5xx", paths.len() as i64)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_before_the_response_head_is_503() {
    let s = Scripted::start(error_script).await;
    let baton = baton_for(&s.up).await;
    for path in ["/closed-before-head", "/partial-head"] {
        let r = get(baton.addr(), path).await;
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(r.text().contains(PREFIX), "{path}: {}", r.text());
    }
    let r = get(baton.addr(), "/fine").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    baton.wait_stat("cluster.up.upstream_rq_rx_reset", 2).await;
}

/// GET `path` on a fresh connection: the head must be 200 and reading the body must fail
/// after `prefix` at most.
async fn aborted_body(baton: &Baton, path: &str, prefix: &[u8]) {
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let resp = c
        .send_streaming(get_req("test.local", path))
        .await
        .unwrap_or_else(|e| panic!("{path}: no response head: {e}"));
    assert_eq!(resp.status(), 200, "{path}");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let outcome = within(10, "aborted body", async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        got.extend_from_slice(&d);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    assert!(
        outcome.is_err(),
        "{path}: the body ended normally with {got:?}"
    );
    assert!(prefix.starts_with(&got), "{path}: got {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunk_size_aborts_the_body() {
    let s = Scripted::start(error_script).await;
    let baton = baton_for(&s.up).await;
    aborted_body(&baton, "/bad-chunk", b"hello").await;
    let r = get(baton.addr(), "/fine").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(s.up.conns(), 2, "the broken connection was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_shorter_than_its_length_aborts_the_body() {
    let s = Scripted::start(error_script).await;
    let baton = baton_for(&s.up).await;
    aborted_body(&baton, "/short", b"0123456789").await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for _ in 0..3 {
        let r = get_on(&mut c, "/fine").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    assert_eq!(s.up.conns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_and_http10_responses_are_not_reused() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    // The upstream keeps every connection open: only Baton's choice closes it.
    let r = get_on(&mut c, "/conn-close").await;
    assert_eq!((r.status, r.text().as_str()), (200, "closing"));
    assert_eq!(r.header("connection"), None, "hop-by-hop header forwarded");
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(s.up.conns(), 2, "reused after `Connection: close`");

    let r = get_on(&mut c, "/http10").await;
    assert_eq!((r.status, r.text().as_str()), (200, "old!"));
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(
        s.up.conns(),
        3,
        "an HTTP/1.0 response without keep-alive was reused"
    );

    let r = get_on(&mut c, "/extra-bytes").await;
    assert_eq!(r.text(), "ok");
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(s.up.conns(), 4, "reused with unread bytes after the body");

    let r = get_on(&mut c, "/http10-keep-alive").await;
    assert_eq!((r.status, r.text().as_str()), (200, "kept"));
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(s.up.conns(), 4, "HTTP/1.0 keep-alive: the connection stays");

    assert_eq!(s.up.hits(), 8);
    baton.wait_stat("cluster.up.upstream_cx_total", 4).await;
    baton.wait_stat("cluster.up.upstream_rq_rx_reset", 0).await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_5xx", 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closed_while_idle_is_not_used() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    // Each response looks reusable, but the upstream closes the connection right after it.
    for i in 0..5 {
        let r = get_on(&mut c, "/then-close").await;
        assert_eq!((r.status, r.text().as_str()), (200, "quiet"), "{i}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get_on(&mut c, "/length").await;
    assert_eq!(r.text(), "length");
    assert_eq!(s.up.hits(), 6);
    assert_eq!(s.up.conns(), 6, "a closed connection carried a request");
    baton.wait_stat("cluster.up.upstream_rq_rx_reset", 0).await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_5xx", 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_arrive_byte_exact() {
    let s = Scripted::start(framing_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let want = pattern(0, BIG);
    for path in ["/big-length", "/big-chunked", "/big-length", "/big-chunked"] {
        let r = get_on(&mut c, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body.len(), BIG, "{path}");
        let first_diff = r.body.iter().zip(want.iter()).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{path}: bytes differ");
    }
    assert_eq!(s.up.conns(), 1);
}

/// The responses of the request-body test: `/retry/fail-once` answers 503 to its first request.
fn body_script(req: &Req) -> Reply {
    static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if req.target == "/retry/fail-once" && !FAILED.swap(true, Ordering::SeqCst) {
        return Reply::keep("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nretry");
    }
    let answer = format!("{} bytes", req.body.len());
    Reply::keep(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
        answer.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_request_bodies_are_sent_exactly() {
    let s = Scripted::start(body_script).await;
    let baton = baton_for(&s.up).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let small = b"name=baton&proto=h1".to_vec();
    let large = pattern(7, 20_000).to_vec();
    let cases: [(&str, &str, Vec<u8>); 4] = [
        ("POST", "/retry/small", small.clone()),
        ("PUT", "/retry/large", large.clone()),
        ("POST", "/retry/empty", Vec::new()),
        ("POST", "/retry/fail-once", small.clone()),
    ];
    for (method, path, body) in &cases {
        let r = c
            .send(request(method, "test.local", path, full(body.clone())))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), format!("{} bytes", body.len()), "{path}");
    }
    let seen = s.seen();
    assert_eq!(seen.len(), 5, "the failed request was retried once");
    let expected = [&cases[0], &cases[1], &cases[2], &cases[3], &cases[3]];
    for (got, (method, path, body)) in seen.iter().zip(expected) {
        assert_eq!(&got.method, method);
        assert_eq!(&got.target, path);
        assert_eq!(got.body, *body, "{path}: body");
        let len = body.len().to_string();
        assert_eq!(got.header("content-length"), Some(len.as_str()), "{path}");
        assert_eq!(got.header("transfer-encoding"), None, "{path}");
        assert_eq!(got.header("host"), Some("test.local"), "{path}");
    }
    // A retried response is dropped unread, which closes its connection (as Envoy resets the
    // upstream stream): the retry goes on a new one.
    let conns: Vec<usize> = seen.iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0, 0, 0, 0, 1], "requests by connection");
    baton.wait_stat("cluster.up.upstream_rq_retry", 1).await;
    baton
        .wait_stat("cluster.up.upstream_rq_retry_success", 1)
        .await;
}
