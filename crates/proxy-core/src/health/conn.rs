//! A health check's connection: TCP, or TLS over it with the cluster's `UpstreamTlsContext`
//! (its trust, client certificate and server name), offering the ALPN protocol the check speaks.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cluster::Host;
use crate::tls::ClientTls;

/// A check's byte stream, plain or TLS.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Stream for T {}

pub(super) type BoxStream = Box<dyn Stream>;

/// How a host's checks connect.
#[derive(Clone)]
pub(super) struct Connect {
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// The ALPN protocol a check offers over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Alpn {
    Http1,
    Http2,
    /// A TCP check: what the cluster's context offers.
    Cluster,
}

// === impl Connect ===

impl Connect {
    /// Cleartext TCP.
    #[cfg(test)]
    pub(super) fn plain() -> Self {
        Self { tls: None }
    }

    /// For `host` of a cluster with TLS context `tls` (`None`: cleartext).
    pub(super) fn new(tls: Option<&ClientTls>, host: &Host, alpn: Alpn) -> Self {
        let tls = tls.map(|t| {
            let mut config = (*t.config).clone();
            match alpn {
                Alpn::Http1 => config.alpn_protocols = vec![b"http/1.1".to_vec()],
                Alpn::Http2 => config.alpn_protocols = vec![b"h2".to_vec()],
                Alpn::Cluster => {}
            }
            // As the data plane: the context's `sni`, else the endpoint's DNS name; none for an
            // IP literal.
            let name = t.sni.as_deref().unwrap_or(&host.hostname);
            let server_name = ServerName::try_from(name.to_owned())
                .unwrap_or_else(|_| ServerName::IpAddress(host.addr.ip().into()));
            (TlsConnector::from(Arc::new(config)), server_name)
        });
        Self { tls }
    }

    /// Whether checks go over TLS (`https` is their scheme).
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(super) async fn connect(&self, addr: SocketAddr) -> std::io::Result<BoxStream> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                Ok(Box::new(tls))
            }
        }
    }
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}
