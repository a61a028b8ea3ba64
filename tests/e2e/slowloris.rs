//! Slow request heads (issue 16): a head must be complete within its deadline from its first
//! byte — `request_headers_timeout`, Baton's default for it, or `request_timeout` /
//! `stream_idle_timeout` when shorter — on Baton's own loop and on hyper's session alike; an
//! idle keep-alive connection that sends nothing is no slow head.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn baton_with(up: &Upstream, hcm: &[(&str, serde_json::Value)]) -> Baton {
    let mut config = Config::new()
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]));
    for (k, v) in hcm {
        config = config.hcm(k, v.clone());
    }
    Baton::start(&config.render()).await
}

/// Everything the server sends until it closes (≤ 5 s).
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    within(5, "the server to close", async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Read one response (head and `content-length` body) off a keep-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    within(5, "a response", async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return;
                }
            }
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed mid-response: {text}");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Send a head's first line, then one byte of it every `every` until the server closes; the
/// answer and how long after the first byte it came.
async fn drip(s: &mut TcpStream, every: Duration) -> (String, Duration) {
    let started = Instant::now();
    s.write_all(b"GET /slow HTTP/1.1\r\n").await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within(5, "the slow head to be cut", async {
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(every) => {
                    let _ = s.write_all(b"x").await;
                }
            }
        }
    })
    .await;
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_stops_is_408_after_request_headers_timeout() {
    let up = Upstream::echo("a").await;
    let baton = baton_with(&up, &[("request_headers_timeout", json!("0.4s"))]).await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.ends_with("request header timeout"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(350));
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_rq_header_timeout")
            .await,
        Some(1)
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_head_is_cut_by_the_shortest_stream_timeout() {
    let up = Upstream::echo("a").await;
    // stream_idle_timeout: the head's bytes are not frames of the stream.
    let baton = baton_with(&up, &[("stream_idle_timeout", json!("0.5s"))]).await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let (text, took) = drip(&mut s, Duration::from_millis(100)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.ends_with("stream timeout"), "{text}");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_rq_idle_timeout")
            .await,
        Some(1)
    );
    // request_timeout, shorter than the others.
    let baton = baton_with(
        &up,
        &[
            ("request_timeout", json!("0.4s")),
            ("stream_idle_timeout", json!("2s")),
            ("request_headers_timeout", json!("3s")),
        ],
    )
    .await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let (text, _) = drip(&mut s, Duration::from_millis(100)).await;
    assert!(text.ends_with("request timeout"), "{text}");
    assert_eq!(
        baton.stat("http.ingress_http.downstream_rq_timeout").await,
        Some(1)
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_session_cuts_a_slow_head_too_but_not_an_idle_connection() {
    let up = Upstream::echo("a").await;
    let baton = baton_with(&up, &[("request_headers_timeout", json!("0.4s"))]).await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    // A request with a body: hyper's session serves the connection from here on.
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .expect("write");
    let text = read_response(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Idle for well over the head deadline: the connection is kept and serves again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .expect("write");
    let text = read_response(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Then a head that drips.
    let (text, took) = drip(&mut s, Duration::from_millis(100)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.ends_with("request header timeout"), "{text}");
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_s_loop_keeps_an_idle_keep_alive_connection_past_the_head_deadline() {
    let up = Upstream::echo("a").await;
    let baton = baton_with(&up, &[("request_headers_timeout", json!("0.3s"))]).await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let text = read_response(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_rq_header_timeout")
            .await,
        Some(0)
    );
}

/// A direct-response config with a head deadline of `limit`.
fn direct_with_head_deadline(body: &str, limit: &str) -> String {
    Config::new()
        .hcm("request_headers_timeout", json!(limit))
        .route(json!({
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
        }))
        .render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_restart_does_not_save_a_slow_head_from_its_deadline() {
    within(30, "slow head across a restart", async {
        let g0 = Baton::start(&direct_with_head_deadline("g0", "0.6s")).await;
        let mut s = TcpStream::connect(g0.addr()).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(read_response(&mut s).await.ends_with("g0"));
        // Half a head, then a restart while it waits for the rest.
        s.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let started = Instant::now();
        let mut g1 = g0.restart(&direct_with_head_deadline("g1", "0.6s"), &[]);
        g1.wait_serving().await;
        let text = read_to_close(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.ends_with("request header timeout"), "{text}");
        let took = started.elapsed();
        // Whichever generation held it: within one and a half deadlines of the restart, plus
        // the restart itself.
        assert!(took < Duration::from_secs(3), "{took:?}");
        // Counted once across the chain.
        assert_eq!(
            g1.stat("http.ingress_http.downstream_rq_header_timeout")
                .await,
            Some(1)
        );
    })
    .await;
}
