//! The TLS handshake of a downstream connection, with the filter chain picked by SNI.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::context::TlsListener;

/// How long a TLS client may take to complete its handshake (bounded by the idle timeout).
pub(super) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read the ClientHello, pick the filter chain for its SNI, and complete the handshake with
/// that chain's context. `None` (counted) when no chain matches, the handshake fails or takes
/// too long: the ClientHello may take the listener's `listener_filters_timeout` (counted as
/// `downstream_pre_cx_timeout`, as Envoy's TLS inspector) and the rest `wait`; without one,
/// the whole handshake may take `wait`.
pub(super) async fn tls_accept(
    t: &TlsListener,
    stream: TcpStream,
    wait: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let mut deadline = tokio::time::Instant::now() + wait;
    let hello = match t.listener_filters_timeout {
        Some(d) => match tokio::time::timeout(d, acceptor).await {
            Ok(r) => {
                deadline = tokio::time::Instant::now() + wait;
                r
            }
            Err(_) => {
                t.downstream_pre_cx_timeout.inc();
                return None;
            }
        },
        None => match tokio::time::timeout_at(deadline, acceptor).await {
            Ok(r) => r,
            Err(_) => {
                t.stats.connection_error.inc();
                return None;
            }
        },
    };
    let start = match hello {
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
    let Ok(handshake) =
        tokio::time::timeout_at(deadline, start.into_stream(chain.tls.config.clone())).await
    else {
        t.stats.connection_error.inc();
        return None;
    };
    match handshake {
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
