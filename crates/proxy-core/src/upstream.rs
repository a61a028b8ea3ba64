//! Per-worker upstream connections: a pool of idle HTTP/1.1 connections and one multiplexed
//! HTTP/2 connection per host, opened with the cluster's connect timeout and circuit breakers,
//! over TLS when the cluster has an upstream TLS context.
//!
//! Pools are `!Send` and belong to one worker thread, so checkout and checkin never take a lock.
//! A connection is closed when the cluster's `common_http_protocol_options` say so ([`life`]):
//! at checkin (its last request done, its duration reached) or, idle, by the worker's sweeper
//! task.
//! A request that hyper hands back unsent (the pooled connection closed under it) is sent on
//! another connection; it never surfaces as an error.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

mod life;
pub use life::{Life, Retire};

use http::header;
use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::client::{Checkin, CxGuard, H1Body, H1Conn, Home, SendError};
use crate::cluster::{Cluster, Host};
use crate::error::UpstreamFailure;
use crate::headers::{fields_size, strip_hop_by_hop, Upgrade};
use crate::http1::MAX_RESPONSE_HEAD;
use crate::LocalExec;

/// Idle HTTP/1.1 connections kept per host and worker; more are closed when returned.
const MAX_IDLE_PER_HOST: usize = 256;

/// Cluster index, host address, and the SNI of an `auto_sni` cluster's connections (one
/// pool per server name, as Envoy keys its pools by transport socket options).
type PoolKey = (usize, SocketAddr, Option<Arc<str>>);

type HostMap = HashMap<PoolKey, HostPool, BuildHasherDefault<KeyHasher>>;

/// One worker's upstream connections, keyed by cluster index and host address.
#[derive(Debug, Default)]
pub struct Pools {
    /// Shared with the sweeper task, which holds it weakly: it ends with the pools.
    hosts: Rc<RefCell<HostMap>>,
    sweeper: Rc<Sweeper>,
}

/// The task closing idle connections whose time is up ([`Life::deadline`]). Started by the
/// first checkin that gives an idle connection a deadline; it sleeps until the earliest one.
#[derive(Debug, Default)]
struct Sweeper {
    running: Cell<bool>,
    /// The deadline it sleeps until; `None`: none known.
    next: Cell<Option<Instant>>,
    /// An earlier deadline arrived.
    wake: tokio::sync::Notify,
}

/// A multiply-rotate hash (as rustc's Fx hash) for the pool keys: they come from the
/// configuration and service discovery, not from clients, so they need no keyed (SipHash)
/// protection, and a checkout plus a checkin hash one key each per request.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(Self::SEED);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }

    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Default)]
struct HostPool {
    idle: Vec<PooledH1>,
    /// Idle connections of Baton's own HTTP/1.1 client ([`H1Conn`]), boxed once for their
    /// life so that moving one between pool, request and response body moves a pointer.
    #[allow(clippy::vec_box)]
    own: Vec<Box<H1Conn>>,
    h2: Option<PooledH2>,
    /// `auto_config`: the host chose `h2` by ALPN, so its requests go to the HTTP/2 connection.
    alpn_h2: bool,
    /// Held while an HTTP/2 connection is being opened, so that requests arriving meanwhile
    /// wait for it and share it instead of each opening their own.
    h2_connecting: Rc<tokio::sync::Mutex<()>>,
}

/// A hyper HTTP/1.1 connection with its history, in the pool or carrying a request.
#[derive(Debug)]
pub struct PooledH1 {
    send: http1::SendRequest<ProxyBody>,
    life: Life,
    cluster: Arc<Cluster>,
    /// The server name it was opened with (`auto_sni`).
    sni: Option<Arc<str>>,
}

/// A host's shared HTTP/2 connection, as the pool holds it.
#[derive(Debug)]
struct PooledH2 {
    send: http2::SendRequest<ProxyBody>,
    life: Life,
    cluster: Arc<Cluster>,
}

