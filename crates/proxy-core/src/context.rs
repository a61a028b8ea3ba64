//! The data types every layer above shares: a listener's read-only state, a worker's
//! state, one downstream connection's context. Imports nothing above the leaf modules
//! (configuration, stats, routing, clusters, upstream pools, hand-over).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::access::AccessLogs;
use crate::cluster::{ClusterManager, WorkerLb};
use crate::config;
use crate::handover::{Handover, Kind, WorkerModes};
use crate::io::ServerIo;
use crate::router::Router;
use crate::stats::{
    CodeCounters, CompressorStats, CorsStats, CsrfStats, FaultFilterStats, HealthCheckFilterStats,
    HttpInspectorStats, HttpStats, ListenerStats, LocalRateLimitStats, ProxyProtoStats,
    TcpProxyStats,
};
use crate::tls::SslStats;
use crate::upstream::Pools;
use shm_stats::Counter;

/// A listener's read-only state, shared by every worker: its filter chains, one of which is
/// chosen for each connection.
#[derive(Debug)]
pub struct ListenerState {
    pub config: Arc<config::Listener>,
    pub stats: ListenerStats,
    /// `filter_chains`, then the default chain if there is one.
    pub chains: Vec<Chain>,
    pub has_default: bool,
    /// `listener.<address>.no_filter_chain_match`.
    pub no_filter_chain_match: Counter,
    /// `http_inspector.*`, when the listener has the HTTP inspector.
    pub http_inspector: Option<HttpInspectorStats>,
    /// `proxy_proto.*`, when the listener has the PROXY protocol filter.
    pub proxy_proto: Option<ProxyProtoStats>,
    /// `listener.<address>.ssl.*`, when a chain terminates TLS.
    pub ssl: Option<SslStats>,
    /// One chain that matches every connection and no listener filter: nothing to choose.
    pub trivial: bool,
    /// `access_log`: a line for every connection when it ends.
    pub access_logs: Option<AccessLogs>,
}

/// One filter chain, ready to serve.
#[derive(Debug)]
pub struct Chain {
    /// Its identity across generations (a moved connection names it).
    pub id: config::ChainId,
    pub matcher: config::ChainMatch,
    /// The TLS context it terminates with; `None`: the bytes go to the filter as they come.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub serve: ChainKind,
}

/// A chain's network filter.
#[derive(Debug)]
pub enum ChainKind {
    Http(Arc<ListenerShared>),
    Tcp(Arc<TcpProxyShared>),
}

/// A `tcp_proxy` filter's read-only state.
#[derive(Debug)]
pub struct TcpProxyShared {
    /// The listener's configured address, and the chain's identity (for a hand-over).
    pub listener: SocketAddr,
    pub chain: config::ChainId,
    pub config: config::TcpProxy,
    pub stats: TcpProxyStats,
    /// The chain's network RBAC filters, run when a connection starts.
    pub rbac: Vec<crate::rbac::NetworkRbacState>,
    /// Each target's cluster index (`None`: not in the configuration) and, for
    /// `weighted_clusters`, the running total of weights.
    pub targets: Vec<(Option<usize>, u64)>,
    /// `access_log`: a line for every connection when it closes.
    pub access_logs: Option<AccessLogs>,
}

/// An HTTP filter chain's read-only state (with its listener's), shared by every worker.
#[derive(Debug)]
pub struct ListenerShared {
    pub config: Arc<config::Listener>,
    /// The chain's HTTP connection manager.
    pub http: config::HttpConnectionManager,
    pub router: Router,
    pub http_stats: HttpStats,
    /// The health-check filter's stats, when the listener has one.
    pub health_check_stats: Option<HealthCheckFilterStats>,
    /// The CORS filter's stats, when the listener has one.
    pub cors_stats: Option<CorsStats>,
    /// The CSRF filter's stats, when the listener has one.
    pub csrf_stats: Option<CsrfStats>,
    /// The chain's network RBAC filters, run when a connection starts.
    pub network_rbac: Vec<crate::rbac::NetworkRbacState>,
    /// Each RBAC filter's stats, in the order of `http_filters`.
    pub rbac_stats: Vec<crate::stats::RbacStats>,
    /// The fault filter's stats, when the listener has one.
    pub fault_stats: Option<FaultFilterStats>,
    /// The local rate limit filter's stats, by `stat_prefix` (the listener's filter's and its
    /// routes').
    pub local_rate_limit_stats: Vec<(String, LocalRateLimitStats)>,
    /// `http.<prefix>.set_metadata.overwrite_denied`, with a `set_metadata` filter.
    pub set_metadata_overwrite_denied: Option<shm_stats::Counter>,
    /// Each compressor filter's stats, by its index in `http.http_filters`.
    pub compressor_stats: Vec<(usize, CompressorStats)>,
    pub listener_stats: ListenerStats,
    pub access_logs: Option<AccessLogs>,
    /// Its connections may move to the next generation: a cleartext chain.
    pub movable: bool,
    /// The chain's identity across generations.
    pub chain: config::ChainId,
}

