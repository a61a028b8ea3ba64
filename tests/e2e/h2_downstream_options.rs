//! The HCM's `http2_protocol_options` on downstream HTTP/2 connections (issue 23): what Baton
//! announces (`max_concurrent_streams`, `initial_stream_window_size` in SETTINGS,
//! `initial_connection_window_size` as the connection's WINDOW_UPDATE) and
//! `connection_keepalive` PINGs, a connection that leaves them unanswered being closed. Read off
//! raw frames from an h2c prior-knowledge client.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// The next frame, or `None` when the connection closed.
async fn frame(s: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

async fn h2c(baton: &Baton) -> TcpStream {
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    s.write_all(PREFACE).await.expect("preface");
    s.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
        .await
        .expect("settings");
    s
}

async fn baton_with(options: Value) -> Baton {
    let config = Config::new()
        .hcm("http2_protocol_options", options)
        .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}));
    Baton::start(&config.render()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_stream_limit_are_announced() {
    let baton = baton_with(json!({
        "max_concurrent_streams": 7,
        "initial_stream_window_size": 131072,
        "initial_connection_window_size": 1048576
    }))
    .await;
    let mut s = h2c(&baton).await;
    let (mut settings, mut conn_window) = (Vec::new(), None);
    within(5, "SETTINGS and WINDOW_UPDATE", async {
        while settings.is_empty() || conn_window.is_none() {
            let f = frame(&mut s).await.expect("a frame");
            match f.kind {
                SETTINGS if f.flags & 1 == 0 => {
                    for p in f.payload.chunks(6) {
                        let id = u16::from_be_bytes([p[0], p[1]]);
                        let v = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                        settings.push((id, v));
                    }
                }
                WINDOW_UPDATE if f.stream == 0 => {
                    let p = &f.payload;
                    conn_window = Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(settings.contains(&(3, 7)), "{settings:?}");
    assert!(settings.contains(&(4, 131072)), "{settings:?}");
    assert_eq!(conn_window, Some(1048576 - 65535));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_keepalive_pings_close_the_connection() {
    let baton = baton_with(json!({
        "connection_keepalive": {"interval": "0.2s", "timeout": "0.2s"}
    }))
    .await;
    let mut s = h2c(&baton).await;
    let mut pinged = false;
    within(5, "a PING, then the close", async {
        loop {
            match frame(&mut s).await {
                None => break,
                Some(f) if f.kind == PING && f.flags & 1 == 0 => pinged = true,
                Some(f) if f.kind == GOAWAY => {}
                Some(f) if f.kind == SETTINGS && f.flags & 1 == 0 => {
                    s.write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0])
                        .await
                        .expect("ack");
                }
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(pinged, "no keepalive PING before the close");
    // Without the option, no PING within the same time.
    let plain = baton_with(json!({})).await;
    let mut s = h2c(&plain).await;
    let quiet = tokio::time::timeout(Duration::from_millis(800), async {
        while let Some(f) = frame(&mut s).await {
            if f.kind == PING {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        !matches!(quiet, Ok(true)),
        "a PING without connection_keepalive"
    );
}

#[test]
fn out_of_range_values_are_refused_with_their_path() {
    for (o, want) in [
        (
            json!({"max_concurrent_streams": 0}),
            "http2_protocol_options.max_concurrent_streams",
        ),
        (
            json!({"initial_stream_window_size": 100}),
            "http2_protocol_options.initial_stream_window_size",
        ),
        (json!({"hpack_table_size": 100}), "hpack_table_size"),
    ] {
        let config = Config::new()
            .hcm("http2_protocol_options", o.clone())
            .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}));
        let (status, err) = validate_config(&config.render());
        assert!(!status.success(), "{o} accepted");
        assert!(err.contains(want), "{o}: {err}");
    }
}
