//! Forwarding a routed request to its cluster, in steps: the body made replayable when it may
//! be retried ([`plain_body`], [`buffer_body`]), the upstream request's head
//! ([`prepare_head`]), then tries until one answers ([`retry_answered`]) or the retry policy says
//! stop ([`failed`]).
//!
//! The tries run in [`forward`]'s own loop rather than in a future of their own: a request's
//! future is moved whole into its slot, and a nested future would be one more copy of its
//! state per request.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::body::{BodyFault, BodyTimeout, ProxyBody, RequestBody, RequestStream};
use crate::cluster::{Cluster, Pick};
use crate::context::Ctx;
use crate::error::UpstreamFailure;
use crate::flags::ResponseFlags;
use crate::headers::{prepare_request_headers, upgrade_type, Forwarded, Upgrade};
use crate::router::{Forward, Route, RouteCluster};

use super::ahead::read_ahead;
use super::attempt::{attempt_once, choose, AttemptDone};
use super::local::{local_reply, request_timeout};
use super::mutate::mutate_request;
use super::retry::{Asked, Next, Policy, Tries};
use super::rewrite::upstream_target;
use super::tracker::Tracker;
use super::upgrade::tunnel;

static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// The request body as forwarding holds it.
struct Body {
    /// The whole body, in memory: the request may be sent again.
    replay: Option<Bytes>,
    /// The trailers that followed the body in memory (kept by the buffer filter).
    replay_trailers: Option<http::HeaderMap>,
    /// A body streamed to the upstream as it arrives (sent once).
    stream: Option<ProxyBody>,
    /// Set when the streamed body hit `request_timeout` or `stream_idle_timeout`.
    timed_out: Option<Rc<Cell<Option<BodyTimeout>>>>,
    /// Set when the client got the streamed body wrong or left in its middle.
    fault: Option<Rc<Cell<Option<BodyFault>>>>,
    /// The body was read whole before forwarding (the route timeout starts now, not at the
    /// request's start).
    read_first: bool,
}

/// Where the upstream request goes: its URI and HTTP version (the rest of its head is the
/// downstream request's, prepared in place).
struct Target {
    uri: Uri,
    version: Version,
}

/// The deadlines of the tries, and whether a request may be resent.
struct Limits {
    /// The route timeout, from the moment the request was all here.
    deadline: Option<tokio::time::Instant>,
    /// Each try's own bound (`per_try_timeout`, else `stream_idle_timeout`).
    per_try: Option<std::time::Duration>,
    idempotent: bool,
}

/// A try that failed.
#[derive(Clone, Copy, Debug)]
struct Failure {
    failure: UpstreamFailure,
    /// The streamed request body hit `request_timeout` or `stream_idle_timeout`.
    body_timed_out: bool,
    /// The client's streamed body failed: the try failed for it, not for the upstream.
    body_fault: Option<BodyFault>,
    /// The try went on a reused keep-alive connection, the request is idempotent, its body
    /// replayable and its head still in hand: it may be sent once more on a new connection.
    resendable: bool,
}

