//! Header handling on the request path: hop-by-hop removal (RFC 9110 §7.6.1), the
//! `x-forwarded-*` headers, request ids and upgrade detection. Pure functions over a
//! [`HeaderMap`], benchmarked in `benches/headers.rs`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The upgrade a request asks for (`Connection: upgrade` + `Upgrade: <type>`).
pub fn upgrade_type(h: &HeaderMap) -> Option<&str> {
    let up = h.get(header::UPGRADE)?.to_str().ok()?;
    let conn_has_upgrade = h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    conn_has_upgrade.then_some(up)
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), keeping `Connection: upgrade` and `Upgrade`
/// for a protocol switch.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names is cheaper than six hashed removals.
    let any = h.keys().any(|k| {
        matches!(
            k.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
        )
    });
    if !any {
        return;
    }
    // A clone of the value is a reference count, not a copy; removing by `&str` looks the name
    // up case-insensitively without building a `HeaderName` (an allocation for custom names).
    if let Some(conn) = h.get(header::CONNECTION).cloned() {
        for t in conn.to_str().unwrap_or("").split(',') {
            let t = t.trim();
            if !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")) {
                h.remove(t);
            }
        }
        if !keep_upgrade {
            h.remove(header::CONNECTION);
        }
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    if !keep_upgrade {
        h.remove(header::UPGRADE);
    }
    if let Some(te) = h.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            h.remove(header::TE);
        }
    }
}

/// Prepare a request's headers for the upstream: hop-by-hop removed, `x-forwarded-for` (with
/// `use_remote_address`, the peer appended) and `x-forwarded-proto` (`https` when the
/// downstream connection is TLS).
pub fn prepare_request_headers(
    h: &mut HeaderMap,
    remote: SocketAddr,
    use_remote_address: bool,
    keep_upgrade: bool,
    tls: bool,
) {
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    strip_hop_by_hop(h, keep_upgrade);
    if use_remote_address {
        let prev = h
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .filter(|p| !p.is_empty());
        // One allocation: 39 bytes is the longest IPv6 address text.
        let mut value = String::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
        if let Some(prev) = prev {
            value.push_str(prev);
            value.push_str(", ");
        }
        // Writing to a `String` cannot fail.
        let _ = write!(value, "{}", remote.ip());
        if let Ok(v) = HeaderValue::try_from(value) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        h.insert(X_FORWARDED_PROTO.clone(), proto);
    } else if !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO.clone(), proto);
    }
}

/// A random UUID v4 for `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    // Version 4 and the RFC 4122 variant.
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut nibble = 0;
    for (i, byte) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *byte = b'-';
            continue;
        }
        *byte = HEX[((bits >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn strip_removes_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "Keep-Alive, X-Hop ,, bad name, upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-end", "2"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&[("host", "a"), ("x-end", "2")]));
    }

    #[test]
    fn strip_keeps_upgrade_and_te_trailers() {
        let mut h = map(&[
            ("connection", "x-hop, Upgrade"),
            ("x-hop", "1"),
            ("upgrade", "websocket"),
            ("te", "Trailers"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h,
            map(&[
                ("connection", "x-hop, Upgrade"),
                ("upgrade", "websocket"),
                ("te", "Trailers"),
            ])
        );
        assert_eq!(upgrade_type(&h), Some("websocket"));
    }

    #[test]
    fn strip_without_keep_upgrade_removes_upgrade_named_in_connection() {
        let mut h = map(&[
            ("connection", "upgrade"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&[("te", "trailers")]));
    }

    #[test]
    fn prepare_appends_remote_address_and_sets_proto() {
        let remote: SocketAddr = ([192, 0, 2, 1], 4000).into();
        let mut h = map(&[("x-forwarded-for", "203.0.113.9"), ("connection", "close")]);
        prepare_request_headers(&mut h, remote, true, false, false);
        assert_eq!(
            h,
            map(&[
                ("x-forwarded-for", "203.0.113.9, 192.0.2.1"),
                ("x-forwarded-proto", "http"),
            ])
        );
        let v6: SocketAddr = "[2001:db8::ff00:42:8329]:443".parse().unwrap_or(remote);
        let mut h = map(&[("x-forwarded-for", "")]);
        prepare_request_headers(&mut h, v6, true, false, false);
        assert_eq!(
            h,
            map(&[
                ("x-forwarded-for", "2001:db8::ff00:42:8329"),
                ("x-forwarded-proto", "http"),
            ])
        );
        let mut h = map(&[("x-forwarded-proto", "https")]);
        prepare_request_headers(&mut h, remote, false, false, false);
        assert_eq!(h, map(&[("x-forwarded-proto", "https")]));
        // Over TLS, with use_remote_address, Baton sets the scheme it saw.
        let mut h = map(&[("x-forwarded-proto", "http")]);
        prepare_request_headers(&mut h, remote, true, false, true);
        assert_eq!(
            h,
            map(&[
                ("x-forwarded-for", "192.0.2.1"),
                ("x-forwarded-proto", "https"),
            ])
        );
    }

    #[test]
    fn request_id_is_a_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap_or_default();
        assert_eq!(s.len(), 36);
        assert_eq!(s.as_bytes()[14], b'4');
        assert!(matches!(s.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(new_request_id(), id);
    }
}
