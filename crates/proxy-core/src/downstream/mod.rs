//! One downstream connection, from accept (or arrival from the previous generation) to close:
//! TLS, protocol sniffing, then HTTP/1.1 ([`h1`]: Baton's own loop, then hyper's session) or
//! HTTP/2 ([`h2`]); every request goes to [`crate::request::handle`].

mod accept;
mod h1;
mod h1_loop;
mod h2;
mod linger;
mod slow;
mod svc;
mod tls;

pub(crate) use self::tls::{tls_accept, TLS_HANDSHAKE_TIMEOUT};

pub(crate) use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::access::ConnOutcome;
use crate::config::CodecType;
use crate::context::{ChainKind, ConnCtx, ListenerShared, ListenerState, Worker};
use crate::flags::ResponseFlags;
use crate::handover::{Arriving, Kind};
use crate::io::{ServerIo, Sniffed, Stream};
use crate::stats::{HttpStats, ListenerStats};

pub use self::accept::Accepted;
use self::accept::{choose_chain, ListenerConn, Refused};
use self::h1::serve_http1;
use self::h2::serve_http2;
use self::svc::Svc;

/// Serve a connection taken over from the previous generation, as if it had been accepted
/// here (without counting it as a new connection).
pub async fn serve_arriving(
    l: Arc<ListenerShared>,
    w: Rc<Worker>,
    conn: Arriving,
    drain: drain::Watch,
    alive: mpsc::Sender<()>,
) {
    w.handover.count_received();
    let mut streams = Vec::with_capacity(conn.fds.len());
    for fd in conn.fds {
        let std = std::net::TcpStream::from(fd);
        let stream = std
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(std));
        match stream {
            Ok(s) => streams.push(s),
            Err(e) => {
                tracing::warn!(error = %e, "could not use a socket from the previous generation");
                return;
            }
        }
    }
    let mut streams = streams.into_iter();
    let Some(down) = streams.next() else { return };
    let Ok(remote) = down.peer_addr() else {
        // The client has gone meanwhile.
        return;
    };
    let mut local = down.local_addr().unwrap_or(l.config.address);
    let mut restored = false;
    if l.config
        .listener_filters
        .contains(&crate::config::ListenerFilter::OriginalDst)
    {
        if let Some(dst) = crate::original_dst::lookup(&down, local) {
            (local, restored) = (dst, true);
        }
    }
    let opened = Instant::now();
    let ls = &l.listener_stats;
    let hs = &l.http_stats;
    ls.downstream_cx_active.inc();
    ls.server_total_connections.inc();
    hs.downstream_cx_active.inc();
    let dconn = drain.connection(l.config.direction);
    drop(drain);
    match (conn.kind, streams.next()) {
        (Kind::Http1, None) => {
            let io = ServerIo::new(Stream::Plain(down), conn.read_buf);
            let start = Started {
                remote,
                local,
                restored,
                tls: None,
                drain: dconn,
                alive,
                idle: conn.idle,
                requests: conn.requests,
                fresh: false,
            };
            // Boxed: the task stays small whichever kind arrives (a tunnel's copy is boxed too).
            Box::pin(serve_sniffed(&l, w, io, Sniffed::Http1, start)).await;
        }
        (Kind::Tunnel, Some(up)) => {
            let info = crate::tunnel::TunnelInfo {
                kind: Kind::Tunnel,
                chain: l.chain.clone(),
                idle: conn.idle,
                listener: l.config.address,
                peer: remote,
                upstream: up.peer_addr().unwrap_or(l.config.address),
                cluster: conn.cluster,
                requests: conn.requests,
                idle_timeout: l.http.tunnel_idle_timeout(),
            };
            hs.downstream_cx_upgrades_active.inc();
            let ended = Box::pin(crate::tunnel::run_plain(
                ServerIo::new(Stream::Plain(down), conn.read_buf),
                ServerIo::new(Stream::Plain(up), Bytes::new()),
                &w.handover,
                info,
                crate::tunnel::BUF,
            ))
            .await;
            if ended == crate::tunnel::Ended::IdleTimeout {
                hs.downstream_rq_idle_timeout.inc();
            }
            hs.downstream_cx_upgrades_active.dec();
            drop((dconn, alive));
        }
        _ => tracing::warn!("a connection arrived with the wrong number of sockets; closing it"),
    }
    close_listener(&l.listener_stats, opened);
    close_http(&l.http_stats, opened);
}

/// How long a connection accepted just before a drain may take to send its first bytes.
const DRAIN_FIRST_BYTES_GRACE: Duration = Duration::from_secs(1);

