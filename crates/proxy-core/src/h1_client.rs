//! Baton's own HTTP/1.1 client for the common proxied request: cleartext upstream, request
//! body already in memory (none, or one buffered for retries), no protocol switch.
//!
//! Hyper's client connection runs as a task of its own and passes every request and response
//! through channels, and re-allocates its read buffer for every response whose headers are
//! still alive. Here the request's own future writes the request and reads the response head,
//! the response body reads straight from the socket, and the connection's read buffer is
//! reused from one response to the next: per request no task switch, no channel, no buffer
//! allocation. (Measured: ~10K fewer instructions per proxied request, see `benches/`.)
//! Streaming request bodies, upgrades, TLS and HTTP/2 upstreams stay on hyper.
//!
//! The connection is owned by whoever uses it: the pool while idle, the sending future until
//! the response head, then the response body, which puts it back in the pool once the body has
//! been read to its end and the upstream left the connection open.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::{BodyError, ProxyBody};
use crate::error::UpstreamFailure;
use crate::headers::{KEEP_ALIVE, PROXY_CONNECTION};
use crate::server::Worker;
use crate::upstream::{CxGuard, SendError};

/// Headers accepted in one response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Read-buffer space asked of the socket per read.
const READ_SIZE: usize = 8192;
/// Body bytes up to this size are copied out of the read buffer, so the buffer stays unshared
/// and is reused for the next read; larger runs are handed on without a copy.
const COPY_MAX: usize = 1024;
/// A chunk-size line longer than this is malformed.
const MAX_CHUNK_LINE: usize = 1024;

/// One upstream HTTP/1.1 connection.
pub struct H1Conn {
    io: TcpStream,
    buf: BytesMut,
    wbuf: Vec<u8>,
    /// Largest response head accepted.
    head_limit: usize,
    addr: SocketAddr,
    /// Field names met on this connection, as sent: an upstream sends the same names in the
    /// same case response after response, and comparing bytes is cheaper than parsing a name.
    names: Vec<CachedName>,
    /// The fields of the response head being parsed; kept for its capacity.
    fields: Vec<Field>,
    /// Whether response heads are split off the read buffer rather than copied: see
    /// [`Self::split_head`].
    split_heads: bool,
    /// The last response head was split off the buffer, and no body bytes since.
    head_out: bool,
    /// Its life and bytes in the cluster's stats.
    guard: CxGuard,
}

/// Where a connection goes back to once its response body has been read.
#[derive(Debug)]
pub struct Home {
    pub worker: Rc<Worker>,
    pub cidx: usize,
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("upstream closed the connection before the response body ended")]
    Incomplete,
    #[error("malformed chunked encoding in the upstream response")]
    BadChunk,
    #[error("upstream read failed: {0}")]
    Io(#[from] std::io::Error),
}

impl std::fmt::Debug for H1Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Conn")
            .field("addr", &self.addr)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

// === impl H1Conn ===

impl H1Conn {
    pub(crate) fn new(io: TcpStream, addr: SocketAddr, head_limit: usize, guard: CxGuard) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            wbuf: Vec::new(),
            head_limit,
            addr,
            names: Vec::new(),
            fields: Vec::new(),
            split_heads: true,
            head_out: false,
            guard,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a pooled connection is still usable: nothing arrived while it was idle (an
    /// upstream's close shows as readability). No system call unless the socket became
    /// readable.
    pub(crate) fn idle_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let waker = futures_util::task::noop_waker_ref();
        let mut cx = Context::from_waker(waker);
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: an EOF or a reset (the upstream closed it), or stray bytes; either way
            // unusable, unless the readiness was stale.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Send `req` (its body must be in memory: see [`sendable`]) and read the response head.
    /// [`SendError::NotSent`]: no byte went out, `req` may go on another connection.
    ///
    /// `req` is borrowed, not moved: the future stays small, and a request not sent needs no
    /// handing back.
    pub(crate) async fn send(
        mut self: Box<Self>,
        req: &Request<ProxyBody>,
        home: Home,
    ) -> Result<Response<ProxyBody>, SendError> {
        let body = req.body().buffered().unwrap_or_default();
        self.encode(req, &body);
        let head_request = req.method() == Method::HEAD;
        if let Err(e) = self.write_request(&body).await {
            tracing::debug!(upstream = %self.addr, error = %e, "upstream write failed");
            return Err(match e {
                WriteError::NothingSent(_) => SendError::NotSent,
                WriteError::Partial(_) => SendError::Failed(UpstreamFailure::Reset),
            });
        }
        loop {
            match self.parse_head(head_request) {
                Ok(Some(Parsed::Informational)) => continue,
                Ok(Some(Parsed::Final(resp, framing, keep_alive))) => {
                    let mut body = H1Body {
                        conn: Some(self),
                        state: framing,
                        keep_alive,
                        home: Some(home),
                    };
                    if body.is_end_stream() {
                        // No body (HEAD, 204, 304, length 0): the connection is free now, and
                        // hyper never polls an ended body.
                        body.finish();
                    }
                    let (parts, ()) = resp.into_parts();
                    return Ok(Response::from_parts(parts, ProxyBody::upstream_h1(body)));
                }
                Ok(None) => {}
                Err(f) => return Err(SendError::Failed(f)),
            }
            if self.buf.len() >= self.head_limit {
                return Err(SendError::Failed(UpstreamFailure::ProtocolError));
            }
            self.reserve();
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(SendError::Failed(UpstreamFailure::Reset)),
                Ok(n) => self.count_rx(n),
            }
        }
    }

