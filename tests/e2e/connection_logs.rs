//! Access logs of connections, against real sockets: a listener's `access_log` (a line for
//! every connection when it ends, including those no chain matched and those a listener filter
//! refused) and `tcp_proxy`'s (a line per connection at close). The expected lines are those
//! Envoy 1.40 wrote on the same configurations and connections: HTTP operators print `-` and
//! `%RESPONSE_CODE%` 0, the flags are the TCP ones (`UH`, `UF,URX`, `NC`, `NR`), the bytes are
//! the downstream connection's, and a listener's line for a `tcp_proxy` connection says what
//! the filter's says.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{cluster, route, Config};
use crate::support::tcp::{exchange, TcpEcho};
use crate::support::upstream::Upstream;
use crate::support::{free_port, local, within, Baton, TempDir};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const FILE_LOG: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
/// The operators meaningful for a connection, and HTTP ones that print `-` for it.
const FORMAT: &str = "%BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% [%RESPONSE_FLAGS%] %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %RESPONSE_CODE_DETAILS% %RESPONSE_CODE% %PROTOCOL% %REQ(:PATH)% %ROUTE_NAME%\n";

/// A file access log at `path`, in `format` (Envoy's default when `None`).
fn file_log(path: &Path, format: Option<&str>) -> Value {
    let mut tc = json!({"@type": FILE_LOG, "path": path});
    if let Some(f) = format {
        tc["log_format"] = json!({"text_format_source": {"inline_string": f}});
    }
    json!({"name": "log", "typed_config": tc})
}

/// A chain's `tcp_proxy` filter to `cluster`, logging to `logs`.
fn tcp(cluster: &str, logs: Vec<Value>) -> Value {
    json!([{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY, "stat_prefix": "tp", "cluster": cluster, "access_log": logs}}])
}

/// A bootstrap with one listener on `{{LISTEN}}` (its other fields in `listener`).
fn bootstrap(listener: Value, clusters: Vec<Value>) -> String {
    let mut l = json!({
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": "{{LISTEN}}"}},
    });
    l.as_object_mut()
        .unwrap()
        .extend(listener.as_object().unwrap().clone());
    let v = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "{{ADMIN}}"}}},
        "static_resources": {"listeners": [l], "clusters": clusters},
    });
    serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
}

/// The log's lines once it has `n` (≤ 5 s).
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

/// A default-format line without its start time and duration (which vary).
fn steady(line: &str) -> String {
    let (_, rest) = line.split_once("] ").expect("a start time");
    let mut fields: Vec<&str> = rest.split(' ').collect();
    // `"- - -" 0 <flags> <rx> <tx> <duration> ...`: the duration is the 8th field.
    fields.remove(7);
    fields.join(" ")
}

#[tokio::test]
async fn tcp_proxy_and_listener_lines_for_a_proxied_connection() {
    let echo = TcpEcho::start(None).await;
    let dir = TempDir::new("cxlog");
    let (tcp_default, tcp_custom, listener) = (
        dir.file("tcp.log"),
        dir.file("tcp2.log"),
        dir.file("listener.log"),
    );
    let b = Baton::start(&bootstrap(
        json!({
            "access_log": [file_log(&listener, Some(FORMAT))],
            "filter_chains": [{"filters": tcp("echo", vec![file_log(&tcp_default, None), file_log(&tcp_custom, Some(FORMAT))])}],
        }),
        vec![cluster("echo", &[echo.port()])],
    ))
    .await;
    let got = exchange(local(b.listen), b"hello").await;
    assert_eq!(got.as_deref(), Some(&b"hellobye"[..]));
    let up = format!("127.0.0.1:{}", echo.port());
    // Envoy 1.40: `[…] "- - -" 0 - 5 10 1 - "-" "-" "-" "-" "127.0.0.1:18620"`.
    let l = lines(&tcp_default, 1).await;
    assert_eq!(
        steady(&l[0]),
        format!("\"- - -\" 0 - 5 8 - \"-\" \"-\" \"-\" \"-\" \"{up}\"")
    );
    // Envoy 1.40: `5 10 127.0.0.1:18620 st [-] 127.0.0.1:18615 …`, in both logs.
    let want = format!(
        "5 8 {up} echo [-] 127.0.0.1:{} 127.0.0.1 - 0 - - -",
        b.listen
    );
    assert_eq!(lines(&tcp_custom, 1).await, std::slice::from_ref(&want));
    assert_eq!(lines(&listener, 1).await, [want]);
}