/// A connection ready for one request.
#[derive(Debug)]
pub enum Conn {
    H1(PooledH1),
    H2(http2::SendRequest<ProxyBody>),
    /// Baton's own HTTP/1.1 client: cleartext, request body in memory.
    Own(Box<H1Conn>),
}

/// A checked-out connection and whether it had served a request before (a reused connection
/// may have been closed by the upstream while idle).
#[derive(Debug)]
pub struct Checkout {
    pub conn: Conn,
    pub reused: bool,
}

// === impl Pools ===

impl Pools {
    /// A ready connection to `host`: an idle pooled one, the shared HTTP/2 one, or a new one.
    /// `own`: the request's body is in memory, so a cleartext HTTP/1.1 upstream gets Baton's
    /// own client ([`Conn::Own`]). `sni`: the server name an `auto_sni` cluster's request
    /// asks for ([`auto_sni`]).
    pub async fn checkout(
        &self,
        cidx: usize,
        cluster: &Arc<Cluster>,
        host: &Arc<Host>,
        own: bool,
        sni: Option<Arc<str>>,
    ) -> Result<Checkout, UpstreamFailure> {
        let key = (cidx, host.addr, sni);
        let limits = &cluster.config.upstream.limits;
        if own && !cluster.config.http2 && cluster.config.tls.is_none() {
            loop {
                let candidate = self
                    .hosts
                    .borrow_mut()
                    .get_mut(&key)
                    .and_then(|p| p.own.pop());
                let Some(mut c) = candidate else { break };
                let now = Instant::now();
                if let Some(r) = c.life.expired(limits, now) {
                    r.count(&cluster.stats);
                    continue;
                }
                if c.idle_usable() {
                    start_request(&mut c.life, cluster, now);
                    return Ok(Checkout {
                        conn: Conn::Own(c),
                        reused: true,
                    });
                }
            }
            let _pending = Pending::enter(cluster)?;
            let stream = Box::pin(connect_tcp(cluster, host)).await?;
            cluster.stats.upstream_cx_http1_total.inc();
            let head_limit = MAX_RESPONSE_HEAD;
            let guard = CxGuard::new(cluster.clone(), host.clone());
            let mut c = Box::new(H1Conn::new(stream, host.addr, cidx, head_limit, guard));
            start_request(&mut c.life, cluster, Instant::now());
            return Ok(Checkout {
                conn: Conn::Own(c),
                reused: false,
            });
        }
        let alpn_h2 = cluster.config.upstream.auto_http
            && self.hosts.borrow().get(&key).is_some_and(|p| p.alpn_h2);
        if cluster.config.http2 || alpn_h2 {
            // Boxed: it would grow every request's future (see `proxy::forward`).
            return Box::pin(self.checkout_h2(key, cluster, host)).await;
        }
        loop {
            let candidate = self
                .hosts
                .borrow_mut()
                .get_mut(&key)
                .and_then(|p| p.idle.pop());
            let Some(mut s) = candidate else { break };
            if s.send.is_closed() {
                continue;
            }
            if let Some(r) = s.life.expired(limits, Instant::now()) {
                r.count(&cluster.stats);
                continue;
            }
            if s.send.is_ready() || s.send.ready().await.is_ok() {
                start_request(&mut s.life, cluster, Instant::now());
                return Ok(Checkout {
                    conn: Conn::H1(s),
                    reused: true,
                });
            }
        }
        let _pending = Pending::enter(cluster)?;
        let conn = if cluster.config.upstream.auto_http {
            match Box::pin(connect_auto(cluster, host, key.2.as_deref())).await? {
                Negotiated::H1(send) => Conn::H1(PooledH1::new(send, cluster, key.2.clone())),
                Negotiated::H2(send) => {
                    let mut life = Life::new(Instant::now());
                    let retire = start_request(&mut life, cluster, Instant::now());
                    let mut hosts = self.hosts.borrow_mut();
                    let pool = hosts.entry(key.clone()).or_default();
                    pool.alpn_h2 = true;
                    if retire.is_none() && pool.h2.is_none() {
                        pool.h2 = Some(PooledH2 {
                            send: send.clone(),
                            life,
                            cluster: cluster.clone(),
                        });
                        drop(hosts);
                        self.arm(life.deadline(limits));
                    }
                    Conn::H2(send)
                }
            }
        } else {
            Conn::H1(PooledH1::new(
                Box::pin(connect_h1(cluster, host, false, key.2.as_deref())).await?,
                cluster,
                key.2.clone(),
            ))
        };
        Ok(Checkout {
            conn,
            reused: false,
        })
    }

