//! `envoy.filters.network.tcp_proxy`: a downstream connection (cleartext, TLS terminated by its
//! chain, or TLS passed through untouched) is joined to a new connection to a host of the
//! filter's cluster — picked by the cluster's load balancer, within its `max_connections`
//! circuit breaker, tried up to `max_connect_attempts` times — and bytes are copied both ways
//! until both directions have finished. A FIN one way shuts that way down only.
//!
//! Stats as Envoy names them: `tcp.<stat_prefix>.*` and the cluster's `upstream_cx_*`.
//!
//! A connection whose two ends are plain sockets (cleartext, or TLS passed through: Baton never
//! decrypts those) moves to the next generation at a hot restart once no byte is held either
//! way, with both sockets, when the successor takes `tcp_proxy` connections and still has its
//! filter chain unchanged; any other drains in the generation that accepted it, as Envoy's do.
//! A moved connection is not a new one: the successor counts it active (listener, cluster)
//! but not in any `*_total`, and this generation counts no `*_destroy` for it.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::access::ConnOutcome;
use crate::cluster::{Cluster, Host, Pick};
use crate::context::{ListenerState, TcpProxyShared, Worker};
use crate::downstream::{close_listener, tls_accept, Accepted, TLS_HANDSHAKE_TIMEOUT};
use crate::error::UpstreamFailure;
use crate::flags::ResponseFlags;
use crate::handover::{Arriving, Kind};
use crate::io::{IoCounts, ServerIo, Stream};
use crate::tls::SslStats;
use crate::tunnel::{self, Ended, TunnelInfo};
use crate::upstream::{connect_tcp, connect_tls, Counted};

/// Bytes read at once each way: fewer, larger reads and writes than an HTTP tunnel's 16 KiB
/// (a 1 GiB transfer measured ~720 MiB/s with 16 KiB, see the commit), still well under
/// Envoy's default per-connection buffer limit (1 MiB).
const BUF: usize = 64 * 1024;

/// A connection's local address after the listener filters.
#[derive(Clone, Copy, Debug)]
pub struct Local {
    pub addr: SocketAddr,
    /// Restored by a listener filter (the original destination, or the PROXY protocol's).
    pub restored: bool,
}

/// How a `tcp_proxy` connection went, for its listener's access log (and its own, written by
/// [`serve`]).
#[derive(Debug, Default)]
pub struct Closed {
    pub flags: ResponseFlags,
    pub upstream_host: Option<SocketAddr>,
    /// The cluster's name, when it is in the configuration.
    pub upstream_cluster: Option<Arc<Cluster>>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// The connection moved to the next generation (it is not closed here, and logged by
    /// neither generation).
    pub moved: bool,
}

/// Serve `conn` on the `tcp_proxy` filter `t`; `tls`: the chain's TLS context, to terminate.
/// Its access log line is written when it closes here.
pub async fn serve(
    t: &Arc<TcpProxyShared>,
    w: Rc<Worker>,
    conn: Accepted,
    local: Local,
    tls: Option<(&Arc<rustls::ServerConfig>, Option<&SslStats>)>,
) -> Closed {
    let (start_time, started) = (SystemTime::now(), Instant::now());
    let remote = conn.remote;
    let closed = proxy(t, w, conn, local, tls).await;
    if let (Some(logs), false) = (&t.access_logs, closed.moved) {
        logs.write_connection(&ConnOutcome {
            start_time,
            remote,
            local: local.addr,
            protocol: None,
            bytes_received: closed.bytes_received,
            bytes_sent: closed.bytes_sent,
            duration: started.elapsed(),
            flags: closed.flags,
            details: "",
            upstream_host: closed.upstream_host,
            upstream_cluster: closed
                .upstream_cluster
                .as_ref()
                .map(|c| c.config.name.as_str()),
        });
    }
    closed
}

