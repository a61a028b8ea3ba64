//! HTTP/2 downstream (prior knowledge) to HTTP/1.1 and HTTP/2 upstreams, many concurrent streams
//! on one connection.

use std::time::Duration;

use http::Version;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_downstream_to_h1_and_h2_upstreams_with_50_concurrent_streams() {
    let up1 = Upstream::echo("h1").await;
    let up2 = Upstream::echo_h2("h2").await;
    let config = Config::new()
        .route(route("/h1/", "c1", json!({})))
        .route(route("/h2/", "c2", json!({})))
        .cluster(cluster("c1", &[up1.port()]))
        .cluster(with(
            cluster("c2", &[up2.port()]),
            "typed_extension_protocol_options",
            http2_options(),
        ))
        .render();
    let baton = Baton::start(&config).await;

    let client = within(5, "h2 connect", H2::connect(baton.addr()))
        .await
        .expect("h2 connect");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let which = if i % 2 == 0 { "h1" } else { "h2" };
            let req = http::Request::post(format!("http://svc.example/{which}/{i}"))
                .body(full(format!("body-{i}")))
                .unwrap();
            let resp = c.send(req).await.expect("h2 request");
            (i, which, resp)
        }));
    }
    for t in tasks {
        let (i, which, resp) = within(10, "h2 streams", t).await.unwrap();
        assert_eq!(resp.status, 200, "stream {i}");
        assert_eq!(resp.header("x-upstream"), Some(which), "stream {i}");
        assert_eq!(resp.text(), format!("body-{i}"), "stream {i}");
        assert!(resp.header("x-envoy-upstream-service-time").is_some());
    }
    let seen1 = up1.seen();
    let seen2 = up2.seen();
    assert_eq!(seen1.len(), 25);
    assert_eq!(seen2.len(), 25);
    for s in &seen1 {
        assert_eq!(s.version, Version::HTTP_11);
        assert_eq!(
            s.header("host"),
            Some("svc.example"),
            "authority becomes Host"
        );
        assert_eq!(s.method, http::Method::POST);
    }
    for s in &seen2 {
        assert_eq!(s.version, Version::HTTP_2);
        assert_eq!(
            s.uri.authority().map(|a| a.as_str()),
            Some("svc.example"),
            "authority forwarded over HTTP/2"
        );
    }
    // All 50 streams shared one downstream connection.
    baton
        .wait_stat("http.ingress_http.downstream_rq_http2_total", 50)
        .await;
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_cx_http2_total")
            .await,
        Some(1)
    );
    // HTTP/2 upstream streams are multiplexed: far fewer connections than requests.
    assert!(up2.conns() <= 2, "h2 upstream connections: {}", up2.conns());
}

/// A hand-written HTTP/2 client over TCP, frame by frame, to see exactly what the server sends
/// and in which order.
struct RawH2 {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

impl RawH2 {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut c = Self { s, buf: Vec::new() };
        c.write_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        c.send(SETTINGS, 0, 0, &[]).await;
        c
    }

    async fn write_raw(&mut self, b: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.s.write_all(b).await.expect("write");
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.write_raw(&f).await;
    }

    /// `GET <path>` on `stream`, the whole request in one HEADERS frame (HPACK without the
    /// dynamic table: static indices and literals without indexing).
    async fn get(&mut self, stream: u32, path: &str) {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 10]);
        block.extend_from_slice(b"test.local");
        self.send(HEADERS, 0x4 | END_STREAM, stream, &block).await;
    }

    /// The next frame; SETTINGS are acknowledged and not returned. `None` at EOF.
    async fn next(&mut self) -> Option<Frame> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    if f.kind == SETTINGS {
                        if f.flags & ACK == 0 {
                            self.send(SETTINGS, ACK, 0, &[]).await;
                        }
                        continue;
                    }
                    return Some(f);
                }
            }
            let mut tmp = [0u8; 4096];
            match self.s.read(&mut tmp).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }
}

fn goaway_last(f: &Frame) -> (u32, u32) {
    let last = u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
    let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
    (last, code)
}

// A draining HTTP/2 connection must not send its first GOAWAY behind responses the client has
// not processed yet: a client (nghttp2) that submitted requests on those responses and has not
// written them closes them as refused when it reads the GOAWAY. So the drain starts with a PING
// and nothing else until its ACK; then GOAWAY(2^31-1) comes first, and a stream the client
// opened before seeing any GOAWAY is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_drain_pings_before_the_first_goaway_and_serves_streams_opened_before_it() {
    let echo = Upstream::echo("e").await;
    let config = Config::new()
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[echo.port()]))
        .render();
    let mut k = Baton::start_with(
        &config,
        &["--drain-strategy", "immediate", "--drain-time-s", "5"],
    )
    .await;
    within(20, "raw h2 drain", async {
        let mut c = RawH2::connect(k.addr()).await;
        c.get(1, "/one").await;
        loop {
            let f = c.next().await.expect("response to stream 1");
            assert_ne!(f.kind, GOAWAY, "{f:?}");
            if f.stream == 1 && f.flags & END_STREAM != 0 && (f.kind == DATA || f.kind == HEADERS) {
                break;
            }
        }
        k.signal("TERM");
        let ping = loop {
            let f = c.next().await.expect("a drain frame");
            assert_ne!(
                f.kind, GOAWAY,
                "the drain's first frame must be a PING, not a GOAWAY: {f:?}"
            );
            if f.kind == PING && f.flags & ACK == 0 {
                break f;
            }
        };
        // Submitted before we have seen any GOAWAY: the server must process it.
        c.get(3, "/three").await;
        c.send(PING, ACK, 0, &ping.payload).await;
        let f = c.next().await.expect("GOAWAY after the PING ACK");
        assert_eq!(f.kind, GOAWAY, "right after the PING ACK: {f:?}");
        assert_eq!(goaway_last(&f), (0x7fff_ffff, 0), "{f:?}");

        let mut status_200 = false;
        let mut ended = false;
        let mut last_goaway = None;
        while let Some(f) = c.next().await {
            match f.kind {
                HEADERS if f.stream == 3 => {
                    status_200 |= f.payload.first() == Some(&0x88);
                    ended |= f.flags & END_STREAM != 0;
                }
                DATA if f.stream == 3 => ended |= f.flags & END_STREAM != 0,
                RST_STREAM => panic!("stream reset: {f:?}"),
                PING if f.flags & ACK == 0 => c.send(PING, ACK, 0, &f.payload).await,
                GOAWAY => last_goaway = Some(goaway_last(&f)),
                _ => {}
            }
        }
        assert!(status_200, "stream 3 answered 200");
        assert!(ended, "stream 3 finished");
        assert_eq!(last_goaway, Some((3, 0)), "final GOAWAY covers stream 3");
    })
    .await;
    let status = k.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(status.success(), "{status}\n{}", k.stderr());
}
