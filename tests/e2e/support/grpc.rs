//! A gRPC health server (`grpc.health.v1.Health/Check`) on hyper's HTTP/2 server, for gRPC
//! health checks: it knows one service (`svc.A`) and the server as a whole (`""`), answers
//! `SERVING`, or `NOT_SERVING` while [`Upstream::set_failing`] says so, and `NOT_FOUND`
//! (trailers-only) for any other service. Every other path is echoed.
//!
//! The two messages are encoded by hand (a single field each), independently of the proxy's
//! own encoding.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::client::{channel_body, empty, Body};
use super::upstream::{echo_handler, record, Proto, State, Upstream};

/// The one service the server knows by name.
pub const KNOWN_SERVICE: &str = "svc.A";

impl Upstream {
    /// A gRPC health server named `name` (the echo's `x-upstream`).
    pub async fn grpc_health(name: &str) -> Self {
        let echo = echo_handler(name);
        Upstream::serve(
            Proto::H2,
            Arc::new(move |req, st| {
                if req.uri().path() != "/grpc.health.v1.Health/Check" {
                    return echo(req, st);
                }
                record(&req, &st);
                st.health_hits.fetch_add(1, Ordering::SeqCst);
                Box::pin(check(req, st))
            }),
        )
        .await
    }
}

async fn check(req: hyper::Request<Incoming>, st: Arc<State>) -> Response<Body> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return grpc_status(13),
    };
    let Some(service) = decode_request(&body) else {
        return grpc_status(13);
    };
    if service != KNOWN_SERVICE && !service.is_empty() {
        return grpc_status(5);
    }
    let serving = if st.failing.load(Ordering::SeqCst) {
        2
    } else {
        1
    };
    let (mut tx, body) = channel_body(2);
    tokio::spawn(async move {
        // HealthCheckResponse { status }: field 1, varint; framed uncompressed.
        let msg = [0u8, 0, 0, 0, 2, 0x08, serving];
        let _ = tx.send_data(Bytes::copy_from_slice(&msg)).await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        let _ = tx.send_trailers(trailers).await;
    });
    grpc_response(body)
}

/// A trailers-only answer: the status in the head, no message.
fn grpc_status(code: u8) -> Response<Body> {
    let mut r = grpc_response(empty());
    r.headers_mut()
        .insert("grpc-status", code.to_string().parse().expect("value"));
    r
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "application/grpc".parse().expect("value"));
    r
}

/// `HealthCheckRequest.service` of one framed, uncompressed message.
fn decode_request(body: &[u8]) -> Option<String> {
    let (head, msg) = body.split_at_checked(5)?;
    let len = u32::from_be_bytes(head[1..5].try_into().ok()?) as usize;
    if head[0] != 0 || msg.len() != len {
        return None;
    }
    if msg.is_empty() {
        return Some(String::new());
    }
    // Field 1, wire type 2, a one-byte length (names under 128 bytes).
    let (&[0x0a, n], rest) = msg.split_at_checked(2)? else {
        return None;
    };
    (rest.len() == usize::from(n)).then(|| String::from_utf8_lossy(rest).into_owned())
}
