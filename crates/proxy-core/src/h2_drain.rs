//! HTTP/2 drain without lost requests: the first GOAWAY of a draining connection reaches the
//! client at the start of what it reads, never behind responses it has not processed yet.
//!
//! Why: a client library such as nghttp2 assigns a stream to a request when the request is
//! submitted and writes its HEADERS later; when a GOAWAY (any last-stream-id, even 2^31-1) is
//! processed in between, the queued request is closed locally with REFUSED_STREAM and never
//! sent. Under load a client submits a new request as each response completes, so a GOAWAY read
//! in the same batch as earlier responses refuses those new requests. Load generators that do
//! not retry (h2load) count them as failures.
//!
//! How: [`H2Io`] sits between hyper and the connection's transport and tracks HTTP/2 frame
//! boundaries of the bytes each way (9-byte headers with a 24-bit payload length; the client's
//! 24-byte preface first). When [`DrainCtl::start`] is called it:
//!
//! 1. writes a PING of its own at the next outgoing frame boundary, then holds back every byte
//!    hyper writes (responses included) in memory;
//! 2. when the client's PING ACK comes back — the client has then processed everything sent
//!    before the PING, and has written the requests it submitted meanwhile — it removes that ACK
//!    from the bytes hyper reads, writes GOAWAY(2^31-1, NO_ERROR) and then the held bytes;
//! 3. the connection's owner then calls hyper's graceful shutdown ([`DrainCtl::released`]
//!    completes), whose own GOAWAY(2^31-1) + PING and final GOAWAY(last processed stream) follow
//!    ours; hyper keeps reading until every open stream has finished.
//!
//! A client that does not answer the PING is not waited for beyond [`DrainCtl::hurry`] (the
//! caller's bound), nor are more than [`HOLD_MAX`] bytes held. Outside a drain the cost per read
//! or write is a walk over the frame headers in it.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// An HTTP/2 frame header's length.
const HEADER_LEN: usize = 9;
/// The client connection preface's length (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
const TYPE_PING: u8 = 0x6;
const TYPE_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;
/// The opaque data of the drain PING; the client echoes it in its ACK.
pub const DRAIN_PING_DATA: [u8; 8] = *b"baton-dr";
/// At most this many bytes written by hyper are held while waiting for the PING ACK; past it
/// the GOAWAY goes out at once.
pub const HOLD_MAX: usize = 1 << 20;

/// Where a connection is in its drain sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not draining.
    Serving,
    /// Asked to drain: the PING goes out at the next outgoing frame boundary.
    Quiesce,
    /// The PING is out (or queued); hyper's writes are held until its ACK.
    Holding,
    /// Our GOAWAY(2^31-1) is queued or written; everything passes through.
    Released,
}

/// The drain sequence's control, shared by the connection's owner and its [`H2Io`].
#[derive(Debug)]
pub struct DrainCtl {
    phase: Cell<Phase>,
    hurry: Cell<bool>,
    goaways: Cell<u32>,
    released: Notify,
}

/// A connection's transport as hyper's HTTP/2 server sees it (see the module docs).
#[derive(Debug)]
pub struct H2Io<T> {
    inner: T,
    ctl: Rc<DrainCtl>,
    /// Frame boundaries of the bytes accepted from hyper.
    out: Frames,
    /// Frame boundaries of the bytes given to hyper.
    inb: Frames,
    /// Bytes of ours to write before anything else: the PING, then the GOAWAY and held bytes.
    queue: BytesMut,
    /// hyper's writes while waiting for the PING ACK.
    held: BytesMut,
    /// Bytes read while waiting for the PING ACK and not yet given to hyper.
    rx: BytesMut,
    rx_eof: bool,
}

/// Frame boundary tracking over a byte stream.
#[derive(Debug, Default, Clone)]
struct Frames {
    /// Bytes left in the current frame's payload (or in the preface).
    left: usize,
    /// The current frame header, while it is incomplete.
    hdr: [u8; HEADER_LEN],
    have: usize,
}