    /// The shared HTTP/2 connection to `host`, opened if there is none.
    async fn checkout_h2(
        &self,
        key: PoolKey,
        cluster: &Arc<Cluster>,
        host: &Arc<Host>,
    ) -> Result<Checkout, UpstreamFailure> {
        {
            let connecting = self
                .hosts
                .borrow_mut()
                .entry(key.clone())
                .or_default()
                .h2_connecting
                .clone();
            let _one_connect = connecting.lock().await;
            let limits = &cluster.config.upstream.limits;
            let existing = {
                let mut hosts = self.hosts.borrow_mut();
                let pool = hosts.entry(key.clone()).or_default();
                let now = Instant::now();
                match pool.h2.as_mut() {
                    Some(p) if p.send.is_closed() => {
                        pool.h2 = None;
                        None
                    }
                    Some(p) => {
                        if let Some(r) = p.life.expired(limits, now) {
                            // Dropped from the pool: it closes once its streams are done.
                            r.count(&cluster.stats);
                            pool.h2 = None;
                            None
                        } else {
                            let send = p.send.clone();
                            if start_request(&mut p.life, cluster, now).is_some() {
                                pool.h2 = None;
                            }
                            Some(send)
                        }
                    }
                    None => None,
                }
            };
            if let Some(s) = existing {
                return Ok(Checkout {
                    conn: Conn::H2(s),
                    reused: true,
                });
            }
            let _pending = Pending::enter(cluster)?;
            let conn = if cluster.config.upstream.auto_http {
                match Box::pin(connect_auto(cluster, host, key.2.as_deref())).await? {
                    Negotiated::H1(send) => {
                        // The host no longer offers h2.
                        if let Some(p) = self.hosts.borrow_mut().get_mut(&key) {
                            p.alpn_h2 = false;
                        }
                        return Ok(Checkout {
                            conn: Conn::H1(PooledH1::new(send, cluster, key.2.clone())),
                            reused: false,
                        });
                    }
                    Negotiated::H2(send) => send,
                }
            } else {
                Box::pin(connect_h2(cluster, host, key.2.as_deref())).await?
            };
            let now = Instant::now();
            let mut life = Life::new(now);
            if start_request(&mut life, cluster, now).is_none() {
                self.hosts.borrow_mut().entry(key.clone()).or_default().h2 = Some(PooledH2 {
                    send: conn.clone(),
                    life,
                    cluster: cluster.clone(),
                });
                self.arm(life.deadline(limits));
            }
            Ok(Checkout {
                conn: Conn::H2(conn),
                reused: false,
            })
        }
    }

    /// Return an idle connection of Baton's own client.
    pub fn checkin_h1(&self, cidx: usize, mut c: Box<H1Conn>) {
        let limits = c.cluster().config.upstream.limits;
        if let Err(retire) = c.life.finish(&limits, Instant::now()) {
            if let Some(r) = retire {
                r.count(&c.cluster().stats);
            }
            return;
        }
        let deadline = c.life.deadline(&limits);
        {
            let mut hosts = self.hosts.borrow_mut();
            let pool = hosts.entry((cidx, c.addr(), None)).or_default();
            if pool.own.len() >= MAX_IDLE_PER_HOST {
                return;
            }
            pool.own.push(c);
        }
        self.arm(deadline);
    }

