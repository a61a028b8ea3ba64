//! Baton's own HTTP/1.1 server loop for the common downstream request: HTTP/1.1, no request
//! body, no protocol switch, no `Expect`. It parses the head, runs the request through
//! [`crate::proxy::handle`] and writes the response, with one read buffer and one write buffer
//! reused for the connection's life: per request no dispatcher, no body channel, no buffer
//! allocation, and the response head and a body already in hand leave in one write.
//!
//! Anything else is hyper's. The loop stops *before* touching a request it does not serve (a
//! body, an upgrade, HTTP/1.0, a malformed or oversized head: hyper answers those, 400 and 431
//! included) and when the connection meets an event that hyper's session handles (a drain
//! asking it to close, a hand-over to the next generation, the idle timeout): the bytes it has
//! read but not served are put back in front of the IO and [`crate::server`] serves the rest
//! of the connection with hyper, exactly as if hyper had had it from the start.
//!
//! Like hyper's default (no half-close), a client that closes its side while its request is in
//! flight ends the request: the request's future is dropped and the connection closed.

use std::cell::RefCell;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tokio::io::AsyncWriteExt;

use crate::body::{ProxyBody, RequestBody};
use crate::h1_client::{itoa_u64, parse_content_length};
use crate::handover::Mode;
use crate::io::ServerIo;
use crate::server::{ConnCtx, HandleFuture, ListenerShared, Svc};

/// Fields accepted in one request head (hyper's limit too); a head with more goes to hyper.
const MAX_HEADERS: usize = 100;
/// Fields this loop records per request; a head with more goes to hyper.
const MAX_SERVED_FIELDS: usize = 64;
/// Read-buffer space asked of the socket per read.
const READ_SIZE: usize = 8192;
/// Response data up to this size is copied into the write buffer (one write for head and
/// body); larger frames are written from their own buffer.
const COPY_MAX: usize = 16 * 1024;
/// hyper's smallest read-buffer limit, and so the smallest head limit.
const MIN_HEAD_LIMIT: usize = 8192;
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

/// A field's position in the head.
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// What a request head says beyond its fields.
struct Head {
    len: usize,
    method: Method,
    target: (u32, u32),
    fields: usize,
    close: bool,
    te_trailers: bool,
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes at all (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until we close the connection (a `content-length` that does not parse).
    Close,
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
    names: Vec<(Box<[u8]>, HeaderName)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { spans: Vec::new(), names: Vec::new() })
    };
}

