//! One check against one host: an HTTP/1.1 `GET` on a connection kept between checks when the
//! host allows it (HTTP/2 is `h2`'s, gRPC `grpc`'s, TCP `tcp`'s). The caller bounds each
//! probe with the check's `timeout` (and calls [`Prober::reset`] when it fires).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{Alpn, BoxStream, Connect};
use super::state::Outcome;
use crate::cluster::Host;
use crate::config::{self, CheckKind, HttpCheck};
use crate::http1::names::NameCache;
use crate::http1::response::{self, Parsed};
use crate::http1::{Framing, MAX_RESPONSE_HEAD, READ_SIZE};

/// The most of a response body read to keep a connection.
const MAX_BODY: u64 = 64 * 1024;
/// The user agent of HTTP checks: Envoy's, so origins that recognise health checks by it
/// (Envoy's own health-check filter does) answer Baton's the same way.
pub(super) const USER_AGENT: &str = "Envoy/HC";

/// The probing side of one host's checks.
#[derive(Debug)]
pub struct Prober {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Http(HttpProber),
    H2(super::h2::H2Prober),
    Grpc(super::grpc::GrpcProber),
    Tcp(super::tcp::TcpProber),
}

#[derive(Debug)]
struct HttpProber {
    check: HttpCheck,
    /// The request, encoded once.
    request: Vec<u8>,
    connect: Connect,
    /// The connection of the previous check, when the host left it open.
    conn: Option<BoxStream>,
    /// `reuse_connection`: keep the connection for the next check.
    reuse: bool,
    buf: Vec<u8>,
    names: NameCache,
    fields: Vec<response::Field>,
}

// === impl Prober ===

impl Prober {
    /// The prober of `host`, a host of health-checked `cluster`; `None` without a check.
    pub fn new(cluster: &config::Cluster, host: &Host) -> Option<Self> {
        let hc = cluster.health_check.as_ref()?;
        let name = cluster.name.as_str();
        let reuse = hc.reuse_connection;
        let connect = |alpn| Connect::new(cluster.tls.as_ref(), host, alpn);
        let kind = match &hc.kind {
            CheckKind::Http(h) if h.http2 => {
                let authority = if h.host.is_empty() { name } else { &h.host };
                match super::h2::H2Prober::new(h.clone(), authority, connect(Alpn::Http2), reuse) {
                    Some(p) => Kind::H2(p),
                    // Validated: the path and host make a URI.
                    None => Kind::Http(HttpProber::new(
                        h.clone(),
                        name,
                        connect(Alpn::Http1),
                        reuse,
                    )),
                }
            }
            CheckKind::Http(h) => Kind::Http(HttpProber::new(
                h.clone(),
                name,
                connect(Alpn::Http1),
                reuse,
            )),
            CheckKind::Grpc(g) => {
                let authority = if g.authority.is_empty() {
                    name
                } else {
                    &g.authority
                };
                // Validated: the authority makes a URI.
                Kind::Grpc(super::grpc::GrpcProber::new(
                    g,
                    authority,
                    connect(Alpn::Http2),
                    reuse,
                )?)
            }
            CheckKind::Tcp(t) => Kind::Tcp(super::tcp::TcpProber::new(
                t.clone(),
                connect(Alpn::Cluster),
                reuse,
            )),
        };
        Some(Self { kind })
    }

    pub async fn probe(&mut self, addr: SocketAddr) -> Outcome {
        match &mut self.kind {
            Kind::Http(h) => h.probe(addr).await,
            Kind::H2(h) => h.probe(addr).await,
            Kind::Grpc(g) => g.probe(addr).await,
            Kind::Tcp(t) => t.probe(addr).await,
        }
    }

    /// Forget a connection a timed-out probe left in an unknown state.
    pub fn reset(&mut self) {
        match &mut self.kind {
            Kind::Http(h) => h.conn = None,
            Kind::H2(h) => h.reset(),
            Kind::Grpc(g) => g.reset(),
            Kind::Tcp(t) => t.reset(),
        }
    }
}

// === impl HttpProber ===

