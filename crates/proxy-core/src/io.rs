//! The downstream socket as hyper sees it: bytes already read (while telling HTTP/2's
//! preface from HTTP/1) are yielded first, then the TCP stream; bytes each way are counted.
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

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TCP stream with a prefix of already-read bytes.
#[derive(Debug)]
pub struct ServerIo {
    prefix: Bytes,
    inner: TcpStream,
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
    pub fn new(inner: TcpStream, prefix: Bytes) -> Self {
        let counts = Arc::new(IoCounts::default());
        counts.rx.store(prefix.len() as u64, Ordering::Relaxed);
        Self {
            prefix,
            inner,
            counts,
        }
    }

    /// The byte counts, readable after the IO has been handed to hyper.
    pub fn counts(&self) -> Arc<IoCounts> {
        self.counts.clone()
    }

    /// Read until the first bytes tell HTTP/2 prior knowledge from HTTP/1. Returns `None` when
    /// the peer closed before sending anything.
    pub async fn sniff(mut inner: TcpStream) -> io::Result<Option<(Self, Sniffed)>> {
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
        let (mut io, kind) = ServerIo::sniff(s).await.unwrap().unwrap();
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
        let (mut io, kind) = ServerIo::sniff(s).await.unwrap().unwrap();
        assert_eq!(kind, Sniffed::Http1);
        let mut got = vec![0; 4];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"POST");
        drop(c);
        let (c2, s2) = pair().await;
        drop(c2);
        assert!(ServerIo::sniff(s2).await.unwrap().is_none());
    }
}
