//! `envoy.filters.http.buffer`: the request body is read whole before the request goes on;
//! one longer than `max_request_bytes` is answered 413 (`downstream_rq_too_large`). A request
//! without `content-length` gets one, as Envoy's filter adds it.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;

use crate::body::{BodyFault, ProxyBody, RequestBody};
use crate::config::{BufferFilter, BufferPerRoute};
use crate::context::Ctx;

use super::super::forward::{body_fault_reply, request_deadline, request_timeout_reply};
use super::super::local::local_reply;
use super::super::tracker::Tracker;

/// Envoy's body for the 413.
const TOO_LARGE: &[u8] = b"Payload Too Large";

pub(super) async fn decode(
    cx: Ctx<'_>,
    filter: &BufferFilter,
    per_route: Option<&BufferPerRoute>,
    req: &mut Request<RequestBody>,
    tracker: &mut Tracker,
) -> Result<(), Box<Response<ProxyBody>>> {
    let max = match per_route {
        Some(BufferPerRoute::Disabled) => return Ok(()),
        Some(BufferPerRoute::Buffer(b)) => b.max_request_bytes,
        None => filter.max_request_bytes,
    } as usize;
    if req.body().is_end_stream() {
        return Ok(());
    }
    let body = std::mem::replace(req.body_mut(), RequestBody::Empty);
    let read = read_whole(body, max);
    let read = match request_deadline(cx, tracker) {
        Some(d) => match tokio::time::timeout_at(d, read).await {
            Ok(r) => r,
            Err(_) => return Err(Box::new(request_timeout_reply(cx, tracker))),
        },
        None => read.await,
    };
    let bytes = match read {
        Ok(Some(b)) => b,
        Ok(None) => return Err(Box::new(too_large(cx))),
        Err(fault) => return Err(Box::new(body_fault_reply(cx, fault, tracker))),
    };
    let headers = req.headers_mut();
    if !headers.contains_key(header::CONTENT_LENGTH) {
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    *req.body_mut() = RequestBody::Full(Some(bytes));
    Ok(())
}

/// The body's data, or `None` once it passes `max` bytes.
async fn read_whole(mut body: RequestBody, max: usize) -> Result<Option<Bytes>, BodyFault> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyFault::of(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf.freeze()))
}

/// Envoy's 413; an HTTP/1.1 connection closes after it (the rest of the body is unread).
fn too_large(cx: Ctx<'_>) -> Response<ProxyBody> {
    cx.l.http_stats.downstream_rq_too_large.inc();
    let mut resp = local_reply(StatusCode::PAYLOAD_TOO_LARGE, Bytes::from_static(TOO_LARGE));
    if !cx.c.http2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