/// Serve a connection accepted on `lst`'s socket: its listener filters, the choice of its
/// filter chain, then that chain's network filter until the connection closes. A listener with
/// one HTTP chain and nothing to choose goes straight to it: its task is no larger than it
/// would be without filter chains.
pub fn serve_conn(
    lst: Arc<ListenerState>,
    w: Rc<Worker>,
    stream: TcpStream,
    remote: SocketAddr,
    drain: drain::Watch,
    alive: mpsc::Sender<()>,
) -> impl std::future::Future<Output = ()> + 'static {
    let _ = stream.set_nodelay(true);
    let conn = Accepted {
        stream,
        remote,
        drain: drain.connection(lst.config.direction),
        alive,
    };
    drop(drain);
    let open = ListenerConn::new(lst);
    if open.lst.trivial {
        open.count();
    }
    serve_accepted(open, w, conn)
}

/// Run the listener filters and choose the chain (unless there is nothing to choose), then
/// serve the connection on it: `tcp_proxy`, or HTTP — the TLS handshake if the chain
/// terminates TLS, the protocol's sniffing, then HTTP/1.1 or HTTP/2.
async fn serve_accepted(open: ListenerConn, w: Rc<Worker>, mut conn: Accepted) {
    let lst = &open.lst;
    let mut local = conn.stream.local_addr().unwrap_or(lst.config.address);
    let mut restored = false;
    let i = if lst.trivial {
        0
    } else {
        // Boxed: only listeners with a choice to make pay for it.
        match Box::pin(choose_chain(lst, &conn.stream, local, conn.remote)).await {
            Ok(c) => {
                // The PROXY protocol's addresses or the original destination, when given.
                (conn.remote, local, restored) = (c.remote, c.local, c.restored);
                open.count();
                c.index
            }
            Err(r) => return log_refused(lst, &r),
        }
    };
    let chain = &lst.chains[i];
    let l = match &chain.serve {
        ChainKind::Http(l) => l,
        ChainKind::Tcp(t) => {
            let tls = chain.tls.as_ref().map(|c| (c, lst.ssl.as_ref()));
            let at = crate::tcp_proxy::Local {
                addr: local,
                restored,
            };
            return Box::pin(serve_tcp(&open, t, w, conn, at, tls)).await;
        }
    };
    let hs = &l.http_stats;
    hs.downstream_cx_total.inc();
    hs.downstream_cx_active.inc();
    // `conn`'s fields are used in place, not bound again: the task stays as small as it was.
    let hcm = &l.http;
    let first_bytes_wait = hcm.idle_timeout.unwrap_or(Duration::from_secs(3600));
    // `tls`: `None` for plain text, else whether the client presented a certificate.
    let (stream, alpn, tls) = match &chain.tls {
        None => (Stream::Plain(conn.stream), None, None),
        Some(config) => {
            let ssl = open.lst.ssl.as_ref();
            let wait = TLS_HANDSHAKE_TIMEOUT.min(first_bytes_wait);
            // Boxed, like every path but the common cleartext HTTP/1.1 one: a connection's task is
            // as large as its largest state, and every connection's task is allocated and
            // moved whole.
            match Box::pin(tls_accept(config, ssl, conn.stream, wait)).await {
                Some(s) => {
                    let alpn = match s.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Some(Sniffed::Http2),
                        Some(b"http/1.1") => Some(Sniffed::Http1),
                        _ => None,
                    };
                    let peer = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    (Stream::Tls(Box::new(s)), alpn, Some(peer))
                }
                None => {
                    log_http(&open, (conn.remote, local), None, (0, 0));
                    return close_http(hs, open.opened());
                }
            }
        }
    };
    let sniffed = match (alpn, hcm.codec_type) {
        (Some(proto), _) => Some((ServerIo::new(stream, Bytes::new()), proto)),
        (None, CodecType::Http1) => Some((ServerIo::new(stream, Bytes::new()), Sniffed::Http1)),
        (None, CodecType::Http2) => Some((ServerIo::new(stream, Bytes::new()), Sniffed::Http2)),
        (None, CodecType::Auto) => {
            let sniff = tokio::time::timeout(first_bytes_wait, ServerIo::sniff(stream));
            tokio::pin!(sniff);
            let r = tokio::select! {
                r = &mut sniff => r,
                _ = conn.drain.close_requested() => {
                    // Draining before the first byte: give a request already on its way a
                    // moment to arrive rather than closing under it.
                    match tokio::time::timeout(DRAIN_FIRST_BYTES_GRACE, &mut sniff).await {
                        Ok(r) => r,
                        Err(_) => Ok(Ok(None)),
                    }
                }
            };
            r.ok().and_then(Result::ok).flatten()
        }
    };
    let served = if let Some((io, proto)) = sniffed {
        let start = Started {
            remote: conn.remote,
            local,
            restored,
            tls,
            drain: conn.drain,
            alive: conn.alive,
            idle: Duration::ZERO,
            requests: 0,
            fresh: true,
        };
        let bytes = serve_sniffed(l, w, io, proto, start).await;
        let version = match proto {
            Sniffed::Http1 => http::Version::HTTP_11,
            Sniffed::Http2 => http::Version::HTTP_2,
        };
        (Some(version), bytes)
    } else {
        (None, (0, 0))
    };
    log_http(&open, (conn.remote, local), served.0, served.1);
    close_http(hs, open.opened());
}

