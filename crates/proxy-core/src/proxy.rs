//! One downstream request, end to end: route it, answer it locally (direct response, redirect,
//! Envoy's error replies) or forward it to a cluster with retries and timeouts, and account for
//! it in stats once its response has been fully sent.

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::client::conn::http1;

use crate::body::{Finish, ProxyBody, RequestBody};
use crate::cluster::{Cluster, Host};
use crate::config::RetryPolicy;
use crate::error::UpstreamFailure;
use crate::h1_client;
use crate::headers::{
    new_request_id, prepare_request_headers, strip_hop_by_hop, upgrade_type, X_REQUEST_ID,
};
use crate::router::{Action, Forward, Route};
use crate::server::{ConnCtx, ListenerShared, Worker};

use crate::upstream::{self, SendError};

static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// Serve one request. Never fails: every error becomes Envoy's local reply.
pub async fn handle(
    l: Arc<ListenerShared>,
    w: Rc<Worker>,
    c: Rc<ConnCtx>,
    req: Request<RequestBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let hs = &l.http_stats;
    hs.downstream_rq_total.inc();
    if c.http2 {
        hs.downstream_rq_http2_total.inc();
    } else {
        hs.downstream_rq_http1_total.inc();
    }
    hs.downstream_rq_active.inc();
    c.active.set(c.active.get() + 1);
    c.requests.set(c.requests.get() + 1);
    let mut tracker = Box::new(Tracker {
        l: l.clone(),
        w: w.clone(),
        c: c.clone(),
        start: Instant::now(),
        status: 0,
        flag: None,
        upstream: None,
        log: None,
        bytes_received: None,
        done: false,
    });
    let mut req = req;
    if l.config.http.generate_request_id {
        // One hashed lookup: a client's id is kept.
        req.headers_mut()
            .entry(&X_REQUEST_ID)
            .or_insert_with(new_request_id);
    }
    if let Some(logs) = l.access_logs.as_ref() {
        tracker.log = Some(logs.capture(&req, &c));
    }
    // Routing is synchronous, so only forwarding adds a future to this one's state.
    let mut resp = match route(&l, &req, &mut tracker) {
        Routed::Reply(r) => r,
        Routed::Forward(route, f) => forward(&l, &w, &c, route, f, req, &mut tracker).await,
    };
    tracker.status = resp.status().as_u16();
    if let Some(log) = tracker.log.as_mut() {
        log.response_headers = Some(resp.headers().clone());
    }
    if !c.http2 {
        *resp.version_mut() = Version::HTTP_11;
    }
    // Draining (or failing health checks): HTTP/1.1 responses close their connection — unless
    // it moves to the next generation at its next idle point; for HTTP/2 a yes wakes the
    // connection, which sends GOAWAY.
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS
        && c.drain.drain_close()
        && !c.http2
        && !(c.movable.get() && w.modes.mode() == crate::handover::Mode::Active)
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, body.on_finish(tracker)))
}

/// What routing decided.
enum Routed<'l> {
    Reply(Response<ProxyBody>),
    Forward(&'l Route, &'l Forward),
}

fn route<'l>(
    l: &'l ListenerShared,
    req: &Request<RequestBody>,
    tracker: &mut Tracker,
) -> Routed<'l> {
    let route = {
        let authority = authority_of(req);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        l.router.route(authority, path, req.headers())
    };
    let Some(route) = route else {
        l.http_stats.no_route.inc();
        tracker.flag = Some("NR");
        return Routed::Reply(local_reply(StatusCode::NOT_FOUND, Bytes::new()));
    };
    if let Some(log) = tracker.log.as_mut() {
        log.route_name = Some(route.name.clone());
    }
    match &route.action {
        Action::Direct(d) => {
            l.http_stats.rq_direct_response.inc();
            Routed::Reply(local_reply(d.status, d.body.clone().unwrap_or_default()))
        }
        Action::Redirect(_) => {
            l.http_stats.rq_redirect.inc();
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            Routed::Reply(redirect(route, authority_of(req), path))
        }
        Action::Forward(f) => Routed::Forward(route, f),
    }
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or `Host`.
fn authority_of(req: &Request<RequestBody>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// A reply Baton makes itself.
pub fn local_reply(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *resp.body_mut() = ProxyBody::full(body);
    }
    resp
}

