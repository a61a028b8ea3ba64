//! The upstream request's target: `prefix_rewrite` and the authority.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::config::{ForwardAction, RegexRewrite};
use crate::router::Route;

static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static X_ENVOY_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-envoy-original-host");

/// The upstream request's target under the route's rewrites: the host (`host_rewrite_*`, from
/// the request as it came) and the path (`prefix_rewrite` or `regex_rewrite`), then the
/// authority as the upstream's protocol wants it ([`set_upstream_authority`]).
pub(super) fn upstream_target(
    route: &Route,
    cfg: &ForwardAction,
    parts: &mut http::request::Parts,
    http2: bool,
) -> Uri {
    let host: Option<std::borrow::Cow<'_, str>> = if let Some(h) = &cfg.host_rewrite_literal {
        Some(h.as_str().into())
    } else if let Some(name) = &cfg.host_rewrite_header {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| v.to_owned().into())
    } else {
        cfg.host_rewrite_path_regex
            .as_ref()
            .map(|rw| rw.apply(parts.uri.path()).into_owned().into())
    };
    let path = match &cfg.regex_rewrite {
        Some(rw) => regex_rewrite_path(rw, &parts.uri, &mut parts.headers),
        None => rewrite_path(
            route,
            cfg.prefix_rewrite.as_deref(),
            &parts.uri,
            &mut parts.headers,
        ),
    };
    set_upstream_authority(parts, http2, host.as_deref(), path)
}

/// The upstream path after `regex_rewrite` (on the path; the query stays), the original in
/// `x-envoy-original-path` whether a match changed it or not, as Envoy.
fn regex_rewrite_path(rw: &RegexRewrite, uri: &Uri, h: &mut HeaderMap) -> PathAndQuery {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if let Ok(v) = HeaderValue::from_str(original.as_str()) {
        h.insert(X_ENVOY_ORIGINAL_PATH.clone(), v);
    }
    let mut out = rw.apply(original.path()).into_owned();
    if let Some(q) = original.query() {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::try_from(out).unwrap_or(original)
}

/// The upstream path after `prefix_rewrite`, which replaces what the route matched: its prefix,
/// or the whole path for a `path` or `safe_regex` match (the query stays, as in Envoy). The
/// original goes in `x-envoy-original-path`.
pub(super) fn rewrite_path(
    route: &Route,
    rewrite: Option<&str>,
    uri: &Uri,
    h: &mut HeaderMap,
) -> PathAndQuery {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let Some(rw) = rewrite else {
        return original;
    };
    let matched = route.prefix().map_or(original.path().len(), str::len);
    let pq = original.as_str();
    if let Ok(v) = HeaderValue::from_str(pq) {
        h.insert(X_ENVOY_ORIGINAL_PATH.clone(), v);
    }
    let rest = pq.get(matched..).unwrap_or("");
    let mut out = String::with_capacity(rw.len() + rest.len() + 1);
    if !rw.starts_with('/') {
        out.push('/');
    }
    out.push_str(rw);
    out.push_str(rest);
    PathAndQuery::try_from(out).unwrap_or(original)
}

/// Point the request at the upstream: origin-form URI and `Host` for HTTP/1.1, absolute URI
/// (`:authority`) and no `Host` for HTTP/2. `host_rewrite` replaces the downstream authority,
/// which goes in `x-envoy-original-host`.
pub(super) fn set_upstream_authority(
    parts: &mut http::request::Parts,
    http2: bool,
    host_rewrite: Option<&str>,
    path: PathAndQuery,
) -> Uri {
    if host_rewrite.is_some() {
        let original = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        if let Some(v) = original {
            parts.headers.insert(X_ENVOY_ORIGINAL_HOST.clone(), v);
        }
    }
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