    /// The request head (and a small body) into the write buffer.
    fn encode(&mut self, req: &Request<ProxyBody>, body: &Bytes) {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(req.method().as_str().as_bytes());
        w.push(b' ');
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        w.extend_from_slice(target.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        let mut has_length = false;
        for (name, value) in req.headers() {
            if name == header::CONTENT_LENGTH {
                // Ours below: the buffered body is what goes out.
                has_length = true;
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if !body.is_empty()
            || has_length
            || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        {
            w.extend_from_slice(b"content-length: ");
            w.extend_from_slice(itoa_u64(body.len() as u64, &mut [0u8; 20]));
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"\r\n");
        if body.len() <= READ_SIZE {
            w.extend_from_slice(body);
        }
    }

    async fn write_request(&mut self, body: &Bytes) -> Result<(), WriteError> {
        let mut written = 0;
        while written < self.wbuf.len() {
            let e = match self.io.write(&self.wbuf[written..]).await {
                Ok(0) => closed(),
                Ok(n) => {
                    written += n;
                    self.count_tx(n);
                    continue;
                }
                Err(e) => e,
            };
            return Err(if written == 0 {
                WriteError::NothingSent(e)
            } else {
                WriteError::Partial(e)
            });
        }
        if body.len() > READ_SIZE {
            self.io.write_all(body).await.map_err(WriteError::Partial)?;
            self.count_tx(body.len());
        }
        Ok(())
    }

    /// Parse a response head from the buffer; `None`: more bytes needed.
    fn parse_head(&mut self, head_request: bool) -> Result<Option<Parsed>, UpstreamFailure> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut []);
        let n = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut r, &self.buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                tracing::debug!(upstream = %self.addr, error = %e, "invalid upstream response head");
                return Err(UpstreamFailure::ProtocolError);
            }
        };
        let code = r.code.unwrap_or(0);
        let Ok(status) = StatusCode::from_u16(code) else {
            return Err(UpstreamFailure::ProtocolError);
        };
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: not forwarded; 101 was never asked for.
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(UpstreamFailure::ProtocolError);
            }
            self.buf.advance(n);
            return Ok(Some(Parsed::Informational));
        }
        let http10 = r.version == Some(0);
        let base = self.buf.as_ptr() as usize;
        let mut framing: Option<State> = None;
        let mut length: Option<u64> = None;
        let mut close = http10;
        // Hop-by-hop fields (RFC 9110 7.6.1) are read here for framing and keep-alive, and
        // left out of the map, as `strip_hop_by_hop` would leave it; fields the Connection
        // field names are removed after the loop.
        let mut names_others = false;
        // The values become `HeaderValue`s once the head is out of the buffer, which `r`
        // borrows: until then each field is a name and where its value lies in the head.
        let fields = &mut self.fields;
        fields.clear();
        let mut kept = 0;
        for (i, h) in r.headers.iter().enumerate() {
            let Some((name, kind)) = cached_name(&mut self.names, i, h.name.as_bytes()) else {
                return Err(UpstreamFailure::ProtocolError);
            };
            match kind {
                Kind::ContentLength => {
                    let v = parse_content_length(h.value).ok_or(UpstreamFailure::ProtocolError)?;
                    if length.is_some_and(|l| l != v) {
                        return Err(UpstreamFailure::ProtocolError);
                    }
                    length = Some(v);
                }
                Kind::TransferEncoding => {
                    // Only a final `chunked` delimits the body; anything else runs to the close.
                    let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                    framing = Some(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        State::Chunked(Chunk::Size)
                    } else {
                        State::Close
                    });
                }
                Kind::Connection => {
                    for token in h.value.split(|&b| b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            if http10 {
                                close = false;
                            }
                        } else if !token.is_empty() {
                            names_others = true;
                        }
                    }
                }
                Kind::Hop | Kind::Te | Kind::Other => {}
            }
            let hop = match kind {
                Kind::TransferEncoding | Kind::Connection | Kind::Hop => true,
                Kind::Te => h.value != b"trailers",
                Kind::ContentLength | Kind::Other => false,
            };
            // Connection fields are kept (not for the map) for the names they list.
            if !hop || kind == Kind::Connection {
                kept += usize::from(!hop);
                fields.push(Field {
                    name: (!hop).then_some(name),
                    start: h.value.as_ptr() as usize - base,
                    len: h.value.len(),
                });
            }
        }
        let head = self.split_head(n);
        let mut resp = Response::new(());
        // One more than the upstream sent: the proxy adds x-envoy-upstream-service-time.
        *resp.headers_mut() = crate::header_pool::take(kept + 1);
        let headers = resp.headers_mut();
        for f in self.fields.iter_mut() {
            if let Some(name) = f.name.take() {
                let value = head.slice(f.start..f.start + f.len);
                let Ok(value) = HeaderValue::from_maybe_shared(value) else {
                    return Err(UpstreamFailure::ProtocolError);
                };
                headers.append(name, value);
            }
        }
        if names_others {
            for f in &self.fields {
                if f.name.is_none() {
                    for token in head[f.start..f.start + f.len].split(|&b| b == b',') {
                        if let Ok(token) = std::str::from_utf8(token.trim_ascii()) {
                            headers.remove(token);
                        }
                    }
                }
            }
        }
        let state = if head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            State::Length(0)
        } else if let Some(f) = framing {
            if http10 {
                // Transfer-Encoding is not HTTP/1.0's.
                return Err(UpstreamFailure::ProtocolError);
            }
            if length.is_some() {
                // Both: the message could be read two ways (a smuggling vector); RFC 9112 6.3
                // lets a proxy reject it, and the connection is not reused either way.
                return Err(UpstreamFailure::ProtocolError);
            }
            f
        } else if let Some(l) = length {
            State::Length(l)
        } else {
            State::Close
        };
        let keep_alive = !close && !matches!(state, State::Close);
        *resp.status_mut() = status;
        *resp.version_mut() = if http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        Ok(Some(Parsed::Final(resp, state, keep_alive)))
    }

    /// The first `n` buffered bytes, a response head, out of the buffer as the bytes its
    /// header values are slices of.
    ///
    /// Split off, not copied, while that costs no new read buffer: the buffer is reclaimed at
    /// the next read when the head's values are gone by then (a downstream writes them out
    /// as soon as it has the response). If they are still alive at a read ([`Self::reserve`]
    /// finds the buffer shared), this connection copies its heads from then on: a copy of
    /// a head costs less than a read buffer per response, and pins less memory.
    fn split_head(&mut self, n: usize) -> Bytes {
        if self.split_heads {
            self.head_out = true;
            self.buf.split_to(n).freeze()
        } else {
            let head = Bytes::copy_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            head
        }
    }

    /// Room for one more read in the buffer.
    fn reserve(&mut self) {
        if self.buf.capacity() - self.buf.len() >= READ_SIZE {
            return;
        }
        if !self.buf.try_reclaim(READ_SIZE) {
            if self.head_out {
                // Still shared with the last head (or too small, for a head beyond
                // `READ_SIZE`: rare, and copying heads is only what it costs).
                self.split_heads = false;
            }
            self.buf.reserve(READ_SIZE);
        }
        self.head_out = false;
    }

    /// Read more bytes into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.reserve();
        let r = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if let Poll::Ready(Ok(n)) = r {
            self.count_rx(n);
        }
        r
    }

    fn count_rx(&self, n: usize) {
        let stats = &self.guard.cluster().stats;
        stats.upstream_cx_rx_bytes_total.add(n as u64);
    }

    fn count_tx(&self, n: usize) {
        let stats = &self.guard.cluster().stats;
        stats.upstream_cx_tx_bytes_total.add(n as u64);
    }

    /// Up to `max` buffered bytes, as a frame's data.
    fn take(&mut self, max: usize) -> Bytes {
        let n = max.min(self.buf.len());
        if n <= COPY_MAX {
            let b = Bytes::copy_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            b
        } else {
            // The buffer is shared with this chunk for as long as it lives anyway.
            self.head_out = false;
            self.buf.split_to(n).freeze()
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("nothing written: {0}")]
    NothingSent(std::io::Error),
    #[error("request written in part: {0}")]
    Partial(std::io::Error),
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::WriteZero, "upstream accepted no bytes")
}