/// The request was not received in full within `request_timeout` (Envoy: 408).
fn request_timeout_reply(l: &ListenerShared, tracker: &mut Tracker) -> Response<ProxyBody> {
    l.http_stats.downstream_rq_timeout.inc();
    tracker.flag = Some("DT");
    local_reply(
        StatusCode::REQUEST_TIMEOUT,
        Bytes::from_static(b"request timeout"),
    )
}

fn failure_reply(f: UpstreamFailure, tracker: &mut Tracker) -> Response<ProxyBody> {
    tracker.flag = Some(f.flag());
    local_reply(f.status(), Bytes::from_static(f.body().as_bytes()))
}

fn redirect(route: &Route, authority: &str, path_and_query: &str) -> Response<ProxyBody> {
    let Action::Redirect(r) = &route.action else {
        return local_reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new());
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let (orig_host, orig_port) = split_host_port(authority);
    let scheme = r.scheme_redirect.as_deref().unwrap_or("http");
    let host = r.host_redirect.as_deref().unwrap_or(orig_host);
    let port = match (r.port_redirect, &r.host_redirect) {
        (Some(p), _) => Some(p.to_string()),
        (None, Some(_)) => None,
        (None, None) => orig_port.map(str::to_owned),
    };
    let mut new_path = String::with_capacity(path_and_query.len() + 16);
    let mut query = query.map(str::to_owned);
    if let Some(p) = &r.path_redirect {
        match p.split_once('?') {
            Some((pp, q)) => {
                new_path.push_str(pp);
                query = Some(q.to_owned());
            }
            None => new_path.push_str(p),
        }
    } else if let (Some(rw), Some(prefix)) = (&r.prefix_rewrite, route.prefix()) {
        new_path.push_str(rw);
        new_path.push_str(&path[prefix.len().min(path.len())..]);
    } else {
        new_path.push_str(path);
    }
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port {
        location.push(':');
        location.push_str(&port);
    }
    location.push_str(&new_path);
    if let (false, Some(q)) = (r.strip_query, query) {
        if !q.is_empty() {
            location.push('?');
            location.push_str(&q);
        }
    }
    let mut resp = local_reply(r.response_code, Bytes::new());
    match HeaderValue::try_from(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => local_reply(StatusCode::BAD_REQUEST, Bytes::new()),
    }
}

