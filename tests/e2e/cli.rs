//! The command line and process life: `--mode validate` on good and bad configurations, flag
//! errors, `--version`, a taken listen port, SIGTERM draining an in-flight request, SIGUSR1
//! reopening access logs.

use std::net::TcpListener;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/baton.yaml");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/envoy-quickstart.yaml"
);

#[test]
fn validate_accepts_the_example_and_the_fixture() {
    for path in [EXAMPLE, FIXTURE] {
        let (status, stdout, stderr) = run_baton(&["--mode", "validate", "-c", path]);
        assert_eq!(status.code(), Some(0), "{path}: {stderr}");
        assert_eq!(stdout, format!("configuration '{path}' OK\n"));
    }
}

/// A valid configuration whose listener and admin ports are `listen` and `admin`.
fn good(listen: u16, admin: u16) -> Value {
    let text = Config::new()
        .route(route("/", "c", json!({})))
        .cluster(cluster("c", &[9]))
        .render()
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{ADMIN}}", &admin.to_string());
    serde_json::from_str(&text).unwrap()
}

const HCM: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";

fn set(mut v: Value, ptr: &str, new: Value) -> Value {
    let (parent, key) = ptr.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert(key.to_owned(), new);
    v
}

fn validate(dir: &TempDir, name: &str, text: &str) -> (std::process::ExitStatus, String, String) {
    let path = dir.file(name);
    std::fs::write(&path, text).unwrap();
    run_baton(&["--mode", "validate", "-c", path.to_str().unwrap()])
}

#[test]
fn validate_rejects_bad_configs_naming_the_field_and_binds_nothing() {
    // Hold the ports the configurations name: validation must not need them.
    let held_listen = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (lp, ap) = (
        held_listen.local_addr().unwrap().port(),
        held_admin.local_addr().unwrap().port(),
    );
    let dir = TempDir::new("validate");
    let base = good(lp, ap);
    let (status, stdout, stderr) = validate(&dir, "good.json", &base.to_string());
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.ends_with("good.json' OK\n"), "{stdout}");

    let c0 = "/static_resources/clusters/0";
    let r0 = format!("{HCM}/route_config/virtual_hosts/0/routes/0");
    let table: Vec<(&str, Value, &str)> = vec![
        (
            "unsupported cluster field",
            set(base.clone(), &format!("{c0}/lb_subset_config"), json!({})),
            "static_resources.clusters[0].lb_subset_config",
        ),
        (
            "unknown cluster in route",
            set(base.clone(), &format!("{r0}/route/cluster"), json!("nope")),
            "virtual_hosts[0].routes[0].route.cluster",
        ),
        (
            "bad duration",
            set(base.clone(), &format!("{c0}/connect_timeout"), json!("5")),
            "static_resources.clusters[0].connect_timeout",
        ),
        (
            "negative duration",
            set(
                base.clone(),
                &format!("{HCM}/stream_idle_timeout"),
                json!("-1s"),
            ),
            "typed_config.stream_idle_timeout",
        ),
        (
            "bad lb_policy",
            set(
                base.clone(),
                &format!("{c0}/lb_policy"),
                json!("CLUSTER_PROVIDED"),
            ),
            "static_resources.clusters[0].lb_policy",
        ),
        (
            "bad listen address",
            set(
                base.clone(),
                "/static_resources/listeners/0/address/socket_address/address",
                json!("1.2.3"),
            ),
            "static_resources.listeners[0].address.socket_address.address",
        ),
        (
            "port out of range",
            set(
                base.clone(),
                "/admin/address/socket_address/port_value",
                json!(70000),
            ),
            "admin.address.socket_address.port_value",
        ),
        (
            "bad regex",
            set(
                base.clone(),
                &format!("{r0}/match"),
                json!({"safe_regex": {"regex": "("}}),
            ),
            "routes[0].match.safe_regex.regex",
        ),
        (
            "bad retry_on",
            set(
                base.clone(),
                &format!("{r0}/route/retry_policy"),
                json!({"retry_on": "5xx,magic"}),
            ),
            "route.retry_policy.retry_on",
        ),
        (
            "unknown top-level field",
            set(base.clone(), "/layered_runtime", json!({})),
            "layered_runtime",
        ),
        (
            "unsupported http filter",
            set(
                base.clone(),
                &format!("{HCM}/http_filters"),
                json!([{"name": "envoy.filters.http.cors", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}]),
            ),
            "http_filters[0]",
        ),
    ];
    assert!(table.len() >= 8);
    for (i, (what, value, want)) in table.into_iter().enumerate() {
        let (status, stdout, stderr) = validate(&dir, &format!("bad{i}.json"), &value.to_string());
        assert_eq!(
            status.code(),
            Some(1),
            "{what}: stdout {stdout:?} stderr {stderr:?}"
        );
        assert!(stdout.is_empty(), "{what}: {stdout}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("baton: error: ") && l.contains(want)),
            "{what}: stderr does not name `{want}`:\n{stderr}"
        );
        assert!(!stderr.contains("bind"), "{what}: {stderr}");
    }

    // A YAML syntax error says where.
    let (status, _, stderr) = validate(&dir, "syntax.yaml", "static_resources:\n  listeners: [\n");
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("line"), "{stderr}");
    drop((held_listen, held_admin));
}