async fn proxy(
    t: &Arc<TcpProxyShared>,
    w: Rc<Worker>,
    conn: Accepted,
    local: Local,
    tls: Option<(&Arc<rustls::ServerConfig>, Option<&SslStats>)>,
) -> Closed {
    let s = &t.stats;
    s.downstream_cx_total.inc();
    let mut closed = Closed::default();
    let Accepted {
        stream,
        remote,
        drain,
        alive,
    } = conn;
    let down = match tls {
        None => Stream::Plain(stream),
        Some((config, ssl)) => match tls_accept(config, ssl, stream, TLS_HANDSHAKE_TIMEOUT).await {
            Some(s) => Stream::Tls(Box::new(s)),
            None => return closed,
        },
    };
    if !t.rbac.is_empty() {
        let id = crate::rbac::ConnIdentity::of(&down, remote);
        if !crate::rbac::network_allows(&t.rbac, &id.subject(local.addr, remote, None)) {
            return closed;
        }
    }
    let Some(cluster) = t.pick().and_then(|i| Some((i, w.clusters.get(i)?.clone()))) else {
        s.downstream_cx_no_route.inc();
        closed.flags = ResponseFlags::NO_CLUSTER_FOUND;
        return closed;
    };
    closed.upstream_cluster = Some(cluster.1.clone());
    let down = ServerIo::new(down, Bytes::new());
    let counts = down.counts();
    // As Envoy's `source_ip` hash policy: XXH64 of the client's IP, without its port.
    let by = Pick {
        hash: t
            .config
            .hash_source_ip
            .then(|| xxhash_rust::xxh64::xxh64(remote.ip().to_string().as_bytes(), 0)),
    };
    let dst = local.restored.then_some(local.addr);
    let (up, host) = connect(&w, cluster, t.config.max_connect_attempts, dst, by).await;
    closed.upstream_host = host;
    let ended = match up {
        Ok((Upstream::Plain(up), cluster, cx)) if w.handover.enabled() => {
            let info = TunnelInfo {
                kind: Kind::TcpProxy,
                chain: t.chain.clone(),
                listener: t.listener,
                peer: remote,
                upstream: cx.host.as_ref().map_or(t.listener, |h| h.addr),
                cluster: cluster.config.name.clone(),
                requests: 0,
                idle_timeout: t.config.idle_timeout,
                idle: Duration::ZERO,
            };
            let up = Counted::new(ServerIo::new(Stream::Plain(up), Bytes::new()), cluster);
            let ended = tunnel::run_plain(down, up, &w.handover, info, BUF).await;
            cx.end(&ended);
            ended
        }
        Ok((Upstream::Plain(up), cluster, _cx)) => {
            tunnel::copy(down, Counted::new(up, cluster), t.config.idle_timeout, BUF).await
        }
        Ok((Upstream::Tls(up), cluster, _cx)) => {
            tunnel::copy(down, Counted::new(*up, cluster), t.config.idle_timeout, BUF).await
        }
        Err(flags) => {
            closed.flags = flags;
            Ended::Closed
        }
    };
    (closed.bytes_received, closed.bytes_sent) = count_end(t, &ended, &counts);
    // The connection kept its generation's drain waiting until now (it is never asked to
    // close: like Envoy, a drain does not cut TCP proxying short).
    drop((drain, alive));
    closed.moved = ended == Ended::HandedOver;
    closed
}

/// Serve a `tcp_proxy` connection taken over from the previous generation on chain `t` of
/// listener `lst` (checked by [`ListenerState::adoptable`]): its two sockets go on copying
/// where the previous generation stopped, its idle timeout counting from its last byte there.
pub async fn serve_arriving(
    (lst, t): (Arc<ListenerState>, Arc<TcpProxyShared>),
    w: Rc<Worker>,
    conn: Arriving,
    drain: drain::Conn,
    alive: mpsc::Sender<()>,
) {
    w.handover.count_received();
    let socks = match sockets(conn.fds) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not use a tcp_proxy connection's sockets from the previous generation");
            return;
        }
    };
    let [down, up] = socks;
    let (Ok(peer), Ok(upstream)) = (down.peer_addr(), up.peer_addr()) else {
        // An end went away meanwhile: closing the other is all there is to do.
        return;
    };
    let Some(cluster) = w
        .clusters
        .index(&conn.cluster)
        .and_then(|i| w.clusters.get(i).cloned())
    else {
        tracing::warn!(cluster = %conn.cluster, "a tcp_proxy connection arrived for a cluster this generation does not have; closing it");
        return;
    };
    let host = cluster
        .hosts()
        .hosts
        .iter()
        .find(|h| h.addr == upstream)
        .cloned();
    let ls = &lst.stats;
    ls.downstream_cx_active.inc();
    ls.server_total_connections.inc();
    let opened = Instant::now();
    let cx = UpstreamCx::adopted(cluster.clone(), host);
    let down = ServerIo::new(Stream::Plain(down), conn.read_buf);
    let counts = down.counts();
    let info = TunnelInfo {
        kind: Kind::TcpProxy,
        chain: t.chain.clone(),
        listener: t.listener,
        peer,
        upstream,
        cluster: conn.cluster,
        requests: 0,
        idle_timeout: t.config.idle_timeout,
        idle: conn.idle,
    };
    let up = Counted::new(ServerIo::new(Stream::Plain(up), Bytes::new()), cluster);
    let ended = tunnel::run_plain(down, up, &w.handover, info, BUF).await;
    cx.end(&ended);
    count_end(&t, &ended, &counts);
    if ended == Ended::HandedOver {
        ls.downstream_cx_active.dec();
        ls.server_total_connections.dec();
    } else {
        close_listener(ls, opened);
    }
    drop((drain, alive));
}

