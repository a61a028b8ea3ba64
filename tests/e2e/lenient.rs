//! The leniencies Envoy 1.40 has in reading a bootstrap, end to end: what `envoy --mode
//! validate` accepts (and rejects) the `baton` binary accepts (and rejects) too, and what a
//! running Envoy shows (auto-generated listener names, `node` in `/server_info`, metadata in
//! `/config_dump`) a running Baton shows the same way.

use crate::support::*;

/// `baton --mode validate -c <file>` on `text`.
fn validate(name: &str, text: &str) -> (std::process::ExitStatus, String, String) {
    let dir = TempDir::new("lenient");
    let path = dir.file(name);
    std::fs::write(&path, text).unwrap();
    run_baton(&["--mode", "validate", "-c", path.to_str().unwrap()])
}

#[test]
fn an_empty_config_file_is_an_error_and_braces_are_an_empty_bootstrap() {
    // Envoy: "error initializing configuration 'empty.yaml': Unable to convert YAML as JSON".
    for text in ["", "# just a comment\n"] {
        let (status, stdout, stderr) = validate("empty.yaml", text);
        assert_eq!(status.code(), Some(1), "{text:?}: {stdout}");
        assert!(stderr.contains("holds no configuration"), "{stderr}");
    }
    let (status, stdout, stderr) = validate("braces.yaml", "{}\n");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.ends_with("braces.yaml' OK\n"), "{stdout}");
}

/// The rendered `config` as JSON, changed by `edit`, back to text (placeholders unquoted).
fn edited(config: &Config, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    edited_text(&config.render(), edit)
}

/// As [`edited`], on a rendered configuration.
fn edited_text(text: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let text = text
        .replace("{{ADMIN}}", "\"{{ADMIN}}\"")
        .replace("{{LISTEN}}", "\"{{LISTEN}}\"");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
}

#[tokio::test]
async fn a_listener_without_a_name_is_named_by_a_uuid_and_counted_by_address() {
    let config = Config::new().route(serde_json::json!({
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "hi"}},
    }));
    let text = edited(&config, |v| {
        v["static_resources"]["listeners"][0]
            .as_object_mut()
            .unwrap()
            .remove("name");
    });
    let baton = Baton::start(&text).await;
    let (status, body) = baton.admin_get("/listeners").await;
    assert_eq!(status, 200);
    // Envoy 1.40: `cadd9690-0e78-4db6-8319-6513357402e6::127.0.0.1:35589`.
    let (name, addr) = body.trim().split_once("::").expect("name::address");
    assert_eq!(addr, format!("127.0.0.1:{}", baton.listen));
    let groups: Vec<usize> = name.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{name}");
    assert_eq!(name.as_bytes()[14], b'4', "version 4: {name}");
    let resp = get(baton.addr(), "/").await;
    assert_eq!(resp.status, 200);
    let stat = format!("listener.127.0.0.1_{}.downstream_cx_total", baton.listen);
    baton.wait_stat(&stat, 1).await;
}

#[tokio::test]
async fn node_is_shown_by_server_info_with_the_command_line_overrides() {
    let config = Config::new().route(serde_json::json!({
        "match": {"prefix": "/"}, "direct_response": {"status": 200},
    }));
    let text = edited(&config, |v| {
        v["node"] = serde_json::json!({
            "id": "my-node", "cluster": "my-cluster",
            "metadata": {"a": 1, "b": ["x", null]},
            "locality": {"region": "r1", "zone": "z1"},
        });
    });
    // What Envoy 1.40 shows for this node (its extra user agent fields aside).
    let want = |id: &str, cluster: &str, zone: &str| {
        serde_json::json!({"id": id, "cluster": cluster, "metadata": {"a": 1, "b": ["x", null]},
            "locality": {"region": "r1", "zone": zone}})
    };
    let info = |body: String| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["node"].clone()
    };
    let baton = Baton::start(&text).await;
    assert_eq!(
        info(baton.admin_get("/server_info").await.1),
        want("my-node", "my-cluster", "z1")
    );
    drop(baton);
    let baton = Baton::start_with(
        &text,
        &[
            "--service-node",
            "cli-node",
            "--service-cluster",
            "cli-cluster",
            "--service-zone",
            "cli-zone",
        ],
    )
    .await;
    assert_eq!(
        info(baton.admin_get("/server_info").await.1),
        want("cli-node", "cli-cluster", "cli-zone")
    );
}