/// Forward `req` along `route` to `to`, one of `f`'s clusters (picked by weight; with HTTP
/// filters, before they ran, so they see it).
pub(super) async fn forward_to(
    cx: Ctx<'_>,
    route: &Route,
    f: &Forward,
    to: &RouteCluster,
    req: Request<RequestBody>,
    tracker: &mut Tracker,
) -> Response<ProxyBody> {
    let Some(cluster) = cx.w.clusters.get(to.index).cloned() else {
        return tracker.failure_reply(UpstreamFailure::NoHealthyUpstream);
    };
    if let Some(kind) = upgrade_type(req.headers()) {
        if !upgrade_allowed(cx, f, kind) {
            cx.l.http_stats.upgrade_failed.inc();
            return local_reply(StatusCode::FORBIDDEN, Bytes::from_static(b"upgrade failed"));
        }
        // Boxed: the rare upgrade path must not grow every request's future.
        return Box::pin(tunnel(cx, route, f, to, &cluster, req, tracker)).await;
    }
    let (by, set_cookie) = request_hash(cx, f, &cluster, &req);
    let (mut parts, body) = req.into_parts();
    let mut body = if replayable_by_buffering(cx, f, &body) {
        // Boxed, like every rare await here: a future's size is that of its largest state,
        // and every request's future is allocated and moved whole.
        match Box::pin(buffer_body(cx, body, tracker)).await {
            Ok(b) => b,
            Err(reply) => return reply,
        }
    } else if body.is_end_stream() {
        empty_body()
    } else {
        match Box::pin(streamed_body(cx, f, body, tracker)).await {
            Ok(b) => b,
            Err(reply) => return reply,
        }
    };
    // Only an internal client's `x-envoy-*` fields are still here.
    let asked = if cx
        .l
        .http
        .is_internal_request(cx.c.remote.ip(), &parts.headers)
    {
        Asked::take(&mut parts.headers).map(Box::new)
    } else {
        None
    };
    let target = prepare_head(cx, (route, f), &cluster, &mut parts, tracker.start());
    if !f.mirrors.is_empty() {
        super::mirror::mirror(cx, f, &cluster, &parts, &target.uri, body.replay.as_ref());
    }
    let policy = match &asked {
        None => f.config.retry_policy.as_ref().map(Policy::Route),
        Some(a) => a.policy(f.config.retry_policy.as_ref()),
    };
    let mut limits = Limits::of(cx, f, &parts.method, &body, tracker);
    if let Some(a) = &asked {
        asked_limits(cx, a, policy.as_deref(), &mut limits, &mut parts, tracker);
    }
    let mut tries = Tries::new(policy, body.replay.is_some(), &parts.headers);
    tries.start();
    let mut backing_off = false;
    loop {
        // Waited here, where nothing of the try before is alive (the request's future would
        // otherwise keep room for its response beside the wait).
        if std::mem::take(&mut backing_off) {
            back_off(&cluster, &tries, limits.deadline).await;
            tries.start();
        }
        // The last try takes the head instead of a copy.
        let last = tries.is_last();
        let mut up = upstream_request(&mut parts, &target, &mut body, last);
        let reselect = tries.reselect();
        let avoid = tries.tried.as_mut().map(|t| (t, reselect));
        let outcome = match choose(cx.w, cx.c, (to.index, &cluster), up.headers(), avoid, by) {
            Ok(host) => {
                let c = (to.index, &cluster);
                attempt_once(cx.w, c, host, &mut up, limits.deadline, limits.per_try).await
            }
            Err(e) => Err(e),
        };
        // The request has been written (or failed): its map serves a later message, or a
        // resend when the last try took it and Baton's own client still has it.
        let sent = std::mem::take(up.headers_mut());
        drop(up);
        let (failure, reused) = match outcome {
            Ok(done) => {
                crate::header_pool::give(sent);
                if retry_answered(cx, to, &cluster, &mut tries, &done.response) {
                    backing_off = true;
                    continue;
                }
                return respond(cx, (f, to), done, tracker, set_cookie);
            }
            Err(e) => e,
        };
        let failure = Failure {
            failure,
            body_timed_out: body.timed_out.as_ref().is_some_and(|t| t.get().is_some()),
            body_fault: body.fault.as_ref().and_then(|f| f.get()),
            resendable: reused
                && limits.idempotent
                && body.replay.is_some()
                && (!last || !sent.is_empty()),
        };
        match failed(cx, &cluster, &limits, &mut tries, failure) {
            Next::Resend if last => parts.headers = sent,
            Next::Resend => crate::header_pool::give(sent),
            Next::Retry => {
                crate::header_pool::give(sent);
                backing_off = true;
            }
            Next::Done => {
                crate::header_pool::give(sent);
                if failure.body_timed_out {
                    return request_timeout_reply(cx, tracker);
                }
                if let Some(fault) = failure.body_fault {
                    return body_fault_reply(cx, fault, tracker);
                }
                return tracker.failure_reply(failure.failure);
            }
        }
    }
}

/// The hash a RING_HASH or MAGLEV cluster picks by (from the downstream request, before
/// forwarding edits it) and the `set-cookie` of a cookie it generated; nothing for the other
/// policies, which never read it (so a route's cookie is only made up for a hashing cluster,
/// as in Envoy).
#[inline]
pub(super) fn request_hash<B>(
    cx: Ctx<'_>,
    f: &Forward,
    cluster: &Cluster,
    req: &Request<B>,
) -> (Pick, Option<Box<HeaderValue>>) {
    let policies = &f.config.hash_policy;
    if policies.is_empty() || !cluster.config.lb_policy.hashes() {
        return (Pick::default(), None);
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let h = super::hash::hash_request(policies, req.headers(), path, cx.c.remote, cx.c.local);
    (Pick { hash: h.hash }, h.set_cookie.map(Box::new))
}

/// An upgrade of type `kind` on HTTP/1.1: the route's `upgrade_configs` entry for it decides,
/// else the HCM's list (as Envoy's).
fn upgrade_allowed(cx: Ctx<'_>, f: &Forward, kind: &str) -> bool {
    if cx.c.http2 {
        return false;
    }
    if let Some((_, enabled)) = f
        .config
        .upgrades
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(kind))
    {
        return *enabled;
    }
    cx.l.http
        .upgrade_types
        .iter()
        .any(|t| t.eq_ignore_ascii_case(kind))
}

