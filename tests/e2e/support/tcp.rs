//! TCP origins for `tcp_proxy` tests: an echo server that can greet each connection with a tag
//! (to tell origins apart) and answers a half-close with `bye` before closing its side (to show
//! the other direction outlives a FIN), and a TLS echo server with its own certificate (to tell
//! a passed-through TLS session from a terminated one).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An echo origin on 127.0.0.1; stopped on drop.
pub struct TcpEcho {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TcpEcho {
    /// Echoes every byte; on the client's FIN writes `bye` and closes. With `tag`, first writes
    /// `<tag>\n`.
    pub async fn start(tag: Option<&str>) -> Self {
        Self::serve(tag, None).await
    }

    /// The same over TLS with `config` (a server certificate of its own).
    pub async fn start_tls(tag: Option<&str>, config: Arc<rustls::ServerConfig>) -> Self {
        Self::serve(tag, Some(config)).await
    }

    async fn serve(tag: Option<&str>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let (count, tag) = (accepted.clone(), tag.map(|t| format!("{t}\n")));
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (tag, tls) = (tag.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => echo(s, tag).await,
                        Some(c) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(c).accept(s).await {
                                echo(s, tag).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, tag: Option<String>) {
    if let Some(t) = tag {
        if s.write_all(t.as_bytes()).await.is_err() {
            return;
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => {
                let _ = s.write_all(b"bye").await;
                let _ = s.shutdown().await;
                return;
            }
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Connect, write `send`, half-close, and read until the other side closes (≤ 5 s): what came
/// back, or `None` when the connection was closed or reset before any byte.
pub async fn exchange(addr: SocketAddr, send: &[u8]) -> Option<Vec<u8>> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let _ = s.write_all(send).await;
        let _ = s.shutdown().await;
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        (!got.is_empty()).then_some(got)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("exchange within 5 s")
}
