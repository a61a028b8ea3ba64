//! A route's header mutations applied: to the upstream request before it is sent, and to the
//! response (the upstream's or a local one) before it goes downstream.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};

use crate::access_log::Record;
use crate::body::ProxyBody;
use crate::config::AppendAction;
use crate::context::Ctx;
use crate::metadata::DynamicMetadata;
use crate::router::mutate::{Op, Value};
use crate::router::{Mutations, Route};

use super::tracker::Tracker;

/// What a header value's command operators can read of the request and its stream.
struct Subject<'a> {
    started: Instant,
    method: &'a Method,
    path: &'a str,
    authority: Option<&'a str>,
    version: Version,
    remote: SocketAddr,
    local: SocketAddr,
    route_name: &'a str,
    upstream_cluster: Option<&'a str>,
    upstream_host: Option<SocketAddr>,
    response_code: u16,
    /// The request's fields, for a response's `%REQ(...)%` (the request's map itself when
    /// mutating the request).
    request_headers: Option<&'a HeaderMap>,
    /// What the filters set (`%DYNAMIC_METADATA(...)%`).
    dynamic_metadata: Option<&'a DynamicMetadata>,
}

/// Apply `ops` to `h` in order.
fn apply(ops: &[Op], h: &mut HeaderMap, s: &Subject<'_>, response: bool) {
    let mut text = String::new();
    for op in ops {
        match op {
            Op::Remove(name) => {
                h.remove(name);
            }
            Op::Add {
                name,
                value,
                action,
                keep_empty,
            } => {
                let v = match value {
                    Value::Fixed(v) => v.clone(),
                    Value::Rendered(f) => {
                        text.clear();
                        f.write_value(&record(s, h, response), &mut text);
                        let Ok(v) = HeaderValue::from_str(&text) else {
                            continue;
                        };
                        v
                    }
                };
                if v.is_empty() && !keep_empty {
                    continue;
                }
                match action {
                    AppendAction::AppendIfExistsOrAdd => {
                        h.append(name, v);
                    }
                    AppendAction::AddIfAbsent => {
                        if !h.contains_key(name) {
                            h.insert(name, v);
                        }
                    }
                    AppendAction::OverwriteIfExistsOrAdd => {
                        h.insert(name, v);
                    }
                    AppendAction::OverwriteIfExists => {
                        if h.contains_key(name) {
                            h.insert(name, v);
                        }
                    }
                }
            }
        }
    }
}

/// The record a value renders from; `h` is the map being mutated (the request's, or the
/// response's).
fn record<'a>(s: &'a Subject<'a>, h: &'a HeaderMap, response: bool) -> Record<'a> {
    static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
    let (request_headers, response_headers) = if response {
        (
            s.request_headers
                .unwrap_or_else(|| EMPTY.get_or_init(HeaderMap::new)),
            Some(h),
        )
    } else {
        (h, None)
    };
    let elapsed = s.started.elapsed();
    Record {
        start_time: SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        method: Some(s.method),
        path: s.path,
        authority: s.authority,
        version: Some(s.version),
        request_headers,
        response_headers,
        response_code: s.response_code,
        response_flags: "",
        response_code_details: "",
        bytes_received: 0,
        bytes_sent: 0,
        duration: Duration::from_millis(elapsed.as_millis() as u64),
        upstream_host: s.upstream_host,
        upstream_cluster: s.upstream_cluster,
        route_name: Some(s.route_name).filter(|n| !n.is_empty()),
        downstream_remote: s.remote,
        downstream_local: s.local,
        upstream_transport_failure_reason: None,
        local_reply_body: None,
        dynamic_metadata: s.dynamic_metadata,
    }
}

/// What a response's mutations may read of the request, kept before the request is forwarded
/// (only for a route whose response mutations render values).
pub(crate) struct Seen {
    method: Method,
    uri: http::Uri,
    version: Version,
    headers: HeaderMap,
    dynamic_metadata: Option<DynamicMetadata>,
}

impl Seen {
    #[inline]
    pub(super) fn keep<B>(route: &Route, req: &Request<B>) -> Option<Box<Seen>> {
        let m = route.mutations.as_deref()?;
        let renders = m.response.iter().any(|op| {
            matches!(
                op,
                Op::Add {
                    value: Value::Rendered(_),
                    ..
                }
            )
        });
        renders.then(|| {
            Box::new(Seen {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                headers: req.headers().clone(),
                dynamic_metadata: req.extensions().get::<DynamicMetadata>().cloned(),
            })
        })
    }
}

/// Apply the matched route's response mutations to `resp`.
pub(super) fn mutate_response(
    cx: Ctx<'_>,
    m: &Mutations,
    seen: Option<&Seen>,
    resp: &mut Response<ProxyBody>,
    tracker: &Tracker,
) {
    if m.response.is_empty() {
        return;
    }
    let status = resp.status().as_u16();
    let s = Subject {
        started: tracker.start(),
        method: seen.map_or(&Method::GET, |s| &s.method),
        path: seen
            .and_then(|s| s.uri.path_and_query())
            .map_or("", |p| p.as_str()),
        authority: seen.and_then(|s| s.uri.authority()).map(|a| a.as_str()),
        version: seen.map_or(Version::HTTP_11, |s| s.version),
        remote: cx.c.remote,
        local: cx.c.local,
        route_name: "",
        upstream_cluster: None,
        upstream_host: None,
        response_code: status,
        request_headers: seen.map(|s| &s.headers),
        dynamic_metadata: seen.and_then(|s| s.dynamic_metadata.as_ref()),
    };
    apply(&m.response, resp.headers_mut(), &s, true);
}

/// Apply the matched route's request mutations to the upstream request's head (before its
/// path and host are rewritten, as in Envoy).
pub(super) fn mutate_request(
    cx: Ctx<'_>,
    route: &Route,
    cluster: &str,
    parts: &mut http::request::Parts,
    started: Instant,
) {
    let Some(m) = route.mutations.as_deref().filter(|m| !m.request.is_empty()) else {
        return;
    };
    let s = Subject {
        started,
        method: &parts.method,
        path: parts.uri.path_and_query().map_or("", |p| p.as_str()),
        authority: parts.uri.authority().map(|a| a.as_str()),
        version: parts.version,
        remote: cx.c.remote,
        local: cx.c.local,
        route_name: &route.name,
        upstream_cluster: Some(cluster),
        upstream_host: None,
        response_code: 0,
        request_headers: None,
        dynamic_metadata: parts.extensions.get::<DynamicMetadata>(),
    };
    apply(&m.request, &mut parts.headers, &s, false);
}
