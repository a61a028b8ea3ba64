//! Filter chains and `tcp_proxy` against real sockets: bytes both ways with a half-close, the
//! stats Envoy 1.40 keeps for them (`tcp.<stat_prefix>.*`, the cluster's `upstream_cx_*`, names
//! and values as a real Envoy showed on the same configuration), `idle_timeout`,
//! `max_connect_attempts`, the circuit breaker, weighted clusters, a missing cluster; chains
//! chosen by destination port, source and the default chain; cleartext, terminated TLS and
//! passed-through TLS on one port, chosen by the TLS inspector.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::config::{cluster, direct, with};
use crate::support::tcp::{exchange, TcpEcho};
use crate::support::{free_port, local, within, Baton};
use crate::tls::{der, downstream_socket, key_der, ring, Ca, Leaf};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// A chain's filters: one `tcp_proxy` with stat prefix `tp` and `extra` fields.
pub(crate) fn tcp(extra: Value) -> Value {
    let mut tc = json!({"@type": TCP_PROXY, "stat_prefix": "tp"});
    tc.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!([{"name": "envoy.filters.network.tcp_proxy", "typed_config": tc}])
}

/// A chain's filters: an HTTP connection manager answering every request with `body`.
pub(crate) fn http(body: &str) -> Value {
    let text = direct(body)
        .replace("{{ADMIN}}", "0")
        .replace("{{LISTEN}}", "0");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"].clone()
}

/// A bootstrap with one listener on `{{LISTEN}}` (its other fields in `listener`).
pub(crate) fn bootstrap(listener: Value, clusters: Vec<Value>) -> String {
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

pub(crate) fn addr(b: &Baton) -> SocketAddr {
    local(b.listen)
}

#[tokio::test]
async fn bytes_flow_both_ways_past_a_half_close_and_are_counted_as_envoy_does() {
    let echo = TcpEcho::start(None).await;
    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [{"filters": tcp(json!({"cluster": "echo"}))}]}),
        vec![cluster("echo", &[echo.port()])],
    ))
    .await;
    // The client's FIN reaches the origin, which still answers `bye` after it.
    let got = exchange(addr(&b), b"hello").await;
    assert_eq!(got.as_deref(), Some(&b"hellobye"[..]));
    // Envoy 1.40 on the same exchange: 5 bytes in, 8 out, one upstream connection, closed.
    b.wait_stat("tcp.tp.downstream_cx_total", 1).await;
    b.wait_stat("tcp.tp.downstream_cx_rx_bytes_total", 5).await;
    b.wait_stat("tcp.tp.downstream_cx_tx_bytes_total", 8).await;
    b.wait_stat("cluster.echo.upstream_cx_total", 1).await;
    b.wait_stat("cluster.echo.upstream_cx_active", 0).await;
    b.wait_stat("cluster.echo.upstream_cx_destroy", 1).await;
    b.wait_stat("cluster.echo.upstream_cx_tx_bytes_total", 5)
        .await;
    b.wait_stat("cluster.echo.upstream_cx_rx_bytes_total", 8)
        .await;
    let listener = format!("listener.127.0.0.1_{}", b.listen);
    b.wait_stat(&format!("{listener}.downstream_cx_total"), 1)
        .await;
    b.wait_stat(&format!("{listener}.downstream_cx_active"), 0)
        .await;
    assert_eq!(b.stat("tcp.tp.idle_timeout").await, Some(0));
    assert_eq!(b.stat("tcp.tp.downstream_cx_no_route").await, Some(0));

    // A large transfer both ways at once, the client writing while it reads.
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let ((), got) = within(20, "4 MiB echoed", async {
        tokio::join!(
            async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            },
            async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            }
        )
    })
    .await;
    assert_eq!(got.len(), data.len() + 3);
    assert!(got.starts_with(&data) && got.ends_with(b"bye"));
}

#[tokio::test]
async fn idle_timeout_closes_both_ends_and_zero_disables_it() {
    let echo = TcpEcho::start(None).await;
    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [{"filters": tcp(json!({"cluster": "echo", "idle_timeout": "0.3s"}))}]}),
        vec![cluster("echo", &[echo.port()])],
    ))
    .await;
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    let mut buf = Vec::new();
    let n = within(5, "idle close", s.read_to_end(&mut buf)).await;
    assert!(n.is_ok() && buf.is_empty(), "{n:?} {buf:?}");
    b.wait_stat("tcp.tp.idle_timeout", 1).await;

    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [{"filters": tcp(json!({"cluster": "echo", "idle_timeout": "0s"}))}]}),
        vec![cluster("echo", &[echo.port()])],
    ))
    .await;
    let mut s = TcpStream::connect(addr(&b)).await.unwrap();
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(800), s.read(&mut one)).await;
    assert!(
        r.is_err(),
        "the connection stays open without an idle timeout: {r:?}"
    );
    s.write_all(b"x").await.unwrap();
    s.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"x");
}

