//! One downstream request, end to end: route it, answer it locally (direct response, redirect,
//! Envoy's error replies: [`local`]) or forward it to a cluster ([`forward`]) with retries
//! ([`retry`]) and timeouts, and account for it in stats once its response has been fully sent
//! ([`tracker`]).

mod ahead;
mod attempt;
mod filters;
mod forward;
pub(crate) mod hash;
pub mod local;
mod local_reply;
mod mirror;
mod mutate;
mod retry;
mod rewrite;
mod tracker;
mod upgrade;

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use crate::body::{ProxyBody, RequestBody};
use crate::config::{EscapedSlashes, HttpConnectionManager, ServerTransformation, Underscores};
use crate::context::{ConnCtx, Ctx, ListenerShared, Worker};
use crate::flags::ResponseFlags;
use crate::handover::Mode;
use crate::headers::{new_request_id, Refusal, X_REQUEST_ID};
use crate::router::{Action, Forward, Route, RouteCluster};

use self::forward::forward_to;
use self::local::{local_reply, redirect};
use self::mutate::{mutate_response, Seen};
use self::tracker::Tracker;

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
    let cx = Ctx {
        l: &l,
        w: &w,
        c: &c,
    };
    let mut tracker = Tracker::new(cx);
    let mut req = req;
    let hcm = &l.http;
    if req.headers().len() > hcm.max_headers_count || hcm.underscores != Underscores::Allow {
        fields_checked(&mut req, hcm);
    }
    if (hcm.normalize_path || hcm.escaped_slashes != EscapedSlashes::Keep)
        && req.extensions().get::<Refusal>().is_none()
    {
        if let Some(reply) = canonical_path(&l, &c, &mut req) {
            return Ok(path_answered(cx, req, tracker, reply));
        }
    }
    if let Some(cluster) = &hcm.add_user_agent {
        crate::headers::add_user_agent(req.headers_mut(), cluster);
    }
    if hcm.merge_slashes {
        if let Some(uri) = crate::headers::merge_slashes(req.uri()) {
            *req.uri_mut() = uri;
        }
    }
    if hcm.generate_request_id {
        if hcm.use_remote_address
            && !hcm.preserve_external_request_id
            && !hcm.is_internal_request(c.remote.ip(), req.headers())
        {
            // An edge request: the external client's id is replaced, as Envoy does.
            req.headers_mut()
                .insert(X_REQUEST_ID.clone(), new_request_id());
        } else {
            // One hashed lookup: a client's id is kept.
            req.headers_mut()
                .entry(&X_REQUEST_ID)
                .or_insert_with(new_request_id);
        }
    }
    // Not on a refused request: the codec answers it before it has an id (Envoy).
    let request_id =
        if hcm.always_set_request_id_in_response && req.extensions().get::<Refusal>().is_none() {
            req.headers().get(&X_REQUEST_ID).cloned()
        } else {
            None
        };
    if let Some(logs) = l.access_logs.as_ref() {
        tracker.set_log(logs.capture(&req));
    } else if hcm.local_reply.is_some() {
        // Mappers' filters and body formats read the request.
        tracker.set_log(crate::access::LogCapture::of(&req));
    }
    if hcm.xff_num_trusted_hops > 0 {
        trusted_remote(hcm, &req, &mut tracker);
    }
    // With filters, the route is found and the filters run first: boxed, and only the filters'
    // part (what forwarding needs stays in this future), so a listener without filters keeps
    // nothing of them. A refused request is answered before any filter, as Envoy's codec does.
    let mut pre: Option<Box<Decided<'_>>> = None;
    if !l.http.http_filters.is_empty() && req.extensions().get::<Refusal>().is_none() {
        match Box::pin(before(cx, &mut req, &mut tracker)).await {
            Err(reply) => return Ok(finish(cx, *reply, tracker, request_id)),
            Ok(d) => pre = Some(d),
        }
    }
    // Routing is synchronous, so only forwarding adds a future to this one's state.
    let matched;
    let seen;
    let routed = match pre.as_deref() {
        None => route(&l, &c, &req, &mut tracker),
        Some(d) => routed(&l, &req, d.found, &mut tracker),
    };
    let mut resp = match routed {
        Routed::Reply(r, m) => {
            matched = m;
            seen = m.and_then(|route| Seen::keep(route, &req));
            // Answered here: the request's header map goes back to the worker's pool (the
            // forwarding path gives back the map it sent).
            crate::header_pool::give(std::mem::take(req.headers_mut()));
            r
        }
        Routed::Forward(route, f) => {
            matched = Some(route);
            seen = Seen::keep(route, &req);
            let to = match pre.as_deref() {
                Some(d) => d.target,
                None => f.targets.pick(req.headers()),
            };
            match to {
                Some(to) => forward_to(cx, route, f, to, req, &mut tracker).await,
                None => {
                    crate::header_pool::give(std::mem::take(req.headers_mut()));
                    no_cluster(&l, f, &mut tracker)
                }
            }
        }
    };
    if let Some(m) = matched.and_then(|r| r.mutations.as_deref()) {
        mutate_response(cx, m, seen.as_deref(), &mut resp, &tracker);
    }
    if let Some(d) = pre.as_deref_mut() {
        filters::encode(cx, &mut d.passed, &mut resp, &mut tracker);
    }
    Ok(finish(cx, resp, tracker, request_id))
}

