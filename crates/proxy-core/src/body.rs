//! The body type every proxied message uses, in both directions: a streamed hyper body, a
//! fixed buffer (local replies, replayable retries) or nothing — counting the bytes that pass
//! and telling a [`Finish`] hook when the stream ends or is dropped.
//!
//! Frames are passed through one at a time, so backpressure is hyper's: nothing is buffered
//! beyond the frame in hand.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use std::collections::VecDeque;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::client::H1Body;

mod recode;

pub use recode::Recode;

/// Called once when a body ends (`complete`) or is dropped before its end; `timed_out` says
/// whether one of the body's own timeouts ended it.
pub trait Finish {
    fn finish(self: Box<Self>, bytes: u64, complete: bool, timed_out: Option<BodyTimeout>);
}

/// The error a proxied body ends with: the peer's, or one of its timeouts.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Timeouts of a streamed body: no frame for `idle` (Envoy's `stream_idle_timeout`), or not
/// finished by `deadline` (`request_timeout`). The timer is only armed while the body waits,
/// so a body that is already there costs no timer.
#[derive(Debug)]
pub struct BodyTimers {
    idle: Option<Duration>,
    deadline: Option<Instant>,
    last_frame: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Which timeout ended the body, if one did.
    expired: Option<BodyTimeout>,
    /// Shares `expired` with an owner other than the body's [`Finish`] (the request body's,
    /// to answer 408).
    fired: Option<Rc<Cell<Option<BodyTimeout>>>>,
}

/// Which timeout ended a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTimeout {
    Idle,
    Deadline,
}

/// A body's timeout, as an error hyper passes on.
#[derive(Debug, thiserror::Error)]
#[error("could not finish the stream: {0:?} timeout")]
pub struct TimeoutError(pub BodyTimeout);

/// Why a downstream request body ended before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// Its framing was wrong (a chunk size line, a missing CRLF): the client's error, 400.
    Malformed,
    /// The client went away in the middle of it.
    Incomplete,
}

impl BodyFault {
    /// hyper says "incomplete message" of a body cut before its declared length, and gives an
    /// `UnexpectedEof` of a chunked one cut in the middle.
    pub fn of(e: &hyper::Error) -> Self {
        let eof = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
        if e.is_incomplete_message() || eof {
            BodyFault::Incomplete
        } else {
            BodyFault::Malformed
        }
    }
}

/// A downstream request's body as forwarding streams it: the frames read ahead before the
/// upstream was chosen, then the rest as it arrives. A fault of the client's is recorded in
/// `fault`, so the request is answered for what it is (400), not as an upstream failure.
#[derive(Debug)]
pub struct RequestStream {
    pub ahead: VecDeque<Frame<Bytes>>,
    pub rest: Incoming,
    pub fault: Rc<Cell<Option<BodyFault>>>,
}

/// A downstream request's body: hyper's, or none (a request read by Baton's own HTTP/1.1
/// server, which only takes requests without a body), or one an HTTP filter read whole (the
/// buffer filter), handed out once, with the trailers that followed it if any.
#[derive(Debug)]
pub enum RequestBody {
    Hyper(Incoming),
    Empty,
    Full(Option<Bytes>),
    /// Read whole and followed by trailers: the data, then the trailers (boxed: rare).
    Trailed(Box<Trailed>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Trailed(t) => Poll::Ready(t.next_frame().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::Empty => true,
            RequestBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            RequestBody::Trailed(t) => t.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Trailed(t) => t.size_hint(),
        }
    }
}

/// A body held in memory with its trailers.
#[derive(Debug)]
pub struct Trailed {
    pub data: Option<Bytes>,
    pub trailers: Option<http::HeaderMap>,
}

impl Trailed {
    /// The next frame: the data (unless empty), then the trailers.
    fn next_frame(&mut self) -> Option<Frame<Bytes>> {
        match self.data.take() {
            Some(b) if !b.is_empty() => Some(Frame::data(b)),
            _ => self.trailers.take().map(Frame::trailers),
        }
    }

