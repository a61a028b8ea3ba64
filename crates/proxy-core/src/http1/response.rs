//! A response head (Baton's own client reads these from upstreams): its status, framing and
//! keep-alive, and its fields without the hop-by-hop ones (RFC 9110 §7.6.1), as
//! `strip_hop_by_hop` would leave them.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::fields::parse_content_length;
use super::names::{Kind, NameCache};
use super::{Framing, MAX_HEADERS};

/// A field of the head being parsed: its name (`None` for a Connection field, kept for the
/// names it lists) and where its value lies in the head.
#[derive(Debug)]
pub struct Field {
    name: Option<HeaderName>,
    start: usize,
    len: usize,
}

/// A final (non-1xx) response head.
#[derive(Debug)]
pub struct Head {
    /// Its length in the buffer.
    pub len: usize,
    pub status: StatusCode,
    pub http10: bool,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// Fields that go into the map.
    kept: usize,
    /// A Connection field names fields other than `close` / `keep-alive`: they are removed.
    names_others: bool,
}

/// What the buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes needed.
    Partial,
    /// A 1xx head of this length (never forwarded).
    Informational(usize),
    Final(Head),
}

/// Why a response head is refused (the upstream's fault: Envoy's 502 `UPE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    #[error("could not parse the response head: {0}")]
    Syntax(httparse::Error),
    #[error("status code out of range")]
    Status,
    #[error("101 Switching Protocols that was not asked for")]
    UnaskedSwitch,
    #[error("invalid field name")]
    Name,
    #[error("invalid or conflicting content-length")]
    ContentLength,
    #[error("transfer-encoding in an HTTP/1.0 response")]
    ChunkedHttp10,
    #[error("both transfer-encoding and content-length")]
    TwoFramings,
    #[error("invalid field value")]
    Value,
}

/// Parse a response head at the start of `buf`. `head_request`: the request was HEAD (no body
/// follows whatever the head says). `names` caches field names; `fields` is scratch space, kept
/// for its capacity, that [`headers`] reads next.
///
/// Always inlined: with a second caller (the health checker's probe) LLVM stopped inlining it
/// into the proxied request's path, which cost ~170 instructions per keep-alive request
/// (callgrind, `benches/load/callgrind.sh`).
#[inline(always)]
pub fn parse(
    buf: &[u8],
    head_request: bool,
    names: &mut NameCache,
    fields: &mut Vec<Field>,
) -> Result<Parsed, Invalid> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut r, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(Invalid::Syntax(e)),
    };
    let status = StatusCode::from_u16(r.code.unwrap_or(0)).map_err(|_| Invalid::Status)?;
    if status.is_informational() {
        // 100 Continue, 103 Early Hints: not forwarded; 101 was never asked for.
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Invalid::UnaskedSwitch);
        }
        return Ok(Parsed::Informational(n));
    }
    let http10 = r.version == Some(0);
    let base = buf.as_ptr() as usize;
    let mut framing: Option<Framing> = None;
    let mut length: Option<u64> = None;
    let mut close = http10;
    let mut names_others = false;
    fields.clear();
    let mut kept = 0;
    for (i, h) in r.headers.iter().enumerate() {
        let (name, kind) = names.get(i, h.name.as_bytes()).ok_or(Invalid::Name)?;
        match kind {
            Kind::ContentLength => {
                let v = parse_content_length(h.value).ok_or(Invalid::ContentLength)?;
                if length.is_some_and(|l| l != v) {
                    return Err(Invalid::ContentLength);
                }
                length = Some(v);
            }
            Kind::TransferEncoding => {
                // Only a final `chunked` delimits the body; anything else runs to the close.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                framing = Some(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    Framing::Chunked
                } else {
                    Framing::Close
                });
            }
            Kind::Connection => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        if http10 {
                            close = false;
                        }
                    } else if !token.is_empty() {
                        names_others = true;
                    }
                }
            }
            Kind::Hop | Kind::Te | Kind::Other => {}
        }
        let hop = match kind {
            Kind::TransferEncoding | Kind::Connection | Kind::Hop => true,
            Kind::Te => h.value != b"trailers",
            Kind::ContentLength | Kind::Other => false,
        };
        // Connection fields are kept (not for the map) for the names they list.
        if !hop || kind == Kind::Connection {
            kept += usize::from(!hop);
            fields.push(Field {
                name: (!hop).then_some(name),
                start: h.value.as_ptr() as usize - base,
                len: h.value.len(),
            });
        }
    }
    let framing = body_framing(head_request, status, http10, framing, length)?;
    Ok(Parsed::Final(Head {
        len: n,
        status,
        http10,
        framing,
        keep_alive: !close && framing != Framing::Close,
        kept,
        names_others,
    }))
}

