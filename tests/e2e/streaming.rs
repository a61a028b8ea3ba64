//! Bodies stream through the proxy: 20 MB each way byte-exact, chunked uploads, and a slow
//! response that reaches the client chunk by chunk.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use crate::support::*;

const BIG: usize = 20 * 1024 * 1024;

async fn start() -> (Upstream, Baton) {
    let echo = Upstream::echo("e").await;
    let config = Config::new()
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[echo.port()]))
        .render();
    let baton = Baton::start(&config).await;
    (echo, baton)
}

/// Read `body` to its end, checking every byte against [`pattern`]; the total length.
async fn check_pattern(mut body: Incoming) -> usize {
    let mut off = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Ok(data) = frame.into_data() {
            for (i, b) in data.iter().enumerate() {
                if *b != pattern_byte(off + i) {
                    panic!("byte {} differs", off + i);
                }
            }
            off += data.len();
        }
    }
    off
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabytes_each_way_byte_exact() {
    let (echo, baton) = start().await;
    let mut c = H1::connect(baton.addr()).await.unwrap();

    // Download.
    let resp = c
        .send_streaming(get_req("test.local", &format!("/download/{BIG}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let n = within(10, "20 MB download", check_pattern(resp.into_body())).await;
    assert_eq!(n, BIG);

    // Upload with a content-length, echoed back.
    let req = request("POST", "test.local", "/upload", full(pattern(0, BIG)));
    let resp = c.send_streaming(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let n = within(10, "20 MB upload", check_pattern(resp.into_body())).await;
    assert_eq!(n, BIG);
    assert_eq!(
        echo.last().header("content-length"),
        Some(BIG.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_streams_both_ways() {
    let (echo, baton) = start().await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let (mut tx, body) = channel_body(2);
    let req = request("POST", "test.local", "/chunked", body);
    // The request body is still open when the response starts: the proxy must stream the
    // request upstream and the echo back at the same time.
    tx.send_data(pattern(0, 1000)).await.unwrap();
    let resp = c.send_streaming(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = echo.last();
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert!(seen.header("content-length").is_none());
    let mut body = resp.into_body();
    let first = within(5, "first echoed chunk", body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, pattern(0, first.len()));
    let sender = tokio::spawn(async move {
        let mut off = 1000;
        while off < 2 * 1024 * 1024 {
            tx.send_data(pattern(off, 32 * 1024)).await.unwrap();
            off += 32 * 1024;
        }
        drop(tx);
        off
    });
    let mut got = first.len();
    let rest = within(10, "echoed chunked body", async {
        let mut all = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                all.extend_from_slice(&d);
            }
        }
        all
    })
    .await;
    let sent = sender.await.unwrap();
    assert_eq!(Bytes::from(rest.clone()), pattern(got, rest.len()));
    got += rest.len();
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_response_arrives_progressively() {
    let (echo, baton) = start().await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let resp = c
        .send_streaming(get_req("test.local", "/slow/10"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = within(5, "first chunk", body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(first.starts_with(b"chunk 0\n"), "{first:?}");
    let sent = echo.state.chunks_sent.load(Ordering::SeqCst);
    assert!(
        sent < 10,
        "the first chunk arrived only after {sent} of 10 were sent: the body was buffered"
    );
    let mut all = first.to_vec();
    let mut frames = 1;
    within(5, "rest of the slow body", async {
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                all.extend_from_slice(&d);
                frames += 1;
            }
        }
    })
    .await;
    let want: String = (0..10).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(String::from_utf8(all).unwrap(), want);
    assert!(frames >= 5, "only {frames} frames: chunks were coalesced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_mid_response_releases_the_upstream_request() {
    let (_echo, baton) = start().await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let resp = c
        .send_streaming(get_req("test.local", "/slow/200"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    within(5, "first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    baton.wait_stat("cluster.echo.upstream_rq_active", 1).await;
    drop(body);
    drop(c);
    // The abandoned request is accounted for and frees its slot long before the upstream
    // would have finished (200 chunks take 10 s; the wait is bounded at 5 s).
    baton.wait_stat("cluster.echo.upstream_rq_active", 0).await;
    baton
        .wait_stat("http.ingress_http.downstream_rq_active", 0)
        .await;
    assert_eq!(get(baton.addr(), "/after").await.status, 200);
}
