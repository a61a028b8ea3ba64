//! The TLS handshake of a downstream connection with its filter chain's context.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::tls::SslStats;

/// How long a TLS client may take to complete its handshake (bounded by the idle timeout).
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Complete the handshake with `config` within `wait` (the ClientHello, when the TLS inspector
/// read it, was already bounded by the listener's `listener_filters_timeout`). `None`
/// (counted in `ssl`) when it fails or takes too long.
pub(crate) async fn tls_accept(
    config: &Arc<rustls::ServerConfig>,
    ssl: Option<&SslStats>,
    stream: TcpStream,
    wait: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
    let Ok(handshake) = tokio::time::timeout(wait, acceptor.accept(stream)).await else {
        if let Some(ssl) = ssl {
            ssl.connection_error.inc();
        }
        return None;
    };
    match handshake {
        Ok(s) => {
            if let Some(ssl) = ssl {
                let conn = s.get_ref().1;
                ssl.record_handshake(
                    conn,
                    conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                );
            }
            Some(s)
        }
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            if let Some(ssl) = ssl {
                ssl.record_error(&e);
            }
            None
        }
    }
}