#[tokio::test]
async fn endpoint_hostname_and_metadata_are_shown_by_the_admin() {
    let port = free_port();
    let md =
        serde_json::json!({"filter_metadata": {"envoy.lb": {"canary": false, "someKey": null}}});
    let mut c = cluster("c", &[port]);
    c["metadata"] = md.clone();
    let lb = &mut c["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
    lb["endpoint"]["hostname"] = serde_json::json!("host-a.example");
    lb["endpoint"]["health_check_config"] = serde_json::json!({"port_value": 8081});
    lb["metadata"] = md.clone();
    let config = Config::new()
        .route(route("/", "c", serde_json::json!({})))
        .cluster(c);
    let text = edited(&config, |v| {
        let vh = &mut v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0];
        vh["metadata"] = md.clone();
        vh["routes"][0]["metadata"] = md.clone();
    });
    let baton = Baton::start(&text).await;
    let (_, clusters) = baton.admin_get("/clusters").await;
    // As Envoy 1.40: `c::127.0.0.1:1::hostname::host-a.example`.
    let line = format!("c::127.0.0.1:{port}::hostname::host-a.example");
    assert!(clusters.lines().any(|l| l == line), "{clusters}");
    let (_, dump) = baton.admin_get("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let boot = &dump["configs"][0]["bootstrap"];
    let c0 = &boot["static_resources"]["clusters"][0];
    assert_eq!(c0["metadata"], md);
    assert_eq!(
        c0["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"],
        md
    );
    assert_eq!(
        c0["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["health_check_config"],
        serde_json::json!({"port_value": 8081})
    );
    let vh = &boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0];
    assert_eq!(vh["metadata"], md);
    assert_eq!(vh["routes"][0]["metadata"], md);
}

const V1_CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tls/x509v1-cert.pem"
);
const V1_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tls/x509v1-key.pem"
);

/// A listener whose chain serves TLS with `common_tls_context`.
fn tls_listener(common: serde_json::Value) -> String {
    let config = Config::new().route(serde_json::json!({
        "match": {"prefix": "/"}, "direct_response": {"status": 200},
    }));
    edited(&config, |v| {
        v["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = serde_json::json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": common,
            },
        });
    })
}

#[test]
fn an_x509_v1_certificate_loads_as_envoy_loads_it() {
    // `envoy --mode validate` accepts this v1 certificate (served, and as a trusted CA).
    let text = tls_listener(serde_json::json!({
        "tls_certificates": [{
            "certificate_chain": {"filename": V1_CERT},
            "private_key": {"filename": V1_KEY},
        }],
        "validation_context": {"trusted_ca": {"filename": V1_CERT}},
    }));
    let text = text.replace("{{ADMIN}}", "0").replace("{{LISTEN}}", "0");
    let (status, stdout, stderr) = validate("v1.yaml", &text);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.ends_with("v1.yaml' OK\n"), "{stdout}");
}