/// `max_headers_count` and `headers_with_underscores_action` (see
/// [`crate::headers::check_fields`]); a refusal is answered as the codec's are.
#[cold]
#[inline(never)]
fn fields_checked(req: &mut Request<RequestBody>, hcm: &HttpConnectionManager) {
    if req.extensions().get::<Refusal>().is_some() {
        return;
    }
    if let Err(refusal) =
        crate::headers::check_fields(req.headers_mut(), hcm.max_headers_count, hcm.underscores)
    {
        req.extensions_mut().insert(refusal);
    }
}

/// `path_with_escaped_slashes_action`, then `normalize_path`, on the request's path (the query
/// is left alone), as Envoy's connection manager does them before routing; a reply when the
/// path is refused (400) or redirected (307). `merge_slashes` comes after.
#[cold]
#[inline(never)]
fn canonical_path(
    l: &ListenerShared,
    c: &ConnCtx,
    req: &mut Request<RequestBody>,
) -> Option<Response<ProxyBody>> {
    use crate::headers::path;
    let hcm = &l.http;
    let mut new_path: Option<String> = None;
    let mut redirect = false;
    if hcm.escaped_slashes != EscapedSlashes::Keep {
        if let Some(unescaped) = path::unescape_slashes(req.uri().path()) {
            match hcm.escaped_slashes {
                EscapedSlashes::Reject => return Some(path_refused(l, c)),
                EscapedSlashes::UnescapeAndRedirect => redirect = true,
                _ => {}
            }
            new_path = Some(unescaped);
        }
    }
    if hcm.normalize_path {
        let current = new_path.as_deref().unwrap_or(req.uri().path());
        match path::normalize(current) {
            Err(path::Invalid) => return Some(path_refused(l, c)),
            Ok(Some(n)) => new_path = Some(n),
            Ok(None) => {}
        }
    }
    let mut p = new_path?;
    if let Some(q) = req.uri().query() {
        p.push('?');
        p.push_str(q);
    }
    if redirect {
        l.http_stats
            .downstream_rq_redirected_with_normalized_path
            .inc();
        let mut resp = local_reply(StatusCode::TEMPORARY_REDIRECT, Bytes::new());
        return match HeaderValue::try_from(p) {
            Ok(v) => {
                resp.headers_mut().insert(header::LOCATION, v);
                Some(resp)
            }
            Err(_) => Some(path_refused(l, c)),
        };
    }
    let mut parts = req.uri().clone().into_parts();
    match p.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return Some(path_refused(l, c)),
    }
    match http::Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Some(path_refused(l, c)),
    }
    None
}

/// `%DOWNSTREAM_REMOTE_ADDRESS%` with trusted hops: the client `x-forwarded-for` names, port 0
/// (Envoy 1.40).
#[cold]
#[inline(never)]
fn trusted_remote(hcm: &HttpConnectionManager, req: &Request<RequestBody>, tracker: &mut Tracker) {
    if let (Some(ip), Some(log)) = (hcm.trusted_client(req.headers()), tracker.log_mut()) {
        log.downstream_remote = Some(std::net::SocketAddr::new(ip, 0));
    }
}

