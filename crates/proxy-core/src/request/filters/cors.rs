//! `envoy.filters.http.cors`: the route's CORS policy (per-filter `CorsPolicy` merged across
//! levels, else the legacy `cors`), as Envoy applies it: a preflight from an allowed origin is
//! answered here; an allowed origin's other requests get `access-control-allow-origin` (and
//! credentials, exposed headers) on their response; `http.<prefix>.cors.origin_{valid,invalid}`.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{ProxyBody, RequestBody};
use crate::config::{CorsPolicy, HeaderMatchKind};
use crate::context::Ctx;

use super::super::local::local_reply;

static REQUEST_METHOD: HeaderName = HeaderName::from_static("access-control-request-method");

/// What the response of an allowed origin's request carries.
#[derive(Debug, Clone)]
pub(super) struct Passed {
    origin: HeaderValue,
    credentials: bool,
    expose: Option<HeaderValue>,
}

pub(super) fn decode(
    cx: Ctx<'_>,
    policy: Option<&CorsPolicy>,
    req: &Request<RequestBody>,
    passed: &mut Option<Passed>,
) -> Result<(), Box<Response<ProxyBody>>> {
    let Some(p) = policy else { return Ok(()) };
    if let Some(enabled) = p.enabled {
        if !enabled.hit(fastrand::u64(..)) {
            return Ok(());
        }
    }
    let Some(origin) = req.headers().get(header::ORIGIN).filter(|o| !o.is_empty()) else {
        return Ok(());
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .get(&REQUEST_METHOD)
            .is_some_and(|m| !m.is_empty());
    let stats = cx.l.cors_stats.as_ref();
    if !allowed(p, origin) {
        stats.inspect(|s| s.origin_invalid.inc());
        if preflight && p.forward_not_matching_preflights == Some(false) {
            // Envoy answers it, with the policy's fields but no allowed origin.
            return Err(Box::new(preflight_reply(p, None)));
        }
        return Ok(());
    }
    stats.inspect(|s| s.origin_valid.inc());
    *passed = Some(Passed {
        origin: origin.clone(),
        credentials: p.allow_credentials == Some(true),
        expose: p
            .expose_headers
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok()),
    });
    if preflight {
        return Err(Box::new(preflight_reply(p, Some(origin))));
    }
    Ok(())
}

fn allowed(p: &CorsPolicy, origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else { return false };
    p.allow_origin.iter().any(|m| match m {
        HeaderMatchKind::Exact(s) => o == s,
        HeaderMatchKind::Prefix(s) => o.starts_with(s.as_str()),
        HeaderMatchKind::Suffix(s) => o.ends_with(s.as_str()),
        HeaderMatchKind::Contains(s) => o.contains(s.as_str()),
        HeaderMatchKind::Regex(re) => re
            .find(o)
            .is_some_and(|f| f.start() == 0 && f.end() == o.len()),
        HeaderMatchKind::Present(p) => *p,
    })
}

/// Envoy's 200 to a preflight (the exposed headers are added on the way out, as for any
/// allowed request).
fn preflight_reply(p: &CorsPolicy, origin: Option<&HeaderValue>) -> Response<ProxyBody> {
    let mut resp = local_reply(StatusCode::OK, Bytes::new());
    let h = resp.headers_mut();
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
    }
    if p.allow_credentials == Some(true) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, &p.allow_methods),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, &p.allow_headers),
        (header::ACCESS_CONTROL_MAX_AGE, &p.max_age),
    ] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

pub(super) fn encode(passed: Option<&Passed>, resp: &mut Response<ProxyBody>) {
    let Some(p) = passed else { return };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, p.origin.clone());
    if p.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(e) = &p.expose {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
    }
}