    /// Return an HTTP/1.1 connection whose response has been read to its end.
    pub fn checkin(&self, cidx: usize, addr: SocketAddr, mut s: PooledH1) {
        if s.send.is_closed() {
            return;
        }
        let limits = &s.cluster.config.upstream.limits;
        if let Err(retire) = s.life.finish(limits, Instant::now()) {
            if let Some(r) = retire {
                r.count(&s.cluster.stats);
            }
            return;
        }
        let deadline = s.life.deadline(limits);
        {
            let mut hosts = self.hosts.borrow_mut();
            let pool = hosts.entry((cidx, addr, s.sni.clone())).or_default();
            if pool.idle.len() >= MAX_IDLE_PER_HOST {
                return;
            }
            pool.idle.push(s);
        }
        self.arm(deadline);
    }

    /// Make sure the sweeper wakes by `deadline`.
    fn arm(&self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else { return };
        let sw = &self.sweeper;
        if !sw.running.get() {
            sw.running.set(true);
            sw.next.set(Some(deadline));
            let hosts = Rc::downgrade(&self.hosts);
            tokio::task::spawn_local(sweep(hosts, self.sweeper.clone()));
        } else if sw.next.get().is_none_or(|t| deadline < t) {
            sw.next.set(Some(deadline));
            sw.wake.notify_one();
        }
    }
}

/// Close the idle connections whose time is up, then sleep until the next one's; ends with
/// the pools.
async fn sweep(hosts: Weak<RefCell<HostMap>>, sweeper: Rc<Sweeper>) {
    loop {
        let next = {
            let Some(hosts) = hosts.upgrade() else { return };
            let mut hosts = hosts.borrow_mut();
            sweep_once(&mut hosts, Instant::now())
        };
        sweeper.next.set(next);
        match next {
            Some(t) => {
                tokio::select! {
                    () = tokio::time::sleep_until(t.into()) => {}
                    () = sweeper.wake.notified() => {}
                }
            }
            None => sweeper.wake.notified().await,
        }
    }
}

/// Drop every idle connection due at `now`, counting why; the earliest deadline left.
fn sweep_once(hosts: &mut HostMap, now: Instant) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    let mut keep = |deadline: Option<Instant>| {
        if let Some(d) = deadline {
            next = Some(next.map_or(d, |n| n.min(d)));
        }
    };
    for pool in hosts.values_mut() {
        pool.own.retain(|c| {
            let cluster = c.cluster();
            let limits = &cluster.config.upstream.limits;
            match c.life.expired(limits, now) {
                Some(r) => {
                    r.count(&cluster.stats);
                    false
                }
                None => {
                    keep(c.life.deadline(limits));
                    true
                }
            }
        });
        pool.idle.retain(|s| {
            let limits = &s.cluster.config.upstream.limits;
            if s.send.is_closed() {
                return false;
            }
            match s.life.expired(limits, now) {
                Some(r) => {
                    r.count(&s.cluster.stats);
                    false
                }
                None => {
                    keep(s.life.deadline(limits));
                    true
                }
            }
        });
        if let Some(h2) = &pool.h2 {
            let limits = &h2.cluster.config.upstream.limits;
            match h2.life.expired(limits, now) {
                // Dropped from the pool: it closes once its streams are done.
                Some(r) => {
                    r.count(&h2.cluster.stats);
                    pool.h2 = None;
                }
                None => keep(h2.life.deadline(limits)),
            }
        }
    }
    next
}

/// A request starts on a connection; `Some` (counted): it is the connection's last.
fn start_request(life: &mut Life, cluster: &Cluster, now: Instant) -> Option<Retire> {
    let r = life.start_request(&cluster.config.upstream.limits, now);
    if let Some(r) = r {
        r.count(&cluster.stats);
    }
    r
}

