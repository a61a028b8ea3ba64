//! What a request may be answered with by Baton itself: Envoy's local replies and redirects.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::router::{Action, Route};

/// A reply Baton makes itself.
pub fn local_reply(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = status;
    // From the worker's pool (the response loop gives it back once written).
    *resp.headers_mut() = crate::header_pool::take(LOCAL_REPLY_FIELDS);
    if !body.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *resp.body_mut() = ProxyBody::full(body);
    }
    resp
}

/// Fields a local reply's map has room for: its own two, the date, server and route mutations.
const LOCAL_REPLY_FIELDS: usize = 8;

/// The request was not received in full within `request_timeout` (Envoy: 408).
pub fn request_timeout() -> Response<ProxyBody> {
    local_reply(
        StatusCode::REQUEST_TIMEOUT,
        Bytes::from_static(b"request timeout"),
    )
}

/// A redirect `route` answers with (`Location` from the request's authority and path as the
/// route's redirect rewrites them); 400 when the result is not a valid field value.
pub fn redirect(route: &Route, authority: &str, path_and_query: &str) -> Response<ProxyBody> {
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
pub fn split_host_port(authority: &str) -> (&str, Option<&str>) {
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
