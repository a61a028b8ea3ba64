//! A cluster's upstream connection options, as Envoy 1.40 applies them: the connection limits
//! of `common_http_protocol_options` (on HTTP/1.1 and HTTP/2 upstreams), `auto_config` choosing
//! the codec by ALPN, and `upstream_connection_options.tcp_keepalive` on the upstream socket.
//!
//! Envoy 1.40, same configuration (HTTP/1.1 upstream, one client connection, 5 sequential
//! GETs), showed: `max_requests_per_connection: 2` → `upstream_cx_total` 3,
//! `upstream_cx_max_requests` 2; `idle_timeout: 1s` → 1.5 s later `upstream_cx_idle_timeout` 1,
//! `upstream_cx_active` 0; `max_connection_duration: 1s` and one GET → 1.5 s later
//! `upstream_cx_max_duration_reached` 1, `upstream_cx_active` 0.

use serde_json::{json, Value};

use crate::support::*;
use crate::tls::{tls_upstream_alpn, upstream_socket, Ca};

fn http_options(codec: Value, common: Value) -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": codec,
            "common_http_protocol_options": common,
        }
    })
}

fn h1() -> Value {
    json!({"http_protocol_options": {}})
}

fn h2() -> Value {
    json!({"http2_protocol_options": {}})
}

/// Baton in front of one cluster `c` on `port` with `options` as its protocol options.
async fn baton_with(port: u16, options: Value) -> Baton {
    let config = Config::new()
        .route(route("/", "c", json!({})))
        .cluster(with(
            cluster("c", &[port]),
            "typed_extension_protocol_options",
            options,
        ))
        .render();
    Baton::start(&config).await
}

/// `n` sequential GETs on one client connection, all answered 200.
async fn sequential(baton: &Baton, n: usize) {
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for i in 0..n {
        let r = c
            .send(get_req("test.local", &format!("/r{i}")))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", baton.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_on_http1() {
    let up = Upstream::echo("up").await;
    let baton = baton_with(
        up.port(),
        http_options(h1(), json!({"max_requests_per_connection": 2})),
    )
    .await;
    sequential(&baton, 5).await;
    assert_eq!(up.conns(), 3, "5 requests, 2 per connection");
    baton
        .wait_stat("cluster.c.upstream_cx_max_requests", 2)
        .await;
    baton.wait_stat("cluster.c.upstream_cx_total", 3).await;
    // The third connection has carried one request and stays open.
    baton.wait_stat("cluster.c.upstream_cx_active", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_on_http2() {
    let up = Upstream::echo_h2("up").await;
    let baton = baton_with(
        up.port(),
        http_options(h2(), json!({"max_requests_per_connection": 2})),
    )
    .await;
    sequential(&baton, 5).await;
    assert_eq!(up.conns(), 3, "5 requests, 2 per connection");
    baton
        .wait_stat("cluster.c.upstream_cx_max_requests", 2)
        .await;
    // The two retired connections close once their streams are done.
    baton.wait_stat("cluster.c.upstream_cx_active", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_idle_connections() {
    let up = Upstream::echo("up").await;
    let baton = baton_with(
        up.port(),
        http_options(h1(), json!({"idle_timeout": "0.3s"})),
    )
    .await;
    sequential(&baton, 2).await;
    assert_eq!(up.conns(), 1);
    baton
        .wait_stat("cluster.c.upstream_cx_idle_timeout", 1)
        .await;
    baton.wait_stat("cluster.c.upstream_cx_active", 0).await;
    // The next request needs a new connection.
    sequential(&baton, 1).await;
    assert_eq!(up.conns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_idle_http2_connection() {
    let up = Upstream::echo_h2("up").await;
    let baton = baton_with(
        up.port(),
        http_options(h2(), json!({"idle_timeout": "0.3s"})),
    )
    .await;
    sequential(&baton, 2).await;
    assert_eq!(up.conns(), 1);
    baton
        .wait_stat("cluster.c.upstream_cx_idle_timeout", 1)
        .await;
    baton.wait_stat("cluster.c.upstream_cx_active", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_duration_closes_the_connection() {
    let up = Upstream::echo("up").await;
    let baton = baton_with(
        up.port(),
        http_options(h1(), json!({"max_connection_duration": "0.3s"})),
    )
    .await;
    sequential(&baton, 1).await;
    baton
        .wait_stat("cluster.c.upstream_cx_max_duration_reached", 1)
        .await;
    baton.wait_stat("cluster.c.upstream_cx_active", 0).await;
    assert_eq!(
        baton.stat("cluster.c.upstream_cx_idle_timeout").await,
        Some(0)
    );
    sequential(&baton, 1).await;
    assert_eq!(up.conns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_cluster_fields_apply_too() {
    // Envoy 1.40 accepts these with a "Deprecated field" warning.
    let up = Upstream::echo_h2("up").await;
    let c = with(
        cluster("c", &[up.port()]),
        "http2_protocol_options",
        json!({}),
    );
    let c = with(c, "max_requests_per_connection", json!(1));
    let config = Config::new()
        .route(route("/", "c", json!({})))
        .cluster(c)
        .render();
    let baton = Baton::start(&config).await;
    sequential(&baton, 3).await;
    assert_eq!(up.conns(), 3);
    assert_eq!(
        up.last().version,
        http::Version::HTTP_2,
        "http2_protocol_options at the cluster level asks for HTTP/2"
    );
    baton
        .wait_stat("cluster.c.upstream_cx_max_requests", 3)
        .await;
}

/// `auto_config` on a TLS cluster: Baton offers `h2,http/1.1` and speaks what the upstream
/// chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_config_follows_alpn() {
    let ca = Ca::new("upstream ca");
    let leaf = ca.leaf("up.test");
    let both = tls_upstream_alpn(&leaf, &[b"h2", b"http/1.1"]).await;
    let only_h1 = tls_upstream_alpn(&leaf, &[b"http/1.1"]).await;
    let auto = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}},
        }
    });
    let tls_cluster = |name: &str, port: u16| {
        let c = with(
            cluster(name, &[port]),
            "transport_socket",
            upstream_socket(&ca.pem(), "up.test", &[]),
        );
        with(c, "typed_extension_protocol_options", auto.clone())
    };
    let config = Config::new()
        .route(route("/both", "both", json!({})))
        .route(route("/h1", "h1", json!({})))
        .cluster(tls_cluster("both", both.port))
        .cluster(tls_cluster("h1", only_h1.port))
        .render();
    let baton = Baton::start(&config).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    for _ in 0..3 {
        let r = c.send(get_req("test.local", "/both")).await.unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "sni=up.test proto=HTTP/2.0")
        );
        let r = c.send(get_req("test.local", "/h1")).await.unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "sni=up.test proto=HTTP/1.1")
        );
    }
    // One connection each: the HTTP/2 one shared, the HTTP/1.1 one pooled.
    baton
        .wait_stat("cluster.both.upstream_cx_http2_total", 1)
        .await;
    baton.wait_stat("cluster.both.upstream_cx_total", 1).await;
    baton
        .wait_stat("cluster.h1.upstream_cx_http1_total", 1)
        .await;
    baton.wait_stat("cluster.h1.upstream_cx_total", 1).await;
}

/// `auto_config` on a cleartext cluster is refused, as Envoy 1.40 refuses it ("ALPN
/// configured for cluster c which has a non-ALPN transport socket").
#[test]
fn auto_config_needs_tls() {
    let auto = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}},
        }
    });
    let config = Config::new()
        .route(route("/", "c", json!({})))
        .cluster(with(
            cluster("c", &[free_port()]),
            "typed_extension_protocol_options",
            auto,
        ))
        .render();
    let (status, stderr) = validate_config(&config);
    assert!(!status.success());
    assert!(
        stderr.contains("HttpProtocolOptions.auto_config") && stderr.contains("TLS"),
        "{stderr}"
    );
}

