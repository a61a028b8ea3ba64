//! Route matching on `match.query_parameters` and `match.path_separated_prefix` (issue 23),
//! with the answers Envoy 1.40 gave on the same routes: the first parameter of that name, its
//! value as written (not percent-decoded), `present_match` with or without a value; a prefix
//! alone or followed by `/`; what Baton does not match is refused with its path.

use serde_json::json;

use crate::support::*;

fn direct(route_match: serde_json::Value, body: &str) -> serde_json::Value {
    json!({
        "match": route_match,
        "direct_response": {"status": 200, "body": {"inline_string": body}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_match_as_envoy_does() {
    let q = |m: serde_json::Value| json!({"prefix": "/", "query_parameters": [m]});
    let config = Config::new()
        .route(direct(
            q(json!({"name": "a", "string_match": {"exact": "x%20y"}})),
            "exact-raw",
        ))
        .route(direct(
            q(json!({"name": "p", "present_match": true})),
            "present",
        ))
        .route(direct(
            q(json!({"name": "r", "string_match": {"safe_regex": {"regex": "[0-9]+"}}})),
            "regex",
        ))
        .route(direct(
            q(json!({"name": "m", "string_match": {"exact": "2"}})),
            "multi",
        ))
        .route(direct(json!({"prefix": "/"}), "none"))
        .render();
    let baton = Baton::start(&config).await;
    for (query, want) in [
        ("a=x%20y", "exact-raw"),
        ("a=x+y", "none"),
        ("p", "present"),
        ("p=", "present"),
        ("p=1", "present"),
        ("r=123", "regex"),
        ("r=12a", "none"),
        ("m=1&m=2", "none"),
        ("m=2&m=1", "multi"),
        ("A=x%20y", "none"),
        ("a", "none"),
    ] {
        let got = get(baton.addr(), &format!("/x?{query}")).await;
        assert_eq!(got.text(), want, "?{query}");
    }
}

#[test]
fn what_baton_does_not_match_is_refused_with_its_path() {
    let route = |m: serde_json::Value| {
        Config::new()
            .route(direct(json!({"prefix": "/", "query_parameters": [m]}), "x"))
            .render()
    };
    for (m, path, words) in [
        (
            json!({"name": "p", "present_match": false}),
            "query_parameters[0].present_match",
            "only `true`",
        ),
        (json!({"name": "p"}), "query_parameters[0]", "needs one of"),
        (
            json!({"name": "", "present_match": true}),
            "query_parameters[0].name",
            "must not be empty",
        ),
        (
            json!({"name": "q", "string_match": {"prefix": "a", "ignore_case": true}}),
            "query_parameters[0].string_match.ignore_case",
            "case-insensitive",
        ),
    ] {
        let (status, err) = validate_config(&route(m.clone()));
        assert_eq!(status.code(), Some(1), "{m}: {err}");
        assert!(err.contains(path) && err.contains(words), "{m}: {err}");
    }
}

/// `match.path_separated_prefix`, with the answers Envoy 1.40 gave on the same routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_separated_prefix_matches_as_envoy_does() {
    let config = Config::new()
        .route(direct(json!({"path_separated_prefix": "/api"}), "api"))
        .route(direct(
            json!({"path_separated_prefix": "/CI", "case_sensitive": false}),
            "ci",
        ))
        .route(direct(json!({"prefix": "/"}), "none"))
        .render();
    let baton = Baton::start(&config).await;
    for (path, want) in [
        ("/api", "api"),
        ("/api/", "api"),
        ("/api/x", "api"),
        ("/api?x=1", "api"),
        ("/apix", "none"),
        ("/API", "none"),
        ("/ap", "none"),
        ("/ci", "ci"),
        ("/ci/x", "ci"),
        ("/Ci?y", "ci"),
        ("/cix", "none"),
    ] {
        assert_eq!(get(baton.addr(), path).await.text(), want, "{path}");
    }
    // Refused as Envoy refuses them.
    for bad in ["/api/", "/a?b", "/a#b", "/"] {
        let text = Config::new()
            .route(direct(json!({"path_separated_prefix": bad}), "x"))
            .render();
        let (status, err) = validate_config(&text);
        assert_eq!(status.code(), Some(1), "{bad}: {err}");
        assert!(err.contains("match.path_separated_prefix"), "{bad}: {err}");
    }
}
