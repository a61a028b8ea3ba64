//! HTTP/1.1 on the wire, pure over bytes: heads parsed and encoded, bodies framed, limits. No
//! sockets, no clocks but the `date` cache: Baton's own server loop
//! ([`crate::downstream`]) and its own client ([`crate::client`]) both use it, and it is tested
//! on `&[u8]`.
//!
//! - [`fields`]: field values (tokens, content-length, numbers) and writing a field;
//! - [`names`]: field names as sent, cached, with what they mean to framing;
//! - [`request`]: a request head, and whether Baton's loop serves it;
//! - [`response`]: a response head, its framing and keep-alive;
//! - [`chunked`]: chunk-size lines;
//! - [`encode`]: request and response heads onto the wire.

pub mod chunked;
pub mod encode;
pub mod fields;
pub mod names;
pub mod request;
pub mod response;

/// Fields accepted in one head (hyper's limit too).
pub const MAX_HEADERS: usize = 100;
/// hyper's smallest read-buffer limit, and so the smallest head limit.
pub const MIN_HEAD_LIMIT: usize = 8192;
/// The longest response head accepted from an upstream (502 beyond): Envoy's default request
/// head limit, `max_request_headers_kb: 60`, applied to responses too.
pub const MAX_RESPONSE_HEAD: usize = 60 * 1024;
/// Read-buffer space asked of the socket per read.
pub const READ_SIZE: usize = 8192;

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes at all (a response to HEAD, 1xx, 204, 304, when writing).
    None,
    /// This many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}
