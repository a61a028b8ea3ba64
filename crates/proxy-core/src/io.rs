//! The downstream socket as hyper sees it: bytes already read (while telling HTTP/2's
//! preface from HTTP/1) are yielded first, then the stream — plain TCP or TLS over TCP; bytes
//! each way are counted (for TLS: the decrypted bytes).
//!
//! The same shape will carry a connection handed over from an older generation with bytes it
//! had read but not parsed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A downstream connection's transport. The TLS state is boxed so the plain variant stays
/// small; dispatch is one branch per read or write.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A stream with a prefix of already-read bytes.
#[derive(Debug)]
pub struct ServerIo {
    prefix: Bytes,
    inner: Stream,
    /// Shared with the connection's owner, which reads the totals once hyper is done.
    counts: Arc<IoCounts>,
}

/// Bytes read and written on one connection.
#[derive(Debug, Default)]
pub struct IoCounts {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
}

/// Which protocol a cleartext connection opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Http1,
    Http2,
}

// === impl ServerIo ===

impl ServerIo {
    pub fn new(inner: Stream, prefix: Bytes) -> Self {
        let counts = Arc::new(IoCounts::default());
        counts.rx.store(prefix.len() as u64, Ordering::Relaxed);
        Self {
            prefix,
            inner,
            counts,
        }
    }

    /// Yield `bytes` before anything not yet read (bytes hyper had read but not parsed).
    pub fn prepend(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.prefix.is_empty() {
            self.prefix = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.prefix.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.freeze();
        }
    }

    /// Whether the peer has sent bytes nobody has read yet: bytes already buffered here, or
    /// bytes waiting in the socket (read without blocking and kept for the next reader).
    pub fn take_pending(&mut self) -> io::Result<bool> {
        if !self.prefix.is_empty() {
            return Ok(true);
        }
        let mut buf = BytesMut::with_capacity(4096);
        buf.resize(4096, 0);
        let n = match &mut self.inner {
            Stream::Plain(s) => match s.try_read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            },
            Stream::Tls(s) => {
                // One read without waiting: whatever TLS has decrypted or can decrypt now.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut rb = ReadBuf::new(&mut buf);
                match Pin::new(s.as_mut()).poll_read(&mut cx, &mut rb) {
                    Poll::Ready(Ok(())) => rb.filled().len(),
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => return Ok(false),
                }
            }
        };
        if n == 0 {
            return Ok(false);
        }
        buf.truncate(n);
        self.counts.rx.fetch_add(n as u64, Ordering::Relaxed);
        self.prefix = buf.freeze();
        Ok(true)
    }

    /// Whether bytes put back by [`ServerIo::prepend`] wait to be read.
    pub fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// Bytes yielded before the stream's own (what [`ServerIo::prepend`] put back and nobody
    /// has read yet), taken out.
    pub fn take_prefix(&mut self) -> Bytes {
        std::mem::take(&mut self.prefix)
    }

    /// A duplicate of the socket, for a connection that moves to another generation: only a
    /// cleartext connection can (a TLS session's state lives in this process).
    pub fn dup_plain_socket(&self) -> Option<io::Result<std::os::fd::OwnedFd>> {
        use std::os::fd::AsFd as _;
        match &self.inner {
            Stream::Plain(s) => Some(s.as_fd().try_clone_to_owned()),
            Stream::Tls(_) => None,
        }
    }

    /// The connection's stream.
    pub fn stream(&self) -> &Stream {
        &self.inner
    }

    /// True for a cleartext connection.
    pub fn is_plain(&self) -> bool {
        matches!(self.inner, Stream::Plain(_))
    }

    /// The byte counts, readable after the IO has been handed to hyper.
    pub fn counts(&self) -> Arc<IoCounts> {
        self.counts.clone()
    }

    /// Read until the first bytes tell HTTP/2 prior knowledge from HTTP/1. Returns `None` when
    /// the peer closed before sending anything.
    pub async fn sniff(mut inner: Stream) -> io::Result<Option<(Self, Sniffed)>> {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            if inner.read_buf(&mut buf).await? == 0 {
                if buf.is_empty() {
                    return Ok(None);
                }
                // A short, truncated request: let HTTP/1 parsing answer it.
                return Ok(Some((Self::new(inner, buf.freeze()), Sniffed::Http1)));
            }
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return Ok(Some((Self::new(inner, buf.freeze()), Sniffed::Http1)));
            }
            if n == H2_PREFACE.len() {
                return Ok(Some((Self::new(inner, buf.freeze()), Sniffed::Http2)));
            }
        }
    }
}

// === impl Stream ===

impl Stream {
    /// The TLS session, when this is a TLS connection.
    pub fn tls(&self) -> Option<&rustls::ServerConnection> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(s.get_ref().1),
        }
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// === impl ServerIo (IO) ===

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.counts
            .rx
            .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        res
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.counts.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.counts.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn sniffs_h2_preface_split_across_writes() {
        let (mut c, s) = pair().await;
        let t = tokio::spawn(async move {
            c.write_all(&H2_PREFACE[..5]).await.unwrap();
            tokio::task::yield_now().await;
            c.write_all(&H2_PREFACE[5..]).await.unwrap();
            c
        });
        let (mut io, kind) = ServerIo::sniff(Stream::Plain(s)).await.unwrap().unwrap();
        assert_eq!(kind, Sniffed::Http2);
        let mut got = vec![0; H2_PREFACE.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, H2_PREFACE);
        drop(t.await.unwrap());
    }

    #[tokio::test]
    async fn sniffs_http1_and_replays_prefix() {
        let (mut c, s) = pair().await;
        c.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
        let (mut io, kind) = ServerIo::sniff(Stream::Plain(s)).await.unwrap().unwrap();
        assert_eq!(kind, Sniffed::Http1);
        let mut got = vec![0; 4];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"POST");
        drop(c);
        let (c2, s2) = pair().await;
        drop(c2);
        assert!(ServerIo::sniff(Stream::Plain(s2)).await.unwrap().is_none());
    }
}
