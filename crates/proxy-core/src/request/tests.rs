//! The pure pieces of a request: local replies, redirects, rewrites, retry decisions.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, StatusCode, Uri};

use crate::config::{
    self, DirectResponse, PathMatch, Redirect, RetryOn, RetryPolicy, RouteAction, RouteConfig,
    RouteMatch,
};
use crate::error::UpstreamFailure;
use crate::router::Router;

use super::local::{local_reply, redirect, request_timeout, split_host_port};
use super::retry::{retriable_failure, retriable_status};
use super::rewrite::{rewrite_path, set_upstream_authority};

fn router_with(prefix: &str, action: RouteAction) -> Router {
    let cfg = RouteConfig {
        name: "r".into(),
        virtual_hosts: vec![config::VirtualHost {
            name: "v".into(),
            metadata: Default::default(),
            domains: vec!["*".into()],
            routes: vec![config::Route {
                name: "only".into(),
                metadata: Default::default(),
                matcher: RouteMatch {
                    path: PathMatch::Prefix(prefix.into()),
                    case_sensitive: true,
                    headers: vec![],
                    query_parameters: vec![],
                },
                action,
                headers: Default::default(),
                filter_configs: Default::default(),
                cors: None,
            }],
            headers: Default::default(),
            filter_configs: Default::default(),
            cors: None,
        }],
        ..Default::default()
    };
    Router::new(&cfg, |_| Some(0)).expect("valid route config")
}

fn direct() -> RouteAction {
    RouteAction::Direct(DirectResponse {
        status: StatusCode::OK,
        body: None,
    })
}

fn redirect_to(r: Redirect) -> Router {
    router_with("/old", RouteAction::Redirect(r))
}

fn plain_redirect() -> Redirect {
    Redirect {
        scheme_redirect: None,
        host_redirect: None,
        port_redirect: None,
        path_redirect: None,
        prefix_rewrite: None,
        response_code: StatusCode::MOVED_PERMANENTLY,
        strip_query: false,
    }
}

fn location(router: &Router, authority: &str, path: &str) -> (StatusCode, String) {
    let route = router
        .route(authority, path, &HeaderMap::new())
        .expect("routed");
    let resp = redirect(route, authority, path);
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (resp.status(), loc)
}

#[test]
fn local_replies_as_envoy() {
    let r = local_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(b"no healthy upstream"),
    );
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "19");
    let r = local_reply(StatusCode::NOT_FOUND, Bytes::new());
    assert!(r.headers().is_empty(), "no body, no fields");
    let r = request_timeout();
    assert_eq!(r.status(), 408);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "15");
}

#[test]
fn redirects() {
    let r = redirect_to(plain_redirect());
    assert_eq!(
        location(&r, "a.example:8080", "/old/x?q=1"),
        (
            StatusCode::MOVED_PERMANENTLY,
            "http://a.example:8080/old/x?q=1".into()
        )
    );
    let r = redirect_to(Redirect {
        scheme_redirect: Some("https".into()),
        host_redirect: Some("b.example".into()),
        prefix_rewrite: Some("/new".into()),
        strip_query: true,
        response_code: StatusCode::FOUND,
        ..plain_redirect()
    });
    assert_eq!(
        location(&r, "a.example:8080", "/old/x?q=1"),
        (StatusCode::FOUND, "https://b.example/new/x".into()),
        "a new host drops the old port; the query is stripped"
    );
    let r = redirect_to(Redirect {
        port_redirect: Some(8443),
        path_redirect: Some("/p?z=2".into()),
        ..plain_redirect()
    });
    assert_eq!(
        location(&r, "[::1]:80", "/old?q=1").1,
        "http://[::1]:8443/p?z=2",
        "the path redirect's query replaces the request's"
    );
}

#[test]
fn host_and_port() {
    assert_eq!(split_host_port("a.example:80"), ("a.example", Some("80")));
    assert_eq!(split_host_port("a.example"), ("a.example", None));
    assert_eq!(split_host_port("[::1]:9"), ("[::1]", Some("9")));
    assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    assert_eq!(split_host_port("a:b"), ("a:b", None));
}

