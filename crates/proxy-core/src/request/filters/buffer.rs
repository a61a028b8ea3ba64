//! `envoy.filters.http.buffer`: the request body is read whole before the request goes on;
//! one longer than `max_request_bytes` is answered 413 (`downstream_rq_too_large`). A request
//! without `content-length` gets one, as Envoy's filter adds it. Trailers are kept and follow
//! the body upstream.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;

use crate::body::{BodyFault, ProxyBody, RequestBody, Trailed};
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
    let (bytes, trailers) = match read {
        Ok(Some(b)) => b,
        Ok(None) => return Err(Box::new(too_large(cx))),
        Err(fault) => return Err(Box::new(body_fault_reply(cx, fault, tracker))),
    };
    let headers = req.headers_mut();
    if !headers.contains_key(header::CONTENT_LENGTH) {
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    *req.body_mut() = match trailers {
        None => RequestBody::Full(Some(bytes)),
        Some(t) => RequestBody::Trailed(Box::new(Trailed {
            data: Some(bytes),
            trailers: Some(t),
        })),
    };
    Ok(())
}

/// The body's data and trailers, or `None` once it passes `max` bytes.
async fn read_whole(
    mut body: RequestBody,
    max: usize,
) -> Result<Option<(Bytes, Option<HeaderMap>)>, BodyFault> {
    let mut buf = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyFault::of(&e))?;
        match frame.into_data() {
            Ok(data) => {
                if buf.len() + data.len() > max {
                    return Ok(None);
                }
                buf.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
    Ok(Some((buf.freeze(), trailers)))
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
