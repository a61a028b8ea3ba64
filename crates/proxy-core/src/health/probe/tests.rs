//! Unit tests of [`super`]: the request on the wire, and answers a host may give.
use super::*;

#[test]
fn the_request_names_the_host_and_the_added_fields() {
    let check = HttpCheck {
        host: String::new(),
        path: "/healthz".into(),
        http2: false,
        expected_statuses: vec![(200, 201)],
        headers: vec![(
            http::HeaderName::from_static("x-hc"),
            http::HeaderValue::from_static("1"),
        )],
    };
    let p = HttpProber::new(check, "web", Connect::plain(), true);
    assert_eq!(
        String::from_utf8(p.request).unwrap(),
        "GET /healthz HTTP/1.1\r\nhost: web\r\nuser-agent: Envoy/HC\r\nx-hc: 1\r\n\r\n"
    );
}

/// A host answering each connection's requests with `answers` in turn (one per request), then
/// closing; how many connections it accepted.
async fn host(answers: Vec<Vec<&'static [u8]>>) -> (SocketAddr, tokio::task::JoinHandle<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = 0;
        for conn in answers {
            let (mut s, _) = listener.accept().await.unwrap();
            conns += 1;
            for answer in conn {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(b[0]);
                }
                s.write_all(answer).await.unwrap();
            }
        }
        conns
    });
    (addr, task)
}

/// `probe`, which must end within 5 s (the check's `timeout` is its caller's).
async fn bounded(probe: impl std::future::Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .expect("a probe that ends")
}

fn prober() -> HttpProber {
    let check = HttpCheck {
        host: String::new(),
        path: "/".into(),
        expected_statuses: vec![(200, 201)],
        headers: Vec::new(),
        http2: false,
    };
    HttpProber::new(check, "c", Connect::plain(), true)
}

#[tokio::test]
async fn kept_connections_serve_many_checks_and_a_closed_one_is_replaced() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (addr, host) = host(vec![vec![ok, ok], vec![ok]]).await;
    let mut p = prober();
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
    // The host closed its first connection after two answers: not a failure.
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
    assert_eq!(host.await.unwrap(), 2);
}

#[tokio::test]
async fn statuses_and_broken_answers() {
    let unavailable: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
    let continue_then_ok: &[u8] =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let garbage: &[u8] = b"HELLO\r\n\r\n";
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    let (addr, host) = host(vec![
        vec![unavailable, continue_then_ok, chunked],
        vec![garbage],
    ])
    .await;
    let mut p = prober();
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Failure);
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
    // A chunked body is not read: the connection is not kept.
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
    assert!(p.conn.is_none());
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Network);
    assert_eq!(host.await.unwrap(), 2);
    // Nothing listens any more.
    assert_eq!(bounded(p.probe(addr)).await, Outcome::Network);
}