#[test]
fn prefix_rewrites() {
    let router = router_with("/api", direct());
    let route = router
        .route("h", "/api/v1", &HeaderMap::new())
        .expect("routed");
    let mut h = HeaderMap::new();
    let uri: Uri = "/api/v1?x=1".parse().expect("uri");
    let p = rewrite_path(route, Some("/svc"), &uri, &mut h);
    assert_eq!(p, PathAndQuery::from_static("/svc/v1?x=1"));
    assert_eq!(h["x-envoy-original-path"], "/api/v1?x=1");
    let mut h = HeaderMap::new();
    let p = rewrite_path(route, Some("svc"), &uri, &mut h);
    assert_eq!(p.as_str(), "/svc/v1?x=1", "a leading slash is added");
    let mut h = HeaderMap::new();
    let p = rewrite_path(route, None, &uri, &mut h);
    assert_eq!(p.as_str(), "/api/v1?x=1");
    assert!(h.is_empty(), "no rewrite, no original path");
}

#[test]
fn upstream_authority() {
    let parts = |uri: &str, host: Option<&'static str>| {
        let mut req = Request::new(());
        *req.uri_mut() = uri.parse().expect("uri");
        if let Some(h) = host {
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_static(h));
        }
        req.into_parts().0
    };
    let path = || PathAndQuery::from_static("/p");
    // HTTP/1.1: origin-form, Host kept, or rewritten.
    let mut p = parts("/x", Some("a.example"));
    assert_eq!(set_upstream_authority(&mut p, false, None, path()), "/p");
    assert_eq!(p.headers[header::HOST], "a.example");
    let mut p = parts("/x", Some("a.example"));
    set_upstream_authority(&mut p, false, Some("b.example"), path());
    assert_eq!(p.headers[header::HOST], "b.example");
    // An absolute-form target without Host: its authority becomes Host.
    let mut p = parts("http://c.example/x", None);
    set_upstream_authority(&mut p, false, None, path());
    assert_eq!(p.headers[header::HOST], "c.example");
    // HTTP/2: absolute URI, no Host.
    let mut p = parts("/x", Some("a.example"));
    let uri = set_upstream_authority(&mut p, true, None, path());
    assert_eq!(uri, "http://a.example/p");
    assert!(p.headers.get(header::HOST).is_none());
}

#[test]
fn retry_decisions() {
    let policy = |on: RetryOn, codes: Vec<u16>| RetryPolicy {
        retry_on: on,
        num_retries: 1,
        per_try_timeout: None,
        retriable_status_codes: codes,
        back_off: Default::default(),
        previous_hosts: false,
        host_selection_retry_max_attempts: 1,
        retriable_headers: vec![],
        retriable_request_headers: vec![],
    };
    let five = policy(
        RetryOn {
            five_xx: true,
            ..RetryOn::default()
        },
        vec![],
    );
    assert!(retriable_status(&five, 503));
    assert!(!retriable_status(&five, 404));
    assert!(retriable_failure(&five, UpstreamFailure::ConnectFailure));
    assert!(retriable_failure(&five, UpstreamFailure::Timeout));
    assert!(!retriable_failure(&five, UpstreamFailure::Overflow));
    let gw = policy(
        RetryOn {
            gateway_error: true,
            ..RetryOn::default()
        },
        vec![],
    );
    assert!(retriable_status(&gw, 502) && retriable_status(&gw, 504));
    assert!(!retriable_status(&gw, 500));
    let cf = policy(
        RetryOn {
            connect_failure: true,
            ..RetryOn::default()
        },
        vec![],
    );
    assert!(retriable_failure(&cf, UpstreamFailure::ConnectFailure));
    assert!(!retriable_failure(&cf, UpstreamFailure::Reset));
    let codes = policy(
        RetryOn {
            retriable_status_codes: true,
            retriable_4xx: true,
            ..RetryOn::default()
        },
        vec![418],
    );
    assert!(retriable_status(&codes, 418) && retriable_status(&codes, 409));
    assert!(!retriable_status(&codes, 503));
    assert!(!retriable_failure(
        &codes,
        UpstreamFailure::NoHealthyUpstream
    ));
}
