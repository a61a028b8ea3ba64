//! The HTTP filters in front of the router, on the request's way in ([`decode`]) and the
//! response's way out ([`encode`]), each in its module below. A listener without filters never
//! comes here: [`super::handle`] takes this path in one branch, boxed, so a request's future
//! keeps nothing of it otherwise.
//!
//! As in Envoy, a filter that answers a request locally stops the chain; the answer then passes
//! back through the filters already run. Which filters run for a request is decided by the HCM
//! list's `disabled` and, over it, the matched route's `typed_per_filter_config` (most specific
//! level first); a filter reads its per-route configuration from there too.

mod buffer;
mod compressor;
mod cors;
mod csrf;
mod fault;
mod health_check;
mod local_ratelimit;
mod metadata;
mod rbac;

use http::{Request, Response};

use crate::body::{ProxyBody, RequestBody};
use http::header;

use crate::config::{
    FilterHeaderMatcher, HeaderMatchKind, HttpFilter, MatchedField, RouteFilterConfig,
};
use crate::context::Ctx;
use crate::router::{Route, RouteCluster};

use super::tracker::Tracker;

/// What the filters decided on the way in, for the way out.
#[derive(Debug, Default)]
pub(super) struct Passed {
    health_check: health_check::Passed,
    /// A fault injected: counted in `active_faults` while this lives.
    fault: Option<fault::Active>,
    /// `x-ratelimit-*` for the response.
    rate_limit: Option<local_ratelimit::Passed>,
    /// An allowed CORS origin's response fields.
    cors: Option<cors::Passed>,
    /// The compressor filters that ran, in order.
    compressors: Vec<compressor::Registered>,
    /// The `header_to_metadata` filters with response rules that ran (their indices).
    header_to_metadata: Vec<usize>,
}

/// Run the enabled filters on a request, in order: `Err` with the response when one answers
/// it (which has then passed back through the filters before it).
pub(super) async fn decode(
    cx: Ctx<'_>,
    route: Option<&Route>,
    target: Option<&RouteCluster>,
    req: &mut Request<RequestBody>,
    tracker: &mut Tracker,
    passed: &mut Passed,
) -> Result<(), Box<Response<ProxyBody>>> {
    // A weighted cluster's own configurations are the most specific.
    let per_route = target
        .and_then(|t| t.filter_configs.as_deref())
        .or_else(|| route.and_then(|r| r.filter_configs.as_deref()));
    let mut rbac_index = 0;
    for (i, entry) in cx.l.http.http_filters.iter().enumerate() {
        // Which RBAC filter this is (its stats), counted whether it runs or not.
        let rbac_at = rbac_index;
        if matches!(entry.filter, HttpFilter::Rbac(_)) {
            rbac_index += 1;
        }
        let disabled = per_route.and_then(|p| p.disabled(&entry.name));
        if disabled.unwrap_or(entry.disabled) {
            continue;
        }
        let config = per_route.and_then(|p| p.config(&entry.name));
        let stop = match &entry.filter {
            HttpFilter::HealthCheck(hc) => {
                let r = health_check::decode(cx, hc, req, &mut passed.health_check);
                if r.is_err() || passed.health_check.is_health_check() {
                    tracker.mark_health_check();
                }
                r
            }
            HttpFilter::Buffer(b) => {
                let per_route = match config {
                    Some(RouteFilterConfig::Buffer(p)) => Some(p),
                    _ => None,
                };
                buffer::decode(cx, b, per_route, req, tracker).await
            }
            HttpFilter::Fault(f) => {
                let f = match config {
                    Some(RouteFilterConfig::Fault(p)) => p,
                    _ => f,
                };
                let cluster = target.map(|t| t.name.as_str());
                fault::decode(cx, f, cluster, req, tracker, &mut passed.fault).await
            }
            HttpFilter::LocalRateLimit(l) => {
                let l = match config {
                    Some(RouteFilterConfig::LocalRateLimit(p)) => p,
                    _ => l,
                };
                local_ratelimit::decode(cx, l, req, tracker, &mut passed.rate_limit)
            }
            HttpFilter::Cors => {
                let policy = match config {
                    Some(RouteFilterConfig::Cors(p)) => Some(&**p),
                    _ => per_route.and_then(|p| p.legacy_cors()),
                };
                cors::decode(cx, policy, req, &mut passed.cors)
            }
            HttpFilter::Csrf(p) => {
                let p = match config {
                    Some(RouteFilterConfig::Csrf(r)) => r,
                    _ => p,
                };
                csrf::decode(cx, p, req)
            }
            HttpFilter::Rbac(f) => {
                let stats = cx.l.rbac_stats.get(rbac_at);
                let rules = match config {
                    Some(RouteFilterConfig::Rbac(r)) => r,
                    _ => &f.rbac,
                };
                rbac::decode(cx, rules, stats, req)
            }
            HttpFilter::Compressor(c) => {
                let per_route = match config {
                    Some(RouteFilterConfig::Compressor(p)) => Some(*p),
                    _ => None,
                };
                compressor::decode(cx, i, c, per_route, req, &mut passed.compressors);
                Ok(())
            }
            HttpFilter::SetMetadata(m) => {
                metadata::set_metadata(cx, m, req);
                Ok(())
            }
            HttpFilter::HeaderToMetadata(h) => {
                metadata::decode(h, req);
                if !h.response_rules.is_empty() {
                    passed.header_to_metadata.push(i);
                }
                Ok(())
            }
        };
        if let Err(mut resp) = stop {
            log_metadata(req, tracker);
            encode(cx, passed, &mut resp, tracker);
            return Err(resp);
        }
    }
    log_metadata(req, tracker);
    Ok(())
}

