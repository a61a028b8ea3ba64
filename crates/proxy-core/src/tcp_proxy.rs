//! `envoy.filters.network.tcp_proxy`: a downstream connection (cleartext, TLS terminated by its
//! chain, or TLS passed through untouched) is joined to a new connection to a host of the
//! filter's cluster — picked by the cluster's load balancer, within its `max_connections`
//! circuit breaker, tried up to `max_connect_attempts` times — and bytes are copied both ways
//! until both directions have finished. A FIN one way shuts that way down only.
//!
//! Stats as Envoy names them: `tcp.<stat_prefix>.*` and the cluster's `upstream_cx_*`.
//! Connections are not handed over to the next generation: they drain in the one that
//! accepted them, as Envoy's do.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::access::ConnOutcome;
use crate::client::CxGuard;
use crate::cluster::Cluster;
use crate::context::{TcpProxyShared, Worker};
use crate::downstream::{tls_accept, Accepted, TLS_HANDSHAKE_TIMEOUT};
use crate::error::UpstreamFailure;
use crate::flags::ResponseFlags;
use crate::io::{ServerIo, Stream};
use crate::tls::SslStats;
use crate::tunnel::{self, Ended};
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
}

/// Serve `conn` on the `tcp_proxy` filter `t`; `tls`: the chain's TLS context, to terminate.
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
    if let Some(logs) = &t.access_logs {
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
        drain,
        alive,
        ..
    } = conn;
    let down = match tls {
        None => Stream::Plain(stream),
        Some((config, ssl)) => match tls_accept(config, ssl, stream, TLS_HANDSHAKE_TIMEOUT).await {
            Some(s) => Stream::Tls(Box::new(s)),
            None => return closed,
        },
    };
    let Some(cluster) = t.pick().and_then(|i| Some((i, w.clusters.get(i)?.clone()))) else {
        s.downstream_cx_no_route.inc();
        closed.flags = ResponseFlags::NO_CLUSTER_FOUND;
        return closed;
    };
    closed.upstream_cluster = Some(cluster.1.clone());
    let down = ServerIo::new(down, Bytes::new());
    let counts = down.counts();
    let dst = local.restored.then_some(local.addr);
    let (up, host) = connect(&w, cluster, t.config.max_connect_attempts, dst).await;
    closed.upstream_host = host;
    let ended = match up {
        Ok((Upstream::Plain(up), cluster, _guard)) => {
            tunnel::copy(down, Counted::new(up, cluster), t.config.idle_timeout, BUF).await
        }
        Ok((Upstream::Tls(up), cluster, _guard)) => {
            tunnel::copy(down, Counted::new(*up, cluster), t.config.idle_timeout, BUF).await
        }
        Err(flags) => {
            closed.flags = flags;
            Ended::Closed
        }
    };
    if ended == Ended::IdleTimeout {
        s.idle_timeout.inc();
    }
    closed.bytes_received = counts.rx.load(Ordering::Relaxed);
    closed.bytes_sent = counts.tx.load(Ordering::Relaxed);
    s.downstream_cx_rx_bytes_total.add(closed.bytes_received);
    s.downstream_cx_tx_bytes_total.add(closed.bytes_sent);
    // The connection kept its generation's drain waiting until now (it is never asked to
    // close: like Envoy, a drain does not cut TCP proxying short).
    drop((drain, alive));
    closed
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
) -> (Connected, Option<SocketAddr>) {
    let mut tried = None;
    for _ in 0..attempts.max(1) {
        let host = if cluster.config.original_dst.is_some() {
            cluster.original_dst_host(None, dst)
        } else {
            let set = cluster.hosts();
            w.lb.pick(cidx, &cluster, &set)
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
                let guard = CxGuard::new(cluster.clone(), host);
                return (Ok((up, cluster, guard)), tried);
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
type Connected = Result<(Upstream, Arc<Cluster>, CxGuard), ResponseFlags>;
