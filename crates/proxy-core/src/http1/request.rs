//! A request head (Baton's own server loop reads these from clients), and whether the loop
//! serves it: HTTP/1.1, origin-form, exactly one `Host`, no body, no protocol switch, no
//! `Expect`, no `x-envoy-*` field, no `Connection` naming a field the proxy manages. Anything
//! else is left to hyper's session, untouched: hyper answers malformed and oversized heads (400,
//! 431), and [`crate::headers::check_request`] judges the rest there.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::{Method, Request, Uri};

use crate::headers::{is_envoy, is_managed, valid_host, Refusal};

use super::fields::has_token;
use super::names::NameCache;
use super::MAX_HEADERS;

/// Fields the loop records per request; a head with more goes to hyper.
pub const MAX_SERVED_FIELDS: usize = 64;

/// A field's position in the head: offsets and lengths of its name and value.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// What a request head says beyond its fields.
#[derive(Debug)]
pub struct Head {
    /// Its length in the buffer.
    pub len: usize,
    pub method: Method,
    target: (u32, u32),
    /// How many fields (their spans are in the scratch `Vec` given to [`parse`]).
    pub fields: usize,
    /// The client asked to close after the response.
    pub close: bool,
    /// `TE: trailers`: the client takes trailers.
    pub te_trailers: bool,
    /// Refused as it is, before anything else: answered (and the connection closed) with no
    /// request made of it.
    pub refusal: Option<Refusal>,
}

/// What the buffer holds.
#[derive(Debug)]
pub enum Parsed {
    Head(Head),
    Partial,
    /// Not Baton's loop's: hyper serves it.
    Hyper,
}

// === impl Head ===

impl Head {
    /// A head of `len` bytes refused as it is (see [`parse`]).
    fn refused(len: usize, refusal: Refusal) -> Self {
        Head {
            len,
            method: Method::GET,
            target: (0, 0),
            fields: 0,
            close: true,
            te_trailers: false,
            refusal: Some(refusal),
        }
    }
}

/// Parse a request head at the start of `buf`, its fields' positions into `spans`.
#[inline]
pub fn parse(buf: &[u8], spans: &mut Vec<Span>) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut r, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // hyper answers it (400, 431).
        Err(_) => return Parsed::Hyper,
    };
    if r.version != Some(1) {
        // HTTP/1.0 and what hyper refuses (426, 400).
        return Parsed::Hyper;
    }
    let (Some(method), Some(path)) = (r.method, r.path) else {
        return Parsed::Hyper;
    };
    if path.contains('#') {
        // A fragment is the client's own (RFC 9110 §4.2.5); hyper would drop it silently.
        return Parsed::Head(Head::refused(len, Refusal::BadTarget));
    }
    let method = served_method(method);
    // Absolute-form, asterisk-form, authority-form targets, many fields: hyper's (whatever
    // it is, the head is still looked at for what is refused as it is).
    let mut hyper =
        method.is_none() || !path.starts_with('/') || r.headers.len() > MAX_SERVED_FIELDS;
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
    let mut f = Framing::default();
    let mut close = false;
    let mut te_trailers = false;
    let mut host_seen = false;
    let mut bad_host = false;
    spans.clear();
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        // The fields that decide framing, switching or keep-alive, by their length first.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hyper |= host_seen;
                host_seen = true;
                bad_host |= !valid_host(h.value);
            }
            2 if name.eq_ignore_ascii_case(b"te") => {
                te_trailers = has_token(h.value, b"trailers");
            }
            6 if name.eq_ignore_ascii_case(b"expect") => hyper = true,
            7 if name.eq_ignore_ascii_case(b"upgrade") => hyper = true,
            10 if name.eq_ignore_ascii_case(b"connection") => match connection(h.value) {
                Some(c) => close |= c,
                None => hyper = true,
            },
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                hyper |= f.lengths > 0 || h.value.trim_ascii() != b"0";
                f.lengths += 1;
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                f.codings += 1;
                f.chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
                hyper = true;
            }
            // `x-envoy-*` from a client: hyper's path removes them.
            _ if is_envoy(name) => hyper = true,
            _ => {}
        }
        if !hyper {
            spans.push(Span {
                name: span(name),
                value: span(h.value),
            });
        }
    }
    if let Some(refusal) = f.refusal().or(bad_host.then_some(Refusal::BadHost)) {
        return Parsed::Head(Head::refused(len, refusal));
    }
    let Some(method) = method.filter(|_| !hyper && host_seen) else {
        return Parsed::Hyper;
    };
    Parsed::Head(Head {
        len,
        method,
        target: span(path.as_bytes()),
        fields: r.headers.len(),
        close,
        te_trailers,
        refusal: None,
    })
}

/// A head's framing fields, which hyper's parser reconciles where Baton refuses.
#[derive(Default)]
struct Framing {
    /// `Content-Length` lines.
    lengths: u32,
    /// `Transfer-Encoding` lines, and whether the last one is exactly `chunked`.
    codings: u32,
    chunked: bool,
}

impl Framing {
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3: a smuggling vector;
    /// hyper would drop the length and go on): 400. A coding other than exactly one `chunked`:
    /// 501, as Envoy.
    fn refusal(&self) -> Option<Refusal> {
        if self.codings > 0 && self.lengths > 0 {
            Some(Refusal::FramingConflict)
        } else if self.codings > 1 || (self.codings == 1 && !self.chunked) {
            Some(Refusal::UnsupportedTransferCoding)
        } else {
            None
        }
    }
}

