//! Baton's own HTTP/1.1 server loop for the common downstream request: HTTP/1.1, no request
//! body, no protocol switch, no `Expect`. It parses the head, runs the request through
//! [`crate::request::handle`] and writes the response, with one read buffer and one write buffer
//! reused for the connection's life: per request no dispatcher, no body channel, no buffer
//! allocation, and the response head and a body already in hand leave in one write.
//!
//! Anything else is hyper's. The loop stops *before* touching a request it does not serve (a
//! body, an upgrade, HTTP/1.0, a malformed head or one over `max_request_headers_kb`: hyper
//! answers those, 400 and 431 included) and when the connection meets an event that hyper's session handles (a drain
//! asking it to close, a hand-over to the next generation, the idle timeout): the bytes it has
//! read but not served are put back in front of the IO and [`super::h1`] serves the rest
//! of the connection with hyper, exactly as if hyper had had it from the start.
//!
//! Like hyper's default (no half-close), a client that closes its side while its request is in
//! flight ends the request: the request's future is dropped and the connection closed.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::AsyncWriteExt;

use crate::body::{ProxyBody, RequestBody};
use crate::config::HeadTimeout;
use crate::context::{ConnCtx, ListenerShared};
use crate::handover::{Mode, ModeWaiter};
use crate::http1::fields::{hex_len, put_field};
use crate::http1::names::NameCache;
use crate::http1::request::{self, Parsed, Span};
use crate::http1::{encode, Framing, READ_SIZE};
use crate::io::ServerIo;

use super::slow::{count_head_timeout, head_timeout_bytes};
use super::svc::{HandleFuture, Svc};

/// Response data up to this size is copied into the write buffer (one write for head and
/// body); larger frames are written from their own buffer.
const COPY_MAX: usize = 16 * 1024;
/// A read buffer smaller than this is replaced before the first read.
const MIN_READ_BUF: usize = 2048;
/// Fields forwarding may add to a request's map.
const ADDED_FIELDS: usize = 6;
/// Field names remembered per thread.
const NAME_CACHE: usize = 32;

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The connection is over. `linger`: we close it after a response (`Connection: close`),
    /// so the peer should get a lingering close; otherwise the client closed or failed.
    Closed { linger: bool },
    /// hyper serves the rest of the connection; the unserved bytes are back in the IO.
    Fallback,
}

/// The connection's buffers.
struct Conn<'a> {
    io: &'a mut ServerIo,
    buf: BytesMut,
    wbuf: Vec<u8>,
    head_limit: usize,
}

/// Per-thread scratch space of the parser, shared by the thread's connections (none of it
/// lives across an await).
struct Scratch {
    /// The fields of the head being parsed.
    spans: Vec<Span>,
    /// Field names met on this thread, as sent: clients send the same names in the same case
    /// request after request, and comparing bytes is cheaper than parsing a name.
    names: NameCache,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { spans: Vec::new(), names: NameCache::new(NAME_CACHE) })
    };
}

/// What woke a connection waiting for a request.
enum Wake {
    Read(std::io::Result<usize>),
    /// An event hyper's session handles.
    Event,
    /// The hand-over ended: nothing to watch any more.
    ModesEnded,
    /// A request head was not complete in time.
    HeadTimeout,
}

/// Why [`Conn::read_head`] has no head to serve.
enum NoHead {
    /// The loop ends so.
    End(End),
    /// The head's deadline passed: it is answered 408.
    TimedOut(HeadTimeout),
}

/// What, besides the client's bytes, ends a wait for a request: the hand-over's mode, the
/// drain asking the connection to close, the idle timeout.
struct Events<'a, C> {
    /// The hand-over's mode, while the connection is registered for it.
    modes: Option<ModeWaiter>,
    close_requested: Pin<&'a mut C>,
    idle: Option<Duration>,
    idle_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The time a request head may take from its first byte, and which timeout that is.
    head: Option<(Duration, HeadTimeout)>,
    /// Armed at a head's first byte, until the head is complete.
    head_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    head_armed: bool,
    ctx: &'a ConnCtx,
}

// === impl Events ===

