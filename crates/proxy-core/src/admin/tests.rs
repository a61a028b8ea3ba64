//! End-to-end tests of the admin server: [`serve`] on 127.0.0.1:0 queried with raw HTTP/1.1.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::lifecycle::{Lifecycle, Phase};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const STEP: Duration = Duration::from_secs(10);

struct Harness {
    addr: std::net::SocketAddr,
    lifecycle: Lifecycle,
    quit_rx: mpsc::Receiver<QuitRequest>,
    signal: drain::Signal,
    server: tokio::task::JoinHandle<()>,
    stats: shm_stats::Store,
}

async fn start() -> Result<Harness, Box<dyn std::error::Error + Send + Sync>> {
    let stats = shm_stats::Store::new();
    stats.counter("cluster.backend.upstream_rq_total").add(5);
    stats.counter("http.ingress_http.downstream_rq_2xx").add(7);
    stats
        .histogram("cluster.backend.upstream_rq_time")
        .record_ms(3.0);
    // The admin starts while the generation takes its sockets.
    let lifecycle = Lifecycle::new(0);
    lifecycle.enter(Phase::TakingSockets);
    let (quit_tx, quit_rx) = mpsc::channel(1);
    let clusters: Vec<ClusterStatus> = vec![ClusterStatus {
        name: "backend".to_owned(),
        thresholds: Thresholds::default(),
        hosts: vec![HostStatus {
            address: "127.0.0.1:8080".parse()?,
            hostname: String::new(),
            weight: 1,
            priority: 0,
            health: crate::host_health::HealthFlags::HEALTHY,
            cx_active: 1,
            cx_connect_fail: 0,
            rq_active: 0,
            rq_total: 5,
            rq_error: 0,
            rq_success: 5,
            success_rate: None,
            local_origin_success_rate: None,
        }],
        added_via_api: false,
        outlier_detection: false,
        success_rate_average: None,
        success_rate_threshold: None,
        local_origin_success_rate_average: None,
        local_origin_success_rate_threshold: None,
    }];
    let state = Arc::new(AdminState {
        drain: None,
        stats: stats.clone(),
        server: ServerInfo {
            version: "test/0.1.0/Clean/DEBUG/rustls".to_owned(),
            hot_restart_version: "baton.test.1".to_owned(),
            command_line_options: json!({"service_node": "node-a", "service_cluster": "edge"}),
            node: crate::config::Node {
                id: "node-a".to_owned(),
                cluster: "edge".to_owned(),
                ..Default::default()
            },
            epoch: 0,
            concurrency: 2,
            epoch_started: Instant::now(),
            chain_started: SystemTime::now(),
        },
        generation: lifecycle.subscribe(),
        config_dump: json!({"static_resources": {"listeners": []}}),
        listeners: vec![ListenerStatus {
            name: "listener_0".to_owned(),
            address: "0.0.0.0:10000".parse()?,
            additional_addresses: vec![],
        }],
        clusters: Arc::new(clusters),
        quit: quit_tx,
        rollback: None,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (signal, watch) = drain::channel();
    let server = tokio::spawn(serve(listener, state, watch));
    Ok(Harness {
        addr,
        lifecycle,
        quit_rx,
        signal,
        server,
        stats,
    })
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// Read one response (headers, then a `Content-Length` body) from `stream`.
async fn read_reply(
    stream: &mut TcpStream,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed before the response headers".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec())?;
    let status: u16 = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or("no content-length")?;
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed inside the body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: String::from_utf8(buf[head_end..head_end + len].to_vec())?,
    })
}

/// One request on a fresh connection.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        read_reply(&mut stream).await
    };
    tokio::time::timeout(STEP, exchange).await?
}

async fn get(
    addr: std::net::SocketAddr,
    target: &str,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    request(addr, "GET", target).await
}

