//! A request's hash for RING_HASH and MAGLEV clusters, from its route's `hash_policy[]` as
//! Envoy 1.40 computes it: each policy that yields a value is XXH64-hashed and folded in as
//! `rotl(previous, 1) ^ new`; a `terminal` policy that leaves a hash stops the fold. A cookie
//! policy with a `ttl` and no such cookie in the request makes one up from the connection's
//! addresses and asks for it to be set on the response.

use std::net::SocketAddr;

use http::header::{HeaderValue, COOKIE};
use http::HeaderMap;
use xxhash_rust::xxh64::xxh64;

use crate::config::{HashOn, HashPolicy};

/// The hash (none when no policy yielded one) and the `set-cookie` a generated cookie needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Hashed {
    pub(crate) hash: Option<u64>,
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// The hash of a request with `headers` and `path_and_query`, on a connection from `remote` to
/// `local`, by `policies`.
pub(crate) fn hash_request(
    policies: &[HashPolicy],
    headers: &HeaderMap,
    path_and_query: &str,
    remote: SocketAddr,
    local: SocketAddr,
) -> Hashed {
    let mut out = Hashed::default();
    for p in policies {
        let new = match &p.kind {
            HashOn::Header(name) => header_hash(headers, name),
            HashOn::Cookie { name, ttl, path } => match cookie_value(headers, name) {
                Some(v) => Some(xxh64(v.as_bytes(), 0)),
                None => ttl.map(|ttl| {
                    let value = generated_cookie(remote, local);
                    out.set_cookie = set_cookie(name, &value, path, ttl);
                    xxh64(value.as_bytes(), 0)
                }),
            },
            HashOn::SourceIp => Some(xxh64(remote.ip().to_string().as_bytes(), 0)),
            HashOn::QueryParameter(name) => {
                query_value(path_and_query, name).map(|v| xxh64(v.as_bytes(), 0))
            }
        };
        if let Some(new) = new {
            out.hash = Some(out.hash.map_or(0, |h| h.rotate_left(1)) ^ new);
        }
        if p.terminal && out.hash.is_some() {
            break;
        }
    }
    out
}

/// Every value of header `name`, sorted (so their order does not matter), each hashed with
/// the previous one's hash as its seed (Envoy's hash of a list of strings); `None` without the
/// header.
fn header_hash(headers: &HeaderMap, name: &http::HeaderName) -> Option<u64> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(xxh64(first.as_bytes(), 0));
    };
    let mut values: Vec<&[u8]> = vec![first.as_bytes(), second.as_bytes()];
    values.extend(all.map(HeaderValue::as_bytes));
    values.sort_unstable();
    Some(values.iter().fold(0, |seed, v| xxh64(v, seed)))
}

/// The first non-empty value of cookie `name` in the request's `cookie` headers, without its
/// surrounding double quotes.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim_start().split_once('=')?;
            if k != name {
                return None;
            }
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some(v)
        })
        .filter(|v| !v.is_empty())
}

/// The first value of query parameter `name`, as written (not decoded).
fn query_value<'a>(path_and_query: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path_and_query.split_once('?')?;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// A cookie value for a client without one: the same for every request of a connection, as
/// Envoy's (XXH64 of the remote then local address, 16 hex digits).
fn generated_cookie(remote: SocketAddr, local: SocketAddr) -> String {
    format!("{:016x}", xxh64(format!("{remote}{local}").as_bytes(), 0))
}

