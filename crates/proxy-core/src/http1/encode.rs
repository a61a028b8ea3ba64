//! Heads onto the wire: a request head (Baton's own client) and a response head (Baton's own
//! server loop, framed as hyper frames it), and the `date` field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::fields::{has_token, itoa_u64, parse_content_length, put_field};
use super::Framing;

/// The request head into `w` (cleared first): origin-form `target`, the fields but the framing
/// ones, and a `content-length` of `body_len` when there is a body or the method expects one.
pub fn request_head(
    w: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body_len: usize,
) {
    w.clear();
    w.extend_from_slice(method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(target.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_length = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            // Ours below: the buffered body is what goes out.
            has_length = true;
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        put_field(w, name.as_str().as_bytes(), value.as_bytes());
    }
    if body_len > 0 || has_length || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        put_field(
            w,
            b"content-length",
            itoa_u64(body_len as u64, &mut [0u8; 20]),
        );
    }
    w.extend_from_slice(b"\r\n");
}

/// The response head into `w`; how its body goes on the wire, and whether the connection stays
/// open after it. As hyper does: a `date` when there is none, `content-length` from an exact
/// body size (`exact_len`), chunked otherwise, and `connection: close` when the request asked
/// for it (`request_close`).
pub fn response_head(
    w: &mut Vec<u8>,
    parts: &http::response::Parts,
    exact_len: Option<u64>,
    head_request: bool,
    request_close: bool,
) -> (Framing, bool) {
    let status = parts.status;
    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    w.extend_from_slice(b"\r\n");
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut length: Option<Option<u64>> = None;
    let mut has_date = false;
    let mut close = request_close;
    let mut close_sent = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING {
            // The framing is ours to choose.
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if bodiless {
                continue;
            }
            length = Some(parse_content_length(value.as_bytes()));
        } else if *name == header::DATE {
            has_date = true;
        } else if *name == header::CONNECTION && has_token(value.as_bytes(), b"close") {
            close = true;
            close_sent = true;
        }
        put_field(w, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if bodiless {
        Framing::None
    } else {
        match length {
            Some(Some(n)) => Framing::Length(n),
            Some(None) => {
                close = true;
                Framing::Close
            }
            None => match exact_len {
                Some(n) => {
                    put_field(w, b"content-length", itoa_u64(n, &mut [0u8; 20]));
                    Framing::Length(n)
                }
                None if head_request => Framing::None,
                None => {
                    put_field(w, b"transfer-encoding", b"chunked");
                    Framing::Chunked
                }
            },
        }
    };
    if !has_date {
        DATE.with(|d| put_field(w, b"date", &d.now()));
    }
    if close && !close_sent {
        put_field(w, b"connection", b"close");
    }
    w.extend_from_slice(b"\r\n");
    let framing = if head_request { Framing::None } else { framing };
    (framing, !close)
}

thread_local! {
    static DATE: DateCache = const {
        DateCache { second: std::cell::Cell::new(u64::MAX), text: std::cell::Cell::new([0; 29]) }
    };
}

/// The `date` field's value, formatted once a second per thread.
struct DateCache {
    second: std::cell::Cell<u64>,
    text: std::cell::Cell<[u8; 29]>,
}

// === impl DateCache ===

impl DateCache {
    fn now(&self) -> [u8; 29] {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if second != self.second.get() {
            let text = httpdate::fmt_http_date(now);
            let mut out = [b' '; 29];
            let n = text.len().min(29);
            out[..n].copy_from_slice(&text.as_bytes()[..n]);
            self.text.set(out);
            self.second.set(second);
        }
        self.text.get()
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;
    use http::Response;

    use super::*;

    #[test]
    fn date_is_an_http_date() {
        let d = DATE.with(|d| d.now());
        let s = std::str::from_utf8(&d).expect("ascii");
        assert!(httpdate::parse_http_date(s).is_ok(), "{s}");
    }

    fn head_of(
        status: StatusCode,
        headers: &[(&'static str, &'static str)],
        exact: Option<u64>,
        head: bool,
        close: bool,
    ) -> (String, Framing, bool) {
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        for (k, v) in headers {
            resp.headers_mut().append(*k, HeaderValue::from_static(v));
        }
        let (parts, ()) = resp.into_parts();
        let mut w = Vec::new();
        let (f, keep) = response_head(&mut w, &parts, exact, head, close);
        (String::from_utf8(w).expect("ascii"), f, keep)
    }

    #[test]
    fn response_heads() {
        let (h, f, keep) = head_of(
            StatusCode::OK,
            &[("content-length", "5"), ("date", "x")],
            Some(0),
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\n\r\n");
        assert_eq!((f, keep), (Framing::Length(5), true));

        let (h, f, keep) = head_of(StatusCode::OK, &[("date", "x")], Some(5), false, true);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
        assert_eq!((f, keep), (Framing::Length(5), false));

        let (h, f, _) = head_of(
            StatusCode::NO_CONTENT,
            &[("date", "x"), ("content-length", "0")],
            Some(0),
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
        assert_eq!(f, Framing::None);

        let (h, f, keep) = head_of(
            StatusCode::OK,
            &[
                ("date", "x"),
                ("connection", "close"),
                ("transfer-encoding", "chunked"),
            ],
            Some(1),
            true,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"
        );
        assert_eq!(
            (f, keep),
            (Framing::None, false),
            "HEAD: no body; the response's close is kept"
        );

        let (h, _, _) = head_of(StatusCode::OK, &[], Some(0), false, false);
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: "),
            "{h}"
        );
        let (h, f, _) = head_of(StatusCode::OK, &[("date", "x")], None, false, false);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ndate: x\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(f, Framing::Chunked);
    }

    #[test]
    fn request_heads() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.insert("content-length", HeaderValue::from_static("99"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut w = Vec::new();
        request_head(&mut w, &Method::POST, "/p", &h, 3);
        assert_eq!(
            w,
            b"POST /p HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
        );
        request_head(&mut w, &Method::GET, "/", &HeaderMap::new(), 0);
        assert_eq!(w, b"GET / HTTP/1.1\r\n\r\n");
        request_head(&mut w, &Method::PUT, "/", &HeaderMap::new(), 0);
        assert_eq!(w, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }
}