// === impl DrainCtl ===

impl DrainCtl {
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            phase: Cell::new(Phase::Serving),
            hurry: Cell::new(false),
            goaways: Cell::new(0),
            released: Notify::new(),
        })
    }

    /// Start the drain sequence; the transport acts on it the next time hyper polls it.
    pub fn start(&self) {
        if self.phase.get() == Phase::Serving {
            self.phase.set(Phase::Quiesce);
        }
    }

    /// Stop waiting for the client's PING ACK: the GOAWAY goes out at the next frame boundary.
    pub fn hurry(&self) {
        self.hurry.set(true);
    }

    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// How many GOAWAY frames this connection's transport has written of its own (0 or 1).
    pub fn goaways_sent(&self) -> u32 {
        self.goaways.get()
    }

    /// Completes once our GOAWAY is queued for writing (ahead of anything hyper writes next).
    /// Meant for one waiter.
    pub async fn released(&self) {
        if self.phase.get() == Phase::Released {
            return;
        }
        self.released.notified().await;
    }
}

// === impl H2Io ===

impl<T> H2Io<T> {
    /// Wrap a transport whose first inbound bytes are the client's connection preface.
    pub fn new(inner: T, ctl: Rc<DrainCtl>) -> Self {
        Self {
            inner,
            ctl,
            out: Frames::default(),
            inb: Frames {
                left: PREFACE_LEN,
                ..Frames::default()
            },
            queue: BytesMut::new(),
            held: BytesMut::new(),
            rx: BytesMut::new(),
            rx_eof: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Move the drain sequence on where it can go without waiting for anything.
    fn advance(&mut self) {
        match self.ctl.phase.get() {
            Phase::Quiesce if self.out.at_boundary() => {
                if self.ctl.hurry.get() {
                    self.release();
                } else {
                    self.queue
                        .extend_from_slice(&frame(TYPE_PING, &DRAIN_PING_DATA));
                    self.ctl.phase.set(Phase::Holding);
                }
            }
            Phase::Holding if self.ctl.hurry.get() || self.held.len() > HOLD_MAX => self.release(),
            _ => {}
        }
    }

    /// Queue GOAWAY(2^31-1, NO_ERROR) and then the held bytes (we are at a frame boundary).
    fn release(&mut self) {
        let mut payload = [0u8; 8];
        payload[..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
        self.queue.extend_from_slice(&frame(TYPE_GOAWAY, &payload));
        let held = std::mem::take(&mut self.held);
        self.queue.extend_from_slice(&held);
        self.ctl.goaways.set(self.ctl.goaways.get() + 1);
        self.ctl.phase.set(Phase::Released);
        self.ctl.released.notify_one();
    }

    /// Whether reads and writes can bypass the drain machinery.
    #[inline]
    fn plain(&self) -> bool {
        self.ctl.phase.get() == Phase::Serving && self.queue.is_empty()
    }
}

impl<T: AsyncWrite + Unpin> H2Io<T> {
    /// Write our queued bytes; nothing of hyper's may go out before they have.
    fn poll_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.queue))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.queue.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> H2Io<T> {
    /// Give hyper bytes from `rx`, stopping at frame boundaries while waiting for the PING ACK
    /// so that the ACK can be recognised whole and removed. True when bytes were given or the
    /// stream has ended.
    fn take_rx(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let start = buf.remaining();
        while buf.remaining() > 0 && !self.rx.is_empty() {
            let n = if self.ctl.phase.get() != Phase::Holding {
                self.rx.len()
            } else if !self.inb.at_boundary() {
                self.inb.to_boundary()
            } else if self.rx.len() < HEADER_LEN {
                if !self.rx_eof {
                    break;
                }
                self.rx.len()
            } else {
                let h = &self.rx[..HEADER_LEN];
                if is_ping_ack(h) {
                    if self.rx.len() < HEADER_LEN + 8 && !self.rx_eof {
                        break;
                    }
                    if self.rx.len() >= HEADER_LEN + 8
                        && self.rx[HEADER_LEN..HEADER_LEN + 8] == DRAIN_PING_DATA
                    {
                        self.rx.advance(HEADER_LEN + 8);
                        self.release();
                        continue;
                    }
                }
                HEADER_LEN + payload_len(h)
            };
            let n = n.min(self.rx.len()).min(buf.remaining());
            buf.put_slice(&self.rx[..n]);
            self.inb.feed(&self.rx[..n]);
            self.rx.advance(n);
        }
        buf.remaining() < start || (self.rx.is_empty() && self.rx_eof)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Io<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.plain() {
            this.advance();
            // Our frames go out even when hyper has nothing to write; a pending write has
            // registered the waker.
            if let Poll::Ready(Err(e)) = this.poll_queue(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if this.ctl.phase.get() != Phase::Holding && this.rx.is_empty() {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            this.inb.feed(&buf.filled()[before..]);
            return Poll::Ready(Ok(()));
        }
        loop {
            let was_holding = this.ctl.phase.get() == Phase::Holding;
            let given = this.take_rx(buf);
            if was_holding && this.ctl.phase.get() == Phase::Released {
                if let Poll::Ready(Err(e)) = this.poll_queue(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if given {
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.rx_eof = true;
            } else {
                this.rx.extend_from_slice(rb.filled());
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H2Io<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.plain() {
            this.advance();
            ready!(this.poll_queue(cx))?;
            match this.ctl.phase.get() {
                Phase::Holding => {
                    this.held.extend_from_slice(buf);
                    this.out.feed(buf);
                    this.advance();
                    return Poll::Ready(Ok(buf.len()));
                }
                Phase::Quiesce => {
                    // Not at a frame boundary yet: let hyper's bytes through up to it.
                    let cap = this.out.to_boundary().max(1).min(buf.len());
                    let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..cap]))?;
                    this.out.feed(&buf[..n]);
                    this.advance();
                    if let Poll::Ready(Err(e)) = this.poll_queue(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                Phase::Serving | Phase::Released => {}
            }
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.out.feed(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.plain() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.out.feed(&b[..k]);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.plain() {
            this.advance();
            ready!(this.poll_queue(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.plain() {
            if this.ctl.phase.get() == Phase::Holding {
                this.release();
            }
            ready!(this.poll_queue(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

// === impl Frames ===

impl Frames {
    /// Account for `b`, the next bytes of the stream.
    #[inline]
    fn feed(&mut self, mut b: &[u8]) {
        loop {
            if self.left >= b.len() {
                self.left -= b.len();
                return;
            }
            b = &b[self.left..];
            self.left = 0;
            let n = (HEADER_LEN - self.have).min(b.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&b[..n]);
            self.have += n;
            b = &b[n..];
            if self.have < HEADER_LEN {
                return;
            }
            self.have = 0;
            self.left = payload_len(&self.hdr);
        }
    }

    fn at_boundary(&self) -> bool {
        self.left == 0 && self.have == 0
    }

    /// Bytes up to the end of the current header or payload (0 at a boundary).
    fn to_boundary(&self) -> usize {
        if self.have > 0 {
            HEADER_LEN - self.have
        } else {
            self.left
        }
    }
}

fn payload_len(h: &[u8]) -> usize {
    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2])
}

fn is_ping_ack(h: &[u8]) -> bool {
    payload_len(h) == 8 && h[3] == TYPE_PING && h[4] & FLAG_ACK != 0 && h[5..9] == [0; 4]
}

/// A connection-level frame (stream 0, no flags) with an 8-byte payload.
fn frame(kind: u8, payload: &[u8; 8]) -> [u8; HEADER_LEN + 8] {
    let mut f = [0u8; HEADER_LEN + 8];
    f[2] = 8;
    f[3] = kind;
    f[HEADER_LEN..].copy_from_slice(payload);
    f
}

#[cfg(test)]
mod tests;