/// What RBAC reads of the connection, when a filter of the chain may ask; `Err` when the
/// chain's network RBAC filters deny a `fresh` connection.
#[inline(never)]
fn rbac_identity(
    l: &ListenerShared,
    stream: &Stream,
    remote: SocketAddr,
    local: SocketAddr,
    fresh: bool,
) -> Result<Option<Box<crate::rbac::ConnIdentity>>, ()> {
    if l.rbac_stats.is_empty() && l.network_rbac.is_empty() {
        return Ok(None);
    }
    let id = crate::rbac::ConnIdentity::of(stream, remote);
    if fresh && !crate::rbac::network_allows(&l.network_rbac, &id.subject(local, remote, None)) {
        return Err(());
    }
    Ok(Some(Box::new(id)))
}

/// The listener's access-log line (Envoy writes one for every connection, whatever became of
/// it) for a connection `took` long, from `remote` to `local`.
fn conn_line(remote: SocketAddr, local: SocketAddr, took: Duration) -> ConnOutcome<'static> {
    ConnOutcome {
        start_time: SystemTime::now()
            .checked_sub(took)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        remote,
        local,
        protocol: None,
        bytes_received: 0,
        bytes_sent: 0,
        duration: took,
        flags: ResponseFlags::NONE,
        details: "",
        upstream_host: None,
        upstream_cluster: None,
    }
}

/// The line of a connection no chain took: Envoy 1.40 writes `NR` and
/// `filter_chain_not_found` when no chain matched, nothing particular when a listener filter
/// refused it or timed out.
fn log_refused(lst: &ListenerState, r: &Refused) {
    let Some(logs) = &lst.access_logs else { return };
    let mut line = conn_line(r.remote, r.local, r.took);
    if r.no_chain {
        line.flags = ResponseFlags::NO_ROUTE_FOUND;
        line.details = "filter_chain_not_found";
    }
    logs.write_connection(&line);
}

/// The line of a connection an HTTP chain served: its protocol (once known) and bytes.
fn log_http(
    open: &ListenerConn,
    (remote, local): (SocketAddr, SocketAddr),
    protocol: Option<http::Version>,
    (rx, tx): (u64, u64),
) {
    let Some(logs) = &open.lst.access_logs else {
        return;
    };
    logs.write_connection(&ConnOutcome {
        protocol,
        bytes_received: rx,
        bytes_sent: tx,
        ..conn_line(remote, local, open.opened().elapsed())
    });
}

/// Serve the connection on `tcp_proxy` `t`, then write the listener's line: what the
/// filter's line says too.
async fn serve_tcp(
    open: &ListenerConn,
    t: &Arc<crate::context::TcpProxyShared>,
    w: Rc<Worker>,
    conn: Accepted,
    local: crate::tcp_proxy::Local,
    tls: Option<(&Arc<rustls::ServerConfig>, Option<&crate::tls::SslStats>)>,
) {
    let remote = conn.remote;
    let c = crate::tcp_proxy::serve(t, w, conn, local, tls).await;
    if c.moved {
        // Served on by the next generation: not closed here.
        open.moved();
        return;
    }
    let Some(logs) = &open.lst.access_logs else {
        return;
    };
    let local = local.addr;
    logs.write_connection(&ConnOutcome {
        bytes_received: c.bytes_received,
        bytes_sent: c.bytes_sent,
        flags: c.flags,
        upstream_host: c.upstream_host,
        upstream_cluster: c.upstream_cluster.as_ref().map(|c| c.config.name.as_str()),
        ..conn_line(remote, local, open.opened().elapsed())
    });
}