/// What woke a connection waiting for a request.
enum Wake {
    Read(std::io::Result<usize>),
    /// An event hyper's session handles.
    Event,
    /// The hand-over ended: nothing to watch any more.
    ModesEnded,
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
        head_limit: (l.config.per_connection_buffer_limit_bytes as usize).max(MIN_HEAD_LIMIT),
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
        let mut modes = watch_modes.then(|| svc.w.modes.waiter());
        let mut drain = ctx.drain.clone();
        let close_requested = drain.close_requested();
        tokio::pin!(close_requested);
        let idle = l.config.http.idle_timeout;
        let mut idle_sleep: Option<Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            // An idle point: what hyper's session does here (move the connection, close it for
            // a drain) is left to it.
            if modes.as_ref().is_some_and(|m| m.mode() == Mode::Active) || ctx.drain.is_asked() {
                return End::Fallback;
            }
            let head = loop {
                match self.parse() {
                    Parsed::Head(h) => break h,
                    Parsed::Hyper => return End::Fallback,
                    Parsed::Partial => {}
                }
                if self.buf.len() >= self.head_limit {
                    return End::Fallback;
                }
                if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                    self.buf.reserve(READ_SIZE);
                }
                let seen = modes.as_ref().map_or(Mode::Off, |m| m.mode());
                let wake = std::future::poll_fn(|cx| {
                    let r =
                        tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.buf);
                    if let Poll::Ready(r) = r {
                        return Poll::Ready(Wake::Read(r));
                    }
                    if let Some(m) = &modes {
                        match m.poll_change(cx, seen) {
                            Poll::Ready(Mode::Ended) => return Poll::Ready(Wake::ModesEnded),
                            Poll::Ready(_) => return Poll::Ready(Wake::Event),
                            Poll::Pending => {}
                        }
                    }
                    if close_requested.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Event);
                    }
                    if let Some(idle) = idle {
                        let sleep = idle_sleep.get_or_insert_with(|| {
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
                    }
                    Poll::Pending
                })
                .await;
                match wake {
                    Wake::Read(Ok(0)) => {
                        // A clean close between requests; a truncated head is hyper's to judge.
                        if self.buf.is_empty() {
                            return End::Closed { linger: false };
                        }
                        return End::Fallback;
                    }
                    Wake::Read(Ok(_)) => {}
                    Wake::Read(Err(e)) => {
                        tracing::debug!(remote = %ctx.remote, error = %e, "downstream read failed");
                        return End::Closed { linger: false };
                    }
                    Wake::Event => return End::Fallback,
                    Wake::ModesEnded => {
                        // No successor will take it: drained as usual from here.
                        modes = None;
                        ctx.movable.set(false);
                    }
                }
            };
            let close = head.close;
            let te_trailers = head.te_trailers;
            let method_head = head.method == Method::HEAD;
            let Some(req) = self.request(head) else {
                return End::Fallback;
            };
            let Some(resp) = self.in_flight(svc.call_with(req)).await else {
                // The client closed with its request in flight.
                return End::Closed { linger: false };
            };
            match self.respond(resp, method_head, close, te_trailers).await {
                Ok(true) => {}
                Ok(false) => {
                    if !close && ctx.drain.is_asked() {
                        // The drain's `Connection: close` (hyper's session counts its own).
                        l.http_stats.downstream_cx_drain_close.inc();
                    }
                    return End::Closed { linger: true };
                }
                Err(e) => {
                    tracing::debug!(remote = %ctx.remote, error = %e, "downstream write failed");
                    return End::Closed { linger: false };
                }
            }
        }
    }

    /// Parse a request head from the buffer, and decide whether this loop serves it.
    fn parse(&mut self) -> Parsed {
        if self.buf.is_empty() {
            return Parsed::Partial;
        }
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut r = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut r, &self.buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            // hyper answers it (400, 431).
            Err(_) => return Parsed::Hyper,
        };
        if r.version != Some(1) || r.headers.len() > MAX_SERVED_FIELDS {
            return Parsed::Hyper;
        }
        let (Some(method), Some(path)) = (r.method, r.path) else {
            return Parsed::Hyper;
        };
        let method = match method {
            "GET" => Method::GET,
            "HEAD" => Method::HEAD,
            _ => match Method::from_bytes(method.as_bytes()) {
                Ok(m) if m != Method::CONNECT => m,
                _ => return Parsed::Hyper,
            },
        };
        if !path.starts_with('/') {
            // Absolute-form and asterisk-form targets.
            return Parsed::Hyper;
        }
        let base = self.buf.as_ptr() as usize;
        let span = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
        let mut close = false;
        let mut te_trailers = false;
        let mut length_seen = false;
        let mut scratch = SCRATCH.with_borrow_mut(|s| std::mem::take(&mut s.spans));
        scratch.clear();
        let verdict = 'fields: {
            for h in r.headers.iter() {
                let name = h.name.as_bytes();
                // The fields that decide framing, switching or keep-alive, by their length first.
                match name.len() {
                    2 if name.eq_ignore_ascii_case(b"te") => {
                        te_trailers = has_token(h.value, b"trailers");
                    }
                    6 if name.eq_ignore_ascii_case(b"expect") => break 'fields Parsed::Hyper,
                    7 if name.eq_ignore_ascii_case(b"upgrade") => break 'fields Parsed::Hyper,
                    10 if name.eq_ignore_ascii_case(b"connection") => {
                        if has_token(h.value, b"upgrade") {
                            break 'fields Parsed::Hyper;
                        }
                        close |= has_token(h.value, b"close");
                    }
                    14 if name.eq_ignore_ascii_case(b"content-length") => {
                        if length_seen || h.value.trim_ascii() != b"0" {
                            break 'fields Parsed::Hyper;
                        }
                        length_seen = true;
                    }
                    17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                        break 'fields Parsed::Hyper
                    }
                    _ => {}
                }
                scratch.push(Span {
                    name: span(name),
                    value: span(h.value),
                });
            }
            Parsed::Head(Head {
                len,
                method,
                target: span(path.as_bytes()),
                fields: r.headers.len(),
                close,
                te_trailers,
            })
        };
        SCRATCH.with_borrow_mut(|s| s.spans = scratch);
        verdict
    }

    /// The request whose head was parsed; `None` when a part of it does not convert (hyper
    /// then judges it).
    fn request(&mut self, head: Head) -> Option<Request<RequestBody>> {
        let raw = self.buf.split_to(head.len).freeze();
        let slice = |(start, len): (u32, u32)| raw.slice(start as usize..(start + len) as usize);
        // Room for what forwarding adds (x-request-id, x-forwarded-*, x-envoy-*) without a
        // rehash.
        let mut headers = crate::header_pool::take(head.fields + ADDED_FIELDS);
        let complete = SCRATCH.with_borrow_mut(|scratch| {
            let Scratch { spans, names } = scratch;
            for s in &spans[..head.fields] {
                let (start, len) = s.name;
                let name = cached_name(names, &raw[start as usize..(start + len) as usize]);
                let value = HeaderValue::from_maybe_shared(slice(s.value)).ok();
                match (name, value) {
                    (Some(n), Some(v)) => {
                        headers.append(n, v);
                    }
                    _ => return false,
                }
            }
            true
        });
        if !complete {
            crate::header_pool::give(headers);
            self.unsplit(raw);
            return None;
        }
        let Ok(uri) = Uri::from_maybe_shared(slice(head.target)) else {
            self.unsplit(raw);
            return None;
        };
        let mut req = Request::new(RequestBody::Empty);
        *req.method_mut() = head.method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
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
        let (framing, keep_alive) =
            encode_head(&mut self.wbuf, &parts, &body, head_request, request_close);
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

enum Parsed {
    Head(Head),
    Partial,
    /// Not this loop's: hyper serves it.
    Hyper,
}

/// The response head into `w`; how its body goes on the wire, and whether the connection stays
/// open after it. As hyper does: a `date` when there is none, `content-length` from an exact
/// body size, chunked otherwise, and `connection: close` when the request asked for it.
fn encode_head(
    w: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &ProxyBody,
    head_request: bool,
    request_close: bool,
) -> (Framing, bool) {
    let status = parts.status;
    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    w.extend_from_slice(b"\r\n");
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut length: Option<Option<u64>> = None;
    let mut has_date = false;
    let mut close = request_close;
    let mut close_sent = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING {
            // The framing is ours to choose.
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if bodiless {
                continue;
            }
            length = Some(parse_content_length(value.as_bytes()));
        } else if *name == header::DATE {
            has_date = true;
        } else if *name == header::CONNECTION && has_token(value.as_bytes(), b"close") {
            close = true;
            close_sent = true;
        }
        put_field(w, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if bodiless {
        Framing::None
    } else {
        match length {
            Some(Some(n)) => Framing::Length(n),
            Some(None) => {
                close = true;
                Framing::Close
            }
            None => match http_body::Body::size_hint(body).exact() {
                Some(n) => {
                    let mut digits = [0u8; 20];
                    put_field(w, b"content-length", itoa_u64(n, &mut digits));
                    Framing::Length(n)
                }
                None if head_request => Framing::None,
                None => {
                    put_field(w, b"transfer-encoding", b"chunked");
                    Framing::Chunked
                }
            },
        }
    };
    if !has_date {
        DATE.with(|d| put_field(w, b"date", &d.now()));
    }
    if close && !close_sent {
        put_field(w, b"connection", b"close");
    }
    w.extend_from_slice(b"\r\n");
    let framing = if head_request { Framing::None } else { framing };
    (framing, !close)
}

fn put_field(w: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    w.extend_from_slice(name);
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

/// Whether a comma-separated field value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn hex_len(mut v: usize, buf: &mut [u8; 16]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = HEX[v & 0xf];
        v >>= 4;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// A new read buffer holding `bytes`.
fn with_room(bytes: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(READ_SIZE.max(bytes.len()));
    b.extend_from_slice(bytes);
    b
}

/// `raw` as a field name, from `cache` when this thread has met it before.
fn cached_name(cache: &mut Vec<(Box<[u8]>, HeaderName)>, raw: &[u8]) -> Option<HeaderName> {
    if let Some((_, name)) = cache.iter().find(|(r, _)| **r == *raw) {
        return Some(name.clone());
    }
    let name = HeaderName::from_bytes(raw).ok()?;
    if cache.len() < NAME_CACHE {
        cache.push((raw.into(), name.clone()));
    }
    Some(name)
}

thread_local! {
    static DATE: DateCache = const { DateCache { second: std::cell::Cell::new(u64::MAX), text: std::cell::Cell::new([0; 29]) } };
}

/// The `date` field's value, formatted once a second per thread.
struct DateCache {
    second: std::cell::Cell<u64>,
    text: std::cell::Cell<[u8; 29]>,
}

// === impl DateCache ===

impl DateCache {
    fn now(&self) -> [u8; 29] {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if second != self.second.get() {
            let text = httpdate::fmt_http_date(now);
            let mut out = [b' '; 29];
            let n = text.len().min(29);
            out[..n].copy_from_slice(&text.as_bytes()[..n]);
            self.text.set(out);
            self.second.set(second);
        }
        self.text.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(has_token(b"Upgrade", b"upgrade"));
        assert!(!has_token(b"closed", b"close"));
        assert!(!has_token(b"", b"close"));
    }

    #[test]
    fn numbers() {
        assert_eq!(hex_len(0, &mut [0; 16]), b"0");
        assert_eq!(hex_len(0x1a2b, &mut [0; 16]), b"1a2b");
    }

    #[test]
    fn date_is_an_http_date() {
        let d = DATE.with(|d| d.now());
        let s = std::str::from_utf8(&d).expect("ascii");
        assert!(httpdate::parse_http_date(s).is_ok(), "{s}");
    }

    fn head_of(
        status: StatusCode,
        headers: &[(&'static str, &'static str)],
        body: ProxyBody,
        head: bool,
        close: bool,
    ) -> (String, Framing, bool) {
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        for (k, v) in headers {
            resp.headers_mut().append(*k, HeaderValue::from_static(v));
        }
        let (parts, ()) = resp.into_parts();
        let mut w = Vec::new();
        let (f, keep) = encode_head(&mut w, &parts, &body, head, close);
        (String::from_utf8(w).expect("ascii"), f, keep)
    }

    #[test]
    fn response_heads() {
        let (h, f, keep) = head_of(
            StatusCode::OK,
            &[("content-length", "5"), ("date", "x")],
            ProxyBody::empty(),
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\n\r\n");
        assert_eq!((f, keep), (Framing::Length(5), true));

        let (h, f, keep) = head_of(
            StatusCode::OK,
            &[("date", "x")],
            ProxyBody::full("hello"),
            false,
            true,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
        assert_eq!((f, keep), (Framing::Length(5), false));

        let (h, f, _) = head_of(
            StatusCode::NO_CONTENT,
            &[("date", "x"), ("content-length", "0")],
            ProxyBody::empty(),
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
        assert_eq!(f, Framing::None);

        let (h, f, keep) = head_of(
            StatusCode::OK,
            &[
                ("date", "x"),
                ("connection", "close"),
                ("transfer-encoding", "chunked"),
            ],
            ProxyBody::full("a"),
            true,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"
        );
        assert_eq!(
            (f, keep),
            (Framing::None, false),
            "HEAD: no body; the response's close is kept"
        );

        let (h, _, _) = head_of(StatusCode::OK, &[], ProxyBody::empty(), false, false);
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: "),
            "{h}"
        );
    }
}
