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
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::CodecType;
use crate::context::{ChainKind, ConnCtx, ListenerShared, ListenerState, Worker};
use crate::handover::{Arriving, Kind};
use crate::io::{ServerIo, Sniffed, Stream};
use crate::stats::{HttpStats, ListenerStats};

pub use self::accept::Accepted;
use self::accept::{choose_chain, ListenerConn};
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
    let local = down.local_addr().unwrap_or(l.config.address);
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
                tls: false,
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
    let i = if lst.trivial {
        0
    } else {
        // Boxed: only listeners with a choice to make pay for it.
        match Box::pin(choose_chain(lst, &conn.stream, local, conn.remote)).await {
            Some(c) => {
                // The PROXY protocol's addresses, when it gave some.
                (conn.remote, local) = (c.remote, c.local);
                open.count();
                c.index
            }
            None => return,
        }
    };
    let chain = &lst.chains[i];
    let l = match &chain.serve {
        ChainKind::Http(l) => l,
        ChainKind::Tcp(t) => {
            let tls = chain.tls.as_ref().map(|c| (c, lst.ssl.as_ref()));
            if Box::pin(crate::tcp_proxy::serve(t, w, conn, tls)).await {
                open.moved();
            }
            return;
        }
    };
    let hs = &l.http_stats;
    hs.downstream_cx_total.inc();
    hs.downstream_cx_active.inc();
    // `conn`'s fields are used in place, not bound again: the task stays as small as it was.
    let hcm = &l.http;
    let first_bytes_wait = hcm.idle_timeout.unwrap_or(Duration::from_secs(3600));
    let (stream, alpn) = match &chain.tls {
        None => (Stream::Plain(conn.stream), None),
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
                    (Stream::Tls(Box::new(s)), alpn)
                }
                None => return close_http(hs, open.opened()),
            }
        }
    };
    let tls = matches!(stream, Stream::Tls(_));
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
    if let Some((io, proto)) = sniffed {
        let start = Started {
            remote: conn.remote,
            local,
            tls,
            drain: conn.drain,
            alive: conn.alive,
            idle: Duration::ZERO,
            requests: 0,
            fresh: true,
        };
        serve_sniffed(l, w, io, proto, start).await;
    }
    close_http(hs, open.opened());
}

/// What a connection starts with once its protocol is known.
struct Started {
    remote: SocketAddr,
    local: SocketAddr,
    tls: bool,
    drain: drain::Conn,
    alive: mpsc::Sender<()>,
    /// How long it has been idle (a connection from the previous generation).
    idle: Duration,
    requests: u64,
    /// Accepted here (counted in the `*_total` connection counters), not taken over.
    fresh: bool,
}

async fn serve_sniffed(
    l: &Arc<ListenerShared>,
    w: Rc<Worker>,
    io: ServerIo,
    proto: Sniffed,
    start: Started,
) {
    let hs = &l.http_stats;
    let counts = io.counts();
    let remote = start.remote;
    let now = Instant::now();
    let ctx = Rc::new(ConnCtx {
        remote,
        local: start.local,
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
    });
    let svc = Svc::new(l.clone(), w, ctx.clone(), crate::request::handle);
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
    hs.downstream_cx_rx_bytes_total
        .add(counts.rx.load(std::sync::atomic::Ordering::Relaxed));
    hs.downstream_cx_tx_bytes_total
        .add(counts.tx.load(std::sync::atomic::Ordering::Relaxed));
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