impl<C: Future> Events<'_, C> {
    fn mode(&self) -> Mode {
        self.modes.as_ref().map_or(Mode::Off, |m| m.mode())
    }

    /// No successor will take the connection: drained as usual from here.
    fn modes_ended(&mut self) {
        self.modes = None;
        self.ctx.movable.set(false);
    }

    /// A request head has begun: its deadline starts now (once per head).
    fn head_started(&mut self) {
        let Some((limit, _)) = self.head else {
            return;
        };
        if self.head_armed {
            return;
        }
        self.head_armed = true;
        let at = tokio::time::Instant::now() + limit;
        match &mut self.head_sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.head_sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Ready with the first event, `seen` being the mode before the wait.
    fn poll(&mut self, cx: &mut Context<'_>, seen: Mode) -> Poll<Wake> {
        if let Some(m) = &self.modes {
            match m.poll_change(cx, seen) {
                Poll::Ready(Mode::Ended) => return Poll::Ready(Wake::ModesEnded),
                Poll::Ready(_) => return Poll::Ready(Wake::Event),
                Poll::Pending => {}
            }
        }
        if self.close_requested.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Event);
        }
        if self.head_armed {
            // A head under way: its stream exists, so the connection is not idle.
            let sleep = self.head_sleep.as_mut().expect("armed with a timer");
            return match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Wake::HeadTimeout),
                Poll::Pending => Poll::Pending,
            };
        }
        let Some(idle) = self.idle else {
            return Poll::Pending;
        };
        let ctx = self.ctx;
        let sleep = self.idle_sleep.get_or_insert_with(|| {
            let since = ctx.last_active.get().elapsed();
            Box::pin(tokio::time::sleep(idle.saturating_sub(since)))
        });
        if sleep.as_mut().poll(cx).is_ready() {
            let since = ctx.last_active.get().elapsed();
            if since >= idle {
                return Poll::Ready(Wake::Event);
            }
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + (idle - since));
            // Registers the timer's waker again.
            let _ = sleep.as_mut().poll(cx);
        }
        Poll::Pending
    }
}

/// Serve requests on `io` until the connection ends or hyper must take it over (see the module
/// documentation). `watch_modes`: the connection is registered for the hand-over.
pub(crate) async fn serve<F: HandleFuture>(
    io: &mut ServerIo,
    svc: &Svc<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
    watch_modes: bool,
) -> End {
    // The bytes read to tell HTTP/1 from HTTP/2 are in a buffer of their own: it becomes the
    // read buffer, and grows only if a head needs more.
    let buf = match io.take_prefix().try_into_mut() {
        Ok(b) if b.capacity() >= MIN_READ_BUF => b,
        Ok(b) => with_room(&b),
        Err(b) => with_room(&b),
    };
    let mut conn = Conn {
        io,
        buf,
        wbuf: Vec::with_capacity(512),
        head_limit: l.http.max_request_head(),
    };
    let end = conn.run(svc, l, ctx, watch_modes).await;
    if end == End::Fallback {
        let rest = std::mem::take(&mut conn.buf).freeze();
        conn.io.prepend(rest);
    }
    end
}

// === impl Conn ===

