//! `request_mirror_policies`: a copy of a forwarded request to each mirror cluster, fire and
//! forget, as Envoy's shadowing. The copy is the upstream request's head (after the route's
//! rewrites and header mutations) with the host suffixed `-shadow`, `x-envoy-internal: true`
//! and `192.0.2.2` in `x-forwarded-for` (what Envoy 1.40 sent), and the body when it was held
//! whole. It runs in a task of its own: it never delays nor fails the request, and its response
//! is read and dropped; it counts in the mirror cluster's `upstream_rq_*` stats.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Uri};
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::cluster::{Cluster, Host, Pick};
use crate::context::{Ctx, Worker};
use crate::error::UpstreamFailure;
use crate::router::Forward;

use super::attempt::{attempt_once, choose, AttemptDone};

static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The address Envoy's shadow requests give as their client.
const SHADOW_CLIENT: &str = "192.0.2.2";

/// Send a copy of the request with head `parts` (prepared for `main`, to `uri`) and body
/// `replay` to each of `f`'s mirrors whose fraction the roll falls in. No body in hand (it is
/// streamed): no copy, and `main`'s `retry_or_shadow_abandoned` counts it, as Envoy does when a
/// body outgrows its buffer.
#[cold]
#[inline(never)]
pub(super) fn mirror(
    cx: Ctx<'_>,
    f: &Forward,
    main: &Cluster,
    parts: &http::request::Parts,
    uri: &Uri,
    replay: Option<&Bytes>,
) {
    let Some(body) = replay else {
        main.stats.retry_or_shadow_abandoned.inc();
        return;
    };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let deadline = f.config.timeout.map(|t| tokio::time::Instant::now() + t);
    for m in f.mirrors.iter() {
        if m.fraction.is_some_and(|p| !p.hit(fastrand::u64(..))) {
            continue;
        }
        let Some(cluster) = cx.w.clusters.get(m.index).cloned() else {
            continue;
        };
        let host = if m.host_suffix {
            shadow_host(host)
        } else {
            host.to_owned()
        };
        let Some(req) = shadow_request(parts, uri, &host, body.clone(), cluster.config.http2)
        else {
            continue;
        };
        // Chosen here: the task keeps nothing of the connection (whose drain would wait on it).
        let Ok(host) = choose(
            cx.w,
            cx.c,
            (m.index, &cluster),
            req.headers(),
            None,
            Pick::default(),
        ) else {
            continue;
        };
        tokio::task::spawn_local(shadow(
            cx.w.clone(),
            (m.index, cluster, host),
            req,
            deadline,
        ));
    }
}

/// `host` with `-shadow` after its name, before any port (`a.example:80` →
/// `a.example-shadow:80`).
fn shadow_host(host: &str) -> String {
    let (name, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => host.split_at(i),
        _ => (host, ""),
    };
    format!("{name}-shadow{port}")
}

fn shadow_request(
    parts: &http::request::Parts,
    uri: &Uri,
    host: &str,
    body: Bytes,
    http2: bool,
) -> Option<Request<ProxyBody>> {
    let mut headers = parts.headers.clone();
    headers.insert(X_ENVOY_INTERNAL.clone(), HeaderValue::from_static("true"));
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(v) if !v.is_empty() => HeaderValue::from_str(&format!("{v}, {SHADOW_CLIENT}")).ok()?,
        _ => HeaderValue::from_static(SHADOW_CLIENT),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    let mut up = http::uri::Parts::default();
    up.path_and_query = uri.path_and_query().cloned();
    if http2 {
        headers.remove(header::HOST);
        up.scheme = Some(Scheme::HTTP);
        up.authority = Some(Authority::try_from(host).ok()?);
    } else {
        headers.insert(header::HOST, HeaderValue::from_str(host).ok()?);
    }
    let mut req = Request::new(ProxyBody::full(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = Uri::from_parts(up).ok()?;
    *req.version_mut() = if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    *req.headers_mut() = headers;
    Some(req)
}

/// One try of the copy at `host` of `cluster`, within the route timeout; the response is read to its end
/// and dropped.
async fn shadow(
    w: Rc<Worker>,
    (cidx, cluster, host): (usize, Arc<Cluster>, Arc<Host>),
    mut req: Request<ProxyBody>,
    deadline: Option<tokio::time::Instant>,
) {
    let started = std::time::Instant::now();
    let done = match attempt_once(&w, (cidx, &cluster), host, &mut req, deadline, None).await {
        Ok(done) => done,
        Err((UpstreamFailure::Timeout, _)) => {
            cluster.stats.upstream_rq_timeout.inc();
            return;
        }
        Err(_) => return,
    };
    let AttemptDone {
        response,
        checkin,
        mut attempt,
        ..
    } = done;
    let status = response.status().as_u16();
    cluster.stats.response(status, &w.codes[cidx]);
    let read = response.into_body().collect();
    let complete = match deadline {
        Some(d) => matches!(tokio::time::timeout_at(d, read).await, Ok(Ok(_))),
        None => read.await.is_ok(),
    };
    cluster.stats.upstream_rq_time.record(started.elapsed());
    attempt.finish(complete && status < 500);
    if complete {
        if let Some(s) = checkin {
            w.pools.checkin(cidx, attempt.host.addr, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_host;

    #[test]
    fn shadow_host_goes_before_the_port() {
        assert_eq!(shadow_host("foo.com:8080"), "foo.com-shadow:8080");
        assert_eq!(shadow_host("bar"), "bar-shadow");
        assert_eq!(shadow_host("1.2.3.4"), "1.2.3.4-shadow");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow_host("[::1]"), "[::1]-shadow");
    }
}
