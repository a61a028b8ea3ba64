//! Live connections handed to the next generation on a hot restart: idle HTTP/1.1 keep-alive
//! connections and idle WebSocket tunnels keep their TCP connection (the client never sees a
//! close), bytes in flight are answered exactly once, a successor that dies mid-handover loses
//! nothing, and the old generation exits as soon as its connections have moved — long before its
//! drain time (the default 600 s here).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One raw HTTP/1.1 connection that never reconnects: a close shows as an error.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

/// One response: status, body, and whether it carried `Connection: close`.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    close: bool,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        let port = s.local_addr().expect("local addr").port();
        Self {
            s,
            buf: Vec::new(),
            port,
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    async fn get(&mut self) -> Answer {
        self.write(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .await;
        self.answer().await
    }

    /// Read one response (Content-Length framed).
    async fn answer(&mut self) -> Answer {
        within(5, "response", async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().expect("content-length"));
                    if self.buf.len() >= end + 4 + len {
                        let body =
                            String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                        let status = head[9..12].parse().expect("status");
                        let close = head.contains("connection: close");
                        self.buf.drain(..end + 4 + len);
                        return Answer {
                            status,
                            body,
                            close,
                        };
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.s.read(&mut chunk).await.expect("read");
                assert!(
                    n > 0,
                    "port {}: closed by the proxy (had {:?})",
                    self.port,
                    String::from_utf8_lossy(&self.buf)
                );
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
    }

    /// Nothing more arrives within `wait` (no duplicate answer).
    async fn nothing_more(&mut self, wait: Duration) {
        assert!(self.buf.is_empty(), "extra bytes: {:?}", self.buf);
        let mut chunk = [0u8; 1024];
        if let Ok(r) = tokio::time::timeout(wait, self.s.read(&mut chunk)).await {
            let n = r.expect("read");
            assert!(
                n == 0 || chunk[..n].is_empty(),
                "port {}: unexpected bytes {:?}",
                self.port,
                String::from_utf8_lossy(&chunk[..n])
            );
        }
    }
}

/// Wait (bounded) until generation `b` has exited; how long after `from` that was.
async fn exits(b: &mut Baton, from: Instant, what: &str) -> Duration {
    let pid = b.pid();
    b.wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{what} (pid {pid}) still runs:\n{}", b.stderr()));
    from.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_clients_keep_their_tcp_connection_across_restarts() {
    within(60, "keep-alive hand-over", async {
        let mut g = Baton::start(&direct("g0")).await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut c = Conn::open(g.addr()).await;
            let a = c.get().await;
            assert_eq!((a.status, a.body.as_str()), (200, "g0"));
            clients.push(c);
        }
        for k in 1..=3u32 {
            let body = format!("g{k}");
            let mut next = g.restart(&direct(&body), &[]);
            next.wait_serving().await;
            let cutover = Instant::now();
            // Its connections moved: nothing keeps it (its drain time is 600 s).
            let lived = exits(&mut g, cutover, "the previous generation").await;
            eprintln!(
                "epoch {}: exited {} ms after its successor served",
                k - 1,
                lived.as_millis()
            );
            for c in &mut clients {
                // A pause, as a real keep-alive client makes, then the next request on the
                // same TCP connection: answered by the new generation, not asked to close.
                let a = c.get().await;
                assert_eq!(
                    (a.status, a.body.as_str()),
                    (200, body.as_str()),
                    "port {}",
                    c.port
                );
                assert!(!a.close, "port {}: asked to close", c.port);
            }
            g = next;
        }
        // Counted across the chain (the stats region outlives each generation).
        assert_eq!(g.stat("server.connections_handed_over").await, Some(12));
        assert_eq!(g.stat("server.connections_received").await, Some(12));
        // The restart status reports what this generation took.
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, status) = g.admin_get("/hot_restart_status").await;
            if status.contains("\"connections_received\": 4") {
                break;
            }
            assert!(Instant::now() < until, "{status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_in_flight_during_the_handover_are_answered_once_by_one_generation() {
    within(60, "in-flight bytes", async {
        let mut g = Baton::start(&direct("g0")).await;
        // A: half a request head already read by the old generation's parser.
        let mut a = Conn::open(g.addr()).await;
        assert_eq!(a.get().await.body, "g0");
        a.write(b"GET / HTTP/1.1\r\nHost: test").await;
        // B: idle, then two pipelined requests while the hand-over is in progress.
        let mut b = Conn::open(g.addr()).await;
        assert_eq!(b.get().await.body, "g0");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The successor holds each batch 300 ms before acknowledging it.
        let mut next = g.restart_env(
            &direct("g1"),
            &[],
            &[("BATON_HANDOVER_ACK_DELAY_MS", "300")],
        );
        next.wait_serving().await;
        // Once the old generation has begun handing over (its idle connections stop at once).
        let until = Instant::now() + Duration::from_secs(10);
        while !g.stderr().contains("handing live connections") {
            assert!(Instant::now() < until, "no hand-over:\n{}", g.stderr());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n")
            .await;
        a.write(b".local\r\n\r\n").await;
        let mut seen = Vec::new();
        for c in [&mut a, &mut b] {
            seen.push(c.answer().await);
        }
        seen.push(b.answer().await);
        for ans in &seen {
            assert_eq!(ans.status, 200, "{seen:?}");
            assert!(ans.body == "g0" || ans.body == "g1", "{seen:?}");
        }
        // The half-read request was completed and answered by the generation that got its
        // parser's bytes: the new one.
        assert_eq!(seen[0].body, "g1", "{seen:?}");
        a.nothing_more(Duration::from_millis(300)).await;
        b.nothing_more(Duration::from_millis(300)).await;
        exits(&mut g, Instant::now(), "the previous generation").await;
        let later = b.get().await;
        assert_eq!(later.body, "g1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successor_killed_mid_handover_loses_no_connection() {
    within(60, "successor killed mid-handover", async {
        let mut g = Baton::start(&direct("g0")).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut c = Conn::open(g.addr()).await;
            assert_eq!(c.get().await.body, "g0");
            clients.push(c);
        }
        let mut next = g.restart_env(
            &direct("g1"),
            &[],
            &[("BATON_HANDOVER_ACK_DELAY_MS", "30000")],
        );
        next.wait_serving().await;
        // It has the sockets but has not acknowledged them: kill it now.
        let until = Instant::now() + Duration::from_secs(10);
        while !next.stderr().contains("holding the acknowledgement") {
            assert!(Instant::now() < until, "no batch taken:\n{}", next.stderr());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        next.kill();
        // The old generation takes its connections back and answers on each of them.
        for c in &mut clients {
            let a = c.get().await;
            assert_eq!((a.status, a.body.as_str()), (200, "g0"), "port {}", c.port);
        }
        assert!(g.exited().is_none());
        // (The draining generation's admin socket is closed: read the shared region.)
        let (ok, stats, err) = run_baton(&["stats", "--base-id", &g.base_id.to_string()]);
        assert!(ok.success(), "{err}");
        assert_eq!(
            parse_stat(&stats, "server.connections_handed_over"),
            Some(0)
        );
        assert!(
            g.stderr().contains("connection hand-over ended"),
            "{}",
            g.stderr()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_session_spans_three_restarts_on_one_connection() {
    let ws = Upstream::websocket().await;
    let cfg = Config::new()
        .hcm("upgrade_configs", json!([{"upgrade_type": "websocket"}]))
        .route(route("/ws", "ws", json!({})))
        .cluster(cluster("ws", &[ws.port()]))
        .render();
    within(60, "websocket hand-over", async {
        let mut g = Baton::start(&cfg).await;
        let mut s = TcpStream::connect(g.addr()).await.expect("connect");
        s.write_all(UPGRADE.as_bytes()).await.expect("upgrade");
        let head = within(5, "101", read_head(&mut s)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        echo_through(&mut s, "before").await;
        let mut i = 0;
        for k in 1..=3 {
            let mut next = g.restart(&cfg, &[]);
            next.wait_serving().await;
            let cutover = Instant::now();
            let lived = exits(&mut g, cutover, "the tunnel's old generation").await;
            eprintln!(
                "epoch {}: exited {} ms after its successor served",
                k - 1,
                lived.as_millis()
            );
            for _ in 0..5 {
                echo_through(&mut s, &format!("message {i} {}", "x".repeat(i * 7))).await;
                i += 1;
            }
            assert_eq!(
                next.stat("http.ingress_http.downstream_cx_upgrades_active")
                    .await,
                Some(1)
            );
            g = next;
        }
        assert_eq!(g.stat("server.connections_handed_over").await, Some(3));
        drop(s);
        g.wait_stat("http.ingress_http.downstream_cx_upgrades_active", 0)
            .await;
    })
    .await;
}