#[test]
fn unknown_flag_is_one_line_exit_1() {
    let (status, stdout, stderr) = run_baton(&["--no-such-flag"]);
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.starts_with("baton: error: "), "{stderr:?}");
    assert!(stderr.contains("--no-such-flag"), "{stderr:?}");
}

#[test]
fn version_exits_0() {
    let (status, stdout, stderr) = run_baton(&["--version"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("baton version: "), "{stdout:?}");
    assert_eq!(stdout.lines().count(), 1);
}

#[test]
fn listen_port_taken_is_exit_1_naming_the_address() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = TempDir::new("taken");
    let text = good(port, free_port()).to_string();
    let path = dir.file("taken.json");
    std::fs::write(&path, text).unwrap();
    let base_id = (std::process::id() % 1000 + 900_000).to_string();
    let (status, _, stderr) = run_baton(&[
        "-c",
        path.to_str().unwrap(),
        "--concurrency",
        "1",
        "--base-id",
        &base_id,
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("listener_0"), "{stderr}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_request_and_exits_0() {
    let up = Upstream::echo("slow").await;
    let config = Config::new()
        .route(route("/", "slow", json!({})))
        .cluster(cluster("slow", &[up.port()]))
        .render();
    let mut baton = Baton::start(&config).await;
    let addr = baton.addr();
    let inflight = tokio::spawn(async move { send1(addr, get_req("t", "/delay/300")).await });
    within(5, "request reaches the upstream", async {
        while up.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    baton.signal("TERM");
    let resp = within(5, "in-flight request", inflight)
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status, 200);
    let exit = baton
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM"));
    assert_eq!(exit.code(), Some(0), "stderr:\n{}", baton.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_access_log() {
    let up = Upstream::echo("e").await;
    let config = Config::new()
        .hcm(
            "access_log",
            json!([{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": "{{DIR}}/access.log",
                },
            }]),
        )
        .route(route("/", "e", json!({})))
        .cluster(cluster("e", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let log = baton.dir().file("access.log");
    let rotated = baton.dir().file("access.log.1");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();

    assert_eq!(get(baton.addr(), "/first").await.status, 200);
    within(5, "first line", async {
        while !read(&log).contains("/first") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    // Until reopened, lines go to the renamed file.
    assert_eq!(get(baton.addr(), "/second").await.status, 200);
    within(5, "second line in the renamed file", async {
        while !read(&rotated).contains("/second") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!log.exists());

    baton.signal("USR1");
    // The reopen is asynchronous: keep logging until a line lands at the original path.
    let mut n = 0;
    within(5, "a line in the reopened file", async {
        loop {
            n += 1;
            assert_eq!(get(baton.addr(), &format!("/third-{n}")).await.status, 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if read(&log).contains("/third-") {
                break;
            }
        }
    })
    .await;
    let new = read(&log);
    let old = read(&rotated);
    assert!(!new.contains("/first") && !new.contains("/second"), "{new}");
    assert!(old.contains("/first") && old.contains("/second"), "{old}");
    for line in new.lines() {
        assert!(!old.contains(line), "line in both files: {line}");
    }
}