enum Parsed {
    Informational,
    Final(Response<()>, State, bool),
}

/// Whether `req` can go on an [`H1Conn`]: its body is in memory.
pub(crate) fn sendable(req: &Request<ProxyBody>) -> bool {
    req.body().is_buffered()
}

/// A field of the response head being parsed: its name (`None` for a Connection field, kept
/// for the names it lists) and where its value lies in the head.
struct Field {
    name: Option<HeaderName>,
    start: usize,
    len: usize,
}

/// What a field name means to the parser; worked out once per cached name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Keep-Alive, Proxy-Connection, Upgrade: hop-by-hop, nothing more.
    Hop,
    /// Hop-by-hop unless its value is `trailers`.
    Te,
    Other,
}

/// A field name as an upstream sent it, parsed.
type CachedName = (Box<[u8]>, HeaderName, Kind);

/// Names remembered per connection ([`H1Conn::names`]).
const NAME_CACHE: usize = 24;

/// `raw`, the `i`-th field of a head, as a field name, from `cache` when it has been met
/// before. An upstream sends its fields in the same order response after response: entry `i`
/// is tried first.
fn cached_name(cache: &mut Vec<CachedName>, i: usize, raw: &[u8]) -> Option<(HeaderName, Kind)> {
    let hit = match cache.get(i) {
        Some(entry) if *entry.0 == *raw => Some(entry),
        _ => cache.iter().find(|(r, _, _)| **r == *raw),
    };
    if let Some((_, name, kind)) = hit {
        return Some((name.clone(), *kind));
    }
    let name = HeaderName::from_bytes(raw).ok()?;
    let kind = if name == header::CONTENT_LENGTH {
        Kind::ContentLength
    } else if name == header::TRANSFER_ENCODING {
        Kind::TransferEncoding
    } else if name == header::CONNECTION {
        Kind::Connection
    } else if name == KEEP_ALIVE || name == PROXY_CONNECTION || name == header::UPGRADE {
        Kind::Hop
    } else if name == header::TE {
        Kind::Te
    } else {
        Kind::Other
    };
    if cache.len() < NAME_CACHE {
        cache.push((raw.into(), name.clone(), kind));
    }
    Some((name, kind))
}