/// What a connection starts with once its protocol is known.
struct Started {
    remote: SocketAddr,
    local: SocketAddr,
    /// `local` was restored by a listener filter.
    restored: bool,
    /// `None`: plain text; else whether the TLS client presented a (validated) certificate.
    tls: Option<bool>,
    drain: drain::Conn,
    alive: mpsc::Sender<()>,
    /// How long it has been idle (a connection from the previous generation).
    idle: Duration,
    requests: u64,
    /// Accepted here (counted in the `*_total` connection counters), not taken over.
    fresh: bool,
}

/// Serve the connection's requests; the bytes it received and sent.
async fn serve_sniffed(
    l: &Arc<ListenerShared>,
    w: Rc<Worker>,
    io: ServerIo,
    proto: Sniffed,
    start: Started,
) -> (u64, u64) {
    let hs = &l.http_stats;
    let counts = io.counts();
    let remote = start.remote;
    let now = Instant::now();
    let ctx = Rc::new(ConnCtx {
        remote,
        // As Envoy's, the network RBAC filters decide once the first bytes have come (a
        // connection from the previous generation was let through there).
        identity: match rbac_identity(l, io.stream(), remote, start.local, start.fresh) {
            Ok(id) => id,
            Err(()) => return (counts.rx.load(std::sync::atomic::Ordering::Relaxed), 0),
        },
        local: start.local,
        restored: start.restored,
        http2: proto == Sniffed::Http2,
        tls: start.tls,
        active: Cell::new(0),
        last_active: Cell::new(now.checked_sub(start.idle).unwrap_or(now)),
        requests: Cell::new(start.requests),
        idle_waker: RefCell::new(None),
        movable: Cell::new(false),
        rate_limit_buckets: RefCell::default(),
        _alive: start.alive,
        drain: start.drain,
        upgrade: RefCell::new(None),
        limit_timer: RefCell::new(None),
    });
    let svc = Svc::new(l.clone(), w, ctx.clone(), crate::request::handle);
    if let Some(d) = l.http.max_connection_duration {
        // Kept by the connection's context (not this task's future), dropped with it.
        *ctx.limit_timer.borrow_mut() = Some(limit_duration(d, &ctx, l));
    }
    let result = match proto {
        Sniffed::Http1 => {
            if start.fresh {
                hs.downstream_cx_http1_total.inc();
            }
            hs.downstream_cx_http1_active.inc();
            let r = serve_http1(io, svc, l, &ctx).await;
            hs.downstream_cx_http1_active.dec();
            r
        }
        Sniffed::Http2 => {
            hs.downstream_cx_http2_total.inc();
            hs.downstream_cx_http2_active.inc();
            let r = Box::pin(serve_http2(io, svc, l, &ctx)).await;
            hs.downstream_cx_http2_active.dec();
            r
        }
    };
    if let Err(e) = result {
        if e.is_parse() || e.is_parse_too_large() {
            hs.downstream_cx_protocol_error.inc();
        }
        tracing::debug!(%remote, error = %e, "downstream connection ended with an error");
    }
    let rx = counts.rx.load(std::sync::atomic::Ordering::Relaxed);
    let tx = counts.tx.load(std::sync::atomic::Ordering::Relaxed);
    hs.downstream_cx_rx_bytes_total.add(rx);
    hs.downstream_cx_tx_bytes_total.add(tx);
    (rx, tx)
}

/// `max_connection_duration`: the connection is asked to close once it has been open (in this
/// generation) for `d`, as a drain asks it (`Connection: close` on its next response, an idle
/// HTTP/1.1 connection closed, HTTP/2 GOAWAY), and counted. The timer ends with the connection
/// (the guard aborts it).
fn limit_duration(d: Duration, ctx: &Rc<ConnCtx>, l: &Arc<ListenerShared>) -> AbortOnDrop {
    let ctx = Rc::downgrade(ctx);
    let l = l.clone();
    AbortOnDrop(tokio::task::spawn_local(async move {
        tokio::time::sleep(d).await;
        if let Some(ctx) = ctx.upgrade() {
            if !ctx.drain.is_asked() {
                l.http_stats.downstream_cx_max_duration_reached.inc();
                ctx.drain.ask_close();
            }
        }
    }))
}

/// Aborts its task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Count a downstream connection's end on its listener.
pub(crate) fn close_listener(ls: &ListenerStats, opened: Instant) {
    ls.downstream_cx_active.dec();
    ls.server_total_connections.dec();
    ls.downstream_cx_destroy.inc();
    ls.downstream_cx_length_ms.record(opened.elapsed());
}

/// Count a downstream connection's end on its HTTP connection manager.
fn close_http(hs: &HttpStats, opened: Instant) {
    hs.downstream_cx_active.dec();
    hs.downstream_cx_destroy.inc();
    hs.downstream_cx_length_ms.record(opened.elapsed());
}
