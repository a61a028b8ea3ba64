//! drain: how a generation stops. A [`Signal`] held by the owner of a generation, and a
//! [`Watch`] per connection that tells the connection when to start closing gracefully; the
//! owner then waits until every watch has been released.
//!
//! The crate knows nothing of sockets or HTTP: the per-protocol closing (HTTP/1 `Connection:
//! close`, HTTP/2 GOAWAY) lives in `proxy-core`, which is handed a [`Watch`].
#![forbid(unsafe_code)]

use tokio::sync::{mpsc, watch};

/// Held by whoever decides that the generation drains. Dropping it without calling
/// [`Signal::drain`] never starts a drain.
#[derive(Debug)]
pub struct Signal {
    /// The other ends are every [`Watch`]; a send tells them all to close.
    tx: watch::Sender<bool>,
    /// Never sent on; each [`Watch`] holds a sender clone, so `recv` returning `None` means
    /// every watch was dropped.
    released_rx: mpsc::Receiver<()>,
}

/// Cloned into every task that must finish before the generation exits.
#[derive(Clone, Debug)]
pub struct Watch {
    rx: watch::Receiver<bool>,
    /// Keeps the [`Signal`]'s receiver open until this watch is dropped.
    _released: mpsc::Sender<()>,
}

/// Create a connected signal and watch.
pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(false);
    let (released_tx, released_rx) = mpsc::channel(1);
    (
        Signal { tx, released_rx },
        Watch {
            rx,
            _released: released_tx,
        },
    )
}

// === impl Signal ===

impl Signal {
    /// Tell every watch to drain, then wait until all of them have been dropped. The caller
    /// bounds this with the drain deadline.
    pub async fn drain(mut self) {
        let _ = self.tx.send(true);
        // `recv` only returns `None` once every sender (one per live watch) is gone.
        while self.released_rx.recv().await.is_some() {}
    }
}

impl Signal {
    /// Tell every watch to drain without waiting for them.
    pub fn drain_now(self) {
        let _ = self.tx.send(true);
    }
}

// === impl Watch ===

impl Watch {
    /// Completes once a drain has been signalled (or the signal was dropped).
    pub async fn signaled(&mut self) {
        let _ = self.rx.wait_for(|draining| *draining).await;
    }

    /// True once a drain has been signalled.
    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_every_watch() {
        let (signal, watch) = channel();
        let mut w2 = watch.clone();
        let task = tokio::spawn(async move {
            w2.signaled().await;
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            drop(w2);
        });
        drop(watch);
        let start = tokio::time::Instant::now();
        signal.drain().await;
        assert!(start.elapsed() >= std::time::Duration::from_secs(3));
        task.await.unwrap();
    }
}
