//! One upstream HTTP/1.1 connection of Baton's own client: write a request, read its response head.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::UpstreamFailure;
use crate::http1::names::NameCache;
use crate::http1::{encode, response, Framing, READ_SIZE};

use super::cx::{CxGuard, SendError};

/// Body bytes up to this size are copied out of the read buffer, so the buffer stays unshared
/// and is reused for the next read; larger runs are handed on without a copy.
const COPY_MAX: usize = 1024;
/// Field names remembered per connection.
const NAME_CACHE: usize = 24;

/// One upstream HTTP/1.1 connection.
pub struct H1Conn {
    io: TcpStream,
    pub(super) buf: BytesMut,
    wbuf: Vec<u8>,
    /// Largest response head accepted.
    pub(super) head_limit: usize,
    addr: SocketAddr,
    /// Its cluster's index (the pool it goes back to).
    cidx: usize,
    /// Field names met on this connection, as sent: an upstream sends the same names in the
    /// same case response after response, and comparing bytes is cheaper than parsing a name.
    names: NameCache,
    /// The fields of the response head being parsed; kept for its capacity.
    fields: Vec<response::Field>,
    /// Whether response heads are split off the read buffer rather than copied: see
    /// [`Self::split_head`].
    split_heads: bool,
    /// The last response head was split off the buffer, and no body bytes since.
    head_out: bool,
    /// Its life and bytes in the cluster's stats.
    guard: CxGuard,
    /// Its history, for the cluster's connection limits.
    pub(crate) life: crate::upstream::Life,
}

/// Where a connection goes back to once its response body has been read.
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
    /// A connection to `addr` of cluster `cidx`.
    pub fn new(
        io: TcpStream,
        addr: SocketAddr,
        cidx: usize,
        head_limit: usize,
        guard: CxGuard,
    ) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            wbuf: Vec::new(),
            head_limit,
            addr,
            cidx,
            names: NameCache::new(NAME_CACHE),
            fields: Vec::new(),
            split_heads: true,
            head_out: false,
            guard,
            life: crate::upstream::Life::new(std::time::Instant::now()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster it belongs to.
    pub fn cluster(&self) -> &crate::cluster::Cluster {
        self.guard.cluster()
    }

    /// The index of the cluster it belongs to.
    pub fn cidx(&self) -> usize {
        self.cidx
    }

    /// Whether a pooled connection is still usable: nothing arrived while it was idle (an
    /// upstream's close shows as readability). No system call unless the socket became
    /// readable.
    pub fn idle_usable(&mut self) -> bool {
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

    /// Send `req` with `body` (already in memory) and read the response head, which goes to
    /// `then` with the connection its body is to be read from (see [`super::H1Body`]).
    /// [`SendError::NotSent`]: no byte went out, `req` may go on another connection.
    ///
    /// `req` is borrowed, not moved: the future stays small, and a request not sent needs no
    /// handing back.
    pub async fn send<B, R>(
        mut self: Box<Self>,
        req: &Request<B>,
        body: Bytes,
        then: impl FnOnce(ResponseStart, Box<Self>) -> R,
    ) -> Result<R, SendError> {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        encode::request_head(
            &mut self.wbuf,
            req.method(),
            target,
            req.headers(),
            body.len(),
        );
        if body.len() <= READ_SIZE {
            self.wbuf.extend_from_slice(&body);
        }
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
                Ok(Some(Parsed::Final(head, framing, keep_alive))) => {
                    return Ok(then(
                        ResponseStart {
                            head,
                            framing,
                            keep_alive,
                        },
                        self,
                    ));
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
        let parsed = response::parse(&self.buf, head_request, &mut self.names, &mut self.fields);
        let head = match parsed {
            Ok(response::Parsed::Partial) => return Ok(None),
            Ok(response::Parsed::Informational(n)) => {
                self.buf.advance(n);
                return Ok(Some(Parsed::Informational));
            }
            // A head over the limit that arrived in one read.
            Ok(response::Parsed::Final(head)) if head.len > self.head_limit => {
                return Err(UpstreamFailure::ProtocolError);
            }
            Ok(response::Parsed::Final(head)) => head,
            Err(e) => {
                tracing::debug!(upstream = %self.addr, error = %e, "invalid upstream response head");
                return Err(UpstreamFailure::ProtocolError);
            }
        };
        let bytes = self.split_head(head.len);
        // Room for what the proxy adds: x-envoy-upstream-service-time and `server` (a full
        // map would grow, rehashing, on every response).
        let headers = response::headers(&head, &bytes, &mut self.fields, 2)
            .map_err(|_| UpstreamFailure::ProtocolError)?;
        let mut resp = Response::new(());
        *resp.headers_mut() = headers;
        *resp.status_mut() = head.status;
        *resp.version_mut() = if head.http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        Ok(Some(Parsed::Final(resp, head.framing, head.keep_alive)))
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
    pub(super) fn reserve(&mut self) {
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
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
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
    pub(super) fn take(&mut self, max: usize) -> Bytes {
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
    Final(Response<()>, Framing, bool),
}

/// A response head read; its body follows on the connection.
#[derive(Debug)]
pub struct ResponseStart {
    pub head: Response<()>,
    pub framing: Framing,
    /// The upstream keeps the connection open after the body.
    pub keep_alive: bool,
}
