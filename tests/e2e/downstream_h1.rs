//! Baton's own downstream HTTP/1.1 loop (`proxy-core/src/h1_server.rs`) seen on the wire:
//! pipelined requests answered in order on one connection, `Connection: close`, HEAD, chunked
//! re-encoding of a streamed response, a client that leaves with its request in flight, and the
//! hand-off to hyper in the middle of a connection (a request with a body, an `Expect`) with the
//! requests after it still answered on the same connection.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One response as read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    /// Field names lowercased, in order.
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Wire {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection with its own read buffer.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(baton: &Baton) -> Self {
        Self {
            s: TcpStream::connect(baton.addr()).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// More bytes into the buffer; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut b = [0u8; 8192];
        let n = within(5, "response bytes", self.s.read(&mut b))
            .await
            .unwrap_or(0);
        self.buf.extend_from_slice(&b[..n]);
        n > 0
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill().await, "connection closed mid-line");
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Read one response; `head` when it answers a HEAD request (no body).
    async fn response(&mut self, head: bool) -> Wire {
        let status_line = self.line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let mut fields = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("field line");
            fields.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let mut w = Wire {
            status,
            fields,
            body: Vec::new(),
            chunked: false,
        };
        if head || status < 200 || status == 204 || status == 304 {
            return w;
        }
        if w.field("transfer-encoding") == Some("chunked") {
            w.chunked = true;
            loop {
                let size = self.line().await;
                let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .expect("chunk size");
                if n == 0 {
                    while !self.line().await.is_empty() {}
                    return w;
                }
                let data = self.exact(n).await;
                w.body.extend_from_slice(&data);
                assert_eq!(self.line().await, "", "CRLF after chunk data");
            }
        }
        let n: usize = w
            .field("content-length")
            .expect("content-length or chunked")
            .parse()
            .expect("length");
        w.body = self.exact(n).await;
        w
    }

    /// True when the server closes the connection (EOF) within 5 s.
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

async fn start(up: &Upstream) -> Baton {
    let config = Config::new()
        .route(json!({"match": {"path": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": "from baton"}}}))
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]))
        .render();
    Baton::start(&config).await
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let up = Upstream::echo("a").await;
    let baton = start(&up).await;
    let mut c = Raw::connect(&baton).await;
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(get(&format!("/p{i}"), ""));
    }
    batch.extend(get("/direct", ""));
    c.send(&batch).await;
    for i in 0..10 {
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{i}");
        assert_eq!(r.field("x-upstream"), Some("a"));
        assert!(r.field("date").is_some(), "a date on every response");
    }
    let r = c.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"from baton"[..]));
    let paths: Vec<String> = up.seen().iter().map(|s| s.uri.path().to_owned()).collect();
    let want: Vec<String> = (0..10).map(|i| format!("/p{i}")).collect();
    assert_eq!(paths, want);
    // Still open for more.
    c.send(&get("/after", "")).await;
    assert_eq!(c.response(false).await.status, 200);
    baton
        .wait_stat("http.ingress_http.downstream_rq_total", 12)
        .await;
    baton
        .wait_stat("http.ingress_http.downstream_cx_total", 1)
        .await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_active", 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_answered_then_closed() {
    let up = Upstream::echo("a").await;
    let baton = start(&up).await;
    let mut c = Raw::connect(&baton).await;
    c.send(&get("/x", "Connection: close\r\n")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.field("connection"), Some("close"));
    assert!(c.closed().await, "closed after the response");
    // A pipelined request after the close is not served.
    let mut c = Raw::connect(&baton).await;
    let mut two = get("/direct", "Connection: close\r\n");
    two.extend(get("/direct", ""));
    c.send(&two).await;
    assert_eq!(c.response(false).await.status, 200);
    assert!(c.closed().await, "nothing after the close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_the_length_and_no_body() {
    let up = Upstream::fixed(200, "twelve bytes").await;
    let baton = start(&up).await;
    let mut c = Raw::connect(&baton).await;
    c.send(b"HEAD /h HTTP/1.1\r\nHost: test.local\r\n\r\n")
        .await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.field("content-length"), Some("12"));
    // The next response starts right after the head: no body bytes were sent.
    c.send(&get("/g", "")).await;
    let r = c.response(false).await;
    assert_eq!(r.body, b"twelve bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_of_unknown_length_is_chunked() {
    let up = Upstream::echo("a").await;
    let baton = start(&up).await;
    let mut c = Raw::connect(&baton).await;
    c.send(&get("/slow/3", "")).await;
    let r = c.response(false).await;
    assert!(r.chunked, "{:?}", r.fields);
    assert_eq!(r.body, b"chunk 0\nchunk 1\nchunk 2\n");
    c.send(&get("/direct", "")).await;
    assert_eq!(c.response(false).await.body, b"from baton");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_a_body_or_expect_are_served_mid_connection() {
    let up = Upstream::echo("a").await;
    let baton = start(&up).await;
    let mut c = Raw::connect(&baton).await;
    c.send(&get("/first", "")).await;
    assert_eq!(c.response(false).await.status, 200);
    // A body: the rest of the connection is hyper's, pipelined GET included.
    let mut batch =
        b"POST /echo HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    batch.extend(get("/second", ""));
    c.send(&batch).await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(c.response(false).await.status, 200);
    // Expect: 100-continue on the same connection.
    c.send(b"PUT /put HTTP/1.1\r\nHost: test.local\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 100);
    c.send(b"abc").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
    let paths: Vec<String> = up.seen().iter().map(|s| s.uri.path().to_owned()).collect();
    assert_eq!(paths, ["/first", "/echo", "/second", "/put"]);
    baton
        .wait_stat("http.ingress_http.downstream_cx_total", 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_request_ends_the_request() {
    let up = Upstream::echo("a").await;
    let baton = start(&up).await;
    let mut c = Raw::connect(&baton).await;
    c.send(&get("/delay/3000", "")).await;
    // The request reaches the upstream, then the client goes.
    let t0 = std::time::Instant::now();
    while up.hits() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(c);
    baton
        .wait_stat("http.ingress_http.downstream_cx_active", 0)
        .await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_active", 0)
        .await;
    // Well before the upstream would have answered.
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    // And the proxy serves on.
    let mut c = Raw::connect(&baton).await;
    c.send(&get("/direct", "")).await;
    assert_eq!(c.response(false).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_split_across_writes_is_served() {
    let up = Upstream::echo("a").await;
    let baton = start(&up).await;
    let mut c = Raw::connect(&baton).await;
    for part in [
        &b"GE"[..],
        b"T /split HTTP/1.1\r\nHo",
        b"st: test.local\r",
        b"\n\r\n",
    ] {
        c.send(part).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(up.last().uri.path(), "/split");
}