/// The access log's copy of the dynamic metadata the filters set.
fn log_metadata(req: &Request<RequestBody>, tracker: &mut Tracker) {
    if let (Some(md), Some(log)) = (
        req.extensions().get::<crate::metadata::DynamicMetadata>(),
        tracker.log_mut(),
    ) {
        log.dynamic_metadata = Some(md.clone());
    }
}

/// Run the filters that ran on the request on its response, in reverse order.
pub(super) fn encode(
    cx: Ctx<'_>,
    passed: &mut Passed,
    resp: &mut Response<ProxyBody>,
    tracker: &mut Tracker,
) {
    // An active fault counts until the stream ends, as Envoy releases it on destroy.
    if let Some(active) = passed.fault.take() {
        let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
        *resp.body_mut() = body.holding(Box::new(active));
    }
    for &i in passed.header_to_metadata.iter().rev() {
        if let HttpFilter::HeaderToMetadata(h) = &cx.l.http.http_filters[i].filter {
            if let Some(log) = tracker.log_mut() {
                let md = log.dynamic_metadata.get_or_insert_with(Default::default);
                metadata::encode(h, resp.headers_mut(), md);
            } else {
                metadata::encode(h, resp.headers_mut(), &mut Default::default());
            }
        }
    }
    if !passed.compressors.is_empty() {
        compressor::encode(cx, &passed.compressors, resp);
    }
    cors::encode(passed.cors.as_ref(), resp);
    local_ratelimit::encode(passed.rate_limit.as_ref(), resp);
    health_check::encode(&passed.health_check, resp);
}

/// Whether a filter's header matcher accepts `req`.
pub(super) fn header_matches(m: &FilterHeaderMatcher, req: &Request<RequestBody>) -> bool {
    let value: Option<&str> = match &m.field {
        MatchedField::Path => req.uri().path_and_query().map(|p| p.as_str()),
        MatchedField::Method => Some(req.method().as_str()),
        MatchedField::Authority => req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        }),
        MatchedField::Header(name) => req.headers().get(name).and_then(|v| v.to_str().ok()),
    };
    let hit = match (&m.kind, value) {
        (HeaderMatchKind::Present(p), v) => v.is_some() == *p,
        // A missing field matches no value, inverted or not (Envoy 1.40).
        (_, None) => return false,
        (HeaderMatchKind::Exact(s), Some(v)) => v == s,
        (HeaderMatchKind::Prefix(s), Some(v)) => v.starts_with(s.as_str()),
        (HeaderMatchKind::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
        (HeaderMatchKind::Contains(s), Some(v)) => v.contains(s.as_str()),
        (HeaderMatchKind::Regex(re), Some(v)) => re
            .find(v)
            .is_some_and(|f| f.start() == 0 && f.end() == v.len()),
    };
    hit != m.invert
}
