//! Workers and downstream connections: one thread per worker, each with a current-thread tokio
//! runtime, accepting on every listener's (shared, already bound) socket and serving each
//! connection with hyper — HTTP/1.1, HTTP/2 with prior knowledge, or either by sniffing the
//! preface — until it closes, idles out, or the generation drains.
//!
//! Nothing here is shared across workers but read-only configuration, stats handles and the
//! cluster manager; upstream pools and balancer state are per worker.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use shm_stats::Store;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::body::{ProxyBody, RequestBody};
use crate::cluster::{ClusterManager, WorkerLb};
use crate::config::{self, Bootstrap, CodecType};
use crate::error::BuildError;
use crate::h2_drain::{DrainCtl, H2Io};
use crate::handover::{Arriving, Handover, Kind, Leaving, Mode, WorkerModes};
use crate::io::{ServerIo, Sniffed, Stream};
use crate::router::Router;
use crate::stats::{CodeCounters, HttpStats, ListenerStats};
use crate::tls::{ListenerTls, SslStats};
use crate::upstream::Pools;
use crate::LocalExec;

/// A listener's read-only state, shared by every worker.
#[derive(Debug)]
pub struct ListenerShared {
    pub config: config::Listener,
    pub router: Router,
    pub http_stats: HttpStats,
    pub listener_stats: ListenerStats,
    pub access_logs: Option<crate::access::AccessLogs>,
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
}

/// One worker thread's state. `!Send`: it never leaves its thread.
#[derive(Debug)]
pub struct Worker {
    pub clusters: Arc<ClusterManager>,
    pub lb: WorkerLb,
    pub pools: Pools,
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
    /// Keeps the worker alive while this connection (or a tunnel spawned from it) lives.
    _alive: mpsc::Sender<()>,
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

/// What an access log needs of a request, captured before the request is forwarded.
#[derive(Debug)]
pub struct LogCapture {
    pub start_time: SystemTime,
    pub method: Method,
    pub path: String,
    pub authority: Option<String>,
    pub version: Version,
    pub request_headers: HeaderMap,
    pub response_headers: Option<HeaderMap>,
    pub route_name: Option<String>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
}

/// The data plane of one generation, built from a validated configuration.
#[derive(Debug)]
pub struct Dataplane {
    listeners: Vec<Arc<ListenerShared>>,
    clusters: Arc<ClusterManager>,
    handover: Handover,
}

/// The running worker threads.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<std::thread::JoinHandle<()>>,
    adopter: Option<Adopter>,
}

/// Gives connections arriving from the previous generation to the workers, round robin.
#[derive(Clone, Debug)]
pub struct Adopter {
    workers: Vec<mpsc::UnboundedSender<Arriving>>,
    next: Arc<AtomicUsize>,
    /// Listeners that can serve a moved connection: cleartext, HTTP/1 allowed.
    adoptable: Vec<SocketAddr>,
}

// === impl Dataplane ===