/// The upstream socket Baton opened to `port`, from `/proc/net/tcp`: its timer column
/// (`tr:tm->when`, in USER_HZ ticks).
fn upstream_socket_timer(port: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let rem_port = u16::from_str_radix(f.get(2)?.rsplit(':').next()?, 16).ok()?;
        // Established (01), to the upstream's port.
        if rem_port != port || *f.get(3)? != "01" {
            return None;
        }
        let (tr, when) = f.get(5)?.split_once(':')?;
        Some((
            u8::from_str_radix(tr, 16).ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_keepalive_is_set_on_upstream_sockets() {
    let up = Upstream::echo("up").await;
    let plain = Upstream::echo("plain").await;
    let config = Config::new()
        .route(route("/ka", "ka", json!({})))
        .route(route("/plain", "plain", json!({})))
        .cluster(with(
            cluster("ka", &[up.port()]),
            "upstream_connection_options",
            json!({"tcp_keepalive": {"keepalive_time": 30, "keepalive_interval": 5, "keepalive_probes": 2}}),
        ))
        .cluster(cluster("plain", &[plain.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let mut c = H1::connect(baton.addr()).await.unwrap();
    assert_eq!(c.send(get_req("t", "/ka")).await.unwrap().status, 200);
    assert_eq!(c.send(get_req("t", "/plain")).await.unwrap().status, 200);
    // Timer 2 is the keepalive timer: armed for `keepalive_time` (30 s = 3000 ticks at
    // USER_HZ 100) on the idle pooled connection; none on the other cluster's.
    let (tr, when) = upstream_socket_timer(up.port()).expect("Baton's socket to the upstream");
    assert_eq!(tr, 2, "keepalive timer armed");
    assert!(
        (2000..=3000).contains(&when),
        "keepalive due in {when} ticks"
    );
    let (tr, _) = upstream_socket_timer(plain.port()).expect("Baton's socket to plain");
    assert_eq!(tr, 0, "no keepalive without tcp_keepalive");
}