/// The reply to a request whose path was refused or redirected, logged as any other.
#[cold]
#[inline(never)]
fn path_answered(
    cx: Ctx<'_>,
    mut req: Request<RequestBody>,
    mut tracker: Box<Tracker>,
    reply: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if let Some(logs) = cx.l.access_logs.as_ref() {
        tracker.set_log(logs.capture(&req));
    } else if cx.l.http.local_reply.is_some() {
        tracker.set_log(crate::access::LogCapture::of(&req));
    }
    crate::header_pool::give(std::mem::take(req.headers_mut()));
    finish(cx, reply, tracker, None)
}

/// A path `normalize_path` or `path_with_escaped_slashes_action` refused: 400, and an HTTP/1.1
/// connection closes (Envoy 1.40).
fn path_refused(l: &ListenerShared, c: &ConnCtx) -> Response<ProxyBody> {
    l.http_stats.downstream_rq_failed_path_normalization.inc();
    let mut resp = local_reply(StatusCode::BAD_REQUEST, Bytes::new());
    if !c.http2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// What the HTTP filters decided for a request they let through: its route, the cluster picked
/// (a weighted route's, picked before the filters so they see it), and their state for the way
/// out.
struct Decided<'l> {
    found: Option<&'l Route>,
    target: Option<&'l RouteCluster>,
    passed: filters::Passed,
}

/// A request on a listener with HTTP filters: its route found first (filters read their
/// per-route configuration from it), then the filters. `Err`: a filter answered (the reply has
/// been back through the filters before it, and has the route's response header mutations, as
/// in Envoy).
async fn before<'l>(
    cx: Ctx<'l>,
    req: &mut Request<RequestBody>,
    tracker: &mut Tracker,
) -> Result<Box<Decided<'l>>, Box<Response<ProxyBody>>> {
    let found = if req.method() == Method::CONNECT {
        None
    } else {
        let authority = authority_of(req);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        cx.l.router
            .route_for(authority, path, req.headers(), facts(req, cx.c))
    };
    let target = found.and_then(|r| match &r.action {
        Action::Forward(f) => f.targets.pick(req.headers()),
        _ => None,
    });
    if let (Some(route), Some(log)) = (found, tracker.log_mut()) {
        // Logged even when a filter answers.
        log.route_name = Some(route.name.clone());
    }
    let mut passed = filters::Passed::default();
    if let Err(mut reply) = filters::decode(cx, found, target, req, tracker, &mut passed).await {
        if let Some(m) = found.and_then(|r| r.mutations.as_deref()) {
            let seen = found.and_then(|route| Seen::keep(route, req));
            mutate_response(cx, m, seen.as_deref(), &mut reply, tracker);
        }
        return Err(reply);
    }
    Ok(Box::new(Decided {
        found,
        target,
        passed,
    }))
}

/// The response as it leaves: its status and head for the access log, HTTP/1.1, the HCM's
/// `server`, `via` and `x-request-id` fields, and `Connection: close` while draining or at
/// the connection's `max_requests_per_connection`. Inlined: the response is moved, not copied,
/// on every request.
#[inline(always)]
fn finish(
    cx: Ctx<'_>,
    mut resp: Response<ProxyBody>,
    mut tracker: Box<Tracker>,
    request_id: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let Ctx { l, w, c } = cx;
    let hcm = &l.http;
    if let Some(lr) = &hcm.local_reply {
        if !tracker.answered_by_upstream() {
            local_reply::rewrite(cx, lr, &mut resp, &tracker);
        }
    }
    tracker.set_status(resp.status().as_u16());
    let h = resp.headers_mut();
    match hcm.server.transformation {
        ServerTransformation::Overwrite => {
            h.insert(header::SERVER, hcm.server.name.clone());
        }
        ServerTransformation::AppendIfAbsent => {
            h.entry(header::SERVER)
                .or_insert_with(|| hcm.server.name.clone());
        }
        ServerTransformation::PassThrough => {}
    }
    if let Some(via) = &hcm.via {
        crate::headers::append_value(h, &crate::headers::VIA, via);
    }
    if let Some(id) = request_id {
        h.insert(X_REQUEST_ID.clone(), id);
    }
    if let Some(max) = hcm.max_requests_per_connection {
        if c.requests.get() == max {
            l.http_stats.downstream_cx_max_requests_reached.inc();
            c.drain.ask_close();
        }
    }
    if let Some(log) = tracker.log_mut() {
        log.response_headers = Some(resp.headers().clone());
    }
    if !c.http2 {
        *resp.version_mut() = Version::HTTP_11;
    }
    // Draining (or failing health checks, or at a limit of the connection's own): HTTP/1.1
    // responses close their connection — unless it moves to the next generation at its next
    // idle point; for HTTP/2 a yes wakes the connection, which sends GOAWAY.
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS
        && c.drain.drain_close()
        && !c.http2
        && !(c.movable.get() && w.modes.mode() == Mode::Active && !c.drain.asked_by_limit())
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.on_finish(tracker))
}