    fn is_end(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// A proxied body. `!Send`: it lives on one worker thread.
pub struct ProxyBody {
    kind: Kind,
    timers: Option<Box<BodyTimers>>,
    bytes: u64,
    /// Shared with whoever needs the running count (the access log of the other direction).
    counter: Option<Rc<Cell<u64>>>,
    finish: Option<Box<dyn Finish>>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    /// Data in memory, then trailers (boxed: rare).
    Trailed(Box<Trailed>),
    Stream(Incoming),
    Request(Box<RequestStream>),
    UpstreamH1(H1Body),
    /// Another body, its data re-coded (an HTTP filter's compression).
    Recoded(Box<recode::Recoded>),
    /// Another body, with state that lives as long as it does (an HTTP filter's).
    Holding(Box<(ProxyBody, Box<dyn std::any::Any>)>),
}

// === impl ProxyBody ===

impl ProxyBody {
    pub fn empty() -> Self {
        Self::with_kind(Kind::Empty)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        if b.is_empty() {
            Self::empty()
        } else {
            Self::with_kind(Kind::Full(Some(b)))
        }
    }

    pub fn stream(body: Incoming) -> Self {
        Self::with_kind(Kind::Stream(body))
    }

    /// A downstream request's body, streamed.
    pub fn request(body: RequestBody) -> Self {
        match body {
            RequestBody::Hyper(b) => Self::stream(b),
            RequestBody::Empty | RequestBody::Full(None) => Self::empty(),
            RequestBody::Full(Some(b)) => Self::full(b),
            RequestBody::Trailed(t) => Self::with_kind(Kind::Trailed(t)),
        }
    }

    /// `data` then `trailers` (none: a plain [`full`](Self::full) body).
    pub fn trailed(data: Bytes, trailers: Option<http::HeaderMap>) -> Self {
        match trailers {
            None => Self::full(data),
            Some(t) => Self::with_kind(Kind::Trailed(Box::new(Trailed {
                data: Some(data),
                trailers: Some(t),
            }))),
        }
    }

    /// A downstream request's body, streamed after the frames already read.
    pub fn request_stream(body: RequestStream) -> Self {
        Self::with_kind(Kind::Request(Box::new(body)))
    }

    /// A response body read by Baton's own upstream HTTP/1.1 client.
    pub fn upstream_h1(body: H1Body) -> Self {
        Self::with_kind(Kind::UpstreamH1(body))
    }

    /// This body, its data passed through `coder` frame by frame; its length is then unknown.
    pub fn recode(self, coder: Box<dyn Recode>) -> Self {
        Self::with_kind(Kind::Recoded(Box::new(recode::Recoded::new(self, coder))))
    }

    /// This body, keeping `state` until it is dropped (a fault filter's active fault).
    pub fn holding(self, state: Box<dyn std::any::Any>) -> Self {
        Self::with_kind(Kind::Holding(Box::new((self, state))))
    }

    /// Whether the whole body is in memory (empty or one buffer).
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Empty | Kind::Full(_))
    }

    /// The in-memory body, if it is one (see [`is_buffered`](Self::is_buffered)).
    pub fn buffered(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Empty => Some(Bytes::new()),
            Kind::Full(b) => Some(b.clone().unwrap_or_default()),
            _ => None,
        }
    }

    fn with_kind(kind: Kind) -> Self {
        Self {
            kind,
            timers: None,
            bytes: 0,
            counter: None,
            finish: None,
        }
    }

    /// Add every data byte that passes to `counter` too.
    pub fn count_into(mut self, counter: Rc<Cell<u64>>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// End the body with an error when it has no frame for `idle` or is not done by
    /// `deadline`; which one fired is recorded in the returned cell.
    pub fn with_timeouts(
        mut self,
        idle: Option<Duration>,
        deadline: Option<Instant>,
    ) -> (Self, Rc<Cell<Option<BodyTimeout>>>) {
        let fired = Rc::new(Cell::new(None));
        self.set_timers(idle, deadline, Some(fired.clone()));
        (self, fired)
    }

    /// End the body with an error when it has no frame for `idle`; the body's [`Finish`] is
    /// told when that happened.
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.set_timers(idle, None, None);
        self
    }

    fn set_timers(
        &mut self,
        idle: Option<Duration>,
        deadline: Option<Instant>,
        fired: Option<Rc<Cell<Option<BodyTimeout>>>>,
    ) {
        if (idle.is_some() || deadline.is_some()) && !self.is_end_stream() {
            self.timers = Some(Box::new(BodyTimers {
                idle,
                deadline,
                last_frame: Instant::now(),
                sleep: None,
                expired: None,
                fired,
            }));
        }
    }

    /// Run `finish` when the body ends or is dropped. An empty body finishes once hyper sees
    /// its end (or drops it).
    pub fn on_finish(mut self, finish: Box<dyn Finish>) -> Self {
        self.finish = Some(finish);
        self
    }

    fn done(&mut self, complete: bool) {
        if let Some(f) = self.finish.take() {
            let timed_out = self.timers.as_ref().and_then(|t| t.expired);
            f.finish(self.bytes, complete, timed_out);
        }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(c) = &self.counter {
            c.set(c.get() + n as u64);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut polled: Poll<Option<Result<Frame<Bytes>, BodyError>>> = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Trailed(t) => Poll::Ready(t.next_frame().map(Ok)),
            Kind::Stream(s) => Pin::new(s)
                .poll_frame(cx)
                .map(|r| r.map(|f| f.map_err(BodyError::from))),
            Kind::Request(r) => r.poll_frame(cx),
            Kind::UpstreamH1(b) => b.poll_frame(cx),
            Kind::Recoded(r) => r.poll_frame(cx),
            Kind::Holding(h) => Pin::new(&mut h.0).poll_frame(cx),
        };
        if let Some(t) = this.timers.as_mut() {
            match &polled {
                Poll::Pending => {
                    if let Some(which) = t.poll_expired(cx) {
                        t.expired = Some(which);
                        if let Some(f) = &t.fired {
                            f.set(Some(which));
                        }
                        polled = Poll::Ready(Some(Err(Box::new(TimeoutError(which)))));
                    }
                }
                Poll::Ready(Some(Ok(_))) => t.last_frame = Instant::now(),
                Poll::Ready(_) => {}
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.add(d.len());
                }
                if this.is_end_stream() {
                    this.done(true);
                }
            }
            Poll::Ready(None) => this.done(true),
            Poll::Ready(Some(Err(_))) => this.done(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Trailed(t) => t.is_end(),
            Kind::Stream(s) => s.is_end_stream(),
            Kind::Request(r) => r.ahead.is_empty() && r.rest.is_end_stream(),
            Kind::UpstreamH1(b) => b.is_end_stream(),
            Kind::Recoded(r) => r.is_end_stream(),
            Kind::Holding(h) => h.0.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Trailed(t) => t.size_hint(),
            Kind::Stream(s) => s.size_hint(),
            Kind::Request(r) => r.size_hint(),
            Kind::UpstreamH1(b) => b.size_hint(),
            Kind::Recoded(_) => SizeHint::new(),
            Kind::Holding(h) => h.0.size_hint(),
        }
    }
}