/// A `Connection` value's tokens in one pass: whether it asks to close; `None` when the loop
/// does not serve it (a protocol switch, or a token naming a field the proxy manages).
fn connection(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for t in value.split(|&b| b == b',') {
        let t = t.trim_ascii();
        if t.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if t.eq_ignore_ascii_case(b"upgrade") || is_managed(t) {
            return None;
        }
    }
    Some(close)
}

fn served_method(method: &str) -> Option<Method> {
    match method {
        "GET" => Some(Method::GET),
        "HEAD" => Some(Method::HEAD),
        _ => match Method::from_bytes(method.as_bytes()) {
            Ok(m) if m != Method::CONNECT => Some(m),
            _ => None,
        },
    }
}

/// Fill `req` (a new request: its body already set) with what `head` describes, from `raw`
/// (the head's bytes, which its values and target become slices of), with a map from the pool
/// with room for `extra` more fields. False when a part of it does not convert (hyper then
/// judges it). In place: a request is a few hundred bytes, and a returned one is copied.
#[inline]
pub fn fill<B>(
    req: &mut Request<B>,
    head: &Head,
    raw: &Bytes,
    spans: &[Span],
    names: &mut NameCache,
    extra: usize,
) -> bool {
    let slice = |(start, len): (u32, u32)| raw.slice(start as usize..(start + len) as usize);
    let mut headers = crate::header_pool::take(head.fields + extra);
    for s in &spans[..head.fields] {
        let (start, len) = s.name;
        let name = names.find(&raw[start as usize..(start + len) as usize]);
        let value = http::HeaderValue::from_maybe_shared(slice(s.value)).ok();
        match (name, value) {
            (Some(n), Some(v)) => {
                headers.append(n, v);
            }
            _ => {
                crate::header_pool::give(headers);
                return false;
            }
        }
    }
    let Ok(uri) = Uri::from_maybe_shared(slice(head.target)) else {
        crate::header_pool::give(headers);
        return false;
    };
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(raw: &[u8]) -> Option<Request<()>> {
        let mut spans = Vec::new();
        match parse(raw, &mut spans) {
            Parsed::Head(h) => {
                let bytes = Bytes::copy_from_slice(&raw[..h.len]);
                let mut req = Request::new(());
                fill(&mut req, &h, &bytes, &spans, &mut NameCache::new(8), 0).then_some(req)
            }
            _ => None,
        }
    }

    fn verdict(raw: &[u8]) -> &'static str {
        match parse(raw, &mut Vec::new()) {
            Parsed::Head(_) => "served",
            Parsed::Partial => "partial",
            Parsed::Hyper => "hyper",
        }
    }

    #[test]
    fn common_requests_are_served() {
        let req = served(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-One: 1\r\nx-one: 2\r\n\r\n")
            .expect("served");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.headers()["host"], "x");
        let ones: Vec<_> = req.headers().get_all("x-one").iter().collect();
        assert_eq!(ones, ["1", "2"], "repeated fields kept in order");
        assert_eq!(
            verdict(b"DELETE / HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n"),
            "served"
        );
        assert_eq!(
            verdict(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x-hop\r\nx-envoyish: 1\r\n\r\n"),
            "served"
        );
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHost: x\r\n"), "partial");
        let mut spans = Vec::new();
        let Parsed::Head(h) = parse(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\nTE: trailers\r\n\r\n",
            &mut spans,
        ) else {
            panic!("served");
        };
        assert!(h.close && h.te_trailers, "`close` on a second line counts");
    }

    /// What hyper's session must see: a body, a switch, `Expect`, HTTP/1.0, a target that is
    /// not origin-form, CONNECT, a malformed head (hyper answers 400), too many fields.
    #[test]
    fn the_rest_goes_to_hyper() {
        let hyper: [&[u8]; 18] = [
            b"POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nconnection: Upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: h\r\nexpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            b"GET http://a.example/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nbad name: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            // What `check_request` judges on hyper's path: `Host` missing or twice, a
            // `Connection` naming a field the proxy manages, `x-envoy-*` from the client.
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Host\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-request-id\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nConnection: x-forwarded-for\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-envoy-internal\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Envoy-Internal: true\r\n\r\n",
        ];
        for raw in hyper {
            assert_eq!(verdict(raw), "hyper", "{:?}", String::from_utf8_lossy(raw));
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..=MAX_SERVED_FIELDS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(verdict(&many), "hyper");
    }

    /// Whatever this loop serves, hyper would have accepted as the same request.
    #[test]
    fn agrees_with_hyper_on_what_it_serves() {
        let raw: &[u8] = b"GET /x HTTP/1.1\r\nHost: h\r\nA: 1\r\n\r\n";
        let ours = served(raw).expect("served");
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut theirs = httparse::Request::new(&mut slots);
        assert!(theirs.parse(raw).expect("valid").is_complete());
        assert_eq!(Some(ours.method().as_str()), theirs.method);
        assert_eq!(Some(ours.uri().to_string().as_str()), theirs.path);
        assert_eq!(ours.headers().len(), theirs.headers.len());
    }
}