#[tokio::test]
async fn endpoints_answer_like_envoy() -> TestResult {
    let mut h = start().await?;

    let r = get(h.addr, "/ready").await?;
    assert_eq!((r.status, r.body.as_str()), (503, "INITIALIZING\n"));
    assert!(r
        .headers
        .contains("content-type: text/plain; charset=utf-8"));
    h.lifecycle.enter(Phase::Serving);
    let r = get(h.addr, "/ready").await?;
    assert_eq!((r.status, r.body.as_str()), (200, "LIVE\n"));

    let r = get(h.addr, "/").await?;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("  /stats/prometheus: "));

    let r = get(h.addr, "/stats").await?;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("cluster.backend.upstream_rq_total: 5\n"));
    assert!(r.body.contains("server.live: 1\n"), "{}", r.body);
    assert!(r.body.contains("server.state: 0\n"));
    assert!(r.body.contains("server.concurrency: 2\n"));
    assert!(r.body.contains("cluster.backend.upstream_rq_time: P0("));

    let r = get(h.addr, "/stats?format=json&filter=%5Ecluster%5C.").await?;
    assert!(r.headers.contains("content-type: application/json"));
    let v: Json = serde_json::from_str(&r.body)?;
    assert_eq!(
        v["stats"][0],
        json!({"name": "cluster.backend.upstream_rq_total", "value": 5})
    );

    let r = get(h.addr, "/stats/prometheus?usedonly").await?;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(
        "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress_http\"} 7\n"
    ));
    let r2 = get(h.addr, "/stats?format=prometheus&usedonly").await?;
    assert!(r2
        .body
        .contains("# TYPE envoy_cluster_upstream_rq_total counter\n"));

    let r = get(h.addr, "/stats?filter=(").await?;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("could not compile filter regex"),
        "{}",
        r.body
    );

    let r = get(h.addr, "/server_info").await?;
    assert_eq!(r.status, 200);
    let v: Json = serde_json::from_str(&r.body)?;
    assert_eq!(v["state"], "LIVE");
    assert_eq!(v["node"], json!({"id": "node-a", "cluster": "edge"}));
    assert_eq!(v["hot_restart_version"], "baton.test.1");

    let r = get(h.addr, "/hot_restart_version").await?;
    assert_eq!(r.body, "baton.test.1\n");

    let r = get(h.addr, "/clusters").await?;
    assert!(r.body.contains("backend::127.0.0.1:8080::rq_total::5\n"));
    let r = get(h.addr, "/clusters?format=json").await?;
    let v: Json = serde_json::from_str(&r.body)?;
    assert_eq!(v["cluster_statuses"][0]["name"], "backend");

    let r = get(h.addr, "/listeners").await?;
    assert_eq!(r.body, "listener_0::0.0.0.0:10000\n");

    let r = get(h.addr, "/config_dump").await?;
    let v: Json = serde_json::from_str(&r.body)?;
    assert_eq!(
        v["configs"][0]["@type"],
        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    );
    assert_eq!(
        v["configs"][0]["bootstrap"]["static_resources"],
        json!({"listeners": []})
    );

    let r = get(h.addr, "/no_such_thing").await?;
    assert_eq!(r.status, 404);
    assert!(r.body.starts_with("invalid path. admin commands are:\n"));

    // Quitting: GET is refused and sends nothing; POST answers then asks the owner.
    let r = get(h.addr, "/quitquitquit").await?;
    assert_eq!(
        (r.status, r.body.as_str()),
        (405, "Method GET not allowed, POST required.")
    );
    assert!(h.quit_rx.try_recv().is_err());
    let r = request(h.addr, "POST", "/quitquitquit").await?;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    let quit = tokio::time::timeout(STEP, h.quit_rx.recv()).await?;
    assert_eq!(quit, Some(QuitRequest));

    // Rolling back needs POST and an owner that can.
    let r = get(h.addr, "/rollback").await?;
    assert_eq!(r.status, 405);
    let r = request(h.addr, "POST", "/rollback").await?;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "this server cannot roll back\n")
    );

    tokio::time::timeout(STEP, h.signal.drain()).await?;
    tokio::time::timeout(STEP, h.server).await??;
    Ok(())
}

#[tokio::test]
async fn odd_requests_never_break_the_server() -> TestResult {
    let h = start().await?;
    // Compiles to far more than the filter size limit.
    let long_filter = "/stats?filter=(a%7B1000%7D)%7B1000%7D";
    let targets = [
        "//",
        "/stats/",
        "/STATS",
        "/stats?",
        "/stats?&&&",
        "/stats?filter=%",
        "/stats?filter=%E2%28",
        "/stats?filter=%ff%fe",
        "/stats?format=xml",
        "/stats?format=",
        "/stats?usedonly=0&usedonly",
        "/stats?filter=",
        long_filter,
        "/stats/prometheus?filter=[",
        "/clusters?format=yaml",
        "/listeners?format",
        "/ready?x=%00",
        "/%00",
        "/server_info?format=json",
        "*",
    ];
    for target in targets {
        let r = get(h.addr, target).await?;
        assert!(
            matches!(r.status, 200 | 400 | 404 | 503),
            "{target}: {}",
            r.status
        );
        assert!(r.headers.contains("content-type: "), "{target}");
    }
    for method in ["PUT", "DELETE", "PATCH"] {
        let r = request(h.addr, method, "/quitquitquit").await?;
        assert_eq!(r.status, 405, "{method}");
    }
    assert_eq!(get(h.addr, "/stats?format=xml").await?.status, 400);
    assert_eq!(get(h.addr, long_filter).await?.status, 400);
    // Garbage instead of HTTP: the connection is dropped, the server keeps serving.
    let mut junk = TcpStream::connect(h.addr).await?;
    junk.write_all(b"\x00\x01\x02 not http\r\n\r\n").await?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(STEP, junk.read_to_end(&mut sink)).await?;
    assert_eq!(get(h.addr, "/ready").await?.status, 503);
    assert!(h
        .stats
        .snapshot()
        .stats
        .iter()
        .any(|(n, _)| n == "server.uptime"));

    tokio::time::timeout(STEP, h.signal.drain()).await?;
    tokio::time::timeout(STEP, h.server).await??;
    Ok(())
}

#[tokio::test]
async fn drain_closes_idle_keepalive_connections() -> TestResult {
    let h = start().await?;
    let mut stream = tokio::time::timeout(STEP, TcpStream::connect(h.addr)).await??;
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await?;
    let r = tokio::time::timeout(STEP, read_reply(&mut stream)).await??;
    assert_eq!(r.status, 503);
    // The connection is kept alive and idle; draining must still finish.
    tokio::time::timeout(STEP, h.signal.drain()).await?;
    tokio::time::timeout(STEP, h.server).await??;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(STEP, stream.read_to_end(&mut rest)).await??;
    assert_eq!(n, 0, "the server closed the connection");
    // Nothing listens any more.
    assert!(TcpStream::connect(h.addr).await.is_err());
    Ok(())
}

#[test]
fn server_state_is_envoys_view_of_the_phase() {
    use crate::lifecycle::{Failure, Step};
    let cases = [
        (Phase::Starting, ServerState::PreInitializing),
        (Phase::Validating, ServerState::Initializing),
        (Phase::TakingSockets, ServerState::Initializing),
        (Phase::Serving, ServerState::Live),
        (Phase::Draining, ServerState::Draining),
        (Phase::Terminated, ServerState::Draining),
        (
            Phase::Failed(Failure::new(Step::Bind, "could not bind")),
            ServerState::Draining,
        ),
    ];
    for (phase, state) in cases {
        assert_eq!(ServerState::from(&phase), state, "{phase}");
    }
}
