//! Lingering close: our last response is not destroyed by a reset.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::io::ServerIo;

const LINGER_MAX_BYTES: usize = 256 * 1024;

/// Close our side, then read and discard what the peer still sends for `linger` (the HCM's
/// `delayed_close_timeout`, Envoy's default 1 s; zero: not at all), so that our last response
/// is not destroyed by a reset.
pub(super) async fn linger_close(mut io: ServerIo, linger: Duration) {
    if io.shutdown().await.is_err() || linger.is_zero() {
        return;
    }
    let deadline = tokio::time::Instant::now() + linger;
    let mut total = 0;
    while total < LINGER_MAX_BYTES {
        match tokio::time::timeout_at(deadline, discard(&mut io)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

thread_local! {
    /// Where lingering closes read what they throw away (not in every connection's future).
    static DISCARD: RefCell<Box<[u8; 4096]>> = RefCell::new(Box::new([0; 4096]));
}

/// Read and throw away what the peer sent; `Ok(0)` at its end.
fn discard(io: &mut ServerIo) -> impl Future<Output = std::io::Result<usize>> + '_ {
    std::future::poll_fn(move |cx| {
        DISCARD.with(|d| {
            let mut d = d.borrow_mut();
            let mut rb = tokio::io::ReadBuf::new(&mut d[..]);
            Pin::new(&mut *io)
                .poll_read(cx, &mut rb)
                .map_ok(|()| rb.filled().len())
        })
    })
}
