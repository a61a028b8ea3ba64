//! hotrestart-rpc: the messages one Baton generation exchanges with the next over a Unix domain
//! socket, their framing and version negotiation, and passing listen sockets with SCM_RIGHTS.
//!
//! It owns bytes and file descriptors on the wire and nothing else: no tokio runtime, no policy
//! about *when* a restart happens (that is `proxy-bin`'s), no knowledge of HTTP.
//!
//! The crate starts with the protocol version only; the messages arrive with the hot restart
//! issue. Unsafe code (fd passing) will live in exactly one module here.
#![deny(unsafe_code)]

/// Version of the generation-to-generation protocol. A peer speaking another version is refused
/// with a clear message, never aborted.
pub const PROTOCOL_VERSION: u32 = 1;