/// Envoy's `set-cookie` for a generated cookie: `name="value"`, `Max-Age` unless 0, `Path`
/// when set, `HttpOnly`.
fn set_cookie(name: &str, value: &str, path: &str, ttl: u64) -> Option<HeaderValue> {
    let mut s = format!("{name}=\"{value}\"");
    if ttl != 0 {
        s.push_str(&format!("; Max-Age={ttl}"));
    }
    if !path.is_empty() {
        s.push_str("; Path=");
        s.push_str(path);
    }
    s.push_str("; HttpOnly");
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: HashOn, terminal: bool) -> HashPolicy {
        HashPolicy { kind, terminal }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn hash(policies: &[HashPolicy], headers: &[(&str, &str)], path: &str) -> Hashed {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        hash_request(
            policies,
            &map,
            path,
            addr("127.0.0.1:5000"),
            addr("127.0.0.1:80"),
        )
    }

    fn header(name: &'static str) -> HashOn {
        HashOn::Header(http::HeaderName::from_static(name))
    }

    #[test]
    fn header_values_hash_sorted_and_chained() {
        let p = [policy(header("x-key"), false)];
        let one = hash(&p, &[("x-key", "a")], "/").hash;
        assert_eq!(one, Some(xxh64(b"a", 0)));
        let ab = hash(&p, &[("x-key", "b"), ("x-key", "a")], "/").hash;
        assert_eq!(ab, hash(&p, &[("x-key", "a"), ("x-key", "b")], "/").hash);
        assert_eq!(ab, Some(xxh64(b"b", xxh64(b"a", 0))));
        assert_eq!(hash(&p, &[], "/").hash, None);
    }

    #[test]
    fn policies_fold_by_rotate_and_xor_until_a_terminal_one_hashes() {
        let a = xxh64(b"a", 0);
        let q = xxh64(b"v", 0);
        let p = [
            policy(header("x-key"), false),
            policy(HashOn::QueryParameter("q".into()), false),
        ];
        assert_eq!(
            hash(&p, &[("x-key", "a")], "/p?z=1&q=v&q=w").hash,
            Some(a.rotate_left(1) ^ q)
        );
        // The same policy twice does not cancel out.
        let twice = [
            policy(header("x-key"), false),
            policy(header("x-key"), false),
        ];
        assert_eq!(
            hash(&twice, &[("x-key", "a")], "/").hash,
            Some(a.rotate_left(1) ^ a)
        );
        let terminal = [
            policy(header("x-key"), true),
            policy(HashOn::QueryParameter("q".into()), false),
        ];
        assert_eq!(hash(&terminal, &[("x-key", "a")], "/?q=v").hash, Some(a));
        // A terminal policy without a value does not stop the others.
        assert_eq!(hash(&terminal, &[], "/?q=v").hash, Some(q));
    }

    #[test]
    fn cookies_are_read_or_generated_with_a_ttl() {
        let c = |ttl| {
            [policy(
                HashOn::Cookie {
                    name: "sticky".into(),
                    ttl,
                    path: "/p".into(),
                },
                false,
            )]
        };
        let got = hash(&c(Some(60)), &[("cookie", "a=1; sticky=\"abc\"")], "/");
        assert_eq!(got.hash, Some(xxh64(b"abc", 0)));
        assert_eq!(got.set_cookie, None);
        assert_eq!(hash(&c(None), &[], "/"), Hashed::default());
        let made = hash(&c(Some(60)), &[], "/");
        let value = format!("{:016x}", xxh64(b"127.0.0.1:5000127.0.0.1:80", 0));
        assert_eq!(made.hash, Some(xxh64(value.as_bytes(), 0)));
        assert_eq!(
            made.set_cookie.unwrap(),
            format!("sticky=\"{value}\"; Max-Age=60; Path=/p; HttpOnly").as_str()
        );
        let zero = [policy(
            HashOn::Cookie {
                name: "s".into(),
                ttl: Some(0),
                path: String::new(),
            },
            false,
        )];
        assert_eq!(
            hash(&zero, &[], "/").set_cookie.unwrap(),
            format!("s=\"{value}\"; HttpOnly").as_str()
        );
    }

    #[test]
    fn source_ip_hashes_the_address_without_port() {
        let p = [policy(HashOn::SourceIp, false)];
        assert_eq!(hash(&p, &[], "/").hash, Some(xxh64(b"127.0.0.1", 0)));
    }
}
