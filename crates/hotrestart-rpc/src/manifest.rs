//! Listen-socket manifests, sans-IO: splitting the parent's sockets into batches of at most
//! [`MAX_FDS_PER_FRAME`] fds, and the child's checks that each batch's manifest describes exactly
//! the fds that came with it, in order, with consistent totals.

use crate::error::{Error, Result};
use crate::frame::MAX_FDS_PER_FRAME;
use crate::pb::{ConnectionKind, ConnectionsBatch, ListenSocketsReply, SocketManifest, SocketType};

/// Splits `items` into batches of at most [`MAX_FDS_PER_FRAME`]. No items still makes one (empty)
/// batch, so a request always gets an answer.
pub fn batches<T>(items: &[T]) -> Vec<&[T]> {
    if items.is_empty() {
        return vec![&[]];
    }
    items.chunks(MAX_FDS_PER_FRAME).collect()
}

/// Checks one manifest entry: it names an address and a known socket type.
pub fn validate_entry(index: usize, entry: &SocketManifest) -> Result<()> {
    if entry.address.is_empty() {
        return Err(Error::InvalidManifest {
            index,
            reason: "no address".into(),
        });
    }
    match SocketType::try_from(entry.socket_type) {
        Ok(SocketType::Tcp | SocketType::Udp | SocketType::Unix) => Ok(()),
        Ok(SocketType::Unspecified) => Err(Error::InvalidManifest {
            index,
            reason: format!("{}: socket type unspecified", entry.address),
        }),
        Err(_) => Err(Error::InvalidManifest {
            index,
            reason: format!(
                "{}: unknown socket type {}",
                entry.address, entry.socket_type
            ),
        }),
    }
}

/// Checks a batch's manifest against the number of fds that arrived with it.
pub fn validate_batch(reply: &ListenSocketsReply, fds_received: usize) -> Result<()> {
    if reply.sockets.len() != fds_received {
        return Err(Error::ManifestMismatch {
            manifests: reply.sockets.len(),
            fds: fds_received,
        });
    }
    Ok(())
}

/// The child's view of a batched reply in progress: feed it each batch with the number of fds
/// that came with it; it says when the last batch has arrived.
#[derive(Debug, Default)]
pub struct BatchAssembler {
    next_index: u32,
    batch_count: Option<u32>,
    total: Option<u32>,
    received: usize,
}

// === impl BatchAssembler ===

impl BatchAssembler {
    /// A new assembler expecting batch 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `reply` (which arrived with `fds_received` fds) and returns whether it was the last
    /// batch. Entries are numbered across batches in errors.
    pub fn accept(&mut self, reply: &ListenSocketsReply, fds_received: usize) -> Result<bool> {
        validate_batch(reply, fds_received)?;
        if reply.sockets.len() > MAX_FDS_PER_FRAME {
            return Err(Error::TooManyFds {
                count: reply.sockets.len(),
                max: MAX_FDS_PER_FRAME,
            });
        }
        if reply.batch_index != self.next_index {
            return Err(bad(format!(
                "expected batch {}, got batch {}",
                self.next_index, reply.batch_index
            )));
        }
        if reply.batch_count == 0 || reply.batch_index >= reply.batch_count {
            return Err(bad(format!(
                "batch {} of {} is out of range",
                reply.batch_index, reply.batch_count
            )));
        }
        if *self.batch_count.get_or_insert(reply.batch_count) != reply.batch_count {
            return Err(bad(format!(
                "batch count changed from {:?} to {}",
                self.batch_count, reply.batch_count
            )));
        }
        if *self.total.get_or_insert(reply.total_sockets) != reply.total_sockets {
            return Err(bad(format!(
                "total changed from {:?} to {}",
                self.total, reply.total_sockets
            )));
        }
        for (i, entry) in reply.sockets.iter().enumerate() {
            validate_entry(self.received + i, entry)?;
        }
        self.received += reply.sockets.len();
        let total = usize::try_from(reply.total_sockets).unwrap_or(usize::MAX);
        if self.received > total {
            return Err(bad(format!(
                "{} sockets received, more than the announced {total}",
                self.received
            )));
        }
        self.next_index += 1;
        let last = self.next_index == reply.batch_count;
        if last && self.received != total {
            return Err(bad(format!(
                "last batch arrived with {} sockets in all, {total} announced",
                self.received
            )));
        }
        Ok(last)
    }
}

