//! The TLS handshake of a downstream connection, with the filter chain picked by SNI.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::context::TlsListener;

/// How long a TLS client may take to complete its handshake (bounded by the idle timeout).
pub(super) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read the ClientHello, pick the filter chain for its SNI, and complete the handshake with
/// that chain's context. `None` (counted) when no chain matches or the handshake fails.
pub(super) async fn tls_accept(
    t: &TlsListener,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match acceptor.await {
        Ok(s) => s,
        Err(e) => {
            t.stats.record_error(&e);
            return None;
        }
    };
    let Some(chain) = t.chains.select(start.client_hello().server_name()) else {
        t.no_filter_chain_match.inc();
        return None;
    };
    match start.into_stream(chain.tls.config.clone()).await {
        Ok(s) => {
            let conn = s.get_ref().1;
            t.stats.record_handshake(
                conn,
                conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            );
            Some(s)
        }
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            t.stats.record_error(&e);
            None
        }
    }
}
