//! A TCP health check: connect, write `send` (if any), and find every `receive` block in order
//! in what comes back (none: the connection alone passes). With `reuse_connection` (Envoy's
//! default) the connection stays open from one check to the next, and a kept connection the
//! host has closed is replaced once before the check counts as failed.

use std::net::SocketAddr;

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{BoxStream, Connect};
use super::probe::Stale;
use super::state::Outcome;
use crate::config::TcpCheck;

/// The most of an answer searched for the `receive` blocks.
const MAX_ANSWER: usize = 64 * 1024;

/// The probing side of one host's TCP checks.
#[derive(Debug)]
pub(super) struct TcpProber {
    check: TcpCheck,
    connect: Connect,
    reuse: bool,
    conn: Option<BoxStream>,
    buf: Vec<u8>,
}

// === impl TcpProber ===

impl TcpProber {
    pub(super) fn new(check: TcpCheck, connect: Connect, reuse: bool) -> Self {
        Self {
            check,
            connect,
            reuse,
            conn: None,
            buf: Vec::new(),
        }
    }

    pub(super) fn reset(&mut self) {
        self.conn = None;
    }

    pub(super) async fn probe(&mut self, addr: SocketAddr) -> Outcome {
        if let Some(conn) = self.conn.take() {
            match self.exchange(conn, true).await {
                Err(Stale::BeforeAnswer) => {}
                Ok(outcome) | Err(Stale::Failed(outcome)) => return outcome,
            }
        }
        let Ok(conn) = self.connect.connect(addr).await else {
            return Outcome::Network;
        };
        match self.exchange(conn, false).await {
            Ok(outcome) | Err(Stale::Failed(outcome)) => outcome,
            Err(Stale::BeforeAnswer) => Outcome::Network,
        }
    }

    /// One check on `conn` (`kept`: from a previous check), which is kept if asked to.
    async fn exchange(&mut self, mut conn: BoxStream, kept: bool) -> Result<Outcome, Stale> {
        if kept && !still_open(&mut conn) {
            return Err(Stale::BeforeAnswer);
        }
        if !self.check.send.is_empty() && conn.write_all(&self.check.send).await.is_err() {
            return Err(Stale::BeforeAnswer);
        }
        self.buf.clear();
        while !contains_in_order(&self.buf, &self.check.receive) {
            if self.buf.len() >= MAX_ANSWER {
                return Ok(Outcome::Failure);
            }
            match conn.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) if self.buf.is_empty() => return Err(Stale::BeforeAnswer),
                Ok(0) | Err(_) => return Err(Stale::Failed(Outcome::Network)),
                Ok(_) => {}
            }
        }
        if self.reuse {
            self.conn = Some(conn);
        }
        Ok(Outcome::Success)
    }
}

/// Whether the peer has not closed `conn`, without waiting (what it sent unasked is dropped).
fn still_open(conn: &mut BoxStream) -> bool {
    let mut scratch = [0u8; 1024];
    loop {
        match conn.read(&mut scratch).now_or_never() {
            None => return true,
            Some(Ok(0) | Err(_)) => return false,
            Some(Ok(_)) => {}
        }
    }
}

/// Every block is found in `buf`, each after the end of the one before (not necessarily
/// adjacent).
fn contains_in_order(buf: &[u8], blocks: &[Vec<u8>]) -> bool {
    let mut at = 0;
    for block in blocks {
        match find(&buf[at..], block) {
            Some(i) => at += i + block.len(),
            None => return false,
        }
    }
    true
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_blocks_match_in_order_not_adjacent() {
        let blocks = vec![b"PO".to_vec(), b"NG".to_vec()];
        assert!(contains_in_order(b"xxPOyyNG", &blocks));
        assert!(!contains_in_order(b"NGxxPO", &blocks));
        assert!(!contains_in_order(b"PON", &blocks));
        assert!(contains_in_order(b"", &[]));
    }

    async fn bounded(probe: impl std::future::Future<Output = Outcome>) -> Outcome {
        tokio::time::timeout(std::time::Duration::from_secs(5), probe)
            .await
            .expect("a probe that ends")
    }

    #[tokio::test]
    async fn a_kept_connection_is_reused_and_replaced_once_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let check = TcpCheck {
            send: b"PING".to_vec(),
            receive: vec![b"PONG".to_vec()],
        };
        let mut p = TcpProber::new(check, Connect::plain(), true);
        let server = tokio::spawn(async move {
            // First connection: two answers, then closed; second: one answer.
            for answers in [2, 1] {
                let (mut s, _) = listener.accept().await.unwrap();
                for _ in 0..answers {
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b).await.unwrap();
                    s.write_all(b"PONG").await.unwrap();
                }
            }
        });
        assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
        assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
        // The server closed the first connection: a new one, not a failure.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(bounded(p.probe(addr)).await, Outcome::Success);
        server.await.unwrap();
    }
}