/// How many fds a handed-over connection of `kind` travels with: its downstream socket, and for a
/// tunnel or a `tcp_proxy` connection its upstream socket after it. `None` for a kind this build does not know.
pub fn fds_of_kind(kind: i32) -> Option<usize> {
    match ConnectionKind::try_from(kind) {
        Ok(ConnectionKind::Http1) => Some(1),
        Ok(ConnectionKind::Tunnel | ConnectionKind::TcpProxy) => Some(2),
        Ok(ConnectionKind::Unspecified) | Err(_) => None,
    }
}

/// The fds `batch` must come with, in total; an unknown kind is an invalid manifest (its fd
/// layout cannot be known, so the whole batch is refused).
pub fn connection_fds(batch: &ConnectionsBatch) -> Result<usize> {
    batch
        .connections
        .iter()
        .enumerate()
        .try_fold(0usize, |total, (index, c)| {
            fds_of_kind(c.kind)
                .map(|n| total + n)
                .ok_or_else(|| Error::InvalidManifest {
                    index,
                    reason: format!("unknown connection kind {}", c.kind),
                })
        })
}

fn bad(reason: String) -> Error {
    Error::BadBatch { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(port: u16) -> SocketManifest {
        SocketManifest {
            address: format!("127.0.0.1:{port}"),
            socket_type: SocketType::Tcp.into(),
            ..Default::default()
        }
    }

    fn reply(index: u32, count: u32, total: u32, n: u16) -> ListenSocketsReply {
        ListenSocketsReply {
            batch_index: index,
            batch_count: count,
            total_sockets: total,
            sockets: (0..n).map(entry).collect(),
        }
    }

    #[test]
    fn batches_split_at_253() {
        let items: Vec<u32> = (0..600).collect();
        let b = batches(&items);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [253, 253, 94]
        );
        assert_eq!(batches::<u32>(&[]).len(), 1);
        assert_eq!(batches(&items[..253]).len(), 1);
    }

    #[test]
    fn assembles_in_order() {
        let mut a = BatchAssembler::new();
        assert!(!a.accept(&reply(0, 3, 600, 253), 253).unwrap());
        assert!(!a.accept(&reply(1, 3, 600, 253), 253).unwrap());
        assert!(a.accept(&reply(2, 3, 600, 94), 94).unwrap());
        let mut a = BatchAssembler::new();
        assert!(a.accept(&reply(0, 1, 0, 0), 0).unwrap());
    }

    #[test]
    fn mismatch_and_disorder_are_errors() {
        let mut a = BatchAssembler::new();
        assert!(matches!(
            a.accept(&reply(0, 1, 3, 3), 2),
            Err(Error::ManifestMismatch {
                manifests: 3,
                fds: 2
            })
        ));
        let mut a = BatchAssembler::new();
        assert!(matches!(
            a.accept(&reply(1, 2, 3, 3), 3),
            Err(Error::BadBatch { .. })
        ));
        let mut a = BatchAssembler::new();
        a.accept(&reply(0, 2, 6, 3), 3).unwrap();
        assert!(matches!(
            a.accept(&reply(1, 3, 6, 3), 3),
            Err(Error::BadBatch { .. })
        ));
        let mut a = BatchAssembler::new();
        assert!(matches!(
            a.accept(&reply(0, 1, 4, 3), 3),
            Err(Error::BadBatch { .. })
        ));
        let mut a = BatchAssembler::new();
        assert!(matches!(
            a.accept(&reply(0, 2, 2, 3), 3),
            Err(Error::BadBatch { .. })
        ));
        let mut a = BatchAssembler::new();
        assert!(matches!(
            a.accept(&reply(0, 0, 0, 0), 0),
            Err(Error::BadBatch { .. })
        ));
    }

    #[test]
    fn invalid_entries_are_errors() {
        let mut r = reply(0, 1, 2, 2);
        r.sockets[1].socket_type = 99;
        assert!(matches!(
            BatchAssembler::new().accept(&r, 2),
            Err(Error::InvalidManifest { index: 1, .. })
        ));
        r.sockets[1].socket_type = 0;
        assert!(BatchAssembler::new().accept(&r, 2).is_err());
        r.sockets[1] = entry(1);
        r.sockets[0].address.clear();
        assert!(matches!(
            BatchAssembler::new().accept(&r, 2),
            Err(Error::InvalidManifest { index: 0, .. })
        ));
    }
}