/// One worker thread's state. `!Send`: it never leaves its thread.
#[derive(Debug)]
pub struct Worker {
    pub clusters: Arc<ClusterManager>,
    pub lb: WorkerLb,
    pub pools: Rc<Pools>,
    /// `upstream_rq_<code>` counters per cluster index.
    pub codes: Vec<CodeCounters>,
    /// This generation's hand-over of live connections to its successor.
    pub handover: Handover,
    /// This thread's copy of the hand-over's mode, which its connections wait on.
    pub modes: Rc<WorkerModes>,
    /// This worker's count of answered requests (the rollback health gate's).
    pub tally: Arc<crate::tally::Slot>,
}

/// One downstream connection, shared by the requests on it.
#[derive(Debug)]
pub struct ConnCtx {
    pub remote: SocketAddr,
    /// What RBAC reads of the connection (only when a filter may ask).
    pub identity: Option<Box<crate::rbac::ConnIdentity>>,
    pub local: SocketAddr,
    /// `local` was restored by a listener filter (the original destination, or the PROXY
    /// protocol's): an `ORIGINAL_DST` cluster without `use_http_header` routes there.
    pub restored: bool,
    pub http2: bool,
    /// `None`: plain text; TLS, with whether the client presented a certificate (which the
    /// handshake then validated: Baton accepts no unvalidated one). One byte, as a `bool`.
    pub tls: Option<bool>,
    /// Requests whose response has not finished.
    pub active: Cell<usize>,
    /// When the last request finished (or the connection opened).
    pub last_active: Cell<Instant>,
    /// Requests received on this connection (in any generation).
    pub requests: Cell<u64>,
    /// Woken when `active` drops to zero (a connection waiting for an idle point).
    pub idle_waker: RefCell<Option<Waker>>,
    /// The connection may move to the next generation at its next idle point (so a drain does
    /// not ask it to close while a successor takes connections).
    pub movable: Cell<bool>,
    /// The local rate limit filter's buckets of this connection
    /// (`local_rate_limit_per_downstream_connection`), by the address of the configuration's
    /// bucket; empty (no allocation) otherwise.
    pub rate_limit_buckets: RefCell<Vec<(usize, config::TokenBucket)>>,
    /// Keeps the worker alive while this connection (or a tunnel spawned from it) lives.
    pub _alive: mpsc::Sender<()>,
    /// This connection's drain handle: asks it to close, and (as a token) keeps the
    /// generation's drain waiting while the connection or a tunnel spawned from it lives.
    pub drain: drain::Conn,
    /// Set by a tunnel whose upstream switched protocols: once hyper has written the 101, the
    /// connection's driver hands the downstream socket (and bytes read past the request) here.
    pub upgrade: RefCell<Option<oneshot::Sender<Upgraded>>>,
    /// The `max_connection_duration` timer, ended with the connection.
    pub(crate) limit_timer: RefCell<Option<crate::downstream::AbortOnDrop>>,
}

/// A downstream HTTP/1.1 connection taken back from hyper after a protocol switch.
#[derive(Debug)]
pub struct Upgraded {
    pub io: ServerIo,
    /// Bytes the client sent after its upgrade request, already read by hyper.
    pub read_buf: Bytes,
}

/// Where a request is served: its listener, worker and connection.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub l: &'a Arc<ListenerShared>,
    pub w: &'a Rc<Worker>,
    pub c: &'a Rc<ConnCtx>,
}

// === impl ListenerState ===

impl ListenerState {
    /// The chain for a connection, as Envoy chooses it (the default chain when none matches).
    /// Its index in `chains`.
    pub fn select(&self, conn: &crate::chain::ConnMeta<'_>) -> Option<usize> {
        let n = self.chains.len() - usize::from(self.has_default);
        crate::chain::select(&self.chains[..n], |c| &c.matcher, conn)
            .or_else(|| self.has_default.then_some(n))
    }

    /// The chain that serves a connection of `kind` arriving from the previous generation
    /// with `chain` (`None`, from an older generation: the listener's only chain): the chain
    /// with that identity, cleartext, with the right filter (an HTTP connection manager that
    /// speaks HTTP/1 for HTTP/1 connections and tunnels, `tcp_proxy` for `tcp_proxy`
    /// connections). `None`: it cannot be served here.
    pub fn adoptable(&self, kind: Kind, chain: Option<&config::ChainId>) -> Option<&Chain> {
        let found = match chain {
            Some(id) => self.chains.iter().find(|c| c.id == *id),
            None => match self.chains.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }?;
        let fits = match (&found.serve, kind) {
            (ChainKind::Http(l), Kind::Http1 | Kind::Tunnel) => {
                l.http.codec_type != config::CodecType::Http2
            }
            (ChainKind::Tcp(_), Kind::TcpProxy) => true,
            _ => false,
        };
        (fits && found.tls.is_none()).then_some(found)
    }
}

// === impl TcpProxyShared ===

impl TcpProxyShared {
    /// The cluster index for one connection (picked by weight among `weighted_clusters`);
    /// `None`: a cluster the configuration does not have.
    pub fn pick(&self) -> Option<usize> {
        let total = self.targets.last().map_or(1, |(_, t)| *t).max(1);
        let at = fastrand::u64(0..total);
        let i = self.targets.partition_point(|(_, upto)| *upto <= at);
        self.targets
            .get(i.min(self.targets.len().saturating_sub(1)))?
            .0
    }
}
