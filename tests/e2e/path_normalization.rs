//! `normalize_path` and `path_with_escaped_slashes_action` (issue 23): the path the origin gets,
//! or the 400/307 Baton answers, and the stats, as Envoy 1.40 gave them on the same
//! configuration.

use serde_json::{json, Value};

use crate::hcm_options::{exchange, get};
use crate::support::*;

async fn baton_with(up: &Upstream, hcm: Value) -> Baton {
    let mut config = Config::new()
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]));
    if let Value::Object(fields) = hcm {
        for (k, v) in fields {
            config = config.hcm(&k, v);
        }
    }
    Baton::start(&config.render()).await
}

/// Send `path`; what the origin saw as path and query (`None`: not forwarded) and the status.
async fn forwarded(baton: &Baton, up: &Upstream, path: &str) -> (u16, Option<String>) {
    let before = up.hits();
    let r = exchange(baton, &get(path, "")).await;
    let seen = (up.hits() > before).then(|| {
        let uri = up.last().uri;
        uri.path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_owned())
    });
    (r.status, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalize_path_resolves_dots_and_unreserved_escapes() {
    let up = Upstream::echo("up").await;
    let baton = baton_with(&up, json!({"normalize_path": true})).await;
    let cases = [
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../x", "/x"),
        ("/a/b/..", "/a/"),
        ("/%41%7e%2D%5F%2e", "/A~-_."),
        ("/a%2Fb", "/a%2Fb"),
        ("/a//b", "/a//b"),
        ("/%7Ex?q=/../%41", "/~x?q=/../%41"),
        ("/a/%2e%2e/b", "/b"),
        ("/a%c3%a9", "/a%c3%a9"),
        ("/a{b}", "/a%7Bb%7D"),
    ];
    for (sent, want) in cases {
        assert_eq!(
            forwarded(&baton, &up, sent).await,
            (200, Some(want.to_owned())),
            "{sent}"
        );
    }
    // `%00`: 400 with no body, and the connection closes.
    let r = exchange(&baton, &get("/a%00b", "")).await;
    assert_eq!((r.status, r.body.as_str()), (400, ""));
    assert_eq!(r.field("connection"), Some("close"));
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_rq_failed_path_normalization")
            .await,
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_leaves_the_path_alone() {
    let up = Upstream::echo("up").await;
    let baton = baton_with(&up, json!({})).await;
    for p in ["/a/./b", "/a%2Fb", "/%41"] {
        assert_eq!(forwarded(&baton, &up, p).await, (200, Some(p.to_owned())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_rejected_redirected_or_unescaped() {
    let up = Upstream::echo("up").await;
    let reject = baton_with(
        &up,
        json!({"path_with_escaped_slashes_action": "REJECT_REQUEST"}),
    )
    .await;
    for p in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb?x=%2F"] {
        let r = exchange(&reject, &get(p, "")).await;
        assert_eq!((r.status, r.body.as_str()), (400, ""), "{p}");
        assert_eq!(r.field("connection"), Some("close"));
    }
    assert_eq!(
        forwarded(&reject, &up, "/a%252Fb").await,
        (200, Some("/a%252Fb".to_owned()))
    );
    assert_eq!(
        reject
            .stat("http.ingress_http.downstream_rq_failed_path_normalization")
            .await,
        Some(4)
    );

    let redirect = baton_with(
        &up,
        json!({"path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT"}),
    )
    .await;
    for (p, location) in [
        ("/a%2Fb?q", "/a/b?q"),
        ("/a%2fb", "/a/b"),
        ("/a/%2F/../b", "/a///../b"),
    ] {
        let r = exchange(&redirect, &get(p, "")).await;
        assert_eq!((r.status, r.body.as_str()), (307, ""), "{p}");
        assert_eq!(r.field("location"), Some(location));
        assert_eq!(r.field("connection"), None);
    }
    assert_eq!(
        redirect
            .stat("http.ingress_http.downstream_rq_redirected_with_normalized_path")
            .await,
        Some(3)
    );

    let forward = baton_with(
        &up,
        json!({"path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"}),
    )
    .await;
    for (p, want) in [("/a%2Fb", "/a/b"), ("/a/%2F/../b", "/a///../b")] {
        assert_eq!(
            forwarded(&forward, &up, p).await,
            (200, Some(want.to_owned()))
        );
    }
}