#[tokio::test]
async fn failed_connections_carry_envoys_tcp_flags() {
    let dir = TempDir::new("cxlog");
    let log = dir.file("tcp.log");
    let dead = free_port();
    let od = json!({"name": "od", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"});
    for (cluster_name, want) in [
        // Envoy 1.40: `0 0 127.0.0.1:18621 dead [UF,URX]`.
        ("dead", format!("0 0 127.0.0.1:{dead} dead [UF,URX]")),
        // Envoy 1.40: `0 0 - od UH` (no original destination to go to).
        ("od", "0 0 - od [UH]".to_owned()),
        // Envoy 1.40: `[NC] - - 0` for a cluster the configuration lacks.
        ("missing", "0 0 - - [NC]".to_owned()),
    ] {
        let _ = std::fs::remove_file(&log);
        let b = Baton::start(&bootstrap(
            json!({"filter_chains": [{"filters": tcp(cluster_name, vec![file_log(&log, Some(FORMAT))])}]}),
            vec![cluster("dead", &[dead]), od.clone()],
        ))
        .await;
        assert_eq!(exchange(local(b.listen), b"hello").await, None);
        let rest = format!(" 127.0.0.1:{} 127.0.0.1 - 0 - - -", b.listen);
        assert_eq!(
            lines(&log, 1).await,
            [format!("{want}{rest}")],
            "{cluster_name}"
        );
    }
}

#[tokio::test]
async fn a_listener_logs_unmatched_refused_and_http_connections() {
    let up = Upstream::fixed(200, "ok").await;
    let dir = TempDir::new("cxlog");
    let log = dir.file("listener.log");
    let text = Config::new()
        .route(route("/", "up", json!({})))
        .cluster(cluster("up", &[up.port()]))
        .render()
        .replace("{{ADMIN}}", "\"{{ADMIN}}\"")
        .replace("{{LISTEN}}", "\"{{LISTEN}}\"");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let l = &mut v["static_resources"]["listeners"][0];
    l["access_log"] = json!([file_log(&log, Some(FORMAT))]);
    let text = serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}");
    let b = Baton::start(&text).await;

    // An HTTP/1.1 connection: Envoy 1.40 wrote `- - HTTP/1.1" 0 - 46 172 …` in its default
    // format: the protocol and the connection's bytes, no upstream.
    let mut s = TcpStream::connect(local(b.listen)).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    s.write_all(req).await.unwrap();
    let mut got = Vec::new();
    within(5, "response", s.read_to_end(&mut got))
        .await
        .unwrap();
    let l = lines(&log, 1).await;
    let want = format!(
        "{} {} - - [-] 127.0.0.1:{} 127.0.0.1 - 0 HTTP/1.1 - -",
        req.len(),
        got.len(),
        b.listen
    );
    assert_eq!(l, [want]);

    // No chain matches: Envoy 1.40's line is `0 0 - - [NR] 127.0.0.1:18614 127.0.0.1 [-]
    // filter_chain_not_found`.
    let _ = std::fs::remove_file(&log);
    let unmatched = bootstrap(
        json!({
            "access_log": [file_log(&log, Some(FORMAT))],
            "filter_chains": [{"filter_chain_match": {"source_ports": [1]}, "filters": tcp("dead", vec![])}],
        }),
        vec![cluster("dead", &[free_port()])],
    );
    let b = Baton::start(&unmatched).await;
    assert_eq!(exchange(local(b.listen), b"hello").await, None);
    let want = format!(
        "0 0 - - [NR] 127.0.0.1:{} 127.0.0.1 filter_chain_not_found 0 - - -",
        b.listen
    );
    assert_eq!(lines(&log, 1).await, [want]);

    // A listener filter refuses it (a bad PROXY protocol header): Envoy 1.40 still writes a
    // line, with no flag.
    let _ = std::fs::remove_file(&log);
    let refused = bootstrap(
        json!({
            "access_log": [file_log(&log, Some(FORMAT))],
            "listener_filters": [{"name": "envoy.filters.listener.proxy_protocol"}],
            "filter_chains": [{"filters": tcp("dead", vec![])}],
        }),
        vec![cluster("dead", &[free_port()])],
    );
    let b = Baton::start(&refused).await;
    assert_eq!(exchange(local(b.listen), b"GARBAGE\r\n\r\n").await, None);
    let want = format!("0 0 - - [-] 127.0.0.1:{} 127.0.0.1 - 0 - - -", b.listen);
    assert_eq!(lines(&log, 1).await, [want]);
}