// === impl PooledH1 ===

impl PooledH1 {
    /// A new connection, about to carry its first request.
    fn new(
        send: http1::SendRequest<ProxyBody>,
        cluster: &Arc<Cluster>,
        sni: Option<Arc<str>>,
    ) -> Self {
        let now = Instant::now();
        let mut life = Life::new(now);
        start_request(&mut life, cluster, now);
        Self {
            send,
            life,
            cluster: cluster.clone(),
            sni,
        }
    }
}

impl Checkin for Pools {
    fn checkin_h1(&self, conn: Box<H1Conn>) {
        Pools::checkin_h1(self, conn.cidx(), conn);
    }
}

// === impl Conn ===

impl Conn {
    /// Send `req`. After [`SendError::NotSent`] `req` is intact, to be sent on another
    /// connection; otherwise hyper may have taken it. The response comes without hop-by-hop
    /// fields (as [`strip_hop_by_hop`] leaves it); with it comes the hyper
    /// HTTP/1.1 connection to return to the pool once its body has been read (Baton's own
    /// client returns its connection itself).
    pub async fn send(
        self,
        req: &mut Request<ProxyBody>,
        home: Home,
    ) -> Result<(Response<ProxyBody>, Option<PooledH1>), SendError> {
        // hyper's clients take the request (and give it back if it was not sent); Baton's own
        // borrows it, so nothing is moved out and back. Boxed: hyper's send futures would grow
        // every request's future.
        let taken =
            |req: &mut Request<ProxyBody>| std::mem::replace(req, Request::new(ProxyBody::empty()));
        let (res, checkin) = match self {
            Conn::Own(c) => {
                let body = req.body().buffered().unwrap_or_default();
                let resp = c
                    .send(req, body, |start, conn| {
                        H1Body::response(start, conn, home, ProxyBody::upstream_h1)
                    })
                    .await?;
                return Ok((resp, None));
            }
            Conn::H1(mut s) => (Box::pin(s.send.try_send_request(taken(req))).await, Some(s)),
            Conn::H2(mut s) => (Box::pin(s.try_send_request(taken(req))).await, None),
        };
        match res {
            Ok(r) => {
                if let Some(f) = refused_response(&r) {
                    return Err(SendError::Failed(f));
                }
                let (mut parts, body) = r.into_parts();
                strip_hop_by_hop(&mut parts.headers, Upgrade::Strip);
                Ok((
                    Response::from_parts(parts, ProxyBody::stream(body)),
                    checkin,
                ))
            }
            Err(mut e) => Err(match e.take_message() {
                Some(back) => {
                    *req = back;
                    SendError::NotSent
                }
                None => SendError::Failed(classify(e.error())),
            }),
        }
    }
}

/// A response from hyper's clients that Baton's own client would refuse too (502): a `1xx`
/// as the final status (a `101` to a request that asked for no switch; hyper hands it over as
/// final), and `Content-Length` together with `Transfer-Encoding` (RFC 9112 §6.3: a message
/// that may be an attempt at smuggling), and a head over [`MAX_RESPONSE_HEAD`].
fn refused_response<B>(r: &Response<B>) -> Option<UpstreamFailure> {
    let h = r.headers();
    let both_lengths =
        h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH);
    // hyper's buffer limit is checked between reads, so a longer head may get through.
    let too_long = fields_size(h) > MAX_RESPONSE_HEAD;
    (r.status().is_informational() || both_lengths || too_long)
        .then_some(UpstreamFailure::ProtocolError)
}

/// Map a hyper client error to Envoy's failure classes.
pub fn classify(e: &hyper::Error) -> UpstreamFailure {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        UpstreamFailure::ProtocolError
    } else if e.is_timeout() {
        UpstreamFailure::Timeout
    } else {
        UpstreamFailure::Reset
    }
}

