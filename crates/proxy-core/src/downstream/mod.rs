//! One downstream connection, from accept (or arrival from the previous generation) to close:
//! TLS, protocol sniffing, then HTTP/1.1 ([`h1`]: Baton's own loop, then hyper's session) or
//! HTTP/2 ([`h2`]); every request goes to [`crate::request::handle`].

mod h1;
mod h1_loop;
mod h2;
mod linger;
mod slow;
mod svc;
mod tls;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::CodecType;
use crate::context::{ConnCtx, ListenerShared, Worker};
use crate::handover::{Arriving, Kind};
use crate::io::{ServerIo, Sniffed, Stream};

use self::h1::serve_http1;
use self::h2::serve_http2;
use self::svc::Svc;
use self::tls::{tls_accept, TLS_HANDSHAKE_TIMEOUT};

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
            serve_sniffed(&l, w, io, Sniffed::Http1, start).await;
        }
        (Kind::Tunnel, Some(up)) => {
            let info = crate::tunnel::TunnelInfo {
                listener: l.config.address,
                peer: remote,
                upstream: up.peer_addr().unwrap_or(l.config.address),
                cluster: conn.cluster,
                requests: conn.requests,
                idle_timeout: l.config.http.tunnel_idle_timeout(),
            };
            hs.downstream_cx_upgrades_active.inc();
            let ended = crate::tunnel::run_plain(
                ServerIo::new(Stream::Plain(down), conn.read_buf),
                ServerIo::new(Stream::Plain(up), Bytes::new()),
                &w.handover,
                info,
            )
            .await;
            if ended == crate::tunnel::Ended::IdleTimeout {
                hs.downstream_rq_idle_timeout.inc();
            }
            hs.downstream_cx_upgrades_active.dec();
            drop((dconn, alive));
        }
        _ => tracing::warn!("a connection arrived with the wrong number of sockets; closing it"),
    }
    close_unserved(&l, opened);
}

/// How long a connection accepted just before a drain may take to send its first bytes.
const DRAIN_FIRST_BYTES_GRACE: Duration = Duration::from_secs(1);

/// Serve a connection accepted on `l`'s socket, from the TLS handshake and protocol sniffing to
/// its close.
pub async fn serve_conn(
    l: Arc<ListenerShared>,
    w: Rc<Worker>,
    stream: TcpStream,
    remote: SocketAddr,
    drain: drain::Watch,
    alive: mpsc::Sender<()>,
) {
    let opened = Instant::now();
    let ls = &l.listener_stats;
    let hs = &l.http_stats;
    ls.downstream_cx_total.inc();
    ls.downstream_cx_active.inc();
    ls.server_total_connections.inc();
    hs.downstream_cx_total.inc();
    hs.downstream_cx_active.inc();
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(l.config.address);
    let mut dconn = drain.connection(l.config.direction);
    drop(drain);
    let hcm = &l.config.http;
    let first_bytes_wait = hcm.idle_timeout.unwrap_or(Duration::from_secs(3600));
    let (stream, alpn) = match &l.tls {
        None => {
            // Envoy's TLS inspector on a cleartext listener waits this long for the first
            // bytes (to tell TLS from cleartext), then closes the connection.
            if let Some(d) = l.config.listener_filters_timeout {
                let mut first = [0u8; 1];
                if tokio::time::timeout(d, stream.peek(&mut first))
                    .await
                    .is_err()
                {
                    l.listener_stats.downstream_pre_cx_timeout.inc();
                    return close_unserved(&l, opened);
                }
            }
            (Stream::Plain(stream), None)
        }
        Some(t) => {
            let wait = TLS_HANDSHAKE_TIMEOUT.min(first_bytes_wait);
            // Boxed, like every path but the common cleartext HTTP/1.1 one: a connection's task is
            // as large as its largest state, and every connection's task is allocated and
            // moved whole.
            match Box::pin(tls_accept(t, stream, wait)).await {
                Some(s) => {
                    let alpn = match s.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Some(Sniffed::Http2),
                        Some(b"http/1.1") => Some(Sniffed::Http1),
                        _ => None,
                    };
                    (Stream::Tls(Box::new(s)), alpn)
                }
                None => return close_unserved(&l, opened),
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
                _ = dconn.close_requested() => {
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
            remote,
            local,
            tls,
            drain: dconn,
            alive,
            idle: Duration::ZERO,
            requests: 0,
            fresh: true,
        };
        serve_sniffed(&l, w, io, proto, start).await;
    }
    close_unserved(&l, opened);
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

/// Count a downstream connection's end.
fn close_unserved(l: &ListenerShared, opened: Instant) {
    let length = opened.elapsed();
    let ls = &l.listener_stats;
    let hs = &l.http_stats;
    ls.downstream_cx_active.dec();
    ls.server_total_connections.dec();
    ls.downstream_cx_destroy.inc();
    ls.downstream_cx_length_ms.record(length);
    hs.downstream_cx_active.dec();
    hs.downstream_cx_destroy.inc();
    hs.downstream_cx_length_ms.record(length);
}
