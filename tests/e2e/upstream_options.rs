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

/// What a raw HTTP/2 upstream saw of Baton's connection.
#[derive(Debug, Default)]
struct H2Seen {
    settings: Vec<(u16, u32)>,
    connection_window_increment: Option<u32>,
    pings: usize,
    /// Baton closed the connection.
    closed: bool,
}

/// Accept one HTTP/2 connection on `l`, read its frames for `watch` (answering PINGs when
/// `ack_pings`), and report them. Never answers a request.
async fn watch_h2(
    l: tokio::net::TcpListener,
    watch: std::time::Duration,
    ack_pings: bool,
) -> H2Seen {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, _) = l.accept().await.unwrap();
    let mut preface = [0u8; 24];
    s.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // Empty SETTINGS.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut seen = H2Seen::default();
    let read_frames = async {
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                seen.closed = true;
                return;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                seen.closed = true;
                return;
            }
            match kind {
                // SETTINGS (not an ACK): acknowledged.
                4 if flags & 1 == 0 => {
                    for p in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([p[0], p[1]]);
                        let v = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                        seen.settings.push((id, v));
                    }
                    let _ = s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                }
                6 if flags & 1 == 0 => {
                    seen.pings += 1;
                    if ack_pings {
                        let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                        ack.extend_from_slice(&payload);
                        let _ = s.write_all(&ack).await;
                    }
                }
                8 if stream == 0 => {
                    let inc = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    seen.connection_window_increment = Some(inc & 0x7fff_ffff);
                }
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(watch, read_frames).await;
    seen
}

/// `explicit_http_config.http2_protocol_options` reach the wire: the window sizes and
/// `max_concurrent_streams` in Baton's SETTINGS / WINDOW_UPDATE, `connection_keepalive` as
/// PINGs every `interval`, and a PING not answered within `timeout` closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_settings_and_keepalive_reach_the_wire() {
    use std::time::Duration;
    let options = || {
        json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "initial_stream_window_size": 131072,
                    "initial_connection_window_size": 1048576,
                    "max_concurrent_streams": 7,
                    "connection_keepalive": {"interval": "0.2s", "timeout": "0.3s"},
                }},
            }
        })
    };
    for ack_pings in [true, false] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let config = Config::new()
            .route(route("/", "c", json!({"timeout": "3s"})))
            .cluster(with(
                cluster("c", &[port]),
                "typed_extension_protocol_options",
                options(),
            ))
            .render();
        let baton = Baton::start(&config).await;
        let watcher = tokio::spawn(watch_h2(l, Duration::from_millis(1500), ack_pings));
        let addr = baton.addr();
        let request = tokio::spawn(async move {
            let mut c = H1::connect(addr).await.unwrap();
            c.send(get_req("t", "/")).await.map(|r| r.status)
        });
        let seen = watcher.await.unwrap();
        // SETTINGS_MAX_CONCURRENT_STREAMS (3) and SETTINGS_INITIAL_WINDOW_SIZE (4).
        assert!(seen.settings.contains(&(3, 7)), "{seen:?}");
        assert!(seen.settings.contains(&(4, 131_072)), "{seen:?}");
        assert_eq!(
            seen.connection_window_increment,
            Some(1_048_576 - 65_535),
            "{seen:?}"
        );
        if ack_pings {
            // 1.5 s at one PING every 0.2 s.
            assert!(seen.pings >= 4, "{seen:?}");
            assert!(!seen.closed, "{seen:?}");
        } else {
            // The first PING goes unanswered: closed 0.3 s later.
            assert!(seen.closed, "{seen:?}");
            assert!(seen.pings >= 1, "{seen:?}");
        }
        let _ = request.await;
    }
}
