//! Route matchers beyond path, fields and query (issue 23): `grpc: {}`, `headers[]` on the
//! pseudo-headers `:method`, `:path`, `:authority`, `:scheme`, and `runtime_fraction`. Envoy
//! 1.40 on the same routes: `grpc` takes `content-type: application/grpc` and
//! `application/grpc+proto`, not `application/grpc-web` nor `application/grpc;x`; `:path` has
//! the query; `:authority` is compared as sent (`A.example:81` is not `a.example:81`); a
//! fraction of 0 never matches, 100 % always (with a `runtime_key` Baton has no runtime for);
//! `:method` with `present_match` inverted never matches.

use serde_json::json;

use crate::support::*;

fn answer(m: serde_json::Value, body: &str) -> serde_json::Value {
    json!({"match": m, "direct_response": {"status": 200, "body": {"inline_string": body}}})
}

async fn body_of(baton: &Baton, method: &str, host: &str, path: &str, ct: Option<&str>) -> String {
    let mut req = request(method, host, path, empty());
    if let Some(ct) = ct {
        req.headers_mut()
            .insert("content-type", ct.parse().expect("value"));
    }
    let r = send1(baton.addr(), req).await.expect("a response");
    match r.header("x-upstream") {
        Some(up) => format!("upstream {up}"),
        None => r.text(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rarer_matchers_as_envoy() {
    let g = Upstream::echo("grpc").await;
    let exact = |v: &str| json!({"exact": v});
    let config = Config::new()
        .route(json!({"match": {"prefix": "/", "grpc": {}}, "route": {"cluster": "g"}}))
        .route(answer(
            json!({"prefix": "/", "headers": [{"name": ":method", "string_match": exact("POST")}]}),
            "post",
        ))
        .route(answer(
            json!({"prefix": "/", "headers": [{"name": ":authority", "string_match": exact("a.example:81")}]}),
            "authority",
        ))
        .route(answer(
            json!({"prefix": "/", "headers": [{"name": ":path", "string_match": {"suffix": "?x=1"}}]}),
            "path",
        ))
        .route(answer(
            json!({"prefix": "/", "headers": [
                {"name": ":scheme", "string_match": exact("http")},
                {"name": ":method", "string_match": exact("PUT")}]}),
            "scheme",
        ))
        .route(answer(
            json!({"prefix": "/never", "runtime_fraction": {"default_value": {"numerator": 0}}}),
            "never",
        ))
        .route(answer(
            json!({"prefix": "/always", "runtime_fraction": {"default_value": {"numerator": 100}, "runtime_key": "some.key"}}),
            "always",
        ))
        .route(answer(
            json!({"prefix": "/", "headers": [{"name": ":method", "present_match": true, "invert_match": true}]}),
            "nomethod",
        ))
        .route(answer(json!({"prefix": "/"}), "fallback"))
        .cluster(cluster("g", &[g.port()]))
        .render();
    let baton = Baton::start(&config).await;
    for (method, host, path, ct, want) in [
        ("GET", "h", "/a", Some("application/grpc"), "upstream grpc"),
        (
            "GET",
            "h",
            "/a",
            Some("application/grpc+proto"),
            "upstream grpc",
        ),
        ("GET", "h", "/a", Some("application/grpc-web"), "fallback"),
        ("GET", "h", "/a", Some("application/grpc;x"), "fallback"),
        ("POST", "h", "/a", None, "post"),
        ("GET", "a.example:81", "/a", None, "authority"),
        ("GET", "A.example:81", "/a", None, "fallback"),
        ("GET", "h", "/a?x=1", None, "path"),
        ("PUT", "h", "/a", None, "scheme"),
        ("GET", "h", "/never", None, "fallback"),
        ("GET", "h", "/always", None, "always"),
        ("GET", "h", "/z", None, "fallback"),
    ] {
        assert_eq!(
            body_of(&baton, method, host, path, ct).await,
            want,
            "{method} {host} {path} {ct:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_fraction_is_rolled_per_request() {
    let config = Config::new()
        .route(answer(
            json!({"prefix": "/", "runtime_fraction": {"default_value": {"numerator": 50}}}),
            "half",
        ))
        .route(answer(json!({"prefix": "/"}), "rest"))
        .render();
    let baton = Baton::start(&config).await;
    let mut half = 0;
    for _ in 0..200 {
        if body_of(&baton, "GET", "h", "/", None).await == "half" {
            half += 1;
        }
    }
    // 200 rolls at 50 %: outside 60..=140 has a chance below 1e-8.
    assert!((60..=140).contains(&half), "{half} of 200");
}

/// `tls_context`: a client certificate Baton accepted was validated, so `presented` and
/// `validated` both say whether there is one (Envoy: a plain-text request presented none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_context_matches_whether_a_certificate_was_presented() {
    use crate::tls::{data, downstream_socket, get_with, with_chains, Ca, ClientOpts};
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let server = ca.leaf("m.test");
    let config = Config::new()
        .route(answer(
            json!({"prefix": "/", "tls_context": {"presented": true, "validated": true}}),
            "validated",
        ))
        .route(answer(
            json!({"prefix": "/", "tls_context": {"presented": false}}),
            "none",
        ))
        .route(answer(json!({"prefix": "/"}), "other"));
    let text = with_chains(
        &config,
        vec![(
            vec![],
            downstream_socket(
                &server,
                json!({"common_tls_context": {"validation_context": {"trusted_ca": data(&client_ca.pem())}}}),
            ),
        )],
    );
    let baton = Baton::start(&text).await;
    let roots = [ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let good = client_ca.leaf("client.test");
    for (cert, want) in [(Some(&good), "validated"), (None, "none")] {
        for alpn in [&["h2"][..], &["http/1.1"][..]] {
            let o = ClientOpts {
                sni: "m.test",
                alpn,
                roots: &roots,
                client_cert: cert,
            };
            let seen = get_with(baton.addr(), o).await.expect("a TLS response");
            assert_eq!(seen.resp.text(), want, "{alpn:?}");
        }
    }
}

#[test]
fn unsupported_matchers_are_refused_with_their_path() {
    for (m, path, words) in [
        (
            json!({"prefix": "/", "headers": [{"name": ":protocol", "present_match": true}]}),
            "match.headers[0].name",
            "pseudo-header",
        ),
        (
            json!({"prefix": "/", "runtime_fraction": {"runtime_key": "k"}}),
            "match.runtime_fraction.default_value",
            "required",
        ),
        (json!({"prefix": "/", "grpc": {"x": 1}}), "match.grpc", ""),
        (
            json!({"prefix": "/", "dynamic_metadata": []}),
            "match",
            "dynamic_metadata",
        ),
        (json!({"connect_matcher": {}}), "match", "connect_matcher"),
    ] {
        let config = Config::new()
            .route(json!({"match": m.clone(), "route": {"cluster": "up"}}))
            .cluster(cluster("up", &[1]))
            .render();
        let (status, out) = validate_config(&config);
        assert!(!status.success(), "{m}: refused");
        assert!(out.contains(path), "{m}: {out}");
        assert!(out.contains(words), "{m}: {out}");
    }
}

/// Envoy 1.40 on the same routes: an inverted `exact` on `x-a` matches `x-a: 2` but neither
/// `x-a: 1` nor a request without `x-a` (a missing field matches no value, inverted or not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inverted_matcher_does_not_match_a_missing_field() {
    let config = Config::new()
        .route(answer(
            json!({"prefix": "/", "headers": [{"name": "x-a", "string_match": {"exact": "1"}, "invert_match": true}]}),
            "inv",
        ))
        .route(answer(json!({"prefix": "/"}), "none"))
        .render();
    let baton = Baton::start(&config).await;
    for (value, want) in [(None, "none"), (Some("1"), "none"), (Some("2"), "inv")] {
        let mut req = request("GET", "h", "/", empty());
        if let Some(v) = value {
            req.headers_mut().insert("x-a", v.parse().expect("value"));
        }
        let r = send1(baton.addr(), req).await.expect("a response");
        assert_eq!(r.text(), want, "x-a: {value:?}");
    }
}
