//! error: what can go wrong opening, attaching to, locking and leaving a stats region.

use std::io;
use std::time::Duration;

use crate::layout::{self, HeaderError};

/// An error of the shared stats region.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "could not size the stats region for --max-stats {max_stats} and --max-obj-name-len \
         {max_obj_name_len}: it must hold at least one stat and stay under {limit} bytes"
    )]
    TooLarge {
        max_stats: u64,
        max_obj_name_len: u64,
        limit: u64,
    },
    #[error("could not find the stats region {path}: no Baton chain runs with this base id")]
    NoRegion { path: String },
    #[error(
        "could not open the stats region {path}: permission denied (it belongs to another user)"
    )]
    PermissionDenied {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "could not start epoch 0 on base id {base_id}: the stats region {path} belongs to a live \
         chain ({holders}); stop it, use another --base-id, or hot restart with --restart-epoch"
    )]
    ChainLive {
        base_id: u32,
        path: String,
        holders: String,
    },
    #[error(
        "could not use the stats region {path}: it has layout version {found}, this binary uses \
         {expected} (hot restart versions differ)"
    )]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error(
        "could not use the stats region {path}: it was created with --max-stats {region_max_stats} \
         --max-obj-name-len {region_max_obj_name_len}, this process has --max-stats {max_stats} \
         --max-obj-name-len {max_obj_name_len} (hot restart versions differ)"
    )]
    Capacity {
        path: String,
        region_max_stats: u32,
        region_max_obj_name_len: u32,
        max_stats: u64,
        max_obj_name_len: u64,
    },
    #[error("could not use the stats region {path}: not a Baton stats region ({what})")]
    Corrupt { path: String, what: String },
    #[error(
        "could not use the stats region {path}: it is owned by uid {owner} with mode {mode:04o}; \
         Baton (uid {uid}) only uses a region that it owns and that no other user can write \
         (remove it, or fix its owner and mode)"
    )]
    Untrusted {
        path: String,
        owner: u32,
        mode: u32,
        uid: u32,
    },
    #[error(
        "could not use the stats region {path}: it is {len} bytes, shorter than the {expected} \
         bytes its layout needs (truncated by another process?)"
    )]
    Shrunk {
        path: String,
        len: u64,
        expected: u64,
    },
    #[error(
        "could not attach to the stats region {path}: all {slots} generation slots are held by \
         live generations"
    )]
    NoGenerationSlot { path: String, slots: usize },
    #[error(
        "could not attach epoch {epoch} to the stats region {path}: a live generation with that \
         epoch is attached (pid {pid})"
    )]
    EpochTaken { path: String, epoch: u32, pid: u32 },
    #[error("could not take the lock of the stats region {path} within {timeout:?}: {why}")]
    Lock {
        path: String,
        timeout: Duration,
        why: String,
    },
    #[error("could not create the stats region {path}: other processes keep racing for it")]
    Busy { path: String },
    #[error("could not {op} the stats region {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("could not find a free base id in {first}..={last}")]
    NoFreeBaseId { first: u32, last: u32 },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &str, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                path: path.to_owned(),
                source,
            }
        } else {
            Error::Io {
                op,
                path: path.to_owned(),
                source,
            }
        }
    }

    /// The error for a header that `layout::decode_header` refused.
    pub(crate) fn header(path: &str, e: HeaderError) -> Error {
        let path = path.to_owned();
        match e {
            HeaderError::Version(found) => Error::Version {
                path,
                found,
                expected: layout::LAYOUT_VERSION,
            },
            HeaderError::Shrunk { len, expected } => Error::Shrunk {
                path,
                len,
                expected,
            },
            HeaderError::Magic(m) => Error::Corrupt {
                path,
                what: format!("magic {m:#018x}"),
            },
            HeaderError::TooShort(n) => Error::Corrupt {
                path,
                what: format!("{n} bytes, shorter than a header"),
            },
            HeaderError::NotReady => Error::Corrupt {
                path,
                what: "never finished initialising".to_owned(),
            },
            HeaderError::Inconsistent(what) => Error::Corrupt {
                path,
                what: format!("inconsistent {what}"),
            },
        }
    }
}