#[tokio::test]
async fn missing_cluster_connect_attempts_and_circuit_breaker() {
    let echo = TcpEcho::start(None).await;
    let dead = free_port();
    let chains = json!({
        "filter_chains": [{"filters": tcp(json!({"cluster": "dead", "max_connect_attempts": 3}))}],
    });
    let b = Baton::start(&bootstrap(
        chains,
        vec![cluster("dead", &[dead]), cluster("echo", &[echo.port()])],
    ))
    .await;
    assert_eq!(exchange(addr(&b), b"x").await, None);
    b.wait_stat("cluster.dead.upstream_cx_connect_fail", 3)
        .await;
    b.wait_stat("cluster.dead.upstream_cx_connect_attempts_exceeded", 1)
        .await;
    // As Envoy 1.40: each attempt is an upstream connection.
    assert_eq!(b.stat("cluster.dead.upstream_cx_total").await, Some(3));

    // A cluster the configuration lacks: accepted (as Envoy does), its connections closed.
    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [{"filters": tcp(json!({"cluster": "nosuch"}))}]}),
        vec![cluster("echo", &[echo.port()])],
    ))
    .await;
    assert_eq!(exchange(addr(&b), b"x").await, None);
    b.wait_stat("tcp.tp.downstream_cx_no_route", 1).await;

    // max_connections 1: a second connection while the first is open is refused.
    let limited = with(
        cluster("echo", &[echo.port()]),
        "circuit_breakers",
        json!({"thresholds": [{"max_connections": 1}]}),
    );
    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [{"filters": tcp(json!({"cluster": "echo"}))}]}),
        vec![limited],
    ))
    .await;
    let mut first = TcpStream::connect(addr(&b)).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let mut one = [0u8; 1];
    first.read_exact(&mut one).await.unwrap();
    assert_eq!(exchange(addr(&b), b"2").await, None);
    b.wait_stat("cluster.echo.upstream_cx_overflow", 1).await;
    drop(first);
    b.wait_stat("cluster.echo.upstream_cx_active", 0).await;
    assert_eq!(
        exchange(addr(&b), b"3").await.as_deref(),
        Some(&b"3bye"[..])
    );
}

#[tokio::test]
async fn weighted_clusters_share_connections() {
    let (a, c) = (
        TcpEcho::start(Some("a")).await,
        TcpEcho::start(Some("c")).await,
    );
    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [{"filters": tcp(json!({"weighted_clusters": {"clusters": [
            {"name": "a", "weight": 1}, {"name": "c", "weight": 3}
        ]}}))}]}),
        vec![cluster("a", &[a.port()]), cluster("c", &[c.port()])],
    ))
    .await;
    for _ in 0..40 {
        let got = exchange(addr(&b), b"").await.unwrap();
        assert!(got == b"a\nbye" || got == b"c\nbye", "{got:?}");
    }
    assert_eq!(a.accepted() + c.accepted(), 40);
    assert!(
        a.accepted() >= 2 && c.accepted() >= a.accepted(),
        "{} {}",
        a.accepted(),
        c.accepted()
    );
}