impl HttpProber {
    fn new(check: HttpCheck, cluster: &str, connect: Connect, reuse: bool) -> Self {
        let host = if check.host.is_empty() {
            cluster
        } else {
            &check.host
        };
        let mut request = format!("GET {} HTTP/1.1\r\nhost: {host}\r\n", check.path).into_bytes();
        let own_agent = check
            .headers
            .iter()
            .any(|(n, _)| n == http::header::USER_AGENT);
        if !own_agent {
            request.extend_from_slice(format!("user-agent: {USER_AGENT}\r\n").as_bytes());
        }
        for (name, value) in &check.headers {
            crate::http1::fields::put_field(
                &mut request,
                name.as_str().as_bytes(),
                value.as_bytes(),
            );
        }
        request.extend_from_slice(b"\r\n");
        Self {
            check,
            request,
            connect,
            conn: None,
            reuse,
            buf: Vec::with_capacity(READ_SIZE),
            names: NameCache::new(16),
            fields: Vec::new(),
        }
    }

    async fn probe(&mut self, addr: SocketAddr) -> Outcome {
        // A kept connection the host has since closed is not the host's failure: once more
        // on a new one.
        if let Some(conn) = self.conn.take() {
            match self.exchange(conn).await {
                Err(Stale::BeforeAnswer) => {}
                Ok(outcome) | Err(Stale::Failed(outcome)) => return outcome,
            }
        }
        let Ok(conn) = self.connect.connect(addr).await else {
            return Outcome::Network;
        };
        match self.exchange(conn).await {
            Ok(outcome) | Err(Stale::Failed(outcome)) => outcome,
            Err(Stale::BeforeAnswer) => Outcome::Network,
        }
    }

    /// One request and its response on `conn`, which is kept if the host allows.
    async fn exchange(&mut self, mut conn: BoxStream) -> Result<Outcome, Stale> {
        self.buf.clear();
        if conn.write_all(&self.request).await.is_err() {
            return Err(Stale::BeforeAnswer);
        }
        // Set once a byte of an answer came (a 1xx head counts, though it is dropped).
        let mut answered = false;
        let head = loop {
            if !self.buf.is_empty() {
                answered = true;
                match response::parse(&self.buf, false, &mut self.names, &mut self.fields) {
                    Ok(Parsed::Final(head)) => break head,
                    Ok(Parsed::Informational(len)) => {
                        // The final head may already be in the buffer: parse again first.
                        self.buf.drain(..len);
                        continue;
                    }
                    Ok(Parsed::Partial) if self.buf.len() < MAX_RESPONSE_HEAD => {}
                    Ok(Parsed::Partial) | Err(_) => return Err(Stale::Failed(Outcome::Network)),
                }
            }
            if conn.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                return Err(if answered {
                    Stale::Failed(Outcome::Network)
                } else {
                    Stale::BeforeAnswer
                });
            }
        };
        let outcome = if self.check.expects(head.status.as_u16()) {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let body_read = self.buf.len() - head.len;
        let keep = match head.framing {
            Framing::None => head.keep_alive,
            Framing::Length(n) if head.keep_alive && n <= MAX_BODY => {
                skip(&mut conn, n.saturating_sub(body_read as u64)).await
            }
            _ => false,
        };
        if keep && self.reuse {
            self.conn = Some(conn);
        }
        Ok(outcome)
    }
}

/// Why an exchange gave no outcome of its own.
#[derive(Debug)]
pub(super) enum Stale {
    /// The connection was closed before any byte of an answer: a kept one may just have
    /// timed out idle.
    BeforeAnswer,
    Failed(Outcome),
}

/// Read and drop `n` more body bytes; whether they all came.
async fn skip(conn: &mut BoxStream, mut n: u64) -> bool {
    let mut scratch = [0u8; 1024];
    while n > 0 {
        let want = scratch.len().min(n as usize);
        match conn.read(&mut scratch[..want]).await {
            Ok(0) | Err(_) => return false,
            Ok(got) => n -= got as u64,
        }
    }
    true
}

#[cfg(test)]
mod tests;