/// The downstream and upstream sockets of an arriving connection, ready for this runtime.
fn sockets(fds: Vec<std::os::fd::OwnedFd>) -> io::Result<[TcpStream; 2]> {
    let mut out = Vec::with_capacity(2);
    for fd in fds {
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true)?;
        out.push(TcpStream::from_std(std)?);
    }
    out.try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not two sockets"))
}

/// What a connection's end (or its move) adds to `tcp.<stat_prefix>.*`: the bytes it moved
/// here, and an idle timeout.
fn count_end(t: &TcpProxyShared, ended: &Ended, counts: &IoCounts) -> (u64, u64) {
    let s = &t.stats;
    if *ended == Ended::IdleTimeout {
        s.idle_timeout.inc();
    }
    let (rx, tx) = (
        counts.rx.load(Ordering::Relaxed),
        counts.tx.load(Ordering::Relaxed),
    );
    s.downstream_cx_rx_bytes_total.add(rx);
    s.downstream_cx_tx_bytes_total.add(tx);
    (rx, tx)
}

/// An upstream connection's life in its cluster's and host's stats: active while it is served
/// here; destroyed when it closes here, not when it moves to the next generation.
#[derive(Debug)]
struct UpstreamCx {
    cluster: Arc<Cluster>,
    /// `None`: a moved connection whose host this generation's cluster no longer has.
    host: Option<Arc<Host>>,
    moved: bool,
}

impl UpstreamCx {
    /// A connection opened here (`upstream_cx_total` was counted by the connect).
    fn opened(cluster: Arc<Cluster>, host: Arc<Host>) -> Self {
        host.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        Self::adopted(cluster, Some(host))
    }

    /// A connection taken over from the previous generation: not a new one.
    fn adopted(cluster: Arc<Cluster>, host: Option<Arc<Host>>) -> Self {
        cluster.stats.upstream_cx_active.inc();
        if let Some(h) = &host {
            h.stats.cx_active.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            cluster,
            host,
            moved: false,
        }
    }

    /// The connection ended as `ended` (moved, or closed).
    fn end(mut self, ended: &Ended) {
        self.moved = *ended == Ended::HandedOver;
    }
}

impl Drop for UpstreamCx {
    fn drop(&mut self) {
        self.cluster.stats.upstream_cx_active.dec();
        if !self.moved {
            self.cluster.stats.upstream_cx_destroy.inc();
        }
        if let Some(h) = &self.host {
            h.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An upstream connection: cleartext, or TLS when the cluster has a transport socket.
enum Upstream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connect to a host of the cluster (an `ORIGINAL_DST` cluster's: `dst`, the connection's
/// restored original destination), trying up to `attempts` hosts; with the last host tried.
/// Fails (counted) with Envoy's flags: `UH` when no host is healthy, `UO` when the circuit
/// breaker is full, `UF,URX` when every attempt failed.
async fn connect(
    w: &Worker,
    (cidx, cluster): (usize, Arc<Cluster>),
    attempts: u32,
    dst: Option<SocketAddr>,
    by: Pick,
) -> (Connected, Option<SocketAddr>) {
    let mut tried = None;
    for _ in 0..attempts.max(1) {
        let host = if cluster.config.original_dst.is_some() {
            cluster.original_dst_host(None, dst)
        } else {
            let set = cluster.hosts();
            w.lb.pick(cidx, &cluster, &set, by)
        };
        let Some(host) = host else {
            cluster.stats.upstream_cx_none_healthy.inc();
            return (Err(ResponseFlags::NO_HEALTHY_UPSTREAM), tried);
        };
        tried = Some(host.addr);
        let up = match connect_tcp(&cluster, &host).await {
            Ok(s) => match &cluster.config.tls {
                None => Ok(Upstream::Plain(s)),
                Some(tls) => connect_tls(&cluster, &host, tls, s)
                    .await
                    .map(|s| Upstream::Tls(Box::new(s))),
            },
            Err(e) => Err(e),
        };
        match up {
            Ok(up) => {
                let cx = UpstreamCx::opened(cluster.clone(), host);
                return (Ok((up, cluster, cx)), tried);
            }
            Err(UpstreamFailure::Overflow) => {
                return (Err(ResponseFlags::UPSTREAM_OVERFLOW), tried)
            }
            Err(_) => {
                // A connect failure counts toward the host's outlier detection as a 503.
                cluster.record_outcome(&host, 503);
            }
        }
    }
    cluster.stats.upstream_cx_connect_attempts_exceeded.inc();
    let flags =
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
    (Err(flags), tried)
}

/// A connected upstream, or why there is none.
type Connected = Result<(Upstream, Arc<Cluster>, UpstreamCx), ResponseFlags>;