/// A request [`crate::headers::check_request`] refused: 400 or 431 (Envoy's `DPE`); an
/// HTTP/1.1 connection closes after it.
#[cold]
#[inline(never)]
fn refused(c: &ConnCtx, refusal: Refusal, tracker: &mut Tracker) -> Response<ProxyBody> {
    tracing::debug!(remote = %c.remote, ?refusal, "request refused");
    tracker.set_flag(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
    let mut resp = local_reply(
        refusal.status(),
        Bytes::from_static(refusal.body().as_bytes()),
    );
    if !c.http2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A `cluster_header` route whose field names no cluster: its
/// `cluster_not_found_response_code` with no body, Envoy's `NC` and `no_cluster`.
#[cold]
#[inline(never)]
fn no_cluster(l: &ListenerShared, f: &Forward, tracker: &mut Tracker) -> Response<ProxyBody> {
    l.http_stats.no_cluster.inc();
    tracker.set_flag(ResponseFlags::NO_CLUSTER_FOUND);
    local_reply(f.config.cluster_not_found_response_code, Bytes::new())
}

/// What routing decided.
enum Routed<'l> {
    /// Answered here; by the route, if one matched.
    Reply(Response<ProxyBody>, Option<&'l Route>),
    Forward(&'l Route, &'l Forward),
}

fn route<'l>(
    l: &'l ListenerShared,
    c: &ConnCtx,
    req: &Request<RequestBody>,
    tracker: &mut Tracker,
) -> Routed<'l> {
    if let Some(&refusal) = req.extensions().get::<Refusal>() {
        return Routed::Reply(refused(c, refusal, tracker), None);
    }
    if req.method() == Method::CONNECT {
        // No route takes CONNECT (Envoy: 404 unless a route matches it with `connect_matcher`).
        l.http_stats.no_route.inc();
        tracker.set_flag(ResponseFlags::NO_ROUTE_FOUND);
        return Routed::Reply(local_reply(StatusCode::NOT_FOUND, Bytes::new()), None);
    }
    let route = {
        let authority = authority_of(req);
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        l.router
            .route_for(authority, path, req.headers(), facts(req, c))
    };
    routed(l, req, route, tracker)
}

/// What the route found for a request (`None`: none) makes of it.
#[inline]
fn routed<'l>(
    l: &'l ListenerShared,
    req: &Request<RequestBody>,
    route: Option<&'l Route>,
    tracker: &mut Tracker,
) -> Routed<'l> {
    let Some(route) = route else {
        l.http_stats.no_route.inc();
        tracker.set_flag(ResponseFlags::NO_ROUTE_FOUND);
        return Routed::Reply(local_reply(StatusCode::NOT_FOUND, Bytes::new()), None);
    };
    if let Some(log) = tracker.log_mut() {
        log.route_name = Some(route.name.clone());
    }
    match &route.action {
        Action::Direct(d) => {
            l.http_stats.rq_direct_response.inc();
            let body = d.body.clone().unwrap_or_default();
            Routed::Reply(local_reply(d.status, body), Some(route))
        }
        Action::Redirect(_) => {
            l.http_stats.rq_redirect.inc();
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            Routed::Reply(redirect(route, authority_of(req), path), Some(route))
        }
        Action::Forward(f) => Routed::Forward(route, f),
    }
}

/// The request's method and scheme (`:scheme`, else the connection's), for route matching.
#[inline]
fn facts<'r>(req: &'r Request<RequestBody>, c: &ConnCtx) -> crate::router::RequestFacts<'r> {
    crate::router::RequestFacts {
        method: req.method(),
        scheme: req
            .uri()
            .scheme_str()
            .unwrap_or(if c.tls.is_some() { "https" } else { "http" }),
        peer_cert: c.tls == Some(true),
    }
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or `Host`.
pub(super) fn authority_of(req: &Request<RequestBody>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests;
