//! Header handling on the request path: hop-by-hop removal (RFC 9110 §7.6.1), the
//! `x-forwarded-*` headers, request ids and upgrade detection. Pure functions over a
//! [`HeaderMap`], benchmarked in `benches/route_match.rs`.

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
    if let Some(conn) = h.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| {
                let t = t.trim();
                if keep_upgrade && t.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
                HeaderName::from_bytes(t.as_bytes()).ok()
            })
            .collect();
        for n in named {
            h.remove(n);
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
        let ip = remote.ip().to_string();
        let value = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
            _ => ip,
        };
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