impl Conn<'_> {
    async fn run<F: HandleFuture>(
        &mut self,
        svc: &Svc<F>,
        l: &ListenerShared,
        ctx: &ConnCtx,
        watch_modes: bool,
    ) -> End {
        let mut drain = ctx.drain.clone();
        let close_requested = drain.close_requested();
        tokio::pin!(close_requested);
        let mut events = Events {
            modes: watch_modes.then(|| svc.w.modes.waiter()),
            close_requested,
            idle: l.http.idle_timeout,
            idle_sleep: None,
            head: l.http.head_deadline(),
            head_sleep: None,
            head_armed: false,
            ctx,
        };
        loop {
            // An idle point: what hyper's session does here (move the connection, close it for
            // a drain) is left to it.
            if events.mode() == Mode::Active || ctx.drain.is_asked() {
                return End::Fallback;
            }
            let head = match self.read_head(&mut events).await {
                Ok(head) => head,
                Err(NoHead::End(end)) => return end,
                Err(NoHead::TimedOut(which)) => return self.head_timed_out(l, ctx, which).await,
            };
            if let Some(end) = self.serve_one(svc, l, ctx, head).await {
                return end;
            }
        }
    }

    /// Read until the buffer holds a request head this loop serves. `Err`: how the loop ends
    /// instead (the client closed, or hyper takes over).
    async fn read_head<C: Future>(
        &mut self,
        events: &mut Events<'_, C>,
    ) -> Result<request::Head, NoHead> {
        let fallback = Err(NoHead::End(End::Fallback));
        loop {
            match self.parse() {
                // Possibly over `max_request_headers_kb` (its fields are no longer than the
                // head): hyper's session measures them, and answers 431 if so.
                Parsed::Head(h) if h.len > self.head_limit => return fallback,
                Parsed::Head(h) => {
                    events.head_armed = false;
                    return Ok(h);
                }
                Parsed::Hyper => return fallback,
                Parsed::Partial => {}
            }
            if self.buf.len() >= self.head_limit {
                return fallback;
            }
            if !self.buf.is_empty() {
                events.head_started();
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                self.buf.reserve(READ_SIZE);
            }
            let seen = events.mode();
            let wake = std::future::poll_fn(|cx| {
                let r = tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.buf);
                if let Poll::Ready(r) = r {
                    return Poll::Ready(Wake::Read(r));
                }
                events.poll(cx, seen)
            })
            .await;
            match wake {
                Wake::Read(Ok(0)) => {
                    // A clean close between requests; a truncated head is hyper's to judge.
                    if self.buf.is_empty() {
                        return Err(NoHead::End(End::Closed { linger: false }));
                    }
                    return fallback;
                }
                Wake::Read(Ok(_)) => {}
                Wake::Read(Err(e)) => {
                    let remote = events.ctx.remote;
                    tracing::debug!(%remote, error = %e, "downstream read failed");
                    return Err(NoHead::End(End::Closed { linger: false }));
                }
                Wake::Event => return fallback,
                Wake::ModesEnded => events.modes_ended(),
                Wake::HeadTimeout => {
                    let which = events.head.map_or(HeadTimeout::Headers, |(_, w)| w);
                    return Err(NoHead::TimedOut(which));
                }
            }
        }
    }

    /// A request head was not complete in time: 408 with Envoy's words for the timeout, and
    /// the connection closes.
    #[cold]
    async fn head_timed_out(
        &mut self,
        l: &ListenerShared,
        ctx: &ConnCtx,
        which: HeadTimeout,
    ) -> End {
        tracing::debug!(remote = %ctx.remote, ?which, "request head timed out");
        count_head_timeout(l, which);
        // Written as bytes rather than through `respond`, whose one call site (the request
        // path) keeps it inlined there.
        let written = self.io.write_all(&head_timeout_bytes(which, &l.http)).await;
        match written.and(self.io.flush().await) {
            Ok(()) => End::Closed { linger: true },
            Err(_) => End::Closed { linger: false },
        }
    }

    /// Serve the request `head` describes. `Some`: how the loop ends after it.
    async fn serve_one<F: HandleFuture>(
        &mut self,
        svc: &Svc<F>,
        l: &ListenerShared,
        ctx: &ConnCtx,
        head: request::Head,
    ) -> Option<End> {
        let close = head.close;
        let te_trailers = head.te_trailers;
        let method_head = head.method == Method::HEAD;
        let Some(req) = self.request(&head) else {
            return Some(End::Fallback);
        };
        let Some(resp) = self.in_flight(svc.call_with(req)).await else {
            // The client closed with its request in flight.
            return Some(End::Closed { linger: false });
        };
        match self.respond(resp, method_head, close, te_trailers).await {
            Ok(true) => None,
            Ok(false) => {
                if !close && ctx.drain.is_asked() && !ctx.drain.asked_by_limit() {
                    // The drain's `Connection: close` (hyper's session counts its own).
                    l.http_stats.downstream_cx_drain_close.inc();
                }
                Some(End::Closed { linger: true })
            }
            Err(e) => {
                tracing::debug!(remote = %ctx.remote, error = %e, "downstream write failed");
                Some(End::Closed { linger: false })
            }
        }
    }

    /// Parse a request head from the buffer, and decide whether this loop serves it.
    fn parse(&mut self) -> Parsed {
        if self.buf.is_empty() {
            return Parsed::Partial;
        }
        // The scratch space is taken out of (and put back into) the thread's: a pointer's
        // move each way, where a closure would copy the verdict out.
        let mut spans = SCRATCH.with_borrow_mut(|s| std::mem::take(&mut s.spans));
        let verdict = request::parse(&self.buf, &mut spans);
        SCRATCH.with_borrow_mut(|s| s.spans = spans);
        verdict
    }

    /// The request whose head was parsed; `None` when a part of it does not convert (hyper
    /// then judges it).
    fn request(&mut self, head: &request::Head) -> Option<Request<RequestBody>> {
        if let Some(refusal) = head.refusal {
            // Answered as refused (and the connection closed): nothing of it is used.
            drop(self.buf.split_to(head.len));
            let mut req = Request::new(RequestBody::Empty);
            req.extensions_mut().insert(refusal);
            return Some(req);
        }
        let raw = self.buf.split_to(head.len).freeze();
        // Room for what forwarding adds (x-request-id, x-forwarded-*, x-envoy-*) without a
        // rehash.
        let mut req = Request::new(RequestBody::Empty);
        let filled = SCRATCH.with_borrow_mut(|scratch| {
            let Scratch { spans, names } = scratch;
            request::fill(&mut req, head, &raw, spans, names, ADDED_FIELDS)
        });
        if !filled {
            self.unsplit(raw);
            return None;
        }
        Some(req)
    }

    /// Put a split-off head back in front of the buffer (for hyper to read).
    fn unsplit(&mut self, raw: Bytes) {
        let mut joined = BytesMut::with_capacity(raw.len() + self.buf.len());
        joined.extend_from_slice(&raw);
        joined.extend_from_slice(&self.buf);
        self.buf = joined;
    }

    /// Drive the request's future; meanwhile read what the client sends (a pipelined request,
    /// kept) so that a close is seen. `None`: the client closed or failed.
    async fn in_flight<Fut>(&mut self, fut: Fut) -> Option<Response<ProxyBody>>
    where
        Fut: Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>> + Unpin,
    {
        let mut fut = fut;
        let mut watching = true;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = Pin::new(&mut fut).poll(cx) {
                return Poll::Ready(Some(match r {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }));
            }
            // Only into the room the buffer has: pipelined requests are not read without
            // bound while one is served.
            while watching && self.buf.capacity() > self.buf.len() {
                match tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
            watching = false;
            Poll::Pending
        })
        .await
    }

    /// Write the response. `Ok(true)`: the connection stays open for the next request.
    async fn respond(
        &mut self,
        resp: Response<ProxyBody>,
        head_request: bool,
        request_close: bool,
        te_trailers: bool,
    ) -> std::io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        let (framing, keep_alive) = encode::response_head(
            &mut self.wbuf,
            &parts,
            http_body::Body::size_hint(&body).exact(),
            head_request,
            request_close,
        );
        crate::header_pool::give(parts.headers);
        if framing == Framing::None {
            // Nothing of it goes out; dropping it tells its owner how far it got.
            drop(body);
            self.flush().await?;
            return Ok(keep_alive);
        }
        let mut sent: u64 = 0;
        loop {
            let wbuf_empty = self.wbuf.is_empty();
            let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                // Whatever is ready goes out with the head; then wait for the rest.
                Poll::Pending if !wbuf_empty => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
                Poll::Ready(f) => Poll::Ready(Some(f)),
            })
            .await;
            let frame = match next {
                None => {
                    self.flush().await?;
                    continue;
                }
                Some(None) => break,
                Some(Some(Ok(frame))) => frame,
                Some(Some(Err(e))) => {
                    // The response cannot be completed: the connection is cut, as hyper does.
                    return Err(std::io::Error::other(e));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    sent += data.len() as u64;
                    if let Framing::Length(n) = framing {
                        if sent > n {
                            return Err(std::io::Error::other(
                                "response body longer than its content-length",
                            ));
                        }
                    }
                    self.write_data(framing, data).await?;
                }
                Err(frame) => {
                    if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                        if te_trailers {
                            self.wbuf.extend_from_slice(b"0\r\n");
                            for (name, value) in &trailers {
                                put_field(
                                    &mut self.wbuf,
                                    name.as_str().as_bytes(),
                                    value.as_bytes(),
                                );
                            }
                            self.wbuf.extend_from_slice(b"\r\n");
                            self.flush().await?;
                            return Ok(keep_alive);
                        }
                    }
                }
            }
        }
        match framing {
            Framing::Chunked => self.wbuf.extend_from_slice(b"0\r\n\r\n"),
            Framing::Length(n) if sent != n => {
                return Err(std::io::Error::other(
                    "response body shorter than its content-length",
                ));
            }
            _ => {}
        }
        self.flush().await?;
        Ok(keep_alive && framing != Framing::Close)
    }

    async fn write_data(&mut self, framing: Framing, data: Bytes) -> std::io::Result<()> {
        if framing == Framing::Chunked {
            let mut hex = [0u8; 16];
            self.wbuf.extend_from_slice(hex_len(data.len(), &mut hex));
            self.wbuf.extend_from_slice(b"\r\n");
        }
        if data.len() <= COPY_MAX {
            self.wbuf.extend_from_slice(&data);
        } else {
            self.flush().await?;
            self.io.write_all(&data).await?;
        }
        if framing == Framing::Chunked {
            self.wbuf.extend_from_slice(b"\r\n");
        }
        if self.wbuf.len() >= COPY_MAX {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await
    }
}

/// A new read buffer holding `bytes`.
fn with_room(bytes: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(READ_SIZE.max(bytes.len()));
    b.extend_from_slice(bytes);
    b
}
