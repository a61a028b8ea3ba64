//! Header handling on the request path: hop-by-hop removal (RFC 9110 §7.6.1), the
//! `x-forwarded-*` headers, request ids and upgrade detection. Pure functions over a
//! [`HeaderMap`], benchmarked in `benches/headers.rs`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

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
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: Upgrade) {
    let keep_upgrade = upgrade == Upgrade::Keep;
    const CONNECTION: u8 = 1;
    const KEEP_ALIVE_: u8 = 2;
    const PROXY_CONNECTION_: u8 = 4;
    const TRANSFER_ENCODING: u8 = 8;
    const UPGRADE: u8 = 16;
    const TE: u8 = 32;
    // One pass over the names finds which are present (most messages carry none, or only
    // `Connection: keep-alive`): only those are then removed, each removal being a hashed lookup.
    let mut present = 0u8;
    for k in h.keys() {
        present |= match k.as_str() {
            "connection" => CONNECTION,
            "keep-alive" => KEEP_ALIVE_,
            "proxy-connection" => PROXY_CONNECTION_,
            "transfer-encoding" => TRANSFER_ENCODING,
            "upgrade" => UPGRADE,
            "te" => TE,
            _ => 0,
        };
    }
    if present == 0 {
        return;
    }
    let mut remove_te = false;
    // A clone of the value is a reference count, not a copy; removing by `&str` looks the name
    // up case-insensitively without building a `HeaderName` (an allocation for custom names).
    if present & CONNECTION != 0 {
        // Unless kept, `Connection` goes first: `remove` hands back its (first) value, one
        // hashed lookup instead of a get and a remove.
        let conn = if keep_upgrade {
            h.get(header::CONNECTION).cloned()
        } else {
            h.remove(header::CONNECTION)
        };
        if let Some(conn) = conn {
            for t in conn.to_str().unwrap_or("").split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("upgrade") {
                    // Handled below with the fixed hop-by-hop set (`upgrade` only when not
                    // kept for a protocol switch).
                } else if t.eq_ignore_ascii_case("te") {
                    remove_te = true;
                } else if !t.is_empty() {
                    h.remove(t);
                }
            }
        }
    }
    if present & KEEP_ALIVE_ != 0 {
        h.remove(&KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_ != 0 {
        h.remove(&PROXY_CONNECTION);
    }
    if present & TRANSFER_ENCODING != 0 {
        h.remove(header::TRANSFER_ENCODING);
    }
    if present & UPGRADE != 0 && !keep_upgrade {
        h.remove(header::UPGRADE);
    }
    if present & TE != 0 {
        let trailers_only = h
            .get(header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if remove_te || !trailers_only {
            h.remove(header::TE);
        }
    }
}

/// Whether a protocol switch's `Upgrade` / `Connection: upgrade` stay (a request or response of
/// a switch being forwarded) or go with the other hop-by-hop fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    Strip,
    Keep,
}

/// What the downstream connection tells the upstream in `x-forwarded-*`.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded {
    /// The downstream peer.
    pub remote: SocketAddr,
    /// `use_remote_address`: the peer is appended to `x-forwarded-for`, and
    /// `x-forwarded-proto` is set (not only kept).
    pub use_remote_address: bool,
    /// The downstream connection is TLS (`x-forwarded-proto: https`).
    pub tls: bool,
}

impl Forwarded {
    pub fn of(remote: SocketAddr, use_remote_address: bool, tls: bool) -> Self {
        Self {
            remote,
            use_remote_address,
            tls,
        }
    }
}

/// Prepare a request's headers for the upstream: hop-by-hop removed, `x-forwarded-for` (with
/// `use_remote_address`, the peer appended) and `x-forwarded-proto` (`https` when the
/// downstream connection is TLS).
pub fn prepare_request_headers(h: &mut HeaderMap, fwd: Forwarded, upgrade: Upgrade) {
    let Forwarded {
        remote,
        use_remote_address,
        tls,
    } = fwd;
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    strip_hop_by_hop(h, upgrade);
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
    } else {
        // One hashed lookup: kept when present, set when absent.
        h.entry(&X_FORWARDED_PROTO).or_insert(proto);
    }
}