/// A body is replayable (so the request may be retried or mirrored) when it is empty, or small
/// enough to buffer whole within the connection's buffer limit and the route retries or
/// mirrors; otherwise it is streamed. Whether this one is buffered:
fn replayable_by_buffering(cx: Ctx<'_>, f: &Forward, body: &RequestBody) -> bool {
    let buffer_limit = u64::from(cx.l.config.per_connection_buffer_limit_bytes);
    let policy = f.config.retry_policy.as_ref();
    !body.is_end_stream()
        && (policy.is_some_and(|p| p.num_retries > 0) || !f.mirrors.is_empty())
        && body.size_hint().exact().is_some_and(|n| n <= buffer_limit)
}

/// `request_timeout` as a deadline from the request's start.
pub(super) fn request_deadline(cx: Ctx<'_>, tracker: &Tracker) -> Option<tokio::time::Instant> {
    let hcm = &cx.l.http;
    hcm.request_timeout
        .map(|t| tokio::time::Instant::from_std(tracker.start()) + t)
}

/// An empty body (replayable).
#[inline]
fn empty_body() -> Body {
    Body {
        replay: Some(Bytes::new()),
        replay_trailers: None,
        stream: None,
        timed_out: None,
        fault: None,
        read_first: false,
    }
}

/// Read ahead of a streamed request body before anything goes upstream (see
/// [`read_ahead`]); more than this is left for the stream.
const READ_AHEAD_MAX: u32 = 64 * 1024;

/// A body streamed to the upstream as it arrives, after what has already arrived was read
/// (`Err`: the reply when that part was wrong).
async fn streamed_body(
    cx: Ctx<'_>,
    f: &Forward,
    body: RequestBody,
    tracker: &mut Tracker,
) -> Result<Body, Response<ProxyBody>> {
    let (b, replay_trailers) = match body {
        RequestBody::Hyper(rest) => return stream_rest(cx, f, rest, tracker).await,
        RequestBody::Empty => return Ok(empty_body()),
        // Read whole by the buffer filter: sent from memory, so it may be sent again.
        RequestBody::Full(b) => (b, None),
        RequestBody::Trailed(t) => (t.data, t.trailers),
    };
    let received = tracker.received();
    received.set(received.get() + b.as_ref().map_or(0, |b| b.len() as u64));
    Ok(Body {
        replay: b,
        replay_trailers,
        stream: None,
        timed_out: None,
        fault: None,
        read_first: true,
    })
}

/// The rest of a body streamed from the client, after what has already arrived was read.
async fn stream_rest(
    cx: Ctx<'_>,
    f: &Forward,
    mut rest: hyper::body::Incoming,
    tracker: &mut Tracker,
) -> Result<Body, Response<ProxyBody>> {
    let cap = READ_AHEAD_MAX.min(cx.l.config.per_connection_buffer_limit_bytes) as usize;
    let ahead = match read_ahead(&mut rest, cap).await {
        Ok(ahead) => ahead,
        Err(fault) => return Err(body_fault_reply(cx, fault, tracker)),
    };
    let fault = Rc::new(Cell::new(None));
    let stream = RequestStream {
        ahead,
        rest,
        fault: fault.clone(),
    };
    let deadline = request_deadline(cx, tracker);
    let (b, fired) = ProxyBody::request_stream(stream)
        .count_into(tracker.received())
        .with_timeouts(
            f.config.stream_idle_timeout(cx.l.http.stream_idle_timeout),
            deadline,
        );
    Ok(Body {
        replay: None,
        replay_trailers: None,
        stream: Some(b),
        timed_out: Some(fired),
        fault: Some(fault),
        read_first: true,
    })
}