// === impl RequestStream ===

impl RequestStream {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(f) = self.ahead.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        let polled = Pin::new(&mut self.rest).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            self.fault.set(Some(BodyFault::of(e)));
        }
        polled.map(|r| r.map(|f| f.map_err(BodyError::from)))
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .ahead
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

// === impl BodyTimers ===

impl BodyTimers {
    /// Arm (or re-arm) the timer for the earliest timeout; `Some` once one has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<BodyTimeout> {
        let idle_at = self.idle.map(|d| self.last_frame + d);
        let (at, which) = match (idle_at, self.deadline) {
            (Some(i), Some(d)) if d <= i => (d, BodyTimeout::Deadline),
            (Some(i), _) => (i, BodyTimeout::Idle),
            (None, Some(d)) => (d, BodyTimeout::Deadline),
            (None, None) => return None,
        };
        let sleep = match &mut self.sleep {
            Some(s) => {
                if s.deadline() != at {
                    s.as_mut().reset(at);
                }
                s
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        sleep.as_mut().poll(cx).is_ready().then_some(which)
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.done(complete);
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Trailed(..) => "trailed",
            Kind::Stream(_) => "stream",
            Kind::Request(_) => "request",
            Kind::UpstreamH1(_) => "upstream-h1",
            Kind::Recoded(_) => "recoded",
            Kind::Holding(_) => "holding",
        };
        f.debug_struct("ProxyBody")
            .field("kind", &kind)
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    struct Record(Rc<Cell<Option<(u64, bool)>>>);
    impl Finish for Record {
        fn finish(self: Box<Self>, bytes: u64, complete: bool, _: Option<BodyTimeout>) {
            self.0.set(Some((bytes, complete)));
        }
    }

    #[tokio::test]
    async fn full_body_counts_and_finishes_once() {
        let seen = Rc::new(Cell::new(None));
        let counter = Rc::new(Cell::new(0));
        let body = ProxyBody::full("hello")
            .count_into(counter.clone())
            .on_finish(Box::new(Record(seen.clone())));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(seen.get(), Some((5, true)));
        assert_eq!(counter.get(), 5);
    }

    #[test]
    fn dropped_early_is_incomplete() {
        let seen = Rc::new(Cell::new(None));
        drop(ProxyBody::full("x").on_finish(Box::new(Record(seen.clone()))));
        assert_eq!(seen.get(), Some((0, false)));
        let seen = Rc::new(Cell::new(None));
        drop(ProxyBody::empty().on_finish(Box::new(Record(seen.clone()))));
        assert_eq!(seen.get(), Some((0, true)));
    }
}