/// A random UUID v4 for `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    let mut bits = fastrand::u128(..);
    // Version 4 and the RFC 4122 variant.
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    HeaderValue::from_bytes(&uuid_text(bits)).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `bits` in the 8-4-4-4-12 hex form of a UUID.
fn uuid_text(bits: u128) -> [u8; 36] {
    /// Where each byte's two digits go: a dash before bytes 4, 6, 8 and 10. Constant
    /// positions let the compiler drop the bounds checks.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; 36];
    for (byte, at) in bits.to_be_bytes().into_iter().zip(AT) {
        let [hi, lo] = HEX_PAIRS[usize::from(byte)];
        out[at] = hi;
        out[at + 1] = lo;
    }
    out
}

/// Each byte's two lowercase hex digits: one lookup per byte instead of two.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

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
        strip_hop_by_hop(&mut h, Upgrade::Strip);
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
        strip_hop_by_hop(&mut h, Upgrade::Keep);
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
        strip_hop_by_hop(&mut h, Upgrade::Strip);
        assert_eq!(h, map(&[("te", "trailers")]));
    }

    #[test]
    fn strip_te_named_in_connection_and_keep_alive_only() {
        let mut h = map(&[("connection", "TE, close"), ("te", "trailers"), ("x", "1")]);
        strip_hop_by_hop(&mut h, Upgrade::Strip);
        assert_eq!(h, map(&[("x", "1")]));
        let mut h = map(&[("connection", "keep-alive"), ("server", "o")]);
        strip_hop_by_hop(&mut h, Upgrade::Strip);
        assert_eq!(h, map(&[("server", "o")]));
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, Upgrade::Keep);
        assert_eq!(
            h,
            map(&[("connection", "upgrade"), ("upgrade", "websocket")])
        );
    }

    #[test]
    fn prepare_appends_remote_address_and_sets_proto() {
        let remote: SocketAddr = ([192, 0, 2, 1], 4000).into();
        let mut h = map(&[("x-forwarded-for", "203.0.113.9"), ("connection", "close")]);
        prepare_request_headers(&mut h, Forwarded::of(remote, true, false), Upgrade::Strip);
        assert_eq!(
            h,
            map(&[
                ("x-forwarded-for", "203.0.113.9, 192.0.2.1"),
                ("x-forwarded-proto", "http"),
            ])
        );
        let v6: SocketAddr = "[2001:db8::ff00:42:8329]:443".parse().unwrap_or(remote);
        let mut h = map(&[("x-forwarded-for", "")]);
        prepare_request_headers(&mut h, Forwarded::of(v6, true, false), Upgrade::Strip);
        assert_eq!(
            h,
            map(&[
                ("x-forwarded-for", "2001:db8::ff00:42:8329"),
                ("x-forwarded-proto", "http"),
            ])
        );
        let mut h = map(&[("x-forwarded-proto", "https")]);
        prepare_request_headers(&mut h, Forwarded::of(remote, false, false), Upgrade::Strip);
        assert_eq!(h, map(&[("x-forwarded-proto", "https")]));
        // Over TLS, with use_remote_address, Baton sets the scheme it saw.
        let mut h = map(&[("x-forwarded-proto", "http")]);
        prepare_request_headers(&mut h, Forwarded::of(remote, true, true), Upgrade::Strip);
        assert_eq!(
            h,
            map(&[
                ("x-forwarded-for", "192.0.2.1"),
                ("x-forwarded-proto", "https"),
            ])
        );
    }

    #[test]
    fn uuid_text_is_8_4_4_4_12_lowercase_hex() {
        assert_eq!(
            &uuid_text(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            b"01234567-89ab-cdef-fedc-ba9876543210"
        );
        assert_eq!(&uuid_text(0), b"00000000-0000-0000-0000-000000000000");
        assert_eq!(
            &uuid_text(u128::MAX),
            b"ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
    }

    #[test]
    fn request_id_is_a_uuid_v4() {
        let id = new_request_id();
        let s = id.to_str().unwrap_or_default();
        assert_eq!(s.len(), 36);
        assert_eq!(s.as_bytes()[14], b'4');
        assert!(matches!(s.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        for (i, c) in s.bytes().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, b'-', "{s}");
            } else {
                assert!(matches!(c, b'0'..=b'9' | b'a'..=b'f'), "{s}");
            }
        }
        assert_ne!(new_request_id(), id);
    }
}