/// How the body is delimited (RFC 9112 §6.3).
fn body_framing(
    head_request: bool,
    status: StatusCode,
    http10: bool,
    transfer: Option<Framing>,
    length: Option<u64>,
) -> Result<Framing, Invalid> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    match (transfer, length) {
        // Transfer-Encoding is not HTTP/1.0's.
        (Some(_), _) if http10 => Err(Invalid::ChunkedHttp10),
        // Both: the message could be read two ways (a smuggling vector); RFC 9112 §6.3 lets a
        // proxy reject it, and the connection is not reused either way.
        (Some(_), Some(_)) => Err(Invalid::TwoFramings),
        (Some(f), None) => Ok(f),
        (None, Some(l)) => Ok(Framing::Length(l)),
        (None, None) => Ok(Framing::Close),
    }
}

/// The fields [`parse`] kept, as a map from the pool with room for `extra` more. `head`: the
/// head's bytes, which the values become slices of.
#[inline]
pub fn headers(
    parsed: &Head,
    head: &Bytes,
    fields: &mut [Field],
    extra: usize,
) -> Result<HeaderMap, Invalid> {
    let mut headers = crate::header_pool::take(parsed.kept + extra);
    for f in fields.iter_mut() {
        if let Some(name) = f.name.take() {
            let value = head.slice(f.start..f.start + f.len);
            let Ok(value) = HeaderValue::from_maybe_shared(value) else {
                crate::header_pool::give(headers);
                return Err(Invalid::Value);
            };
            headers.append(name, value);
        }
    }
    if parsed.names_others {
        for f in fields.iter() {
            if f.name.is_none() {
                for token in head[f.start..f.start + f.len].split(|&b| b == b',') {
                    if let Ok(token) = std::str::from_utf8(token.trim_ascii()) {
                        headers.remove(token);
                    }
                }
            }
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(raw: &[u8], head_request: bool) -> Result<(Head, HeaderMap), Invalid> {
        let mut names = NameCache::new(8);
        let mut fields = Vec::new();
        match parse(raw, head_request, &mut names, &mut fields)? {
            Parsed::Final(h) => {
                let bytes = Bytes::copy_from_slice(&raw[..h.len]);
                let map = headers(&h, &bytes, &mut fields, 1)?;
                Ok((h, map))
            }
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn framing_and_keep_alive() {
        let (h, m) =
            parse_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false).expect("valid");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (StatusCode::OK, Framing::Length(5), true)
        );
        assert_eq!(m["content-length"], "5");
        let (h, m) = parse_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n",
            false,
        )
        .expect("valid");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(m.is_empty(), "hop-by-hop fields are left out: {m:?}");
        let (h, _) = parse_all(b"HTTP/1.1 200 OK\r\n\r\n", false).expect("valid");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let (h, _) = parse_all(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false).expect("ok");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let (h, _) = parse_all(
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n",
            false,
        )
        .expect("ok");
        assert!(h.keep_alive);
        let (h, _) = parse_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).expect("ok");
        assert_eq!(h.framing, Framing::Length(0), "HEAD: no body");
        let (h, _) = parse_all(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            false,
        )
        .expect("ok");
        assert_eq!(h.framing, Framing::Length(0));
    }

    #[test]
    fn refused_heads() {
        let bad: [(&[u8], Invalid); 6] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                Invalid::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                Invalid::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
                Invalid::TwoFramings,
            ),
            (
                b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Invalid::ChunkedHttp10,
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                Invalid::UnaskedSwitch,
            ),
            (
                b"HTTP/1.1 200 OK\r\nfoo: a\x01b\r\n\r\n",
                Invalid::Syntax(httparse::Error::HeaderValue),
            ),
        ];
        for (raw, want) in bad {
            let got = parse_all(raw, false).map(|(h, _)| h.status);
            assert_eq!(got, Err(want), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn connection_names_fields_to_drop() {
        let (_, m) = parse_all(
            b"HTTP/1.1 200 OK\r\nconnection: x-a, close\r\nx-a: 1\r\nx-b: 2\r\nkeep-alive: t\r\nte: trailers\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .expect("valid");
        assert!(m.get("x-a").is_none());
        assert_eq!(m["x-b"], "2");
        assert!(m.get("keep-alive").is_none());
        assert_eq!(m["te"], "trailers", "TE: trailers is end-to-end");
    }

    #[test]
    fn informational_and_partial() {
        let mut names = NameCache::new(8);
        let mut fields = Vec::new();
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        match parse(raw, false, &mut names, &mut fields) {
            Ok(Parsed::Informational(n)) => {
                assert_eq!(n, 25);
                assert!(matches!(
                    parse(&raw[n..], false, &mut names, &mut fields),
                    Ok(Parsed::Partial)
                ));
            }
            other => panic!("{other:?}"),
        }
    }
}