/// Split `host[:port]` (IPv6 literals in brackets).
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &authority[..end + 2];
            let port = rest[end + 1..].strip_prefix(':');
            return (host, port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    l: &Arc<ListenerShared>,
    w: &Rc<Worker>,
    c: &Rc<ConnCtx>,
    route: &Route,
    f: &Forward,
    req: Request<RequestBody>,
    tracker: &mut Tracker,
) -> Response<ProxyBody> {
    let Some(cluster) = w.clusters.get(f.cluster).cloned() else {
        return failure_reply(UpstreamFailure::NoHealthyUpstream, tracker);
    };
    if let Some(kind) = upgrade_type(req.headers()) {
        let allowed = !c.http2
            && l.config
                .http
                .upgrade_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(kind));
        if !allowed {
            l.http_stats.upgrade_failed.inc();
            return local_reply(StatusCode::FORBIDDEN, Bytes::from_static(b"upgrade failed"));
        }
        // Boxed: the rare upgrade path must not grow every request's future.
        return Box::pin(tunnel(l, w, c, route, f, &cluster, req, tracker)).await;
    }

    let (mut parts, body) = req.into_parts();
    let policy = f.config.retry_policy.as_ref();
    let buffer_limit = u64::from(l.config.per_connection_buffer_limit_bytes);
    // A body is replayable (so the request may be retried) when it is empty, or small enough
    // to buffer whole within the connection's buffer limit.
    let hcm = &l.config.http;
    let request_deadline = hcm
        .request_timeout
        .map(|t| tokio::time::Instant::from_std(tracker.start) + t);
    let mut replay: Option<Bytes> = None;
    let mut stream_body: Option<ProxyBody> = None;
    let mut request_timed_out: Option<Rc<Cell<Option<crate::body::BodyTimeout>>>> = None;
    let body_read = !body.is_end_stream();
    if body.is_end_stream() {
        replay = Some(Bytes::new());
    } else if policy.is_some_and(|p| p.num_retries > 0)
        && body.size_hint().exact().is_some_and(|n| n <= buffer_limit)
    {
        // Boxed, like every rare await here: a future's size is that of its largest state,
        // and every request's future is allocated and moved whole.
        let collect = Box::pin(async move {
            match request_deadline {
                Some(d) => tokio::time::timeout_at(d, body.collect()).await.ok(),
                None => Some(body.collect().await),
            }
        });
        let Some(collected) = collect.await else {
            return request_timeout_reply(l, tracker);
        };
        match collected {
            Ok(collected) => {
                let b = collected.to_bytes();
                let received = tracker.received();
                received.set(received.get() + b.len() as u64);
                replay = Some(b);
            }
            Err(_) => {
                l.http_stats.downstream_rq_rx_reset.inc();
                tracker.flag = Some("DC");
                return local_reply(StatusCode::BAD_REQUEST, Bytes::new());
            }
        }
    } else {
        let (b, fired) = ProxyBody::request(body)
            .count_into(tracker.received())
            .with_timeouts(hcm.stream_idle_timeout, request_deadline);
        stream_body = Some(b);
        request_timed_out = Some(fired);
    }

    let cfg = &f.config;
    prepare_request_headers(
        &mut parts.headers,
        c.remote,
        hcm.use_remote_address,
        false,
        c.tls,
    );
    let per_try = policy.and_then(|p| p.per_try_timeout);
    if !hcm.suppress_envoy_headers {
        if let Some(v) = &f.expected_timeout_ms {
            parts
                .headers
                .insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), v.clone());
        }
    }
    let path = rewrite_path(
        route,
        cfg.prefix_rewrite.as_deref(),
        &parts.uri,
        &mut parts.headers,
    );
    let uri = set_upstream_authority(
        &mut parts,
        cluster.config.http2,
        cfg.host_rewrite_literal.as_deref(),
        path,
    );
    let version = if cluster.config.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    let max_attempts = if replay.is_some() {
        1 + policy.map_or(0, |p| p.num_retries)
    } else {
        1
    };
    // From the moment the request was all here: its start when it had no body (one clock
    // read fewer), now when its body was just read whole.
    let deadline = cfg.timeout.map(|t| {
        let received = if body_read {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::from_std(tracker.start)
        };
        received + t
    });
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let mut attempt = 0;
    let mut stale_retry_used = false;
    // Held while a retry is under way (the cluster's `max_retries` breaker).
    let mut _retry_guard: Option<crate::cluster::RetryGuard> = None;
    loop {
        attempt += 1;
        let body = match &replay {
            Some(b) => ProxyBody::full(b.clone()),
            None => stream_body.take().unwrap_or_else(ProxyBody::empty),
        };
        let mut up = Request::new(body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri.clone();
        *up.version_mut() = version;
        *up.headers_mut() = if attempt >= max_attempts {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };

        let outcome = attempt_once(
            w,
            f.cluster,
            &cluster,
            &mut up,
            deadline,
            per_try.or(hcm.stream_idle_timeout),
        )
        .await;
        // The request has been written (or failed): its map serves a later message.
        crate::header_pool::give(std::mem::take(up.headers_mut()));
        drop(up);
        match outcome {
            Ok(done) => {
                let status = done.response.status().as_u16();
                cluster.stats.response(status, &w.codes[f.cluster]);
                if attempt < max_attempts && policy.is_some_and(|p| retriable_status(p, status)) {
                    if let Some(g) = cluster.try_retry() {
                        _retry_guard = Some(g);
                        cluster.stats.upstream_rq_retry.inc();
                        continue;
                    }
                }
                if attempt > 1 {
                    cluster.stats.upstream_rq_retry_success.inc();
                }
                let AttemptDone {
                    response,
                    checkin,
                    sent_at,
                    attempt,
                } = done;
                let service_time = sent_at.elapsed();
                // Without hop-by-hop fields already (see `Conn::send`).
                let (mut rparts, rbody) = response.into_parts();
                if !hcm.suppress_envoy_headers {
                    rparts.headers.insert(
                        X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
                        millis_value(service_time.as_millis() as u64),
                    );
                }
                if let Some(log) = tracker.log.as_mut() {
                    log.upstream_host = Some(attempt.host.addr);
                    log.upstream_cluster = Some(f.cluster_name.clone());
                }
                let body = rbody.with_idle_timeout(hcm.stream_idle_timeout);
                tracker.upstream = Some(attempt.into_track(checkin));
                return Response::from_parts(rparts, body);
            }
            Err((failure, reused)) => {
                if request_timed_out
                    .as_ref()
                    .is_some_and(|f| f.get().is_some())
                {
                    return request_timeout_reply(l, tracker);
                }
                if failure == UpstreamFailure::Timeout {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        cluster.stats.upstream_rq_timeout.inc();
                        l.http_stats.downstream_rq_timeout.inc();
                        return failure_reply(failure, tracker);
                    }
                    cluster.stats.upstream_rq_per_try_timeout.inc();
                }
                // A reused keep-alive connection the upstream closed as we wrote to it: an
                // idempotent request with a replayable body goes once more on a new connection.
                if reused
                    && failure == UpstreamFailure::Reset
                    && idempotent
                    && replay.is_some()
                    && !stale_retry_used
                {
                    stale_retry_used = true;
                    attempt -= 1;
                    continue;
                }
                if attempt < max_attempts && policy.is_some_and(|p| retriable_failure(p, failure)) {
                    if let Some(g) = cluster.try_retry() {
                        _retry_guard = Some(g);
                        cluster.stats.upstream_rq_retry.inc();
                        continue;
                    }
                }
                return failure_reply(failure, tracker);
            }
        }
    }
}

