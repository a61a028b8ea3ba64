//! `xff_num_trusted_hops` (issue 23) with `use_remote_address`: the client Baton trusts is the
//! address that many entries from the right of the `x-forwarded-for` it received. It is told
//! in `x-envoy-external-address`, decides whether the request is internal, and is
//! `%DOWNSTREAM_REMOTE_ADDRESS%` (port 0) in the access log. Expectations from Envoy 1.40 on
//! the same configuration.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::hcm_options::{exchange, get};
use crate::support::*;

const FILE_LOG: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

async fn baton_with(up: &Upstream, hops: u32, internal: &str, log: &Path) -> Baton {
    let config = Config::new()
        .hcm("use_remote_address", json!(true))
        .hcm("xff_num_trusted_hops", json!(hops))
        .hcm(
            "internal_address_config",
            json!({"cidr_ranges": [{"address_prefix": internal, "prefix_len": 8}]}),
        )
        .hcm(
            "access_log",
            json!([{"name": "log", "typed_config": {"@type": FILE_LOG, "path": log,
                "log_format": {"text_format_source": {"inline_string":
                    "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n"}}}}]),
        )
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]));
    Baton::start(&config.render()).await
}

async fn lines(path: &Path, n: usize) -> Vec<String> {
    within(5, "access log lines", async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// For each `x-forwarded-for` sent (`None`: none): what the origin got in
/// `x-envoy-external-address` and `x-envoy-internal`, and the access log's client.
async fn run(hops: u32, internal: &str, cases: &[(Option<&str>, Option<&str>, bool, &str)]) {
    let up = Upstream::echo("up").await;
    let dir = TempDir::new("xff");
    let log = dir.file("access.log");
    let baton = baton_with(&up, hops, internal, &log).await;
    for (xff, external, is_internal, _) in cases {
        let extra = xff.map_or_else(String::new, |x| format!("x-forwarded-for: {x}\r\n"));
        let r = exchange(&baton, &get("/p", &extra)).await;
        assert_eq!(r.status, 200);
        let seen = up.last();
        assert_eq!(
            seen.header("x-envoy-external-address"),
            *external,
            "{xff:?}"
        );
        assert_eq!(
            seen.header("x-envoy-internal"),
            is_internal.then_some("true"),
            "{xff:?}"
        );
    }
    let got = lines(&log, cases.len()).await;
    for (line, (xff, _, _, client)) in got.iter().zip(cases) {
        if *client == "127.0.0.1" {
            // The peer, with its own port.
            assert!(line.starts_with("127.0.0.1:"), "{xff:?}: {line}");
            assert!(line.ends_with(" 127.0.0.1"), "{xff:?}: {line}");
        } else {
            assert_eq!(line, client, "{xff:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trusted_hop() {
    run(
        1,
        "10.0.0.0",
        &[
            (None, Some("127.0.0.1"), false, "127.0.0.1"),
            (Some("1.2.3.4"), Some("1.2.3.4"), false, "1.2.3.4:0 1.2.3.4"),
            (
                Some("1.2.3.4, 5.6.7.8"),
                Some("5.6.7.8"),
                false,
                "5.6.7.8:0 5.6.7.8",
            ),
            // An internal address in `x-forwarded-for` does not make the request internal.
            (
                Some("10.1.1.1"),
                Some("10.1.1.1"),
                false,
                "10.1.1.1:0 10.1.1.1",
            ),
            (
                Some("bogus, 5.6.7.8"),
                Some("5.6.7.8"),
                false,
                "5.6.7.8:0 5.6.7.8",
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trusted_hops() {
    run(
        2,
        "10.0.0.0",
        &[
            (None, Some("127.0.0.1"), false, "127.0.0.1"),
            // Too few entries, or not an address: the peer.
            (Some("1.2.3.4"), Some("127.0.0.1"), false, "127.0.0.1"),
            (
                Some("1.2.3.4, 5.6.7.8"),
                Some("1.2.3.4"),
                false,
                "1.2.3.4:0 1.2.3.4",
            ),
            (
                Some("bogus, 5.6.7.8"),
                Some("127.0.0.1"),
                false,
                "127.0.0.1",
            ),
            (
                Some("1.1.1.1,2.2.2.2,10.3.3.3"),
                Some("2.2.2.2"),
                false,
                "2.2.2.2:0 2.2.2.2",
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_peer_is_internal_only_without_forwarded_for() {
    run(
        1,
        "127.0.0.0",
        &[
            (None, None, true, "127.0.0.1"),
            (Some("1.2.3.4"), Some("1.2.3.4"), false, "1.2.3.4:0 1.2.3.4"),
            (
                Some("10.1.1.1, 127.0.0.5"),
                Some("127.0.0.5"),
                false,
                "127.0.0.5:0 127.0.0.5",
            ),
        ],
    )
    .await;
}