impl Dataplane {
    pub fn new(
        bootstrap: &Bootstrap,
        clusters: Arc<ClusterManager>,
        store: &Store,
    ) -> Result<Self, BuildError> {
        let listeners = bootstrap
            .listeners
            .iter()
            .map(|lc| {
                let router = Router::new(&lc.http.route_config, |name| clusters.index(name))?;
                let access_logs = crate::access::AccessLogs::open(&lc.http.access_logs)?;
                let tls = lc.tls.as_ref().map(|chains| {
                    let p = format!("listener.{}", crate::stats::listener_stat_name(&lc.address));
                    TlsListener {
                        chains: chains.clone(),
                        stats: SslStats::new(store, &p),
                        no_filter_chain_match: store.counter(&format!("{p}.no_filter_chain_match")),
                    }
                });
                Ok(Arc::new(ListenerShared {
                    tls,
                    router,
                    http_stats: HttpStats::new(store, &lc.http.stat_prefix),
                    listener_stats: ListenerStats::new(store, &lc.address),
                    access_logs,
                    config: lc.clone(),
                }))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        store
            .gauge("listener_manager.total_listeners_active")
            .set(listeners.len() as i64);
        Ok(Self {
            listeners,
            clusters,
            handover: Handover::new(false, store),
        })
    }

    /// Hand live connections to the next generation through `handover` (instead of draining
    /// them all).
    pub fn with_handover(mut self, handover: Handover) -> Self {
        self.handover = handover;
        self
    }

    pub fn handover(&self) -> &Handover {
        &self.handover
    }

    pub fn listeners(&self) -> &[Arc<ListenerShared>] {
        &self.listeners
    }

    /// Start `concurrency` workers serving `sockets` (one per listener, in configuration
    /// order). Each worker stops accepting when `drain` fires and exits once its last
    /// connection has closed.
    pub fn spawn_workers(
        &self,
        sockets: &[std::net::TcpListener],
        concurrency: usize,
        drain: drain::Watch,
    ) -> Result<Workers, BuildError> {
        let mut handles = Vec::with_capacity(concurrency);
        let mut senders = Vec::with_capacity(concurrency);
        for index in 0..concurrency.max(1) {
            let (adopt_tx, adopt_rx) = mpsc::unbounded_channel();
            senders.push(adopt_tx);
            let mut mine = Vec::with_capacity(sockets.len());
            for (l, s) in self.listeners.iter().zip(sockets) {
                let sock = s.try_clone().map_err(|source| BuildError::Listener {
                    listener: l.config.name.clone(),
                    source,
                })?;
                sock.set_nonblocking(true)
                    .map_err(|source| BuildError::Listener {
                        listener: l.config.name.clone(),
                        source,
                    })?;
                mine.push((l.clone(), sock));
            }
            let clusters = self.clusters.clone();
            let drain = drain.clone();
            let handover = self.handover.clone();
            let handle = std::thread::Builder::new()
                .name(format!("baton-worker-{index}"))
                .spawn(move || run_worker(index, clusters, handover, mine, adopt_rx, drain))
                .map_err(|source| BuildError::Worker { index, source })?;
            handles.push(handle);
        }
        let adoptable = self
            .listeners
            .iter()
            .filter(|l| l.tls.is_none() && l.config.http.codec_type != CodecType::Http2)
            .map(|l| l.config.address)
            .collect();
        Ok(Workers {
            handles,
            adopter: Some(Adopter {
                workers: senders,
                next: Arc::new(AtomicUsize::new(0)),
                adoptable,
            }),
        })
    }
}

// === impl Workers ===

impl Workers {
    /// Wait for every worker thread to exit.
    pub fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }

    /// Where connections arriving from the previous generation go (once). The workers serve
    /// every connection given to it until it — and every clone — is dropped, draining or not:
    /// a connection taken from the previous generation is never dropped unserved.
    pub fn take_adopter(&mut self) -> Option<Adopter> {
        self.adopter.take()
    }
}

// === impl Adopter ===

impl Adopter {
    /// Whether a connection accepted on `listener` (its configured address) can be served here
    /// (either kind): the listener exists in this configuration, is cleartext and speaks HTTP/1.
    pub fn accepts(&self, listener: SocketAddr) -> bool {
        self.adoptable.contains(&listener)
    }

    /// Serve `conn` on the next worker. False (the connection is closed) when no worker takes
    /// connections any more (this generation is draining).
    pub fn adopt(&self, conn: Arriving) -> bool {
        let n = self.workers.len();
        let mut conn = conn;
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            match self.workers[i].send(conn) {
                Ok(()) => return true,
                Err(e) => conn = e.0,
            }
        }
        false
    }
}

