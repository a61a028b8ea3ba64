//! `envoy.filters.http.csrf`: a request that may change state (`POST`, `PUT`, `DELETE`,
//! `PATCH`) must come from the origin it is sent to (its `Origin`, else its `Referer`, host
//! and port against the request's authority) or one of `additional_origins`; otherwise 403
//! `Invalid origin` (enforced) or only counted (shadow), with Envoy's stats
//! `http.<prefix>.csrf.{missing_source_origin,request_invalid,request_valid}`.

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};

use crate::body::{ProxyBody, RequestBody};
use crate::config::{CsrfPolicy, HeaderMatchKind};
use crate::context::Ctx;

use super::super::local::local_reply;

/// Envoy's body for a refused request.
const BODY: &[u8] = b"Invalid origin";

pub(super) fn decode(
    cx: Ctx<'_>,
    p: &CsrfPolicy,
    req: &Request<RequestBody>,
) -> Result<(), Box<Response<ProxyBody>>> {
    let m = req.method();
    if !(m == Method::POST || m == Method::PUT || m == Method::DELETE || m == Method::PATCH) {
        return Ok(());
    }
    let enforced = p.enabled.hit(fastrand::u64(..));
    if !enforced && !p.shadow.hit(fastrand::u64(..)) {
        return Ok(());
    }
    let stats = cx.l.csrf_stats.as_ref();
    let Some(source) = source_origin(req) else {
        stats.inspect(|s| s.missing_source_origin.inc());
        return if enforced { Err(refused()) } else { Ok(()) };
    };
    let target = super::super::authority_of(req);
    let valid = source == target || p.additional_origins.iter().any(|m| matches(m, source));
    if valid {
        stats.inspect(|s| s.request_valid.inc());
        return Ok(());
    }
    stats.inspect(|s| s.request_invalid.inc());
    if enforced {
        return Err(refused());
    }
    Ok(())
}

fn refused() -> Box<Response<ProxyBody>> {
    Box::new(local_reply(StatusCode::FORBIDDEN, Bytes::from_static(BODY)))
}

/// The host and port of `Origin` (not `null`), else of `Referer`.
fn source_origin(req: &Request<RequestBody>) -> Option<&str> {
    let h = req.headers();
    let origin = h
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| !o.is_empty() && *o != "null");
    let value = origin.or_else(|| {
        h.get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .filter(|r| !r.is_empty())
    })?;
    let rest = value.split_once("://").map_or(value, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or("");
    (!host.is_empty()).then_some(host)
}

fn matches(m: &HeaderMatchKind, o: &str) -> bool {
    match m {
        HeaderMatchKind::Exact(s) => o == s,
        HeaderMatchKind::Prefix(s) => o.starts_with(s.as_str()),
        HeaderMatchKind::Suffix(s) => o.ends_with(s.as_str()),
        HeaderMatchKind::Contains(s) => o.contains(s.as_str()),
        HeaderMatchKind::Regex(re) => re
            .find(o)
            .is_some_and(|f| f.start() == 0 && f.end() == o.len()),
        HeaderMatchKind::Present(p) => *p,
    }
}
