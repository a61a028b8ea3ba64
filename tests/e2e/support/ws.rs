//! A raw WebSocket client over TCP: the upgrade request, reading a response head byte by byte
//! (so nothing past it is consumed), and an echo round trip through the tunnel.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// A WebSocket upgrade request for `/ws`.
pub const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Read up to the end of a response head.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.expect("read head");
        assert_eq!(
            n,
            1,
            "connection closed in the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Write `msg` into the tunnel and read the same bytes back (the upstream echoes), within 5 s.
pub async fn echo_through(s: &mut TcpStream, msg: &str) {
    s.write_all(msg.as_bytes()).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    within(5, "echo", s.read_exact(&mut back))
        .await
        .expect("echo back");
    assert_eq!(back, msg.as_bytes());
}