fn run_worker(
    index: usize,
    clusters: Arc<ClusterManager>,
    handover: Handover,
    listeners: Vec<(Arc<ListenerShared>, std::net::TcpListener)>,
    adopt_rx: mpsc::UnboundedReceiver<Arriving>,
    drain: drain::Watch,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "could not start worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = Rc::new(Worker {
            lb: WorkerLb::new(&clusters),
            pools: Pools::default(),
            codes: clusters
                .clusters()
                .iter()
                .map(|_| CodeCounters::default())
                .collect(),
            clusters,
            modes: WorkerModes::new(&handover),
            handover,
        });
        tokio::task::spawn_local(worker.modes.clone().follow(worker.handover.clone()));
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        tokio::task::spawn_local(adopt_loop(
            listeners.iter().map(|(l, _)| l.clone()).collect(),
            worker.clone(),
            adopt_rx,
            drain.clone(),
            alive_tx.clone(),
        ));
        for (l, sock) in listeners {
            match TcpListener::from_std(sock) {
                Ok(listener) => {
                    tokio::task::spawn_local(accept_loop(
                        l,
                        worker.clone(),
                        listener,
                        drain.clone(),
                        alive_tx.clone(),
                    ));
                }
                Err(e) => {
                    tracing::error!(worker = index, listener = %l.config.name, error = %e, "could not register listen socket");
                }
            }
        }
        drop(alive_tx);
        drop(drain);
        // `None` once every accept loop, connection and tunnel has ended.
        let _ = alive_rx.recv().await;
        tracing::debug!(worker = index, "worker finished");
    });
}

async fn accept_loop(
    l: Arc<ListenerShared>,
    w: Rc<Worker>,
    listener: TcpListener,
    mut drain: drain::Watch,
    alive: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            biased;
            _ = drain.accept_stopped(drain::Direction::Unspecified) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let (l, w, drain, alive) = (l.clone(), w.clone(), drain.clone(), alive.clone());
                    // The task holds the connection's (few KiB) future in a pooled slot:
                    // spawning then moves a few words, not the whole state machine, each time
                    // the runtime hands the task on, and no large allocation is made.
                    tokio::task::spawn_local(async move {
                        crate::slot_pool::hold(serve_conn(l, w, stream, remote, drain, alive))
                            .await;
                    });
                }
                Err(e) => {
                    // Out of fds or buffers: back off briefly instead of spinning.
                    tracing::warn!(listener = %l.config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::debug!(listener = %l.config.name, "stopped accepting");
}

/// Serves connections arriving from the previous generation on this worker until the
/// [`Adopter`] is dropped (even while this generation drains: they were taken, so they are
/// served).
async fn adopt_loop(
    listeners: Vec<Arc<ListenerShared>>,
    w: Rc<Worker>,
    mut arrivals: mpsc::UnboundedReceiver<Arriving>,
    drain: drain::Watch,
    alive: mpsc::Sender<()>,
) {
    while let Some(conn) = arrivals.recv().await {
        match listeners.iter().find(|l| l.config.address == conn.listener) {
            Some(l) => {
                tokio::task::spawn_local(serve_arriving(
                    l.clone(),
                    w.clone(),
                    conn,
                    drain.clone(),
                    alive.clone(),
                ));
            }
            None => tracing::warn!(
                listener = %conn.listener,
                "a connection arrived for a listener this generation does not have; closing it"
            ),
        }
    }
}

/// Serve a connection taken over from the previous generation, as if it had been accepted
/// here (without counting it as a new connection).
async fn serve_arriving(
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
    let dconn = drain.connection(drain::Direction::Unspecified);
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
            };
            hs.downstream_cx_upgrades_active.inc();
            crate::tunnel::run_plain(
                ServerIo::new(Stream::Plain(down), conn.read_buf),
                ServerIo::new(Stream::Plain(up), Bytes::new()),
                &w.handover,
                info,
            )
            .await;
            hs.downstream_cx_upgrades_active.dec();
            drop((dconn, alive));
        }
        _ => tracing::warn!("a connection arrived with the wrong number of sockets; closing it"),
    }
    close_unserved(&l, opened);
}

/// The future of one request, [`crate::proxy::handle`]'s.
pub(crate) trait HandleFuture:
    Future<Output = Result<Response<ProxyBody>, Infallible>> + 'static
{
}

impl<T: Future<Output = Result<Response<ProxyBody>, Infallible>> + 'static> HandleFuture for T {}

/// [`crate::proxy::handle`], as a function pointer whose return type names its future.
type HandleFn<F> = fn(Arc<ListenerShared>, Rc<Worker>, Rc<ConnCtx>, Request<RequestBody>) -> F;

/// A request's future in a heap slot, which goes back to its connection's spare slot when
/// the request is done.
type FutureBox<F> = Pin<Box<Option<F>>>;