/// A `content-length` value; a list of equal values ("42, 42") is one length.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<u64> {
    // A list of equal values ("42, 42") is one length.
    let mut out: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// `v` in decimal, written at the end of `buf`.
pub(crate) fn itoa_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// How the rest of the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// A response body read from an [`H1Conn`].
pub struct H1Body {
    conn: Option<Box<H1Conn>>,
    state: State,
    keep_alive: bool,
    home: Option<Home>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("state", &self.state)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

enum Step {
    Frame(Frame<Bytes>),
    /// The buffer holds too little: read more.
    Fill,
    End,
}

// === impl H1Body ===

impl H1Body {
    pub(crate) fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The body has been read to its end: the connection goes back to its pool if the
    /// upstream keeps it open and sent nothing more.
    fn finish(&mut self) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(home)) = (conn, self.home.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                home.worker.pools.checkin_h1(home.cidx, conn);
            }
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let step = match self.step() {
                Ok(s) => s,
                Err(e) => {
                    self.fail();
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            };
            match step {
                Step::Frame(f) => {
                    if matches!(self.state, State::Length(0)) {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Step::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Step::Fill => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.state == State::Close => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.fail();
                    return Poll::Ready(Some(Err(Box::new(BodyReadError::Incomplete))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.fail();
                    return Poll::Ready(Some(Err(Box::new(BodyReadError::Io(e)))));
                }
            }
        }
    }

    fn fail(&mut self) {
        self.state = State::Done;
        self.conn = None;
    }

    /// What the buffered bytes give next.
    fn step(&mut self) -> Result<Step, BodyReadError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        match self.state {
            State::Done | State::Length(0) => Ok(Step::End),
            State::Length(left) => {
                if conn.buf.is_empty() {
                    return Ok(Step::Fill);
                }
                let data = conn.take(usize::try_from(left).unwrap_or(usize::MAX));
                self.state = State::Length(left - data.len() as u64);
                Ok(Step::Frame(Frame::data(data)))
            }
            State::Close => {
                if conn.buf.is_empty() {
                    return Ok(Step::Fill);
                }
                Ok(Step::Frame(Frame::data(conn.take(usize::MAX))))
            }
            State::Chunked(chunk) => self.step_chunked(chunk),
        }
    }

    fn step_chunked(&mut self, mut chunk: Chunk) -> Result<Step, BodyReadError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        loop {
            let buf = &conn.buf;
            match chunk {
                Chunk::Size => {
                    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(BodyReadError::BadChunk);
                        }
                        self.state = State::Chunked(chunk);
                        return Ok(Step::Fill);
                    };
                    let size = parse_chunk_size(&buf[..eol])?;
                    conn.buf.advance(eol + 1);
                    chunk = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        self.state = State::Chunked(chunk);
                        return Ok(Step::Fill);
                    }
                    let data = conn.take(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - data.len() as u64;
                    self.state = State::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Frame(Frame::data(data)));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        self.state = State::Chunked(chunk);
                        return Ok(Step::Fill);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyReadError::BadChunk);
                    }
                    conn.buf.advance(2);
                    chunk = Chunk::Size;
                }
                Chunk::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; 16];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((n, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields {
                                let name = HeaderName::from_bytes(f.name.as_bytes());
                                let value = HeaderValue::from_bytes(f.value);
                                if let (Ok(name), Ok(value)) = (name, value) {
                                    trailers.append(name, value);
                                }
                            }
                            conn.buf.advance(n);
                            self.state = State::Done;
                            if trailers.is_empty() {
                                return Ok(Step::End);
                            }
                            // The connection is done with; the caller's next poll ends the body.
                            self.finish();
                            return Ok(Step::Frame(Frame::trailers(trailers)));
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= conn.head_limit => {
                            self.state = State::Chunked(chunk);
                            return Ok(Step::Fill);
                        }
                        _ => return Err(BodyReadError::BadChunk),
                    }
                }
            }
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-response: it is closed
        // (`conn` drops here), never pooled.
        self.conn = None;
    }
}

