//! `envoy.filters.listener.http_inspector`: a cleartext connection's first bytes are peeked
//! (never consumed) until they are an HTTP/1.x request line (`http/1.1`, or `http/1.0` for any
//! other minor version), the HTTP/2 prior-knowledge preface (`h2c`), or neither; what was found
//! is the connection's application protocol for `filter_chain_match.application_protocols`.

use std::io;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::io::H2_PREFACE;

/// The longest request line looked at.
const MAX_LINE: usize = 64 * 1024;

/// What the first bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Http10,
    Http11,
    H2c,
    NotHttp,
}

impl Found {
    /// The application protocol chains match on.
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            Found::Http10 => Some("http/1.0"),
            Found::Http11 => Some("http/1.1"),
            Found::H2c => Some("h2c"),
            Found::NotHttp => None,
        }
    }
}

/// Peek at `stream` until its first bytes tell. `Ok(None)`: the peer closed first.
pub async fn inspect(stream: &TcpStream) -> io::Result<Option<Found>> {
    let mut buf = vec![0u8; 1024];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(found) = examine(&buf[..n]) {
            return Ok(Some(found));
        }
        if n == buf.len() {
            if n >= MAX_LINE {
                return Ok(Some(Found::NotHttp));
            }
            buf.resize((n * 4).min(MAX_LINE), 0);
        } else if n == seen {
            // Nothing new since the last peek: wait for more bytes (see `tls_inspector`).
            let _ = stream.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
        seen = n;
    }
}

/// What `buf` is, or `None` while more bytes could still decide.
fn examine(buf: &[u8]) -> Option<Found> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        if n == H2_PREFACE.len() {
            return Some(Found::H2c);
        }
        // A prefix of the preface is also the start of a `PRI` request line.
        if let Some(f) = request_line(buf) {
            return (f != Found::NotHttp).then_some(f);
        }
        return None;
    }
    request_line(buf)
}

/// `METHOD SP target SP HTTP/1.d CRLF`, the method in upper-case letters (as Envoy's parser
/// takes it); `None` while incomplete but not yet wrong.
fn request_line(buf: &[u8]) -> Option<Found> {
    let method_end = buf.iter().position(|&b| b == b' ');
    let method = &buf[..method_end.unwrap_or(buf.len())];
    if !method.iter().all(u8::is_ascii_uppercase) || (method_end.is_some() && method.is_empty()) {
        return Some(Found::NotHttp);
    }
    let rest = &buf[method_end? + 1..];
    let Some(eol) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return rest
            .iter()
            .any(|b| b.is_ascii_control())
            .then_some(Found::NotHttp);
    };
    if rest[eol] != b'\r' || rest.get(eol + 1).is_some_and(|&b| b != b'\n') {
        return Some(Found::NotHttp);
    }
    if rest.len() == eol + 1 {
        return None;
    }
    let line = &rest[..eol];
    let Some(sp) = line.iter().rposition(|&b| b == b' ') else {
        return Some(Found::NotHttp);
    };
    let (target, version) = (&line[..sp], &line[sp + 1..]);
    match version {
        _ if target.is_empty() || target.contains(&b' ') => Some(Found::NotHttp),
        b"HTTP/1.1" => Some(Found::Http11),
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => Some(Found::Http10),
        _ => Some(Found::NotHttp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_and_the_preface_as_envoy_tells_them() {
        // What Envoy 1.40's HTTP inspector found for each of these.
        assert_eq!(
            examine(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
            Some(Found::Http11)
        );
        assert_eq!(examine(b"GET / HTTP/1.0\r\n\r\n"), Some(Found::Http10));
        assert_eq!(examine(b"GET /x HTTP/1.2\r\n\r\n"), Some(Found::Http10));
        assert_eq!(examine(b"FOO /x HTTP/1.1\r\n\r\n"), Some(Found::Http11));
        assert_eq!(examine(H2_PREFACE), Some(Found::H2c));
        assert_eq!(examine(b"hello world\r\n"), Some(Found::NotHttp));
        assert_eq!(examine(b"get / HTTP/1.1\r\n\r\n"), Some(Found::NotHttp));
        assert_eq!(examine(b"\x16\x03\x01"), Some(Found::NotHttp));
        // Not yet decided.
        assert_eq!(examine(b"GET / HTTP/1.1"), None);
        assert_eq!(examine(b"G"), None);
        assert_eq!(examine(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(examine(b"GET / HTTP/1.1\r"), None);
    }
}