/// The client got its body wrong (400, Envoy's `DPE`) or left in its middle (`DC`, and the 400
/// goes nowhere); the connection closes after it.
#[cold]
pub(super) fn body_fault_reply(
    cx: Ctx<'_>,
    fault: BodyFault,
    tracker: &mut Tracker,
) -> Response<ProxyBody> {
    match fault {
        BodyFault::Malformed => {
            cx.l.http_stats.downstream_cx_protocol_error.inc();
            tracker.set_flag(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        }
        BodyFault::Incomplete => {
            cx.l.http_stats.downstream_rq_rx_reset.inc();
            tracker.set_flag(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
    }
    let mut resp = local_reply(StatusCode::BAD_REQUEST, Bytes::new());
    if !cx.c.http2 {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The body read whole, within `request_timeout`. `Err`: the reply when it could not be read.
async fn buffer_body(
    cx: Ctx<'_>,
    body: RequestBody,
    tracker: &mut Tracker,
) -> Result<Body, Response<ProxyBody>> {
    let collected = match request_deadline(cx, tracker) {
        Some(d) => tokio::time::timeout_at(d, body.collect()).await.ok(),
        None => Some(body.collect().await),
    };
    let Some(collected) = collected else {
        return Err(request_timeout_reply(cx, tracker));
    };
    let Ok(collected) = collected else {
        cx.l.http_stats.downstream_rq_rx_reset.inc();
        tracker.set_flag(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        return Err(local_reply(StatusCode::BAD_REQUEST, Bytes::new()));
    };
    let replay_trailers = collected.trailers().cloned();
    let b = collected.to_bytes();
    let received = tracker.received();
    received.set(received.get() + b.len() as u64);
    Ok(Body {
        replay: Some(b),
        replay_trailers,
        stream: None,
        timed_out: None,
        fault: None,
        read_first: true,
    })
}

/// The request was not received in full within `request_timeout` (Envoy: 408, `DT`).
pub(super) fn request_timeout_reply(cx: Ctx<'_>, tracker: &mut Tracker) -> Response<ProxyBody> {
    cx.l.http_stats.downstream_rq_timeout.inc();
    tracker.set_flag(ResponseFlags::DURATION_TIMEOUT);
    request_timeout()
}

/// The upstream request's head, in place: forwarding fields (`x-forwarded-*`, `x-envoy-*`),
/// the rewritten path, and the authority as the upstream's protocol wants it.
#[inline]
fn prepare_head(
    cx: Ctx<'_>,
    (route, f): (&Route, &Forward),
    cluster: &Cluster,
    parts: &mut http::request::Parts,
    started: std::time::Instant,
) -> Target {
    let hcm = &cx.l.http;
    prepare_request_headers(
        &mut parts.headers,
        Forwarded::from_hcm(hcm, cx.c.remote, cx.c.tls.is_some()),
        Upgrade::Strip,
    );
    mutate_request(cx, route, &cluster.config.name, parts, started);
    if !hcm.suppress_envoy_headers {
        if let Some(v) = &f.expected_timeout_ms {
            parts
                .headers
                .insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), v.clone());
        }
    }
    let http2 = cluster.config.http2;
    let uri = upstream_target(route, &f.config, parts, http2);
    let version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    Target { uri, version }
}

// === impl Limits ===

impl Limits {
    fn of(cx: Ctx<'_>, f: &Forward, method: &Method, body: &Body, tracker: &Tracker) -> Self {
        let policy = f.config.retry_policy.as_ref();
        // From the moment the request was all here: its start when it had no body (one clock
        // read fewer), now when its body was just read whole.
        let deadline = f.config.timeout.map(|t| {
            let received = if body.read_first {
                tokio::time::Instant::now()
            } else {
                tokio::time::Instant::from_std(tracker.start())
            };
            received + t
        });
        Self {
            deadline,
            per_try: policy
                .and_then(|p| p.per_try_timeout)
                .or(f.config.stream_idle_timeout(cx.l.http.stream_idle_timeout)),
            idempotent: matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ),
        }
    }
}

/// Wait before a retry, as Envoy's jittered exponential back-off (never past the route's
/// deadline: the next try then times out at once).
async fn back_off(cluster: &Cluster, tries: &Tries<'_>, deadline: Option<tokio::time::Instant>) {
    let wait = tries.back_off();
    cluster.stats.upstream_rq_retry_backoff_exponential.inc();
    if wait.is_zero() {
        return;
    }
    let mut until = tokio::time::Instant::now() + wait;
    if let Some(d) = deadline {
        until = until.min(d);
    }
    // Boxed: only a retry pays for the timer, not every request's future.
    Box::pin(tokio::time::sleep_until(until)).await;
}

/// An internal client's `x-envoy-upstream-rq-timeout-ms` / `…-per-try-timeout-ms`: the route's
/// deadline and each try's bound as asked, told to the upstream in
/// `x-envoy-expected-rq-timeout-ms`.
#[cold]
fn asked_limits(
    cx: Ctx<'_>,
    asked: &Asked,
    policy: Option<&crate::config::RetryPolicy>,
    limits: &mut Limits,
    parts: &mut http::request::Parts,
    tracker: &Tracker,
) {
    if let Some(t) = asked.timeout {
        limits.deadline = t.map(|t| tokio::time::Instant::from_std(tracker.start()) + t);
    }
    if let Some(p) = policy.and_then(|p| p.per_try_timeout) {
        limits.per_try = Some(p);
    }
    let expected = policy
        .and_then(|p| p.per_try_timeout)
        .or(asked.timeout.flatten());
    if let (Some(e), false) = (expected, cx.l.http.suppress_envoy_headers) {
        parts.headers.insert(
            X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(),
            HeaderValue::from(e.as_millis() as u64),
        );
    }
}

/// After a try that answered `resp`: whether to retry (else it goes downstream).
fn retry_answered(
    cx: Ctx<'_>,
    to: &RouteCluster,
    cluster: &Arc<Cluster>,
    tries: &mut Tries<'_>,
    resp: &Response<ProxyBody>,
) -> bool {
    let status = resp.status().as_u16();
    cluster.stats.response(status, &cx.w.codes[to.index]);
    if tries.after_response(status, resp.headers(), cluster) == Next::Retry {
        return true;
    }
    if tries.retried() {
        cluster.stats.upstream_rq_retry_success.inc();
    }
    false
}

/// After a try that failed: another try, a resend, or [`Next::Done`] (the reply is the
/// failure's, or the request timeout's when the body timed out).
fn failed(
    cx: Ctx<'_>,
    cluster: &Arc<Cluster>,
    limits: &Limits,
    tries: &mut Tries<'_>,
    f: Failure,
) -> Next {
    if f.body_timed_out {
        return Next::Done;
    }
    if f.failure == UpstreamFailure::Timeout {
        if limits
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            cluster.stats.upstream_rq_timeout.inc();
            cx.l.http_stats.downstream_rq_timeout.inc();
            return Next::Done;
        }
        cluster.stats.upstream_rq_per_try_timeout.inc();
    }
    // A reused keep-alive connection the upstream closed as we wrote to it: an idempotent
    // request with a replayable body goes once more on a new connection.
    tries.after_failure(f.failure, f.resendable, cluster)
}

/// The request for one try: the head (taken on the `last` try, else copied) and the body
/// (replayed, or the stream on the one try it can have).
fn upstream_request(
    parts: &mut http::request::Parts,
    target: &Target,
    body: &mut Body,
    last: bool,
) -> Request<ProxyBody> {
    let body = match &body.replay {
        Some(b) => ProxyBody::trailed(b.clone(), body.replay_trailers.clone()),
        None => body.stream.take().unwrap_or_else(ProxyBody::empty),
    };
    let mut up = Request::new(body);
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = target.uri.clone();
    *up.version_mut() = target.version;
    *up.headers_mut() = if last {
        std::mem::take(&mut parts.headers)
    } else {
        parts.headers.clone()
    };
    up
}

/// The downstream response from the upstream's: `x-envoy-upstream-service-time`, the idle
/// timeout on its body, and what the tracker needs.
fn respond(
    cx: Ctx<'_>,
    (f, to): (&Forward, &RouteCluster),
    done: AttemptDone,
    tracker: &mut Tracker,
    set_cookie: Option<Box<HeaderValue>>,
) -> Response<ProxyBody> {
    let hcm = &cx.l.http;
    let AttemptDone {
        response,
        checkin,
        sent_at,
        attempt,
    } = done;
    let service_time = sent_at.elapsed();
    // Without hop-by-hop fields already (see `upstream::Conn::send`).
    let (mut rparts, rbody) = response.into_parts();
    if !hcm.suppress_envoy_headers {
        rparts.headers.insert(
            X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
            millis_value(service_time.as_millis() as u64),
        );
    }
    if let Some(c) = set_cookie {
        rparts.headers.append(http::header::SET_COOKIE, *c);
    }
    tracker.upstream_chosen(attempt.host.addr, &to.name);
    let body = rbody.with_idle_timeout(f.config.stream_idle_timeout(hcm.stream_idle_timeout));
    tracker.set_upstream(attempt.into_track(checkin));
    Response::from_parts(rparts, body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_times() {
        assert_eq!(millis_value(0), "0");
        assert_eq!(millis_value(63), "63");
        assert_eq!(millis_value(64), "64");
        assert_eq!(millis_value(123_456), "123456");
    }
}