/// One try at the upstream: host selection, circuit breakers, a connection, the send, and the
/// wait for response headers within the deadline.
struct Attempt {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    cidx: usize,
    done: bool,
}

struct AttemptDone {
    response: Response<ProxyBody>,
    /// A hyper HTTP/1.1 connection to return to the pool once the response body is read.
    checkin: Option<http1::SendRequest<ProxyBody>>,
    sent_at: Instant,
    attempt: Attempt,
}

/// What the tracker keeps of the upstream side until the response body is done.
struct UpstreamTrack {
    attempt: Attempt,
    /// An HTTP/1.1 connection to return to the pool once the response body has been read.
    checkin: Option<http1::SendRequest<ProxyBody>>,
}

// === impl Attempt ===

impl Attempt {
    fn start(cluster: Arc<Cluster>, host: Arc<Host>, cidx: usize) -> Self {
        cluster.stats.upstream_rq_total.inc();
        cluster.stats.upstream_rq_active.inc();
        host.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        host.stats.rq_active.fetch_add(1, Ordering::Relaxed);
        Self {
            cluster,
            host,
            cidx,
            done: false,
        }
    }

    fn into_track(self, checkin: Option<http1::SendRequest<ProxyBody>>) -> UpstreamTrack {
        UpstreamTrack {
            checkin,
            attempt: self,
        }
    }