#[tokio::test]
async fn chains_by_destination_port_and_source_then_the_default_chain() {
    let (a, d) = (
        TcpEcho::start(Some("a")).await,
        TcpEcho::start(Some("d")).await,
    );
    let second = free_port();
    let listener = json!({
        "additional_addresses": [{"address": {"socket_address": {"address": "127.0.0.1", "port_value": second}}}],
        "filter_chains": [
            {"filter_chain_match": {"destination_port": second}, "filters": tcp(json!({"cluster": "a"}))},
            {"filter_chain_match": {"source_prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]}, "filters": http("ten")},
            {"filter_chain_match": {"source_type": "EXTERNAL"}, "filters": http("external")},
        ],
        "default_filter_chain": {"filters": tcp(json!({"cluster": "d"}))},
    });
    let b = Baton::start(&bootstrap(
        listener,
        vec![cluster("a", &[a.port()]), cluster("d", &[d.port()])],
    ))
    .await;
    assert_eq!(
        exchange(local(second), b"").await.as_deref(),
        Some(&b"a\nbye"[..])
    );
    // The source prefix chain wins the first steps and then does not match 127.0.0.1 (no
    // backtracking to the EXTERNAL chain, which would not match either): the default chain.
    assert_eq!(
        exchange(addr(&b), b"").await.as_deref(),
        Some(&b"d\nbye"[..])
    );
    assert_eq!(
        b.stat(&format!(
            "listener.127.0.0.1_{}.no_filter_chain_match",
            b.listen
        ))
        .await,
        Some(0)
    );

    // Without a default chain, the same connection is closed and counted.
    let listener = json!({
        "filter_chains": [
            {"filter_chain_match": {"source_type": "EXTERNAL"}, "filters": tcp(json!({"cluster": "a"}))},
        ],
    });
    let b = Baton::start(&bootstrap(listener, vec![cluster("a", &[a.port()])])).await;
    assert_eq!(exchange(addr(&b), b"x").await, None);
    b.wait_stat(
        &format!("listener.127.0.0.1_{}.no_filter_chain_match", b.listen),
        1,
    )
    .await;
    assert_eq!(b.stat("tcp.tp.downstream_cx_total").await, Some(0));
}

/// A TLS client config trusting `ca`.
pub(crate) fn client(ca: &Ca, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&ca.pem())).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(c)
}

pub(crate) fn server(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der(&leaf.cert)], key_der(&leaf.key))
            .unwrap(),
    )
}

/// Over TLS to `addr` with `sni`: write `send`, half-close, read to the end. The certificate
/// the server showed must be signed by `ca` for `sni`.
async fn tls_exchange(
    addr: SocketAddr,
    (ca, alpn): (&Ca, &[&str]),
    sni: &str,
    send: &[u8],
) -> Result<Vec<u8>, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut s = tokio_rustls::TlsConnector::from(client(ca, alpn))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(send).await.map_err(|e| e.to_string())?;
        s.shutdown().await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        Ok(got)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[tokio::test]
async fn cleartext_terminated_and_passed_through_tls_on_one_port() {
    // The origin's certificate comes from its own CA: a client trusting only that CA completes
    // the handshake only if Baton passes the session through untouched.
    let (origin_ca, baton_ca) = (Ca::new("origin ca"), Ca::new("baton ca"));
    let origin_cert = origin_ca.leaf_for(&["pass.test", "*.pass.test"]);
    let origin = TcpEcho::start_tls(Some("origin"), server(&origin_cert)).await;
    let plain = TcpEcho::start(Some("plain")).await;
    let term = TcpEcho::start(Some("term")).await;
    let listener = json!({
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [
            {"filter_chain_match": {"server_names": ["pass.test", "*.pass.test"]}, "filters": tcp(json!({"cluster": "origin"}))},
            {"filter_chain_match": {"server_names": ["term.test"], "transport_protocol": "tls"},
             "transport_socket": downstream_socket(&baton_ca.leaf("term.test"), json!({})),
             "filters": tcp(json!({"cluster": "term"}))},
            {"filter_chain_match": {"transport_protocol": "tls", "application_protocols": ["h2", "http/1.1"]},
             "transport_socket": downstream_socket(&baton_ca.leaf("web.test"), json!({})),
             "filters": http("over tls")},
            {"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": tcp(json!({"cluster": "plain"}))},
        ],
    });
    let b = Baton::start(&bootstrap(
        listener,
        vec![
            cluster("origin", &[origin.port()]),
            cluster("plain", &[plain.port()]),
            cluster("term", &[term.port()]),
        ],
    ))
    .await;
    let a = addr(&b);
    let (origin_ca, baton_ca) = ((&origin_ca, &[][..]), (&baton_ca, &[][..]));
    let got = tls_exchange(a, origin_ca, "pass.test", b"hi").await;
    assert_eq!(got.unwrap(), b"origin\nhibye");
    let got = tls_exchange(a, origin_ca, "x.pass.test", b"").await;
    assert_eq!(got.unwrap(), b"origin\nbye");
    let got = tls_exchange(a, baton_ca, "term.test", b"hi").await;
    assert_eq!(got.unwrap(), b"term\nhibye");
    let web = (baton_ca.0, &["http/1.1"][..]);
    let req = b"GET / HTTP/1.1\r\nhost: web.test\r\nconnection: close\r\n\r\n";
    let got = String::from_utf8(tls_exchange(a, web, "web.test", req).await.unwrap()).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("over tls"),
        "{got}"
    );
    assert_eq!(
        exchange(a, b"hi").await.as_deref(),
        Some(&b"plain\nhibye"[..])
    );
    // TLS with neither a known name nor ALPN: no chain.
    assert!(tls_exchange(a, baton_ca, "other.test", b"").await.is_err());
    b.wait_stat(
        &format!("listener.127.0.0.1_{}.no_filter_chain_match", b.listen),
        1,
    )
    .await;
    // Baton never took part in the passed-through sessions: only the two it terminated count.
    b.wait_stat(&format!("listener.127.0.0.1_{}.ssl.handshake", b.listen), 2)
        .await;
}