/// The per-connection hyper service: each request goes to [`crate::proxy::handle`].
///
/// A request's future (a few KiB: past the allocator's per-thread cache) lives in a heap slot
/// that the connection reuses from one request to the next, instead of one allocation per
/// request. (hyper wants an `Unpin` future, so the slot cannot be hyper's own.)
pub(crate) struct Svc<F> {
    l: Arc<ListenerShared>,
    pub(crate) w: Rc<Worker>,
    c: Rc<ConnCtx>,
    handle: HandleFn<F>,
    spare: Rc<Cell<Option<FutureBox<F>>>>,
}

impl<F> Clone for Svc<F> {
    fn clone(&self) -> Self {
        Self {
            l: self.l.clone(),
            w: self.w.clone(),
            c: self.c.clone(),
            handle: self.handle,
            spare: self.spare.clone(),
        }
    }
}

impl<F: HandleFuture> hyper::service::Service<Request<Incoming>> for Svc<F> {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = InFlight<F>;

    fn call(&self, req: Request<Incoming>) -> InFlight<F> {
        self.call_with(req.map(RequestBody::Hyper))
    }
}

impl<F: HandleFuture> Svc<F> {
    /// Start serving `req`, in the connection's spare future slot when it has one.
    pub(crate) fn call_with(&self, req: Request<RequestBody>) -> InFlight<F> {
        let fut = (self.handle)(self.l.clone(), self.w.clone(), self.c.clone(), req);
        let slot = match self.spare.take() {
            Some(mut slot) => {
                slot.set(Some(fut));
                slot
            }
            None => Box::pin(Some(fut)),
        };
        InFlight {
            slot: Some(slot),
            spare: self.spare.clone(),
        }
    }
}

/// One request's future, in a reused slot (see [`Svc`]).
pub(crate) struct InFlight<F> {
    slot: Option<FutureBox<F>>,
    spare: Rc<Cell<Option<FutureBox<F>>>>,
}

impl<F: HandleFuture> Future for InFlight<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.slot.as_mut().and_then(|s| s.as_mut().as_pin_mut()) {
            Some(fut) => fut.poll(cx),
            // Never: the slot is emptied only on drop.
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for InFlight<F> {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            slot.set(None);
            self.spare.set(Some(slot));
        }
    }
}

/// How long a connection accepted just before a drain may take to send its first bytes.
const DRAIN_FIRST_BYTES_GRACE: Duration = Duration::from_secs(1);
/// An idle keep-alive connection asked to close is closed only once it has been idle this
/// long, so a client's next request is not met by a close it could not see coming.
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(100);
/// After a close, bytes still arriving are read and discarded for this long (lingering close),
/// so the peer gets our last response rather than a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 256 * 1024;

async fn serve_conn(
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
    let mut dconn = drain.connection(drain::Direction::Unspecified);
    drop(drain);
    let hcm = &l.config.http;
    let first_bytes_wait = hcm.idle_timeout.unwrap_or(Duration::from_secs(3600));
    let (stream, alpn) = match &l.tls {
        None => (Stream::Plain(stream), None),
        Some(t) => {
            let wait = TLS_HANDSHAKE_TIMEOUT.min(first_bytes_wait);
            // Boxed, like every path but the common cleartext HTTP/1.1 one: a connection's task is
            // as large as its largest state, and every connection's task is allocated and
            // moved whole.
            match tokio::time::timeout(wait, Box::pin(tls_accept(t, stream))).await {
                Ok(Some(s)) => {
                    let alpn = match s.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Some(Sniffed::Http2),
                        Some(b"http/1.1") => Some(Sniffed::Http1),
                        _ => None,
                    };
                    (Stream::Tls(Box::new(s)), alpn)
                }
                Ok(None) => return close_unserved(&l, opened),
                Err(_) => {
                    t.stats.connection_error.inc();
                    return close_unserved(&l, opened);
                }
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
        _alive: start.alive,
        drain: start.drain,
        upgrade: RefCell::new(None),
    });
    let svc = Svc {
        l: l.clone(),
        w,
        c: ctx.clone(),
        handle: crate::proxy::handle,
        spare: Rc::new(Cell::new(None)),
    };
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

/// How long a TLS client may take to complete its handshake (bounded by the idle timeout).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Read the ClientHello, pick the filter chain for its SNI, and complete the handshake with
/// that chain's context. `None` (counted) when no chain matches or the handshake fails.
async fn tls_accept(
    t: &TlsListener,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match acceptor.await {
        Ok(s) => s,
        Err(e) => {
            t.stats.record_error(&e);
            return None;
        }
    };
    let Some(chain) = t.chains.select(start.client_hello().server_name()) else {
        t.no_filter_chain_match.inc();
        return None;
    };
    match start.into_stream(chain.tls.config.clone()).await {
        Ok(s) => {
            let conn = s.get_ref().1;
            t.stats.record_handshake(
                conn,
                conn.peer_certificates().is_some_and(|c| !c.is_empty()),
            );
            Some(s)
        }
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            t.stats.record_error(&e);
            None
        }
    }
}

