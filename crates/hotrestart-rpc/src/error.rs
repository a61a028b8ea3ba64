//! The crate's error type: every way an exchange between generations can fail, typed so the
//! caller can tell a refusal (version mismatch, foreign uid) from a broken peer or a timeout.

use std::io;
use std::time::Duration;

use crate::pb::RefusalReason;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between two generations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the restart socket failed.
    #[error("could not {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// No progress within the caller's timeout.
    #[error("could not {op}: timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },

    /// The peer closed the connection (at a frame boundary when `mid_frame` is false).
    #[error("could not read a frame: peer closed the connection{}", if *mid_frame { " in the middle of a frame" } else { "" })]
    PeerClosed { mid_frame: bool },

    /// The bytes do not start with this protocol's frame magic: not a Baton peer.
    #[error("could not decode a frame: bad magic {found:02x?} (not a Baton hot restart peer)")]
    BadMagic { found: [u8; 4] },

    /// The frame header has a layout version this build does not know.
    #[error("could not decode a frame: unsupported frame version {found} (this build speaks {supported})")]
    FrameVersion { found: u8, supported: u8 },

    /// Reserved header bits are set.
    #[error("could not decode a frame: reserved header byte is {found:#04x}, expected 0")]
    ReservedBits { found: u8 },

    /// The frame declares a payload larger than the limit.
    #[error("could not accept a frame of {len} bytes: limit is {max}")]
    FrameTooLarge { len: usize, max: usize },

    /// The frame declares (or a sender asked for) more fds than one message may carry.
    #[error("could not accept a frame carrying {count} fds: limit is {max}")]
    TooManyFds { count: usize, max: usize },

    /// Fewer bytes than the frame needs.
    #[error("could not decode a frame: truncated, need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },

    /// Bytes after the end of a frame where none were expected.
    #[error("could not decode a frame: {extra} trailing bytes after the frame")]
    TrailingBytes { extra: usize },

    /// The payload is not a valid protobuf envelope.
    #[error("could not decode a message: {source}")]
    Decode {
        #[source]
        source: prost::DecodeError,
    },

    /// The envelope has no body this build knows (a newer peer's message, or an empty one).
    #[error("could not understand a message: no known body (id {id})")]
    UnknownBody { id: u64 },

    /// The number of fds received differs from the number the frame header declared.
    #[error("could not accept a frame: it declares {declared} fds but {received} arrived")]
    FdCountMismatch { declared: usize, received: usize },

    /// The kernel truncated the ancillary data (MSG_CTRUNC): fds were lost.
    #[error("could not receive fds: ancillary data truncated (MSG_CTRUNC)")]
    ControlTruncated,

    /// A listen-socket batch's manifest does not describe exactly the fds that came with it.
    #[error(
        "could not accept listen sockets: manifest lists {manifests} sockets but {fds} fds arrived"
    )]
    ManifestMismatch { manifests: usize, fds: usize },

    /// A manifest entry is unusable.
    #[error("could not accept listen socket #{index}: {reason}")]
    InvalidManifest { index: usize, reason: String },

    /// Batches arrived out of order or with inconsistent totals.
    #[error("could not accept listen sockets: {reason}")]
    BadBatch { reason: String },

    /// The handshake was refused (version mismatch, wrong epoch ...): on the child, by its parent;
    /// on the parent, the refusal it sent.
    #[error("could not hot restart: handshake refused ({reason:?}): {detail}")]
    Refused {
        reason: RefusalReason,
        detail: String,
    },

    /// A peer's credentials (SO_PEERCRED) are not allowed: another uid, not root.
    #[error("could not accept peer pid {pid} uid {uid}: only uid {expected} or root may connect")]
    PeerRefused { pid: i32, uid: u32, expected: u32 },

    /// A reply of the wrong kind arrived.
    #[error("could not use reply: expected {expected}, got {got}")]
    UnexpectedMessage {
        expected: &'static str,
        got: &'static str,
    },

    /// A reply echoes another request's id.
    #[error("could not use reply: expected id {expected}, got {got}")]
    IdMismatch { expected: u64, got: u64 },

    /// The peer answered with a failed StatusReply.
    #[error("could not {op}: the peer answered: {error}")]
    Remote { op: &'static str, error: String },

    /// The peer does not know the request (it is older than us).
    #[error("could not {op}: the peer does not know this request: {detail}")]
    NotSupported { op: &'static str, detail: String },

    /// A Unix socket address is unusable.
    #[error("could not use restart socket address {address}: {reason}")]
    BadAddress { address: String, reason: String },

    /// A live process already listens on the restart socket.
    #[error("could not bind restart socket {address}: a live process listens there")]
    AddressInUse { address: String },
}

// === impl Error ===

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Self::Io { op, source }
    }

    pub(crate) fn errno(op: &'static str, errno: nix::errno::Errno) -> Self {
        Self::Io {
            op,
            source: io::Error::from(errno),
        }
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// True when nobody listens at the restart socket (no parent): connection refused or no
    /// such socket file.
    pub fn is_no_peer(&self) -> bool {
        matches!(self, Self::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound))
    }

    /// True when the peer closed the connection cleanly between frames.
    pub fn is_clean_close(&self) -> bool {
        matches!(self, Self::PeerClosed { mid_frame: false })
    }
}
