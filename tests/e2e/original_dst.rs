//! `ORIGINAL_DST` clusters and the `envoy.filters.listener.original_dst` listener filter
//! against real sockets. The expectations are what Envoy 1.40 did on the same configurations
//! and connections: a request names its host with `x-envoy-original-dst-host` (`use_http_header`),
//! an invalid header is counted (`original_dst_host_invalid`) and answered 503 `no healthy
//! upstream` (flag `UH`), as is a connection whose local address no listener filter restored;
//! hosts appear in `/clusters` named `<cluster><address>` and go after `cleanup_interval`
//! unused. A connection's destination restored by the PROXY protocol is its original
//! destination too (filter chain `destination_port`, the `ORIGINAL_DST` host), as in Envoy.
//! No test here can redirect with netfilter (no iptables in the test environment): without a
//! redirect the kernel has no original destination and the local address stands, as Envoy's.

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{route, Config};
use crate::support::tcp::{exchange, TcpEcho};
use crate::support::upstream::Upstream;
use crate::support::{local, within, Baton, TempDir};

const ORIGINAL_DST: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
const PROXY_PROTOCOL: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// An `ORIGINAL_DST` cluster `name` with `extra` fields.
fn od_cluster(name: &str, extra: Value) -> Value {
    let mut c = json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

/// `text` (a rendered bootstrap) with `f` applied to its JSON.
fn edit(text: String, f: impl FnOnce(&mut Value)) -> String {
    let text = text
        .replace("{{ADMIN}}", "\"{{ADMIN}}\"")
        .replace("{{LISTEN}}", "\"{{LISTEN}}\"");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    f(&mut v);
    serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
}

/// A GET of `/` with `headers` on a new connection: the raw response.
async fn get(b: &Baton, headers: &str) -> String {
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nhost: x\r\n{headers}connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = within(5, "response", s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_request_header_names_the_host_which_is_made_on_demand_and_cleaned_up() {
    let up = Upstream::fixed(200, "up").await;
    let b = Baton::start(
        &Config::new()
            .route(route("/", "od", json!({})))
            .cluster(od_cluster(
                "od",
                json!({"cleanup_interval": "1s", "original_dst_lb_config": {"use_http_header": true}}),
            ))
            .render(),
    )
    .await;
    let host = format!("127.0.0.1:{}", up.port());
    for _ in 0..2 {
        let got = get(&b, &format!("x-envoy-original-dst-host: {host}\r\n")).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("up"), "{got}");
    }
    assert_eq!(up.hits(), 2);
    // Envoy 1.40: one host, named by the cluster's name and its address.
    let (_, clusters) = b.admin_get("/clusters").await;
    assert!(
        clusters.contains(&format!("od::{host}::hostname::od{host}\n")),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("od::{host}::rq_success::2\n")),
        "{clusters}"
    );
    assert_eq!(b.stat("cluster.od.membership_total").await, Some(1));
    assert_eq!(b.stat("cluster.od.membership_healthy").await, Some(1));
    assert_eq!(b.stat("cluster.od.membership_change").await, Some(1));

    // Not an `ip:port` (a name, no port): counted invalid; no header at all is not. Each is
    // answered as Envoy 1.40 answers them, 503 `no healthy upstream`.
    for h in [
        "x-envoy-original-dst-host: nonsense\r\n",
        "x-envoy-original-dst-host: localhost:80\r\n",
        "x-envoy-original-dst-host: 127.0.0.1\r\n",
        "",
    ] {
        let got = get(&b, h).await;
        assert!(got.starts_with("HTTP/1.1 503"), "{h}: {got}");
        assert!(got.ends_with("\r\n\r\nno healthy upstream"), "{h}: {got}");
    }
    assert_eq!(
        b.stat("cluster.od.original_dst_host_invalid").await,
        Some(3)
    );
    assert_eq!(b.stat("cluster.od.upstream_cx_none_healthy").await, Some(4));

    // Unused for a whole interval (1 s here), the host is removed.
    within(5, "cleanup", b.wait_stat("cluster.od.membership_total", 0)).await;
    let (_, clusters) = b.admin_get("/clusters").await;
    assert!(!clusters.contains(&format!("od::{host}::")), "{clusters}");
    assert_eq!(b.stat("cluster.od.membership_change").await, Some(2));
}

#[tokio::test]
async fn upstream_port_override_and_a_custom_header_name() {
    let up = Upstream::fixed(200, "up").await;
    let b = Baton::start(
        &Config::new()
            .route(route("/", "od", json!({})))
            .cluster(od_cluster(
                "od",
                json!({"original_dst_lb_config": {"use_http_header": true, "http_header_name": "x-dst", "upstream_port_override": up.port()}}),
            ))
            .render(),
    )
    .await;
    // Envoy 1.40 sent `x-dst: 127.0.0.1:1` to the overriding port.
    let got = get(&b, "x-dst: 127.0.0.1:1\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // The default header is not read.
    let got = get(
        &b,
        &format!("x-envoy-original-dst-host: 127.0.0.1:{}\r\n", up.port()),
    )
    .await;
    assert!(got.ends_with("no healthy upstream"), "{got}");
}

#[tokio::test]
async fn without_a_redirect_the_local_address_stands_and_is_no_original_destination() {
    let dir = TempDir::new("od");
    let log = dir.file("access.log");
    let text = Config::new()
        .route(route("/", "od", json!({})))
        .cluster(od_cluster("od", json!({})))
        .hcm("access_log", json!([{"name": "log", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": log,
            "log_format": {"text_format_source": {"inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %DOWNSTREAM_LOCAL_ADDRESS%\n"}},
        }}]))
        .render();
    let text = edit(text, |v| {
        v["static_resources"]["listeners"][0]["listener_filters"] =
            json!([{"name": "od", "typed_config": {"@type": ORIGINAL_DST}}]);
    });
    let b = Baton::start(&text).await;
    let got = get(&b, "").await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.ends_with("no healthy upstream"), "{got}");
    // Envoy 1.40's line on the same configuration: `503 UH - 127.0.0.1:<listener port>`.
    let want = format!("503 UH - 127.0.0.1:{}\n", b.listen);
    within(5, "access log", async {
        loop {
            if std::fs::read_to_string(&log).unwrap_or_default() == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_destination_restored_by_the_proxy_protocol_chooses_the_chain_and_the_host() {
    let echo = TcpEcho::start(None).await;
    let text = Config::new().cluster(od_cluster("od", json!({}))).render();
    let text = edit(text, |v| {
        let l = &mut v["static_resources"]["listeners"][0];
        l["listener_filters"] = json!([
            {"name": "pp", "typed_config": {"@type": PROXY_PROTOCOL}},
            {"name": "od", "typed_config": {"@type": ORIGINAL_DST}},
        ]);
        l["filter_chains"] = json!([{
            "filter_chain_match": {"destination_port": echo.port()},
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": TCP_PROXY, "stat_prefix": "tp", "cluster": "od"}}],
        }]);
    });
    let b = Baton::start(&text).await;
    let pp = format!("PROXY TCP4 1.2.3.4 127.0.0.1 1111 {}\r\n", echo.port());
    let got = exchange(local(b.listen), &[pp.as_bytes(), b"hello"].concat()).await;
    assert_eq!(got.as_deref(), Some(&b"hellobye"[..]));
    // Another destination port matches no chain (Envoy 1.40: `no_filter_chain_match` 1).
    let got = exchange(
        local(b.listen),
        b"PROXY TCP4 1.2.3.4 127.0.0.1 1111 1\r\nhello",
    )
    .await;
    assert_eq!(got, None);
    let l = format!("listener.127.0.0.1_{}", b.listen);
    b.wait_stat(&format!("{l}.no_filter_chain_match"), 1).await;
    b.wait_stat("cluster.od.upstream_cx_total", 1).await;
    assert_eq!(b.stat("cluster.od.membership_total").await, Some(1));
    let (_, clusters) = b.admin_get("/clusters").await;
    let host = format!("127.0.0.1:{}", echo.port());
    assert!(
        clusters.contains(&format!("od::{host}::hostname::od{host}\n")),
        "{clusters}"
    );
}