/// hyper's smallest read buffer limit.
const MIN_BUF: usize = 8192;

/// HTTP/1.1 server settings; `buffer_limit` (the listener's
/// `per_connection_buffer_limit_bytes`) caps what hyper buffers while reading a message head.
fn h1_builder(buffer_limit: u32) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size((buffer_limit as usize).max(MIN_BUF))
        .keep_alive(true);
    b
}

/// How hyper's session on an HTTP/1.1 connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H1End {
    /// The client closed, an error, or a protocol switch.
    Done,
    /// We closed it (idle timeout, drain): a request racing the close may be waiting.
    Closing,
    /// Stopped at an idle point for the next generation to take it.
    Handover,
}

/// Serve an HTTP/1.1 connection. hyper is polled without its own shutdown so that the socket
/// comes back to us at the end: for a protocol switch (handed to the tunnel), for the next
/// generation (moved at an idle point), for a request that raced an idle close (served once
/// more), and for a lingering close.
async fn serve_http1<F: HandleFuture>(
    io: ServerIo,
    svc: Svc<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
) -> Result<(), hyper::Error> {
    let reg = if io.is_plain() {
        svc.w.handover.register()
    } else {
        None
    };
    let mut io = io;
    ctx.movable.set(reg.is_some());
    match crate::h1_server::serve(&mut io, &svc, l, ctx, reg.is_some()).await {
        crate::h1_server::End::Closed { linger } => {
            drop(reg);
            if linger {
                linger_close(io).await;
            }
            Ok(())
        }
        // hyper serves the rest, from the bytes put back in front of `io` (boxed: see
        // `serve_conn`).
        crate::h1_server::End::Fallback => Box::pin(serve_http1_hyper(io, svc, l, ctx, reg)).await,
    }
}

/// The rest of an HTTP/1.1 connection, served by hyper.
async fn serve_http1_hyper<F: HandleFuture>(
    io: ServerIo,
    svc: Svc<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
    reg: Option<crate::handover::Registration>,
) -> Result<(), hyper::Error> {
    let handover = svc.w.handover.clone();
    let mut reg = reg;
    let mut io = io;
    loop {
        ctx.movable.set(reg.is_some());
        let mut conn = h1_builder(l.config.per_connection_buffer_limit_bytes)
            .serve_connection(TokioIo::new(io), svc.clone());
        let waiter = reg.as_ref().map(|_| svc.w.modes.waiter());
        let end = drive_h1(&mut conn, l, ctx, waiter).await?;
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        if let Some(tx) = ctx.upgrade.borrow_mut().take() {
            ctx.movable.set(false);
            drop(reg);
            let _ = tx.send(Upgraded {
                io,
                read_buf: parts.read_buf,
            });
            return Ok(());
        }
        if end == H1End::Handover {
            match offer_h1(&handover, &mut io, parts.read_buf, l, ctx).await {
                // The next generation serves it from here on; our copy of the socket closes
                // without a FIN (theirs keeps it open).
                None => return Ok(()),
                Some(read_buf) => {
                    // Not taken: it stays here, served and drained as usual.
                    io.prepend(read_buf);
                    reg = None;
                    continue;
                }
            }
        }
        drop(reg);
        // A request that arrived as we closed an idle connection is answered, with
        // `Connection: close`, instead of being lost.
        io.prepend(parts.read_buf);
        if end == H1End::Closing && io.take_pending().unwrap_or(false) {
            l.http_stats.downstream_cx_drain_rescued.inc();
            let mut b = h1_builder(l.config.per_connection_buffer_limit_bytes);
            b.keep_alive(false);
            let mut again = b.serve_connection(TokioIo::new(io), svc);
            std::future::poll_fn(|cx| again.poll_without_shutdown(cx)).await?;
            io = again.into_parts().io.into_inner();
        }
        linger_close(io).await;
        return Ok(());
    }
}

