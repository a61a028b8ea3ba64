//! Reading ahead in a streamed request body before anything goes upstream.
//!
//! hyper's HTTP/1.1 session reads a body from the socket in the same task that runs the
//! request, only once the request asks for a frame. So whatever of the body the client has
//! already sent is read here, one frame after another, yielding to the session once whenever
//! no frame is in hand; the second empty poll in a row means the rest is still on its way and
//! forwarding starts. A framing error in what has arrived (a chunk size over 64 bits, a bare LF,
//! a missing CRLF) is then the client's 400 before any upstream connection is made, not a
//! truncated request on the upstream's wire.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http_body::{Body as _, Frame};
use hyper::body::Incoming;

use crate::body::BodyFault;

/// The frames of `body` already sent, up to about `cap` data bytes; `Err` if the body failed.
pub(super) async fn read_ahead(
    body: &mut Incoming,
    cap: usize,
) -> Result<VecDeque<Frame<Bytes>>, BodyFault> {
    let mut ahead = VecDeque::new();
    let mut bytes = 0;
    let mut yielded = false;
    while bytes < cap && !body.is_end_stream() {
        match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(Some(Ok(frame))) => {
                yielded = false;
                bytes += frame.data_ref().map_or(0, Bytes::len);
                ahead.push_back(frame);
            }
            Poll::Ready(Some(Err(e))) => return Err(BodyFault::of(&e)),
            Poll::Ready(None) => break,
            Poll::Pending if !yielded => {
                yielded = true;
                tokio::task::yield_now().await;
            }
            Poll::Pending => break,
        }
    }
    Ok(ahead)
}