/// Open a TCP connection to `host` within the cluster's connect timeout and circuit breaker.
pub(crate) async fn connect_tcp(
    cluster: &Cluster,
    host: &Host,
) -> Result<TcpStream, UpstreamFailure> {
    let stats = &cluster.stats;
    let max = i64::from(cluster.config.circuit_breakers.max_connections);
    if stats.upstream_cx_active.value() >= max {
        stats.upstream_cx_overflow.inc();
        return Err(UpstreamFailure::Overflow);
    }
    let started = Instant::now();
    // Envoy counts every connection it opens, one that then fails to connect too.
    stats.upstream_cx_total.inc();
    let res = tokio::time::timeout(
        cluster.config.connect_timeout,
        TcpStream::connect(host.addr),
    )
    .await;
    let stream = match res {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(cluster = %cluster.config.name, host = %host.addr, error = %e, "upstream connect failed");
            stats.upstream_cx_connect_fail.inc();
            host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            return Err(UpstreamFailure::ConnectFailure);
        }
        Err(_) => {
            stats.upstream_cx_connect_timeout.inc();
            stats.upstream_cx_connect_fail.inc();
            host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            return Err(UpstreamFailure::ConnectFailure);
        }
    };
    let _ = stream.set_nodelay(true);
    if let Some(k) = &cluster.config.upstream.tcp_keepalive {
        if let Err(e) = set_keepalive(&stream, k) {
            tracing::debug!(cluster = %cluster.config.name, host = %host.addr, error = %e, "could not set TCP keepalive on an upstream connection");
        }
    }
    stats.upstream_cx_connect_ms.record(started.elapsed());
    Ok(stream)
}

/// `upstream_connection_options.tcp_keepalive`: `SO_KEEPALIVE` on, and the probe count, idle
/// time and interval that are given (the system's for the others).
fn set_keepalive(stream: &TcpStream, k: &crate::config::TcpKeepalive) -> std::io::Result<()> {
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        ka = ka.with_time(t);
    }
    if let Some(i) = k.interval {
        ka = ka.with_interval(i);
    }
    if let Some(p) = k.probes {
        ka = ka.with_retries(p);
    }
    socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
}

/// A request waiting for a new upstream connection, bounded by the cluster's
/// `max_pending_requests`.
struct Pending<'a>(&'a Cluster);

impl<'a> Pending<'a> {
    fn enter(cluster: &'a Cluster) -> Result<Self, UpstreamFailure> {
        let stats = &cluster.stats;
        let max = i64::from(cluster.config.circuit_breakers.max_pending_requests);
        if stats.upstream_rq_pending_active.value() >= max {
            stats.upstream_rq_pending_overflow.inc();
            return Err(UpstreamFailure::Overflow);
        }
        stats.upstream_rq_pending_total.inc();
        stats.upstream_rq_pending_active.inc();
        Ok(Self(cluster))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.stats.upstream_rq_pending_active.dec();
    }
}

/// An upstream connection's IO counting its bytes in `upstream_cx_rx_bytes_total` /
/// `upstream_cx_tx_bytes_total` as they pass (above TLS, as Envoy counts them).
pub(crate) struct Counted<IO> {
    io: IO,
    cluster: Arc<Cluster>,
}

