//! `local_reply_config` (issue 23): mappers chosen by access-log filters rewrite the status,
//! body and fields of Baton's own replies (no route, direct responses, upstream failures),
//! never an upstream's response; `body_format` renders text or JSON with `%LOCAL_REPLY_BODY%`.
//! Every expectation is what Envoy 1.40 answered on the same configuration.

use serde_json::{json, Value};

use crate::hcm_options::{exchange, get, Raw};
use crate::support::*;

/// Routes: `/direct` (200 with a body), `/dempty` (503, no body), `/dead` (a cluster nobody
/// listens for), `/up` (an origin answering 503 with its own body).
async fn baton_with(up: &Upstream, local_reply_config: Value) -> Baton {
    let config = Config::new()
        .hcm("local_reply_config", local_reply_config)
        .route(json!({"match": {"prefix": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": "direct body"}}}))
        .route(json!({"match": {"prefix": "/dempty"}, "direct_response": {"status": 503}}))
        .route(route("/dead", "dead", json!({})))
        .route(route("/up", "up", json!({})))
        .cluster(cluster("dead", &[free_port()]))
        .cluster(cluster("up", &[up.port()]));
    Baton::start(&config.render()).await
}

fn mappers_and_text_format() -> Value {
    json!({
        "mappers": [
            {
                "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 404, "runtime_key": "k"}}}},
                "status_code": 418,
                "body": {"inline_string": "not here"},
                "headers_to_add": [{"header": {"key": "x-mapped", "value": "yes"}}]
            },
            {
                "filter": {"header_filter": {"header": {"name": "x-json", "present_match": true}}},
                "body_format_override": {"json_format": {
                    "status": "%RESPONSE_CODE%",
                    "body": "%LOCAL_REPLY_BODY%",
                    "path": "%REQ(:PATH)%",
                    "flags": "%RESPONSE_FLAGS%",
                    "zz": "lit",
                    "aa": "x %RESPONSE_CODE% y",
                    "missing": "%REQ(x-nothing)%",
                    "num": 5,
                    "nested": {"a": "%RESPONSE_CODE%"}
                }}
            },
            {"filter": {"response_flag_filter": {"flags": ["UF"]}}, "status_code": 502}
        ],
        "body_format": {
            "text_format": "[%LOCAL_REPLY_BODY%] %RESPONSE_CODE% %RESPONSE_FLAGS%\n",
            "content_type": "text/x-mine"
        }
    })
}

fn check(r: &Raw, status: u16, content_type: Option<&str>, body: &str) {
    assert_eq!(r.status, status, "{:?} {}", r.fields, r.body);
    assert_eq!(r.field("content-type"), content_type, "{:?}", r.fields);
    assert_eq!(r.body, body);
    assert_eq!(
        r.field("content-length"),
        Some(body.len().to_string().as_str())
    );
}

const CONNECT_FAILED: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappers_rewrite_local_replies_and_the_text_format_renders_them() {
    let up = Upstream::fixed(503, "upstream body\n").await;
    let baton = baton_with(&up, mappers_and_text_format()).await;
    let mine = Some("text/x-mine");

    // No route: the first mapper (404) wins, even for a request the second one would take.
    for extra in ["", "x-json: 1\r\n"] {
        let r = exchange(&baton, &get("/nothing", extra)).await;
        check(&r, 418, mine, "[not here] 418 NR\n");
        assert_eq!(r.field("x-mapped"), Some("yes"));
    }
    // A direct response goes through the body format too.
    let r = exchange(&baton, &get("/direct", "")).await;
    check(&r, 200, mine, "[direct body] 200 -\n");
    assert_eq!(r.field("x-mapped"), None);
    let r = exchange(&baton, &get("/direct", "x-json: 1\r\n")).await;
    check(
        &r,
        200,
        Some("application/json"),
        "{\"aa\":\"x 200 y\",\"body\":\"direct body\",\"flags\":\"-\",\"missing\":null,\"nested\":{\"a\":200},\"num\":5,\"path\":\"/direct\",\"status\":200,\"zz\":\"lit\"}\n",
    );
    let r = exchange(&baton, &get("/dempty", "")).await;
    check(&r, 503, mine, "[] 503 -\n");
    // An upstream failure: the third mapper (UF) rewrites the status.
    let r = exchange(&baton, &get("/dead", "")).await;
    check(&r, 502, mine, &format!("[{CONNECT_FAILED}] 502 UF\n"));
    let r = exchange(&baton, &get("/dead", "x-json: 1\r\n")).await;
    check(
        &r,
        503,
        Some("application/json"),
        &format!("{{\"aa\":\"x 503 y\",\"body\":\"{CONNECT_FAILED}\",\"flags\":\"UF\",\"missing\":null,\"nested\":{{\"a\":503}},\"num\":5,\"path\":\"/dead\",\"status\":503,\"zz\":\"lit\"}}\n"),
    );
    // The origin's own 503 is never rewritten.
    for extra in ["", "x-json: 1\r\n"] {
        let r = exchange(&baton, &get("/up/fail", extra)).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "upstream body\n");
        assert_eq!(r.field("content-type"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn and_or_filters_and_the_default_content_type() {
    let up = Upstream::fixed(200, "ok").await;
    let lr = json!({
        "mappers": [
            {
                "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 404}}}},
                "status_code": 418,
                "body": {"inline_string": "not here"}
            },
            {
                "filter": {"and_filter": {"filters": [
                    {"response_flag_filter": {"flags": ["UF"]}},
                    {"not_health_check_filter": {}},
                    {"duration_filter": {"comparison": {"op": "GE", "value": {"default_value": 0, "runtime_key": "d"}}}}
                ]}},
                "status_code": 502
            },
            {
                "filter": {"or_filter": {"filters": [
                    {"status_code_filter": {"comparison": {"op": "LE", "value": {"default_value": 100, "runtime_key": "a"}}}},
                    {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 500, "runtime_key": "a"}}}}
                ]}},
                "body": {"inline_string": "five hundred"}
            }
        ],
        "body_format": {"text_format_source": {"inline_string": "[%LOCAL_REPLY_BODY%] %RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}
    });
    let baton = baton_with(&up, lr).await;
    let plain = Some("text/plain");
    check(
        &exchange(&baton, &get("/nothing", "")).await,
        418,
        plain,
        "[not here] 418 NR\n",
    );
    check(
        &exchange(&baton, &get("/direct", "")).await,
        200,
        plain,
        "[direct body] 200 -\n",
    );
    check(
        &exchange(&baton, &get("/dempty", "")).await,
        503,
        plain,
        "[five hundred] 503 -\n",
    );
    check(
        &exchange(&baton, &get("/dead", "")).await,
        502,
        plain,
        &format!("[{CONNECT_FAILED}] 502 UF\n"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_body_format_only_mapped_bodies_change() {
    let up = Upstream::fixed(200, "ok").await;
    let lr = json!({"mappers": [{
        "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 404}}}},
        "body": {"inline_string": "gone"}
    }]});
    let baton = baton_with(&up, lr).await;
    check(
        &exchange(&baton, &get("/nothing", "")).await,
        404,
        Some("text/plain"),
        "gone",
    );
    check(
        &exchange(&baton, &get("/direct", "")).await,
        200,
        Some("text/plain"),
        "direct body",
    );
    let r = exchange(&baton, &get("/dempty", "")).await;
    assert_eq!((r.status, r.body.as_str()), (503, ""));
}

#[test]
fn filters_and_fields_baton_does_not_honour_are_refused_with_their_path() {
    let cases = [
        (
            json!({"mappers": [{"filter": {"runtime_filter": {"runtime_key": "x"}}}]}),
            "runtime_filter",
        ),
        (
            json!({"mappers": [{"filter": {"response_flag_filter": {"flags": ["OM"]}}}]}),
            "mappers[0].filter.response_flag_filter.flags[0]",
        ),
        (
            json!({"mappers": [{"filter": {"not_health_check_filter": {}}, "status_code": 100}]}),
            "mappers[0].status_code",
        ),
        (
            json!({"body_format": {"json_format": {"a": ["x"]}}}),
            "body_format.json_format.a",
        ),
        (
            json!({"body_format": {"text_format": "%NOPE%"}}),
            "body_format.text_format",
        ),
        (
            json!({"body_format": {"text_format": "x", "omit_empty_values": true}}),
            "omit_empty_values",
        ),
    ];
    for (lr, want) in cases {
        let config = Config::new()
            .hcm("local_reply_config", lr.clone())
            .route(route("/", "up", json!({})))
            .cluster(cluster("up", &[free_port()]));
        let (status, err) = validate_config(&config.render());
        assert!(!status.success(), "{lr} was accepted");
        assert!(err.contains(want), "{lr}: {err}");
    }
}
