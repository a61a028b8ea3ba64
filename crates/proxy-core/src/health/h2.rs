//! An HTTP/2 health check (`codec_client_type: HTTP2`): with prior knowledge in cleartext, or
//! over TLS offering `h2`, on a connection kept from one check to the next while it stays
//! usable.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::Empty;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::conn::Connect;
use super::state::Outcome;
use crate::config::HttpCheck;

/// The probing side of one host's HTTP/2 checks.
#[derive(Debug)]
pub(super) struct H2Prober {
    check: HttpCheck,
    /// `http://<host><path>`: the `:authority` and `:path` of every check.
    uri: Uri,
    user_agent: bool,
    connect: Connect,
    reuse: bool,
    conn: Option<SendRequest<Empty<Bytes>>>,
}

// === impl H2Prober ===

impl H2Prober {
    /// `host`: the `:authority` sent (the check's `host`, else the cluster's name).
    pub(super) fn new(check: HttpCheck, host: &str, connect: Connect, reuse: bool) -> Option<Self> {
        let uri = format!("http://{host}{}", check.path).parse().ok()?;
        let user_agent = !check
            .headers
            .iter()
            .any(|(n, _)| n == http::header::USER_AGENT);
        Some(Self {
            check,
            uri,
            user_agent,
            connect,
            reuse,
            conn: None,
        })
    }

    pub(super) async fn probe(&mut self, addr: SocketAddr) -> Outcome {
        let mut sender = match self.conn.take() {
            Some(s) if s.is_ready() => s,
            _ => match handshake(&self.connect, addr).await {
                Some(s) => s,
                None => return Outcome::Network,
            },
        };
        let mut req = Request::builder().method(Method::GET).uri(self.uri.clone());
        if self.user_agent {
            req = req.header(http::header::USER_AGENT, super::probe::USER_AGENT);
        }
        for (name, value) in &self.check.headers {
            req = req.header(name, value);
        }
        let Ok(req) = req.body(Empty::new()) else {
            return Outcome::Failure;
        };
        let Ok(resp) = sender.send_request(req).await else {
            return Outcome::Network;
        };
        // The body is not read: dropping it resets the stream, not the connection.
        let status = resp.status().as_u16();
        if self.reuse {
            self.conn = Some(sender);
        }
        if self.check.expects(status) {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }

    pub(super) fn reset(&mut self) {
        self.conn = None;
    }
}

/// A new HTTP/2 connection to `addr`, its driver spawned.
pub(super) async fn handshake<B>(connect: &Connect, addr: SocketAddr) -> Option<SendRequest<B>>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect.connect(addr).await.ok()?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .ok()?;
    // The connection's task ends when the sender is dropped or the peer closes.
    tokio::spawn(conn);
    Some(sender)
}