impl<IO> Counted<IO> {
    pub(crate) fn new(io: IO, cluster: Arc<Cluster>) -> Self {
        Self { io, cluster }
    }

    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }

    pub(crate) fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.cluster.stats.upstream_cx_rx_bytes_total.add(n as u64);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.cluster.stats.upstream_cx_tx_bytes_total.add(n as u64);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.cluster.stats.upstream_cx_tx_bytes_total.add(n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Complete the TLS handshake of an upstream connection, counting it in `cluster.<name>.ssl.*`.
/// The server name is the context's `sni`, else the endpoint's DNS name; an IP-literal host
/// sends no SNI.
pub(crate) async fn connect_tls(
    cluster: &Cluster,
    host: &Host,
    tls: &crate::tls::ClientTls,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamFailure> {
    connect_tls_with(cluster, host, tls, tls.config.clone(), stream, None).await
}

/// [`connect_tls`] with `config` (the context's, or its HTTP/1.1-only variant).
async fn connect_tls_with(
    cluster: &Cluster,
    host: &Host,
    tls: &crate::tls::ClientTls,
    config: Arc<rustls::ClientConfig>,
    stream: TcpStream,
    auto_sni: Option<&str>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamFailure> {
    use rustls::pki_types::ServerName;
    let name = auto_sni.or(tls.sni.as_deref()).unwrap_or(&host.hostname);
    let server_name = match ServerName::try_from(name.to_owned()) {
        Ok(n) => n,
        Err(_) => ServerName::IpAddress(host.addr.ip().into()),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let res = tokio::time::timeout(
        cluster.config.connect_timeout,
        connector.connect(server_name, stream),
    )
    .await;
    let ssl = cluster.ssl.as_ref();
    match res {
        Ok(Ok(s)) => {
            if let Some(ssl) = ssl {
                // Upstream, the peer is the server: it always presents a certificate.
                ssl.record_handshake(s.get_ref().1, true);
            }
            Ok(s)
        }
        Ok(Err(e)) => {
            tracing::debug!(cluster = %cluster.config.name, host = %host.addr, error = %e, "upstream TLS handshake failed");
            if let Some(ssl) = ssl {
                ssl.record_error(&e);
            }
            cluster.stats.upstream_cx_connect_fail.inc();
            host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            Err(UpstreamFailure::ConnectFailure)
        }
        Err(_) => {
            if let Some(ssl) = ssl {
                ssl.connection_error.inc();
            }
            cluster.stats.upstream_cx_connect_timeout.inc();
            cluster.stats.upstream_cx_connect_fail.inc();
            host.stats.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            Err(UpstreamFailure::ConnectFailure)
        }
    }
}

/// Open an HTTP/1.1 connection. `upgrades`: the connection may switch protocols (WebSocket).
pub async fn connect_h1(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    upgrades: bool,
    sni: Option<&str>,
) -> Result<http1::SendRequest<ProxyBody>, UpstreamFailure> {
    let stream = connect_tcp(cluster, host).await?;
    match &cluster.config.tls {
        None => handshake_h1(cluster, host, upgrades, stream).await,
        Some(tls) => {
            // A context offering h2 too (auto_config) offers HTTP/1.1 alone here.
            let config = tls
                .http1_config
                .clone()
                .unwrap_or_else(|| tls.config.clone());
            let s = connect_tls_with(cluster, host, tls, config, stream, sni).await?;
            handshake_h1(cluster, host, upgrades, s).await
        }
    }
}

/// What a TLS handshake offering `h2` and `http/1.1` ended with.
enum Negotiated {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// Open a connection of an `auto_config` cluster (always TLS): the codec is the protocol
/// ALPN chose, HTTP/1.1 when the server chose none.
async fn connect_auto(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    sni: Option<&str>,
) -> Result<Negotiated, UpstreamFailure> {
    let stream = connect_tcp(cluster, host).await?;
    let Some(tls) = &cluster.config.tls else {
        // Refused at configuration load; cleartext has nothing to negotiate with.
        return handshake_h1(cluster, host, false, stream)
            .await
            .map(Negotiated::H1);
    };
    let s = connect_tls_with(cluster, host, tls, tls.config.clone(), stream, sni).await?;
    if s.get_ref().1.alpn_protocol() == Some(b"h2") {
        handshake_h2(cluster, host, s).await.map(Negotiated::H2)
    } else {
        handshake_h1(cluster, host, false, s)
            .await
            .map(Negotiated::H1)
    }
}

async fn handshake_h1<IO>(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    upgrades: bool,
    stream: IO,
) -> Result<http1::SendRequest<ProxyBody>, UpstreamFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    // A response head longer than this fails to parse: 502.
    builder.max_buf_size(MAX_RESPONSE_HEAD);
    let sender = if upgrades {
        // Not counted: a tunnel unwraps the upgraded connection to its socket, so that it can
        // move to the next generation (`tunnel::run`).
        let (sender, conn) = builder
            .handshake::<_, ProxyBody>(TokioIo::new(stream))
            .await
            .map_err(|e| classify(&e))?;
        let guard = CxGuard::new(cluster.clone(), host.clone());
        tokio::task::spawn_local(async move {
            let _ = conn.with_upgrades().await;
            drop(guard);
        });
        sender
    } else {
        let (sender, conn) = builder
            .handshake::<_, ProxyBody>(TokioIo::new(Counted::new(stream, cluster.clone())))
            .await
            .map_err(|e| classify(&e))?;
        let guard = CxGuard::new(cluster.clone(), host.clone());
        tokio::task::spawn_local(async move {
            let _ = conn.await;
            drop(guard);
        });
        sender
    };
    cluster.stats.upstream_cx_http1_total.inc();
    Ok(sender)
}

async fn connect_h2(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    sni: Option<&str>,
) -> Result<http2::SendRequest<ProxyBody>, UpstreamFailure> {
    let stream = connect_tcp(cluster, host).await?;
    match &cluster.config.tls {
        None => handshake_h2(cluster, host, stream).await,
        Some(tls) => {
            let s = connect_tls_with(cluster, host, tls, tls.config.clone(), stream, sni).await?;
            handshake_h2(cluster, host, s).await
        }
    }
}

async fn handshake_h2<IO>(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    stream: IO,
) -> Result<http2::SendRequest<ProxyBody>, UpstreamFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let mut builder = http2::Builder::new(LocalExec);
    builder.timer(TokioTimer::new());
    let h2 = &cluster.config.upstream.http2;
    if let Some(w) = h2.initial_stream_window_size {
        builder.initial_stream_window_size(w);
    }
    if let Some(w) = h2.initial_connection_window_size {
        builder.initial_connection_window_size(w);
    }
    if let Some(n) = h2.max_concurrent_streams {
        // SETTINGS_MAX_CONCURRENT_STREAMS, as Envoy announces it.
        builder.max_concurrent_streams(n);
    }
    if let Some(k) = &h2.keepalive {
        builder
            .keep_alive_interval(k.interval)
            .keep_alive_timeout(k.timeout)
            .keep_alive_while_idle(true);
    }
    let (sender, conn) = builder
        .handshake::<_, ProxyBody>(TokioIo::new(Counted::new(stream, cluster.clone())))
        .await
        .map_err(|e| classify(&e))?;
    cluster.stats.upstream_cx_http2_total.inc();
    let guard = CxGuard::new(cluster.clone(), host.clone());
    tokio::task::spawn_local(async move {
        let _ = conn.await;
        drop(guard);
    });
    Ok(sender)
}

/// The server name an `auto_sni` TLS cluster's connection for `req` sends: the request's
/// host (`:authority` or `Host`) without its port; `None` for other clusters (their SNI is
/// the context's `sni` or the endpoint's name).
pub fn auto_sni(cluster: &Cluster, uri: &http::Uri, headers: &http::HeaderMap) -> Option<Arc<str>> {
    if !cluster.config.upstream.auto_sni || cluster.config.tls.is_none() {
        return None;
    }
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    let host = match authority.strip_prefix('[') {
        // `[v6]:port`.
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| Arc::from(host))
}

/// Whether `req` can go on Baton's own client ([`H1Conn`]): its body is in memory.
pub fn sendable(req: &Request<ProxyBody>) -> bool {
    req.body().is_buffered()
}

#[cfg(test)]
mod tests;