/// Wait (≤ 5 s) until connecting to `addr` is refused.
async fn wait_refused(addr: std::net::SocketAddr) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => {
                assert!(
                    std::time::Instant::now() < until,
                    "still accepting: {other:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_only_drain_stops_the_inbound_listener_alone() {
    let config = Config::new().route(serde_json::json!({
        "match": {"prefix": "/"}, "direct_response": {"status": 200},
    }));
    let outbound_port = free_port();
    let text = edited(&config, |v| {
        let listeners = v["static_resources"]["listeners"].as_array_mut().unwrap();
        let mut out = listeners[0].clone();
        listeners[0]["traffic_direction"] = serde_json::json!("INBOUND");
        out["name"] = serde_json::json!("outbound");
        out["traffic_direction"] = serde_json::json!("outbound");
        out["address"]["socket_address"]["port_value"] = serde_json::json!(outbound_port);
        listeners.push(out);
    });
    let baton = Baton::start(&text).await;
    let outbound = local(outbound_port);
    assert_eq!(get(baton.addr(), "/").await.status, 200);
    assert_eq!(get(outbound, "/").await.status, 200);
    assert_eq!(
        baton.admin_post("/drain_listeners?inboundonly").await.0,
        200
    );
    wait_refused(baton.addr()).await;
    assert_eq!(get(outbound, "/").await.status, 200);
    // A drain of every listener then stops the outbound one too.
    assert_eq!(baton.admin_post("/drain_listeners").await.0, 200);
    wait_refused(outbound).await;
}

#[tokio::test]
async fn a_freebind_listener_serves() {
    // The socket option itself is checked by `listen::tests`; here the binary binds with it.
    let config = Config::new().route(serde_json::json!({
        "match": {"prefix": "/"}, "direct_response": {"status": 200},
    }));
    let text = edited(&config, |v| {
        v["static_resources"]["listeners"][0]["freebind"] = serde_json::json!(true);
    });
    let baton = Baton::start(&text).await;
    assert_eq!(get(baton.addr(), "/").await.status, 200);
}

/// Every path answered `body`, on a listener that also listens on 127.0.0.1:`more`.
fn with_additional_address(body: &str, more: u16) -> String {
    edited(
        &Config::new().route(serde_json::json!({
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
        })),
        |v| {
            v["static_resources"]["listeners"][0]["additional_addresses"] = serde_json::json!([
                {"address": {"socket_address": {"address": "127.0.0.1", "port_value": more}}},
            ]);
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn additional_addresses_are_listened_on_and_taken_over_by_a_restart() {
    let more = free_port();
    let baton = Baton::start(&with_additional_address("g0", more)).await;
    assert_eq!(get(baton.addr(), "/").await.text(), "g0");
    assert_eq!(get(local(more), "/").await.text(), "g0");
    // As Envoy 1.40: stats under the first address only, `/listeners` one line per address.
    let total = format!("listener.127.0.0.1_{}.downstream_cx_total", baton.listen);
    baton.wait_stat(&total, 2).await;
    let (_, stats) = baton.admin_get("/stats").await;
    assert!(
        !stats.contains(&format!("listener.127.0.0.1_{more}.")),
        "{stats}"
    );
    let (_, listeners) = baton.admin_get("/listeners").await;
    assert_eq!(
        listeners,
        format!(
            "listener_0::127.0.0.1:{}\nlistener_0::127.0.0.1:{more}\n",
            baton.listen
        )
    );
    // The next generation takes both sockets (binding the second anew would fail: the first
    // generation still holds it).
    let mut next = baton.restart(
        &with_additional_address("g1", more),
        &["--drain-time-s", "1", "--parent-shutdown-time-s", "5"],
    );
    next.wait_serving().await;
    within(
        5,
        "the additional address served by the new generation",
        async {
            while get(local(more), "/").await.text() != "g1" {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert_eq!(get(next.addr(), "/").await.text(), "g1");
}

#[tokio::test]
async fn a_client_without_a_client_hello_is_closed_after_listener_filters_timeout() {
    use tokio::io::AsyncReadExt;
    let text = tls_listener(serde_json::json!({
        "tls_certificates": [{
            "certificate_chain": {"filename": V1_CERT},
            "private_key": {"filename": V1_KEY},
        }],
    }));
    let text = edited_text(&text, |v| {
        let l = &mut v["static_resources"]["listeners"][0];
        l["listener_filters"] =
            serde_json::json!([{"name": "envoy.filters.listener.tls_inspector"}]);
        l["listener_filters_timeout"] = serde_json::json!("0.2s");
    });
    let baton = Baton::start(&text).await;
    let mut silent = tokio::net::TcpStream::connect(baton.addr()).await.unwrap();
    let mut buf = [0u8; 16];
    // Closed by Baton (read returns 0) well before the 10 s handshake bound.
    let n = within(5, "the silent connection closed", silent.read(&mut buf)).await;
    assert_eq!(n.unwrap_or(0), 0);
    let stat = format!(
        "listener.127.0.0.1_{}.downstream_pre_cx_timeout",
        baton.listen
    );
    baton.wait_stat(&stat, 1).await;
}

#[tokio::test]
async fn a_silent_cleartext_client_is_closed_when_the_tls_inspector_gives_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Envoy 1.40 with the TLS inspector on a cleartext listener and `listener_filters_timeout:
    // 1s`: a silent connection is closed after 1 s (downstream_pre_cx_timeout 1), a request
    // is answered.
    let config = Config::new().route(serde_json::json!({
        "match": {"prefix": "/"}, "direct_response": {"status": 200},
    }));
    let text = edited(&config, |v| {
        let l = &mut v["static_resources"]["listeners"][0];
        l["listener_filters"] =
            serde_json::json!([{"name": "envoy.filters.listener.tls_inspector"}]);
        l["listener_filters_timeout"] = serde_json::json!("0.2s");
    });
    let baton = Baton::start(&text).await;
    let mut silent = tokio::net::TcpStream::connect(baton.addr()).await.unwrap();
    let mut talker = tokio::net::TcpStream::connect(baton.addr()).await.unwrap();
    talker
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = within(5, "an answer", talker.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let n = within(5, "the silent connection closed", silent.read(&mut buf)).await;
    assert_eq!(n.unwrap_or(0), 0);
    let stat = format!(
        "listener.127.0.0.1_{}.downstream_pre_cx_timeout",
        baton.listen
    );
    baton.wait_stat(&stat, 1).await;
}
