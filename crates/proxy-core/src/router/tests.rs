use super::*;
use crate::config::{self, RouteMatch};
use http::HeaderValue;

fn route(name: &str, path: PathMatch, headers: Vec<HeaderMatcher>) -> config::Route {
    config::Route {
        name: name.into(),
        metadata: Default::default(),
        matcher: RouteMatch {
            path,
            case_sensitive: true,
            headers,
            query_parameters: vec![],
            pseudo_headers: vec![],
            grpc: false,
            runtime_fraction: None,
            tls_context: None,
        },
        action: RouteAction::Direct(DirectResponse {
            status: http::StatusCode::OK,
            body: None,
        }),
        headers: Default::default(),
        filter_configs: Default::default(),
        cors: None,
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<config::Route>) -> config::VirtualHost {
    config::VirtualHost {
        name: name.into(),
        metadata: Default::default(),
        domains: domains.iter().map(|d| (*d).into()).collect(),
        routes,
        headers: Default::default(),
        filter_configs: Default::default(),
        cors: None,
    }
}

fn router() -> Router {
    let cfg = RouteConfig {
        name: "r".into(),
        virtual_hosts: vec![
            vhost(
                "exact",
                &["api.example.com"],
                vec![route("a", PathMatch::Prefix("/".into()), vec![])],
            ),
            vhost(
                "suffix",
                &["*.example.com"],
                vec![route("s", PathMatch::Prefix("/".into()), vec![])],
            ),
            vhost(
                "longer-suffix",
                &["*.b.example.com"],
                vec![route("ls", PathMatch::Prefix("/".into()), vec![])],
            ),
            vhost(
                "prefix",
                &["foo.*"],
                vec![route("p", PathMatch::Prefix("/".into()), vec![])],
            ),
            vhost(
                "any",
                &["*"],
                vec![
                    route("exact", PathMatch::Exact("/exact".into()), vec![]),
                    route(
                        "regex",
                        PathMatch::Regex(Regex::new(r"/items/\d+").unwrap()),
                        vec![],
                    ),
                    route(
                        "header",
                        PathMatch::Prefix("/h".into()),
                        vec![HeaderMatcher {
                            name: http::HeaderName::from_static("x-canary"),
                            kind: HeaderMatchKind::Exact("yes".into()),
                            invert: false,
                        }],
                    ),
                    route(
                        "absent",
                        PathMatch::Prefix("/h".into()),
                        vec![HeaderMatcher {
                            name: http::HeaderName::from_static("x-canary"),
                            kind: HeaderMatchKind::Present(true),
                            invert: true,
                        }],
                    ),
                    route("fallback", PathMatch::Prefix("/".into()), vec![]),
                ],
            ),
        ],
        ..Default::default()
    };
    Router::new(&cfg, |_| Some(0)).unwrap()
}

#[test]
fn virtual_host_search_order() {
    let r = router();
    let vh = |h: &str| r.virtual_host(h).map(|v| v.name.as_str());
    assert_eq!(vh("api.example.com"), Some("exact"));
    assert_eq!(vh("API.Example.com"), Some("exact"));
    assert_eq!(vh("www.example.com"), Some("suffix"));
    assert_eq!(vh("x.b.example.com"), Some("longer-suffix"));
    // A wildcard stands for at least one character.
    assert_eq!(vh(".example.com"), Some("any"));
    assert_eq!(vh("foo.bar"), Some("prefix"));
    assert_eq!(vh("api.example.com:8080"), Some("any"));
    assert_eq!(vh("other"), Some("any"));
}

#[test]
fn routes_match_in_order() {
    let r = router();
    let h = HeaderMap::new();
    let name =
        |path: &str, headers: &HeaderMap| r.route("x", path, headers).map(|r| r.name.clone());
    assert_eq!(name("/exact", &h).as_deref(), Some("exact"));
    assert_eq!(name("/exact?q=1", &h).as_deref(), Some("exact"));
    assert_eq!(name("/exact/more", &h).as_deref(), Some("fallback"));
    assert_eq!(name("/items/42", &h).as_deref(), Some("regex"));
    // Regexes must match the whole path.
    assert_eq!(name("/items/42/x", &h).as_deref(), Some("fallback"));
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("yes"));
    assert_eq!(name("/h", &canary).as_deref(), Some("header"));
    assert_eq!(name("/h", &h).as_deref(), Some("absent"));
    canary.insert("x-canary", HeaderValue::from_static("no"));
    assert_eq!(name("/h", &canary).as_deref(), Some("fallback"));
}

#[test]
fn no_virtual_host_means_no_route() {
    let cfg = RouteConfig {
        name: "r".into(),
        virtual_hosts: vec![vhost(
            "only",
            &["a.com"],
            vec![route("x", PathMatch::Prefix("/".into()), vec![])],
        )],
        ..Default::default()
    };
    let r = Router::new(&cfg, |_| None).unwrap();
    assert!(r.route("b.com", "/", &HeaderMap::new()).is_none());
    assert!(r.route("a.com", "/", &HeaderMap::new()).is_some());
}

#[test]
fn case_insensitive_prefix() {
    let mut rt = route("ci", PathMatch::Prefix("/API".into()), vec![]);
    rt.matcher.case_sensitive = false;
    let cfg = RouteConfig {
        name: "r".into(),
        virtual_hosts: vec![vhost("v", &["*"], vec![rt])],
        ..Default::default()
    };
    let r = Router::new(&cfg, |_| None).unwrap();
    assert!(r.route("h", "/api/x", &HeaderMap::new()).is_some());
    assert!(r.route("h", "/ap", &HeaderMap::new()).is_none());
}

#[test]
fn query_parameters_match_the_first_value_as_written() {
    let q = |name: &str, kind: HeaderMatchKind| config::QueryParameterMatcher {
        name: name.into(),
        kind,
    };
    let mut exact = route("exact", PathMatch::Prefix("/".into()), vec![]);
    exact.matcher.query_parameters = vec![q("a", HeaderMatchKind::Exact("x%20y".into()))];
    let mut present = route("present", PathMatch::Prefix("/".into()), vec![]);
    present.matcher.query_parameters = vec![q("p", HeaderMatchKind::Present(true))];
    let mut multi = route("multi", PathMatch::Prefix("/".into()), vec![]);
    multi.matcher.query_parameters = vec![q("m", HeaderMatchKind::Exact("2".into()))];
    let fallback = route("none", PathMatch::Prefix("/".into()), vec![]);
    let rc = config::RouteConfig {
        virtual_hosts: vec![vhost("all", &["*"], vec![exact, present, multi, fallback])],
        ..Default::default()
    };
    let router = Router::new(&rc, |_| Some(0)).expect("router");
    let h = HeaderMap::new();
    // Expectations measured on Envoy 1.40 with the same routes.
    for (pq, want) in [
        ("/x?a=x%20y", "exact"),
        ("/x?a=x+y", "none"),
        ("/x?p", "present"),
        ("/x?p=", "present"),
        ("/x?p=1", "present"),
        ("/x?m=1&m=2", "none"),
        ("/x?m=2&m=1", "multi"),
        ("/x?A=x%20y", "none"),
        ("/x?a", "none"),
        ("/x", "none"),
    ] {
        let got = router.route("h", pq, &h).map(|r| r.name.as_str());
        assert_eq!(got, Some(want), "{pq}");
    }
}
