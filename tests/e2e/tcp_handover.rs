//! `tcp_proxy` connections and connections of listeners with several filter chains handed to
//! the next generation on a hot restart: a client connected before the restart goes on
//! exchanging bytes after the old generation has exited (cleartext, and a TLS session Baton
//! passes through), counted once across generations; a connection whose chain changed stays
//! with the old generation and ends with it; an HTTP/1.1 keep-alive connection on a listener
//! with two chains moves to its chain.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::cluster;
use crate::support::restart::pid_alive;
use crate::support::tcp::TcpEcho;
use crate::support::{free_port, local, within, Baton};
use crate::tcp_proxy::{addr, bootstrap, client, http, server, tcp};
use crate::tls::Ca;

/// A generation whose drain after a restart ends 3 s in (`tcp_proxy` connections are never
/// asked to close: they end at that deadline).
const SHORT_DRAIN: &[&str] = &["--drain-time-s", "1", "--parent-shutdown-time-s", "3"];

/// One listener with one `tcp_proxy` chain (stat prefix `tp`, `extra` fields) to cluster `echo`.
fn one_chain(port: u16, extra: serde_json::Value) -> String {
    let mut fields = json!({"cluster": "echo"});
    fields
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    bootstrap(
        json!({"filter_chains": [{"filters": tcp(fields)}]}),
        vec![cluster("echo", &[port])],
    )
}

/// Write `msg` and read back its echo (≤ 5 s).
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) {
    s.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    within(5, "echo", s.read_exact(&mut back))
        .await
        .expect("echo read");
    assert_eq!(back, msg);
}

/// Read the origin's greeting tag `<tag>\n`.
async fn greeting<S: AsyncRead + Unpin>(s: &mut S, tag: &str) {
    let mut got = vec![0u8; tag.len() + 1];
    within(5, "greeting", s.read_exact(&mut got))
        .await
        .expect("greeting");
    assert_eq!(got, format!("{tag}\n").as_bytes());
}