    /// Account for the end of this attempt.
    fn finish(&mut self, success: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.cluster.stats.upstream_rq_active.dec();
        self.cluster.stats.upstream_rq_completed.inc();
        self.host.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
        if success {
            self.host.stats.rq_success.fetch_add(1, Ordering::Relaxed);
        } else {
            self.host.stats.rq_error.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.finish(false);
    }
}

async fn attempt_once(
    w: &Rc<Worker>,
    cidx: usize,
    cluster: &Arc<Cluster>,
    req: &mut Request<ProxyBody>,
    deadline: Option<tokio::time::Instant>,
    per_try: Option<Duration>,
) -> Result<AttemptDone, (UpstreamFailure, bool)> {
    let max_rq = i64::from(cluster.config.circuit_breakers.max_requests);
    if cluster.stats.upstream_rq_active.value() >= max_rq {
        cluster.stats.upstream_rq_pending_overflow.inc();
        return Err((UpstreamFailure::Overflow, false));
    }
    let host = {
        let set = cluster.hosts();
        w.lb.pick(cidx, cluster, &set)
    };
    let Some(host) = host else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return Err((UpstreamFailure::NoHealthyUpstream, false));
    };
    let attempt = Attempt::start(cluster.clone(), host.clone(), cidx);
    let try_deadline = match (deadline, per_try) {
        (Some(d), Some(p)) => Some(d.min(tokio::time::Instant::now() + p)),
        (Some(d), None) => Some(d),
        (None, Some(p)) => Some(tokio::time::Instant::now() + p),
        (None, None) => None,
    };
    let work = async {
        let mut stale_tries = 0;
        loop {
            let own = h1_client::sendable(req);
            let co = w
                .pools
                .checkout(cidx, cluster, &host, own)
                .await
                .map_err(|f| (f, false))?;
            let sent_at = Instant::now();
            let home = h1_client::Home {
                worker: w.clone(),
                cidx,
            };
            match co.conn.send(req, home).await {
                Ok((resp, checkin)) => return Ok((resp, checkin, sent_at)),
                Err(SendError::NotSent) if stale_tries < 3 => stale_tries += 1,
                Err(SendError::NotSent) => return Err((UpstreamFailure::Reset, co.reused)),
                Err(SendError::Failed(f)) => return Err((f, co.reused)),
            }
        }
    };
    let res = match try_deadline {
        Some(d) => match crate::deadline::timeout_at(d, work).await {
            Ok(r) => r,
            Err(_) => Err((UpstreamFailure::Timeout, false)),
        },
        None => work.await,
    };
    match res {
        Ok((response, checkin, sent_at)) => Ok(AttemptDone {
            response,
            checkin,
            sent_at,
            attempt,
        }),
        Err(e) => {
            if e.0 == UpstreamFailure::Reset {
                cluster.stats.upstream_rq_rx_reset.inc();
            }
            Err(e)
        }
    }
}

/// A millisecond count as a header value; the small ones (service times) come from a
/// per-thread table, so the common case is a reference-count increment, not a formatted
/// allocation.
fn millis_value(ms: u64) -> HeaderValue {
    const CACHED: usize = 64;
    thread_local! {
        static SMALL: Vec<HeaderValue> = (0..CACHED as u64).map(HeaderValue::from).collect();
    }
    usize::try_from(ms)
        .ok()
        .filter(|&i| i < CACHED)
        .and_then(|i| SMALL.with(|t| t.get(i).cloned()))
        .unwrap_or_else(|| HeaderValue::from(ms))
}

fn retriable_status(p: &RetryPolicy, status: u16) -> bool {
    let r = p.retry_on;
    (r.five_xx && status >= 500)
        || (r.gateway_error && (502..=504).contains(&status))
        || (r.retriable_4xx && status == 409)
        || (r.retriable_status_codes && p.retriable_status_codes.contains(&status))
}

fn retriable_failure(p: &RetryPolicy, f: UpstreamFailure) -> bool {
    let r = p.retry_on;
    match f {
        UpstreamFailure::ConnectFailure => r.five_xx || r.gateway_error || r.connect_failure,
        UpstreamFailure::Reset => r.five_xx || r.gateway_error || r.reset,
        UpstreamFailure::ProtocolError | UpstreamFailure::Timeout => r.five_xx || r.gateway_error,
        UpstreamFailure::NoHealthyUpstream | UpstreamFailure::Overflow => false,
    }
}

