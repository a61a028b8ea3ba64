//! The HTTP connection manager's stream timeouts: `stream_idle_timeout` ends a response whose
//! upstream stalls mid-body, `request_timeout` answers 408 to a request whose body never
//! completes.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Answers every request with headers promising 100 bytes, sends 10, then stalls.
async fn stalling_upstream() -> Upstream {
    Upstream::raw(|mut s, _st| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_idle_timeout_ends_a_stalled_response() {
    let up = stalling_upstream().await;
    let config = Config::new()
        .hcm("stream_idle_timeout", json!("0.3s"))
        .route(route("/", "stall", json!({})))
        .cluster(cluster("stall", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut got = Vec::new();
    within(5, "the stalled response to end", async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("0123456789"),
        "the body stops where the upstream stalled: {text}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    baton
        .wait_stat("http.ingress_http.downstream_rq_idle_timeout", 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_408_to_an_unfinished_body() {
    // Waits for the whole request before answering, as most servers do for a POST.
    let up = Upstream::silent().await;
    let config = Config::new()
        .hcm("request_timeout", json!("0.3s"))
        .route(route("/", "silent", json!({})))
        .cluster(cluster("silent", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n01234")
        .await
        .expect("write");
    let started = Instant::now();
    let mut got = Vec::new();
    within(5, "the 408", async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(15).any(|w| w == b"request timeout") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    baton
        .wait_stat("http.ingress_http.downstream_rq_timeout", 1)
        .await;
}