/// Wait (bounded) until generation `g` has exited and its pid is gone.
async fn gone(g: &mut Baton, what: &str) -> Duration {
    let from = Instant::now();
    let pid = g.pid();
    g.wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("{what} (pid {pid}) still runs:\n{}", g.stderr()));
    assert!(!pid_alive(pid), "{what}: pid {pid} is still alive");
    from.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_proxy_connections_move_with_both_sockets_and_are_counted_once() {
    let origin = TcpEcho::start(Some("o")).await;
    let cfg = one_chain(origin.port(), json!({}));
    within(60, "tcp_proxy hand-over", async {
        let mut g = Baton::start(&cfg).await;
        let mut conns = Vec::new();
        for i in 0..3u8 {
            let mut s = TcpStream::connect(addr(&g)).await.expect("connect");
            greeting(&mut s, "o").await;
            echo(&mut s, &[b'a' + i; 10]).await;
            conns.push(s);
        }
        let mut moved_bytes = 0usize;
        for k in 1..=2 {
            let mut next = g.restart(&cfg, &[]);
            next.wait_serving().await;
            let lived = gone(&mut g, "the previous generation").await;
            eprintln!(
                "epoch {}: 3 tcp_proxy connections moved; exited {} ms after its successor served",
                k - 1,
                lived.as_millis()
            );
            for (i, s) in conns.iter_mut().enumerate() {
                let msg = format!("after restart {k} on connection {i} {}", "y".repeat(4096));
                echo(s, msg.as_bytes()).await;
                moved_bytes += msg.len();
            }
            g = next;
        }
        eprintln!("{moved_bytes} bytes each way through moved connections");
        // One connection each, whichever generation served it: a move is not a new connection.
        // Envoy 1.40 on the same configuration across a hot restart (its connection stays in
        // the parent; the child's admin merges the parent's stats): tcp.tp.downstream_cx_total
        // 1, cluster.echo.upstream_cx_total 1 and upstream_cx_active 1 while the connection
        // lives, listener downstream_cx_total 1 — the same counts, the connection in the new
        // generation here.
        assert_eq!(g.stat("server.connections_handed_over").await, Some(6));
        assert_eq!(g.stat("server.connections_received").await, Some(6));
        assert_eq!(g.stat("tcp.tp.downstream_cx_total").await, Some(3));
        assert_eq!(g.stat("cluster.echo.upstream_cx_total").await, Some(3));
        assert_eq!(g.stat("cluster.echo.upstream_cx_active").await, Some(3));
        assert_eq!(g.stat("cluster.echo.upstream_cx_destroy").await, Some(0));
        let l = format!("listener.127.0.0.1_{}", g.listen);
        assert_eq!(g.stat(&format!("{l}.downstream_cx_total")).await, Some(3));
        assert_eq!(g.stat(&format!("{l}.downstream_cx_active")).await, Some(3));
        assert_eq!(origin.accepted(), 3, "the origin saw no new connection");
        // Bytes are counted where they flowed: their sum is every byte of each connection.
        let rx = (10 + moved_bytes / 3) * 3;
        g.wait_stat("cluster.echo.upstream_cx_tx_bytes_total", rx as i64)
            .await;
        // Closing ends each connection once, in the generation that has it.
        for s in &mut conns {
            s.shutdown().await.expect("shutdown");
            let mut rest = Vec::new();
            within(5, "close", s.read_to_end(&mut rest))
                .await
                .expect("read to end");
            assert_eq!(rest, b"bye");
        }
        g.wait_stat("cluster.echo.upstream_cx_destroy", 3).await;
        g.wait_stat("cluster.echo.upstream_cx_active", 0).await;
        g.wait_stat(&format!("{l}.downstream_cx_destroy"), 3).await;
        g.wait_stat("tcp.tp.downstream_cx_rx_bytes_total", rx as i64)
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_connection_keeps_its_idle_timeout_from_its_last_byte() {
    let origin = TcpEcho::start(None).await;
    let cfg = one_chain(origin.port(), json!({"idle_timeout": "3s"}));
    within(30, "idle timeout across a restart", async {
        let mut g = Baton::start(&cfg).await;
        let mut s = TcpStream::connect(addr(&g)).await.expect("connect");
        echo(&mut s, b"ping").await;
        let last_byte = Instant::now();
        // Half of the idle time passes in the old generation (the point of the test).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let next = g.restart(&cfg, &[]);
        let mut next = next;
        next.wait_serving().await;
        gone(&mut g, "the previous generation").await;
        let mut rest = Vec::new();
        within(10, "idle close", s.read_to_end(&mut rest))
            .await
            .expect("read to end");
        let idle = last_byte.elapsed();
        assert!(rest.is_empty(), "{rest:?}");
        // 3 s after the last byte, not 3 s after the move (≥ 4.5 s).
        assert!(
            idle >= Duration::from_millis(2900) && idle < Duration::from_millis(4300),
            "closed after {idle:?} idle"
        );
        next.wait_stat("tcp.tp.idle_timeout", 1).await;
        next.wait_stat("server.connections_received", 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_passed_through_tls_session_continues_across_a_restart() {
    // The origin's certificate is its own: the session is between the client and the origin,
    // Baton only carries its bytes (and then its sockets).
    let ca = Ca::new("origin ca");
    let origin = TcpEcho::start_tls(Some("tls"), server(&ca.leaf_for(&["pass.test"]))).await;
    let cfg = bootstrap(
        json!({
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
            "filter_chains": [
                {"name": "pass", "filter_chain_match": {"server_names": ["pass.test"]},
                 "filters": tcp(json!({"cluster": "echo"}))},
                {"filters": tcp(json!({"cluster": "echo", "stat_prefix": "other"}))},
            ],
        }),
        vec![cluster("echo", &[origin.port()])],
    );
    within(60, "TLS passthrough hand-over", async {
        let mut g = Baton::start(&cfg).await;
        let tcp = TcpStream::connect(addr(&g)).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("pass.test").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(client(&ca, &[]))
            .connect(name, tcp)
            .await
            .expect("TLS with the origin");
        greeting(&mut s, "tls").await;
        echo(&mut s, b"before the restart").await;
        for k in 1..=2 {
            let mut next = g.restart(&cfg, &[]);
            next.wait_serving().await;
            gone(&mut g, "the previous generation").await;
            echo(&mut s, format!("after restart {k}").as_bytes()).await;
            g = next;
        }
        assert_eq!(g.stat("server.connections_handed_over").await, Some(2));
        assert_eq!(g.stat("tcp.tp.downstream_cx_total").await, Some(1));
        assert_eq!(origin.accepted(), 1);
        s.shutdown().await.expect("close_notify");
        let mut rest = Vec::new();
        let _ = within(5, "close", s.read_to_end(&mut rest)).await;
        assert_eq!(rest, b"bye");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_whose_chain_changed_stays_and_ends_with_the_old_generation() {
    let origin = TcpEcho::start(None).await;
    let before = one_chain(origin.port(), json!({}));
    // Another stat prefix: another chain.
    let after = one_chain(origin.port(), json!({"stat_prefix": "changed"}));
    within(60, "changed chain", async {
        // Its drain ends at its `--parent-shutdown-time-s` (a restart's drain deadline).
        let mut g = Baton::start_with(&before, SHORT_DRAIN).await;
        let mut s = TcpStream::connect(addr(&g)).await.expect("connect");
        echo(&mut s, b"one").await;
        let mut next = g.restart(&after, &[]);
        next.wait_serving().await;
        // Refused by the new generation: the old one goes on serving it.
        let until = Instant::now() + Duration::from_secs(5);
        while !g.stderr().contains("connection hand-over complete") {
            assert!(Instant::now() < until, "no hand-over:\n{}", g.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        echo(&mut s, b"two").await;
        assert!(
            pid_alive(g.pid()),
            "the old generation keeps its connection"
        );
        // It ends when the old generation's drain deadline shuts it down.
        let mut rest = Vec::new();
        let closed = within(15, "close at the old generation's exit", async {
            let _ = s.read_to_end(&mut rest).await;
        });
        closed.await;
        gone(&mut g, "the previous generation").await;
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(next.stat("server.connections_handed_over").await, Some(0));
        assert_eq!(next.stat("server.connections_received").await, Some(0));
        // A new connection is the new chain's.
        let mut n = TcpStream::connect(addr(&next)).await.expect("connect");
        echo(&mut n, b"three").await;
        next.wait_stat("tcp.changed.downstream_cx_total", 1).await;
    })
    .await;
}

/// One raw HTTP/1.1 request on `s`; the response body (Content-Length framed).
async fn get(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
        .await
        .expect("write");
    within(5, "response", async {
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                assert!(!head.contains("connection: close"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("content-length"));
                if buf.len() >= end + 4 + len {
                    return String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed by the proxy");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_connections_of_a_listener_with_two_chains_move_to_their_chain() {
    let second = free_port();
    // Two HTTP chains, told apart by destination port; each answers with its own body.
    let cfg = |one: &str, two: &str| {
        let mut b = http(two);
        b[0]["typed_config"]["stat_prefix"] = json!("second_http");
        bootstrap(
            json!({
                "additional_addresses": [{"address": {"socket_address": {"address": "127.0.0.1", "port_value": second}}}],
                "filter_chains": [
                    {"filters": http(one)},
                    {"name": "second", "filter_chain_match": {"destination_port": second}, "filters": b},
                ],
            }),
            vec![],
        )
    };
    within(60, "two-chain hand-over", async {
        let mut g = Baton::start(&cfg("one", "two")).await;
        let mut a = TcpStream::connect(addr(&g)).await.expect("connect");
        let mut b = TcpStream::connect(local(second)).await.expect("connect");
        assert_eq!(get(&mut a).await, "one");
        assert_eq!(get(&mut b).await, "two");
        // New routes (bodies) on the same chains: connections move and get the new answers.
        let mut next = g.restart(&cfg("one again", "two again"), &[]);
        next.wait_serving().await;
        gone(&mut g, "the previous generation").await;
        assert_eq!(get(&mut a).await, "one again");
        assert_eq!(get(&mut b).await, "two again");
        assert_eq!(next.stat("server.connections_handed_over").await, Some(2));
        assert_eq!(
            next.stat("http.second_http.downstream_cx_total").await,
            Some(1)
        );
        assert_eq!(
            next.stat("http.second_http.downstream_rq_total").await,
            Some(2)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_connection_handover_nothing_moves() {
    let origin = TcpEcho::start(None).await;
    let cfg = bootstrap(
        json!({"filter_chains": [
            {"filter_chain_match": {"transport_protocol": "raw_buffer", "destination_port": 1}, "filters": http("web")},
            {"filters": tcp(json!({"cluster": "echo"}))},
        ]}),
        vec![cluster("echo", &[origin.port()])],
    );
    within(60, "no hand-over", async {
        let mut g = Baton::start_with(&cfg, SHORT_DRAIN).await;
        let mut s = TcpStream::connect(addr(&g)).await.expect("connect");
        echo(&mut s, b"one").await;
        let mut next = g.restart(&cfg, &["--disable-connection-handover"]);
        next.wait_serving().await;
        echo(&mut s, b"two").await;
        assert!(pid_alive(g.pid()));
        let mut rest = Vec::new();
        within(15, "close at the old generation's exit", async {
            let _ = s.read_to_end(&mut rest).await;
        })
        .await;
        gone(&mut g, "the previous generation").await;
        assert_eq!(next.stat("server.connections_handed_over").await, Some(0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tcp_proxy_connection_goes_back_when_the_new_generation_gives_way() {
    let origin = TcpEcho::start(None).await;
    let cfg = one_chain(origin.port(), json!({}));
    let window = &[
        "--drain-time-s",
        "1",
        "--parent-shutdown-time-s",
        "5",
        "--rollback-window-s",
        "30",
    ];
    within(60, "tcp_proxy hand-back", async {
        let a = Baton::start_with(&cfg, window).await;
        let mut s = TcpStream::connect(addr(&a)).await.expect("connect");
        echo(&mut s, b"served by the old generation").await;
        let mut b = a.restart(&cfg, window);
        b.wait_serving().await;
        // Its connection moved: the old generation has nothing left and stands by.
        let until = Instant::now() + Duration::from_secs(10);
        while !a
            .stderr()
            .contains("standing by until the rollback window ends")
        {
            assert!(Instant::now() < until, "not standing by:\n{}", a.stderr());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        echo(&mut s, b"served by the new generation").await;
        let (code, body) = b.admin_post("/rollback").await;
        assert_eq!(code, 200, "{body}\n{}", b.stderr());
        let status = b.wait_exit(Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.code() == Some(1)), "{status:?}");
        let logs = format!("--- A\n{}\n--- B\n{}", a.stderr(), b.stderr());
        assert!(logs.contains("given=1 taken=1"), "{logs}");
        echo(&mut s, b"served by the old generation again").await;
        // Once to the new generation, once back.
        a.wait_stat("server.connections_received", 2).await;
        assert_eq!(a.stat("tcp.tp.downstream_cx_total").await, Some(1));
        assert_eq!(origin.accepted(), 1);
    })
    .await;
}