type H1Conn<F> = http1::Connection<TokioIo<ServerIo>, Svc<F>>;

/// Poll hyper until the connection ends, closing it when it idles out or a drain asks, or
/// (with `handover`, while a successor takes connections) stopping it at its next idle point.
async fn drive_h1<F: HandleFuture>(
    conn: &mut H1Conn<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
    mut modes: Option<crate::handover::ModeWaiter>,
) -> Result<H1End, hyper::Error> {
    let idle = l.config.http.idle_timeout;
    let far = Duration::from_secs(365 * 24 * 3600);
    let since = ctx.last_active.get().elapsed();
    let idle_sleep = tokio::time::sleep(idle.unwrap_or(far).saturating_sub(since));
    tokio::pin!(idle_sleep);
    let mut drain = ctx.drain.clone();
    let mut asked = false;
    let mut end = H1End::Done;
    loop {
        let mode = modes.as_ref().map_or(Mode::Off, |m| m.mode());
        let moving = mode == Mode::Active;
        if moving && end == H1End::Done && ctx.active.get() == 0 {
            // An idle point: hyper finishes what it is writing, reads nothing more, and gives
            // the socket back with any bytes it read but did not parse.
            end = H1End::Handover;
            Pin::new(&mut *conn).graceful_shutdown();
        }
        let open = end == H1End::Done;
        tokio::select! {
            // The connection first: it is what wakes this task for nearly every request.
            biased;
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                r?;
                return Ok(end);
            }
            changed = std::future::poll_fn(|cx| match &modes {
                Some(m) => m.poll_change(cx, mode),
                None => Poll::Pending,
            }), if modes.is_some() && open => {
                if changed == Mode::Ended {
                    // No successor will take it: drained as usual from here.
                    modes = None;
                    ctx.movable.set(false);
                }
            }
            _ = idle_point(ctx), if moving && open => {}
            _ = drain.close_requested(), if !asked && !moving && open => {
                // Every response from now on carries `Connection: close` (drain_close() is
                // sticky); an idle connection is closed once it has been idle for the grace.
                asked = true;
                l.http_stats.downstream_cx_drain_close.inc();
                let since = ctx.last_active.get().elapsed();
                let wait = DRAIN_IDLE_GRACE.saturating_sub(since);
                idle_sleep.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            _ = idle_sleep.as_mut(), if open && !moving && (asked || idle.is_some()) => {
                let limit = if asked { DRAIN_IDLE_GRACE } else { idle.unwrap_or(far) };
                let since = ctx.last_active.get().elapsed();
                if ctx.active.get() == 0 && since >= limit {
                    end = H1End::Closing;
                    if !asked {
                        l.http_stats.downstream_cx_idle_timeout.inc();
                    }
                    Pin::new(&mut *conn).graceful_shutdown();
                } else {
                    let next = if ctx.active.get() == 0 { limit - since } else { limit };
                    idle_sleep.as_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        }
    }
}

/// Completes once no request is in progress on the connection.
fn idle_point(ctx: &ConnCtx) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        if ctx.active.get() == 0 {
            Poll::Ready(())
        } else {
            *ctx.idle_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
}

/// Offer an HTTP/1.1 connection stopped at an idle point to the next generation. `None` when
/// it was taken; otherwise the bytes read past the last request, to serve here.
async fn offer_h1(
    handover: &Handover,
    io: &mut ServerIo,
    read_buf: Bytes,
    l: &ListenerShared,
    ctx: &ConnCtx,
) -> Option<Bytes> {
    // Bytes hyper read but did not parse come first, then any our IO still held.
    let held = io.take_prefix();
    let read_buf = if held.is_empty() {
        read_buf
    } else {
        let mut b = bytes::BytesMut::with_capacity(read_buf.len() + held.len());
        b.extend_from_slice(&read_buf);
        b.extend_from_slice(&held);
        b.freeze()
    };
    let fd = match io.dup_plain_socket() {
        Some(Ok(fd)) => fd,
        _ => return Some(read_buf),
    };
    let leaving = Leaving {
        kind: Kind::Http1,
        listener: l.config.address,
        peer: ctx.remote,
        read_buf: read_buf.clone(),
        idle: ctx.last_active.get().elapsed(),
        requests: ctx.requests.get(),
        upstream: None,
        fds: vec![fd],
    };
    if handover.offer(leaving).await {
        None
    } else {
        Some(read_buf)
    }
}

/// Close our side, then read and discard what the peer still sends for a short while, so that
/// our last response is not destroyed by a reset.
async fn linger_close(mut io: ServerIo) {
    if io.shutdown().await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut total = 0;
    while total < LINGER_MAX_BYTES {
        match tokio::time::timeout_at(deadline, discard(&mut io)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

thread_local! {
    /// Where lingering closes read what they throw away (not in every connection's future).
    static DISCARD: RefCell<Box<[u8; 4096]>> = RefCell::new(Box::new([0; 4096]));
}

/// Read and throw away what the peer sent; `Ok(0)` at its end.
fn discard(io: &mut ServerIo) -> impl Future<Output = std::io::Result<usize>> + '_ {
    std::future::poll_fn(move |cx| {
        DISCARD.with(|d| {
            let mut d = d.borrow_mut();
            let mut rb = tokio::io::ReadBuf::new(&mut d[..]);
            Pin::new(&mut *io)
                .poll_read(cx, &mut rb)
                .map_ok(|()| rb.filled().len())
        })
    })
}

/// How long a draining HTTP/2 connection waits for the client's answer to its drain PING before
/// sending GOAWAY anyway (see [`crate::h2_drain`]); responses are held meanwhile.
const H2_DRAIN_PING_WAIT: Duration = Duration::from_secs(1);

/// Serve an HTTP/2 connection. A drain first makes sure the client has processed every response
/// already sent (a PING round trip, holding our writes), then sends GOAWAY(2^31-1) and lets
/// hyper's graceful shutdown finish the connection: it keeps reading until every open stream
/// has finished. See [`crate::h2_drain`].
async fn serve_http2<F: HandleFuture>(
    io: ServerIo,
    svc: Svc<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
) -> Result<(), hyper::Error> {
    let ctl = DrainCtl::new();
    let conn = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(H2Io::new(io, ctl.clone())), svc);
    tokio::pin!(conn);
    let idle = l.config.http.idle_timeout;
    let far = Duration::from_secs(365 * 24 * 3600);
    let idle_sleep = tokio::time::sleep(idle.unwrap_or(far));
    tokio::pin!(idle_sleep);
    let ping_wait = tokio::time::sleep(far);
    tokio::pin!(ping_wait);
    let mut drain = ctx.drain.clone();
    let mut closing = false;
    let mut shut = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = drain.close_requested(), if !closing => {
                closing = true;
                l.http_stats.downstream_cx_drain_close.inc();
                ctl.start();
                ping_wait.as_mut().reset(tokio::time::Instant::now() + H2_DRAIN_PING_WAIT);
            }
            _ = ctl.released(), if closing && !shut => {
                shut = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ping_wait.as_mut(), if closing && !shut => {
                // No answer to the PING: the GOAWAY goes out at the next frame boundary, and
                // `released` follows.
                ctl.hurry();
                ping_wait.as_mut().reset(tokio::time::Instant::now() + far);
            }
            _ = idle_sleep.as_mut(), if !closing && idle.is_some() => {
                let idle = idle.unwrap_or(far);
                let since = ctx.last_active.get().elapsed();
                if ctx.active.get() == 0 && since >= idle {
                    closing = true;
                    shut = true;
                    l.http_stats.downstream_cx_idle_timeout.inc();
                    conn.as_mut().graceful_shutdown();
                } else {
                    let next = if ctx.active.get() == 0 { idle - since } else { idle };
                    idle_sleep.as_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        }
    }
}
