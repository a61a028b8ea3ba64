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
use crate::handover::{Handover, WorkerModes};
use crate::io::ServerIo;
use crate::router::Router;
use crate::stats::{
    CodeCounters, CorsStats, CsrfStats, FaultFilterStats, HealthCheckFilterStats, HttpStats,
    ListenerStats, LocalRateLimitStats,
};
use crate::tls::{ListenerTls, SslStats};
use crate::upstream::Pools;

/// A listener's read-only state, shared by every worker.
#[derive(Debug)]
pub struct ListenerShared {
    pub config: config::Listener,
    pub router: Router,
    pub http_stats: HttpStats,
    /// The health-check filter's stats, when the listener has one.
    pub health_check_stats: Option<HealthCheckFilterStats>,
    /// The CORS filter's stats, when the listener has one.
    pub cors_stats: Option<CorsStats>,
    /// The CSRF filter's stats, when the listener has one.
    pub csrf_stats: Option<CsrfStats>,
    /// The fault filter's stats, when the listener has one.
    pub fault_stats: Option<FaultFilterStats>,
    /// The local rate limit filter's stats, by `stat_prefix` (the listener's filter's and its
    /// routes').
    pub local_rate_limit_stats: Vec<(String, LocalRateLimitStats)>,
    pub listener_stats: ListenerStats,
    pub access_logs: Option<AccessLogs>,
    /// Set when the listener terminates TLS.
    pub tls: Option<TlsListener>,
}

/// A TLS listener's filter chains and its `listener.<address>.ssl.*` stats.
#[derive(Debug)]
pub struct TlsListener {
    pub chains: ListenerTls,
    pub stats: SslStats,
    /// `listener.<address>.no_filter_chain_match`: no chain for the client's SNI.
    pub no_filter_chain_match: shm_stats::Counter,
    /// The listener's `listener_filters_timeout` for reading the ClientHello.
    pub listener_filters_timeout: Option<std::time::Duration>,
    /// `listener.<address>.downstream_pre_cx_timeout`: no ClientHello within it.
    pub downstream_pre_cx_timeout: shm_stats::Counter,
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
}

/// One downstream connection, shared by the requests on it.
#[derive(Debug)]
pub struct ConnCtx {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub http2: bool,
    /// The connection is TLS.
    pub tls: bool,
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