#[tokio::test]
async fn without_connection_handover_tcp_proxy_connections_stay_in_the_old_generation_until_they_close(
) {
    let (a, c) = (
        TcpEcho::start(Some("a")).await,
        TcpEcho::start(Some("c")).await,
    );
    let config = |port: u16| {
        bootstrap(
            json!({"filter_chains": [{"filters": tcp(json!({"cluster": "echo"}))}]}),
            vec![cluster("echo", &[port])],
        )
    };
    let mut old = Baton::start(&config(a.port())).await;
    let mut s = TcpStream::connect(addr(&old)).await.unwrap();
    let mut buf = [0u8; 3];
    s.write_all(b"1").await.unwrap();
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"a\n1");

    // As Envoy does (its connections always stay): see `tcp_handover` for the hand-over.
    let mut new = old.restart(&config(c.port()), &["--disable-connection-handover"]);
    new.wait_serving().await;
    // New connections go to the new generation, and its origin, once the old one has stopped
    // accepting (just after the new one serves).
    within(5, "a connection to the new generation", async {
        while exchange(addr(&new), b"").await.as_deref() != Some(&b"c\nbye"[..]) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The old connection is still served, by the old generation, both ways.
    s.write_all(b"2").await.unwrap();
    let mut one = [0u8; 1];
    within(5, "old connection echo", s.read_exact(&mut one))
        .await
        .unwrap();
    assert_eq!(&one, b"2");
    assert!(
        old.exited().is_none(),
        "the old generation waits for its connection"
    );
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye");
    assert!(
        old.wait_exit(Duration::from_secs(10)).await.is_some(),
        "the old generation exits once its last connection has closed"
    );
}

#[tokio::test]
async fn two_http_connection_managers_on_one_listener() {
    let second = free_port();
    let mut two = http("two");
    two[0]["typed_config"]["stat_prefix"] = json!("second_http");
    let listener = json!({
        "additional_addresses": [{"address": {"socket_address": {"address": "127.0.0.1", "port_value": second}}}],
        "filter_chains": [
            {"filters": http("one")},
            {"filter_chain_match": {"destination_port": second}, "filters": two},
        ],
    });
    let b = Baton::start(&bootstrap(listener, vec![])).await;
    assert_eq!(crate::support::get(addr(&b), "/").await.text(), "one");
    assert_eq!(crate::support::get(local(second), "/").await.text(), "two");
    b.wait_stat("http.second_http.downstream_rq_total", 1).await;
    b.wait_stat("http.ingress_http.downstream_rq_total", 1)
        .await;
}

#[tokio::test]
async fn the_http_inspector_chooses_chains_by_application_protocol() {
    let echo = TcpEcho::start(Some("raw")).await;
    let listener = json!({
        "listener_filters": [{"name": "envoy.filters.listener.http_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}],
        "filter_chains": [
            {"filter_chain_match": {"application_protocols": ["http/1.1", "http/1.0"]}, "filters": http("h1")},
            {"filter_chain_match": {"application_protocols": ["h2c"]}, "filters": http("h2c")},
        ],
        "default_filter_chain": {"filters": tcp(json!({"cluster": "echo"}))},
    });
    let b = Baton::start(&bootstrap(listener, vec![cluster("echo", &[echo.port()])])).await;
    assert_eq!(crate::support::get(addr(&b), "/").await.text(), "h1");
    let mut h2 = crate::support::H2::connect(addr(&b)).await.unwrap();
    let resp = h2.send(crate::support::get_req("x", "/")).await.unwrap();
    assert_eq!(resp.text(), "h2c");
    // Not HTTP: the default chain, and the bytes the inspector peeked reach the origin.
    assert_eq!(
        exchange(addr(&b), b"hello").await.as_deref(),
        Some(&b"raw\nhellobye"[..])
    );
    // As Envoy 1.40 counts them.
    b.wait_stat("http_inspector.http11_found", 1).await;
    b.wait_stat("http_inspector.http2_found", 1).await;
    b.wait_stat("http_inspector.http_not_found", 1).await;
    assert_eq!(b.stat("http_inspector.http10_found").await, Some(0));
}
