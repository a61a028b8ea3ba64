//! A gRPC health check (`grpc_health_check`): `grpc.health.v1.Health/Check` over HTTP/2 on a
//! connection kept from one check to the next while it stays usable.
//!
//! As Envoy 1.40 does (measured): the check passes only on a `200` with a gRPC content type,
//! a `HealthCheckResponse` saying `SERVING` and `grpc-status: 0`; any other answer
//! (`NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN`, a non-zero `grpc-status`, a non-200) takes the
//! host out at once, like an unexpected HTTP status; no answer counts as a network failure.
//!
//! The two messages are prost derives (no `.proto`, no build step): two fields in all.

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use prost::Message;

use super::conn::Connect;
use super::state::Outcome;
use crate::config::GrpcCheck;

/// The method every check calls.
const PATH: &str = "/grpc.health.v1.Health/Check";
/// The most of a response body read.
const MAX_BODY: usize = 64 * 1024;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct HealthCheckResponse {
    /// `ServingStatus`: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `ServingStatus.SERVING`.
pub(super) const SERVING: i32 = 1;

/// The probing side of one host's gRPC checks.
#[derive(Debug)]
pub(super) struct GrpcProber {
    uri: Uri,
    /// The request's body: one length-prefixed, uncompressed message.
    body: Bytes,
    connect: Connect,
    reuse: bool,
    conn: Option<SendRequest<Full<Bytes>>>,
}

// === impl GrpcProber ===

impl GrpcProber {
    /// `authority`: the check's, else the cluster's name. `None` if they make no URI
    /// (validated before).
    pub(super) fn new(
        check: &GrpcCheck,
        authority: &str,
        connect: Connect,
        reuse: bool,
    ) -> Option<Self> {
        let scheme = if connect.is_tls() { "https" } else { "http" };
        let uri = format!("{scheme}://{authority}{PATH}").parse().ok()?;
        let msg = HealthCheckRequest {
            service: check.service_name.clone(),
        };
        Some(Self {
            uri,
            body: frame(&msg),
            connect,
            reuse,
            conn: None,
        })
    }

    pub(super) async fn probe(&mut self, addr: SocketAddr) -> Outcome {
        let mut sender = match self.conn.take() {
            Some(s) if s.is_ready() => s,
            _ => match super::h2::handshake(&self.connect, addr).await {
                Some(s) => s,
                None => return Outcome::Network,
            },
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, super::probe::USER_AGENT)
            .body(Full::new(self.body.clone()));
        let Ok(req) = req else {
            return Outcome::Failure;
        };
        let Ok(resp) = sender.send_request(req).await else {
            return Outcome::Network;
        };
        let (head, body) = resp.into_parts();
        let outcome = if head.status != http::StatusCode::OK || !is_grpc(&head.headers) {
            Outcome::Failure
        } else if head.headers.contains_key("grpc-status") {
            // Trailers-only: the status is in the head, there is no message.
            Outcome::Failure
        } else {
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(c) => {
                    let trailers = c.trailers().cloned().unwrap_or_default();
                    judge(c.to_bytes(), &trailers)
                }
                Err(e) if e.is::<hyper::Error>() => Outcome::Network,
                Err(_) => Outcome::Failure,
            }
        };
        if self.reuse && outcome != Outcome::Network {
            self.conn = Some(sender);
        }
        outcome
    }

    pub(super) fn reset(&mut self) {
        self.conn = None;
    }
}

/// `message` as a gRPC length-prefixed message, uncompressed.
fn frame(message: &HealthCheckRequest) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message
        .encode(&mut buf)
        .expect("the buffer has the message's length");
    buf.freeze()
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct == "application/grpc" || ct.starts_with("application/grpc+"))
}

/// A whole response's body and trailers: one uncompressed `SERVING` message and status 0.
pub(super) fn judge(mut body: Bytes, trailers: &HeaderMap) -> Outcome {
    let ok_status = trailers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"0");
    if !ok_status || body.len() < 5 || body[0] != 0 {
        return Outcome::Failure;
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    if body.len() != len {
        return Outcome::Failure;
    }
    match HealthCheckResponse::decode(body) {
        Ok(r) if r.status == SERVING => Outcome::Success,
        _ => Outcome::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: i32) -> Bytes {
        let msg = HealthCheckResponse { status };
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(msg.encoded_len() as u32);
        msg.encode(&mut b).unwrap();
        b.freeze()
    }

    fn ok() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "0".parse().unwrap());
        h
    }

    #[test]
    fn the_request_is_one_framed_message() {
        let body = frame(&HealthCheckRequest {
            service: "svc.A".into(),
        });
        // Uncompressed, 7 bytes: field 1, length-delimited, 5 bytes.
        assert_eq!(&body[..], b"\0\0\0\0\x07\x0a\x05svc.A");
        let empty = frame(&HealthCheckRequest::default());
        assert_eq!(&empty[..], b"\0\0\0\0\0");
    }

    #[test]
    fn only_serving_with_status_zero_passes() {
        assert_eq!(judge(response(SERVING), &ok()), Outcome::Success);
        for other in [0, 2, 3, 7] {
            assert_eq!(judge(response(other), &ok()), Outcome::Failure, "{other}");
        }
        let mut failed = HeaderMap::new();
        failed.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(judge(response(SERVING), &failed), Outcome::Failure);
        assert_eq!(
            judge(response(SERVING), &HeaderMap::new()),
            Outcome::Failure
        );
        assert_eq!(judge(Bytes::new(), &ok()), Outcome::Failure);
        let mut truncated = response(SERVING).to_vec();
        truncated.pop();
        assert_eq!(judge(truncated.into(), &ok()), Outcome::Failure);
        let mut compressed = response(SERVING).to_vec();
        compressed[0] = 1;
        assert_eq!(judge(compressed.into(), &ok()), Outcome::Failure);
    }
}