/// `1a;ext=v\r` -> 26.
fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyReadError> {
    let line = line.strip_suffix(b"\r").ok_or(BodyReadError::BadChunk)?;
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(BodyReadError::BadChunk);
    }
    let mut n = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(BodyReadError::BadChunk),
        };
        n = n * 16 + u64::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a\r").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0\r").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"FF;name=value\r").unwrap(), 255);
        assert!(parse_chunk_size(b"\r").is_err());
        assert!(parse_chunk_size(b"1g\r").is_err());
        assert!(parse_chunk_size(b"10").is_err(), "bare LF");
        assert!(parse_chunk_size(b"1000000000000000\r").is_err(), "overflow");
    }

    #[test]
    fn content_lengths() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"42, 42"), Some(42));
        assert_eq!(parse_content_length(b"42, 43"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn names_are_cached_as_sent() {
        let mut cache = Vec::new();
        let a = cached_name(&mut cache, 0, b"Content-Type").expect("valid");
        assert_eq!(a, (header::CONTENT_TYPE, Kind::Other));
        assert_eq!(cached_name(&mut cache, 0, b"Content-Type"), Some(a.clone()));
        assert_eq!(cached_name(&mut cache, 5, b"Content-Type"), Some(a));
        assert_eq!(
            cached_name(&mut cache, 0, b"content-type"),
            Some((header::CONTENT_TYPE, Kind::Other))
        );
        assert_eq!(cache.len(), 2, "one entry per spelling");
        assert_eq!(cached_name(&mut cache, 0, b"bad name"), None);
        for i in 0..100 {
            let raw = format!("x-custom-{i}");
            let (name, kind) = cached_name(&mut cache, i, raw.as_bytes()).expect("valid");
            assert_eq!((name.as_str(), kind), (raw.as_str(), Kind::Other));
        }
        assert_eq!(cache.len(), NAME_CACHE, "bounded");
    }

    #[test]
    fn names_are_classified() {
        let mut cache = Vec::new();
        let kinds = [
            (&b"Content-Length"[..], Kind::ContentLength),
            (b"transfer-encoding", Kind::TransferEncoding),
            (b"Connection", Kind::Connection),
            (b"Keep-Alive", Kind::Hop),
            (b"proxy-connection", Kind::Hop),
            (b"Upgrade", Kind::Hop),
            (b"TE", Kind::Te),
            (b"Trailer", Kind::Other),
            (b"x-connection", Kind::Other),
        ];
        for round in 0..2 {
            for (i, (raw, kind)) in kinds.iter().enumerate() {
                let got = cached_name(&mut cache, i, raw).map(|(_, k)| k);
                assert_eq!(got, Some(*kind), "{raw:?}, round {round}");
            }
        }
    }

    #[test]
    fn integers() {
        assert_eq!(itoa_u64(0, &mut [0; 20]), b"0");
        assert_eq!(itoa_u64(1234567, &mut [0; 20]), b"1234567");
        assert_eq!(itoa_u64(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }
}