/// The upstream path after `prefix_rewrite`; the original goes in `x-envoy-original-path`.
fn rewrite_path(
    route: &Route,
    rewrite: Option<&str>,
    uri: &Uri,
    h: &mut HeaderMap,
) -> PathAndQuery {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let (Some(rw), Some(prefix)) = (rewrite, route.prefix()) else {
        return original;
    };
    let pq = original.as_str();
    if let Ok(v) = HeaderValue::from_str(pq) {
        h.insert(X_ENVOY_ORIGINAL_PATH.clone(), v);
    }
    let rest = pq.get(prefix.len()..).unwrap_or("");
    let mut out = String::with_capacity(rw.len() + rest.len() + 1);
    if !rw.starts_with('/') {
        out.push('/');
    }
    out.push_str(rw);
    out.push_str(rest);
    PathAndQuery::try_from(out).unwrap_or(original)
}

/// Point the request at the upstream: origin-form URI and `Host` for HTTP/1.1, absolute URI
/// (`:authority`) and no `Host` for HTTP/2. `host_rewrite` replaces the downstream authority.
fn set_upstream_authority(
    parts: &mut http::request::Parts,
    http2: bool,
    host_rewrite: Option<&str>,
    path: PathAndQuery,
) -> Uri {
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(path);
    if http2 {
        let authority = match host_rewrite {
            Some(h) => Authority::try_from(h).ok(),
            None => parts.uri.authority().cloned().or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            }),
        };
        parts.headers.remove(header::HOST);
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority.unwrap_or_else(|| Authority::from_static("localhost")));
    } else if let Some(h) = host_rewrite {
        if let Ok(v) = HeaderValue::from_str(h) {
            parts.headers.insert(header::HOST, v);
        }
    } else if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"))
}

/// Forward a protocol switch (WebSocket): a dedicated upstream connection, and once both sides
/// have switched, bytes copied both ways until either closes.
#[allow(clippy::too_many_arguments)]
async fn tunnel(
    l: &Arc<ListenerShared>,
    w: &Rc<Worker>,
    c: &Rc<ConnCtx>,
    route: &Route,
    f: &Forward,
    cluster: &Arc<Cluster>,
    req: Request<RequestBody>,
    tracker: &mut Tracker,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    prepare_request_headers(
        &mut parts.headers,
        c.remote,
        l.config.http.use_remote_address,
        true,
        c.tls,
    );
    let path = rewrite_path(
        route,
        f.config.prefix_rewrite.as_deref(),
        &parts.uri,
        &mut parts.headers,
    );
    let uri = set_upstream_authority(
        &mut parts,
        false,
        f.config.host_rewrite_literal.as_deref(),
        path,
    );
    let host = {
        let set = cluster.hosts();
        w.lb.pick(f.cluster, cluster, &set)
    };
    let Some(host) = host else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return failure_reply(UpstreamFailure::NoHealthyUpstream, tracker);
    };
    let attempt = Attempt::start(cluster.clone(), host.clone(), f.cluster);
    let mut sender = match upstream::connect_h1(cluster, &host, true).await {
        Ok(s) => s,
        Err(e) => return failure_reply(e, tracker),
    };
    let mut up = Request::new(ProxyBody::request(body).count_into(tracker.received()));
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = parts.headers;
    let mut resp = match sender.send_request(up).await {
        Ok(r) => r,
        Err(e) => return failure_reply(upstream::classify(&e), tracker),
    };
    let status = resp.status();
    cluster.stats.response(status.as_u16(), &w.codes[f.cluster]);
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers, false);
        tracker.upstream = Some(UpstreamTrack {
            attempt,
            checkin: None,
        });
        return Response::from_parts(rparts, ProxyBody::stream(rbody));
    }
    let on_upstream = hyper::upgrade::on(&mut resp);
    // hyper hands the downstream socket back once it has written the 101.
    let (tx, on_downstream) = tokio::sync::oneshot::channel();
    *c.upgrade.borrow_mut() = Some(tx);
    let hs_active = l.http_stats.downstream_cx_upgrades_active.clone();
    l.http_stats.downstream_cx_upgrades_total.inc();
    // The tunnel keeps the connection context (and so the generation's drain) alive.
    let conn = c.clone();
    let handover = w.handover.clone();
    let info = crate::tunnel::TunnelInfo {
        listener: l.config.address,
        peer: c.remote,
        upstream: attempt.host.addr,
        cluster: cluster.config.name.clone(),
        requests: c.requests.get(),
    };
    tokio::task::spawn_local(async move {
        let _attempt = attempt;
        let (down, up) = futures_util::future::join(on_downstream, on_upstream).await;
        if let (Ok(crate::server::Upgraded { mut io, read_buf }), Ok(up)) = (down, up) {
            hs_active.inc();
            io.prepend(read_buf);
            crate::tunnel::run(io, up, &handover, info).await;
            hs_active.dec();
        }
        drop(conn);
    });
    let (mut rparts, _) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers, true);
    Response::from_parts(rparts, ProxyBody::empty())
}

