//! Header mutations at the route configuration, virtual host and route levels (issue 19):
//! `request_headers_to_add` / `_remove`, `response_headers_to_add` / `_remove`, with every
//! `append_action`, `keep_empty_value` and command operators in values. The expectations are
//! what Envoy 1.40 sent the origin and the client on the same configuration and request.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn overwrite(key: &str, value: &str) -> serde_json::Value {
    json!({"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
}

fn add(key: &str, value: &str) -> serde_json::Value {
    json!({"header": {"key": key, "value": value}})
}

fn config(up: &Upstream) -> String {
    Config::new()
        .route_config("request_headers_to_add", json!([overwrite("x-level", "config")]))
        .route_config("response_headers_to_add", json!([add("x-resp", "config")]))
        .route_config("response_headers_to_remove", json!(["x-upstream-secret"]))
        .vhost(
            "request_headers_to_add",
            json!([
                overwrite("x-level", "vhost"),
                add("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")
            ]),
        )
        .vhost("request_headers_to_remove", json!(["x-remove-me"]))
        .route(json!({
            "match": {"prefix": "/d"},
            "direct_response": {"status": 200, "body": {"inline_string": "hi"}},
            "response_headers_to_add": [add("x-direct", "%REQ(x-once)%")],
        }))
        .route(json!({
            "match": {"prefix": "/"},
            "route": {"cluster": "up"},
            "request_headers_to_add": [
                overwrite("x-level", "route"),
                add("x-ua", "%REQ(user-agent)%"),
                add("x-absent", "%REQ(x-nope)%"),
                {"header": {"key": "x-keep-empty", "value": "%REQ(x-nope)%"}, "keep_empty_value": true},
                {"header": {"key": "x-once", "value": "a"}, "append_action": "ADD_IF_ABSENT"},
                add("x-multi", "r"),
                {"header": {"key": "x-only-if", "value": "r"}, "append_action": "OVERWRITE_IF_EXISTS"},
            ],
            "response_headers_to_add": [
                add("x-resp", "route"),
                add("x-proto", "%PROTOCOL%"),
                add("x-code", "%RESPONSE_CODE%"),
            ],
        }))
        .cluster(cluster("up", &[up.port()]))
        .render()
}

/// The response head's `name: value` lines for `names`, in order.
async fn exchange(baton: &Baton, path: &str) -> String {
    let mut s = TcpStream::connect(baton.addr()).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: h\r\nuser-agent: probe\r\nx-remove-me: 1\r\n\
         x-once: client\r\nx-multi: c\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    within(5, "the response", s.read_to_end(&mut out))
        .await
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_apply_at_every_level_in_envoys_order() {
    let up = Upstream::raw(|mut s, _| async move {
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-upstream-secret: s\r\nx-resp: upstream\r\n\r\nok",
            )
            .await;
    })
    .await;
    let echo = Upstream::echo("e").await;
    let baton = Baton::start(&config(&up)).await;
    // What the client gets (Envoy 1.40: the upstream's x-resp, then the route's, then the
    // configuration's; the secret removed).
    let resp = exchange(&baton, "/a").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(values(&resp, "x-resp"), ["upstream", "route", "config"]);
    assert_eq!(values(&resp, "x-upstream-secret"), Vec::<String>::new());
    assert_eq!(values(&resp, "x-proto"), ["HTTP/1.1"]);
    assert_eq!(values(&resp, "x-code"), ["200"]);
    // A direct response gets its route's and the configuration's mutations.
    let resp = exchange(&baton, "/d").await;
    assert_eq!(values(&resp, "x-direct"), ["client"]);
    assert_eq!(values(&resp, "x-resp"), ["config"]);
    drop(echo);

    // What the origin gets: the same configuration in front of the echo origin.
    let echo = Upstream::echo("e").await;
    let baton = Baton::start(&config(&echo)).await;
    let _ = exchange(&baton, "/a").await;
    let seen = echo.last();
    let all = |n: &str| -> Vec<String> {
        seen.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect()
    };
    assert_eq!(
        all("x-level"),
        ["config"],
        "the configuration's overwrite comes last"
    );
    assert_eq!(all("x-client"), ["127.0.0.1"]);
    assert_eq!(all("x-ua"), ["probe"]);
    assert_eq!(
        all("x-absent"),
        Vec::<String>::new(),
        "empty values are not added"
    );
    assert_eq!(all("x-keep-empty"), [""]);
    assert_eq!(all("x-once"), ["client"]);
    assert_eq!(all("x-multi"), ["c", "r"]);
    assert_eq!(all("x-only-if"), Vec::<String>::new());
    assert_eq!(all("x-remove-me"), Vec::<String>::new());
}

#[test]
fn bad_mutations_are_errors_naming_the_field() {
    let text = Config::new()
        .route_config("request_headers_to_remove", json!(["host"]))
        .vhost("response_headers_to_add", json!([add(":status", "1")]))
        .route(json!({
            "match": {"prefix": "/"},
            "direct_response": {"status": 200},
            "request_headers_to_add": [
                {"header": {"key": "x-a", "value": "%NOPE%"}},
                {"header": {"key": "x-b", "value": "v"}, "append": true, "append_action": "ADD_IF_ABSENT"},
            ],
        }))
        .render();
    let (status, err) = validate_config(&text);
    assert!(!status.success());
    for want in [
        "route_config.request_headers_to_remove[0]: `host` may not be modified",
        "virtual_hosts[0].response_headers_to_add[0].header.key: `:status`: pseudo-headers",
        "routes[0].request_headers_to_add[0].header.value: could not parse access log format: unknown command operator '%NOPE%'",
        "routes[0].request_headers_to_add[1]: `append` and `append_action` are exclusive",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}