/// Accounts for one request when its response body ends (or is dropped): stats, the upstream
/// connection's return to the pool, the access log. A request whose future is dropped before
/// it has a response (the client left: hyper and Baton's own HTTP/1.1 loop drop it) is
/// accounted when the tracker drops.
pub(crate) struct Tracker {
    l: Arc<ListenerShared>,
    w: Rc<Worker>,
    c: Rc<ConnCtx>,
    start: Instant,
    status: u16,
    flag: Option<&'static str>,
    upstream: Option<UpstreamTrack>,
    log: Option<Box<crate::server::LogCapture>>,
    /// Request body bytes received, shared with the request body; made when there is one.
    bytes_received: Option<Rc<Cell<u64>>>,
    /// Set once accounted.
    done: bool,
}

impl Finish for Tracker {
    /// `timed_out`: the response body (the only one with a tracker) was ended by
    /// `stream_idle_timeout`.
    fn finish(
        mut self: Box<Self>,
        bytes_sent: u64,
        complete: bool,
        timed_out: Option<crate::body::BodyTimeout>,
    ) {
        self.account(bytes_sent, complete, timed_out);
    }
}

impl Tracker {
    /// The request body's byte count, shared with whatever reads the body.
    fn received(&mut self) -> Rc<Cell<u64>> {
        self.bytes_received
            .get_or_insert_with(|| Rc::new(Cell::new(0)))
            .clone()
    }

    fn account(
        &mut self,
        bytes_sent: u64,
        complete: bool,
        timed_out: Option<crate::body::BodyTimeout>,
    ) {
        self.done = true;
        let hs = &self.l.http_stats;
        hs.downstream_rq_active.dec();
        if self.status == 0 {
            // No response: the client went away first.
            hs.downstream_rq_rx_reset.inc();
        } else {
            hs.downstream_rq_completed.inc();
            hs.response_class(self.status);
        }
        // One clock read for both.
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        hs.downstream_rq_time.record(elapsed);
        let active = self.c.active.get().saturating_sub(1);
        self.c.active.set(active);
        self.c.last_active.set(now);
        if active == 0 {
            if let Some(waker) = self.c.idle_waker.take() {
                waker.wake();
            }
        }
        let mut flag = self.flag;
        if timed_out.is_some() {
            hs.downstream_rq_idle_timeout.inc();
            flag = Some("SI");
        }
        if self.status == 0 && flag.is_none() {
            flag = Some("DC");
        }
        if let Some(mut up) = self.upstream.take() {
            let a = &mut up.attempt;
            a.cluster.stats.upstream_rq_time.record(elapsed);
            a.finish(complete && self.status < 500);
            if complete {
                if let Some(s) = up.checkin.take() {
                    self.w.pools.checkin(a.cidx, a.host.addr, s);
                }
            } else if flag.is_none() {
                flag = Some("DC");
            }
        }
        if let (Some(log), Some(logs)) = (self.log.take(), self.l.access_logs.as_ref()) {
            logs.write(
                &log,
                &self.c,
                &crate::access::Outcome {
                    status: self.status,
                    flags: flag.unwrap_or("-"),
                    bytes_received: self.bytes_received.as_ref().map_or(0, |b| b.get()),
                    bytes_sent,
                    duration: elapsed,
                },
            );
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.done {
            self.account(0, false, None);
        }
    }
}
