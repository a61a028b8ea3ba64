//! Consistent hashing: a cluster's `lb_policy` with `ring_hash_lb_config`, `maglev_lb_config`
//! and `common_lb_config.consistent_hashing_lb_config`, and a route's `hash_policy[]`,
//! validated as Envoy 1.40 validates them. What Baton does not do (`hash_balance_factor`,
//! `filter_state`, cookie `attributes`, header `regex_rewrite`) is refused with its path.

use proxy_core::config::{Discovery, HashKey, HashOn, HashPolicy, LbPolicy, Maglev, RingHash};
use serde::Deserialize;
use serde_json::Value;

use super::de::{join, Dur, Int};
use super::raw;
use super::Errors;

/// Envoy's bound on `minimum_ring_size` and `maximum_ring_size`.
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's bound on Maglev's `table_size`.
const MAX_TABLE_SIZE: u64 = 5_000_011;

super::de::proto_enum! {
    pub(crate) enum HashFunction {
        XxHash = ("XX_HASH", 0),
        MurmurHash2 = ("MURMUR_HASH_2", 1),
    }
}

/// `clusters[].ring_hash_lb_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RingHashLbConfig {
    minimum_ring_size: Option<UInt64>,
    maximum_ring_size: Option<UInt64>,
    hash_function: Option<HashFunction>,
}

/// `clusters[].maglev_lb_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaglevLbConfig {
    table_size: Option<UInt64>,
}

/// `common_lb_config.consistent_hashing_lb_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistentHashingLbConfig {
    #[serde(default)]
    use_hostname_for_hashing: bool,
    hash_balance_factor: Option<raw::UInt32>,
}

/// A `google.protobuf.UInt64Value`: a number, or `{value: N}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum UInt64 {
    Plain(Int<u64>),
    Wrapped { value: Int<u64> },
}

impl UInt64 {
    fn get(&self) -> u64 {
        match self {
            UInt64::Plain(v) | UInt64::Wrapped { value: v } => v.0,
        }
    }
}

/// What a cluster's load balancing fields ask for, raw.
pub(crate) struct LbFields {
    pub policy: Option<raw::LbPolicy>,
    pub ring_hash: Option<RingHashLbConfig>,
    pub maglev: Option<MaglevLbConfig>,
    pub consistent: Option<ConsistentHashingLbConfig>,
}

/// The cluster's (at `path`) load-balancing policy, validated.
pub(crate) fn lb_policy(
    f: LbFields,
    discovery: Discovery,
    path: &str,
    errs: &mut Errors,
) -> LbPolicy {
    let consistent_path = join(path, "common_lb_config.consistent_hashing_lb_config");
    let mut key = HashKey::Address;
    if let Some(c) = &f.consistent {
        if c.use_hostname_for_hashing {
            // As Envoy: a STATIC host has no name to hash.
            if discovery == Discovery::Static {
                errs.push(
                    join(&consistent_path, "use_hostname_for_hashing"),
                    "cannot use hostname for consistent hashing load balancing for a STATIC cluster",
                );
            }
            key = HashKey::Hostname;
        }
        if let Some(f) = &c.hash_balance_factor {
            let p = join(&consistent_path, "hash_balance_factor");
            if f.get() < 100 {
                errs.push(p, "must be at least 100");
            } else {
                errs.push(
                    p,
                    "bounded-load consistent hashing is not supported by Baton",
                );
            }
        }
    }
    let hashing = matches!(
        f.policy,
        Some(raw::LbPolicy::RingHash | raw::LbPolicy::Maglev)
    );
    if !hashing && f.consistent.is_some() {
        errs.push(
            consistent_path,
            "applies only with lb_policy RING_HASH or MAGLEV (Baton refuses what it would not use)",
        );
    }
    if f.ring_hash.is_some() && f.policy != Some(raw::LbPolicy::RingHash) {
        errs.push(
            join(path, "ring_hash_lb_config"),
            "applies only with lb_policy RING_HASH (Baton refuses what it would not use)",
        );
    }
    if f.maglev.is_some() && f.policy != Some(raw::LbPolicy::Maglev) {
        errs.push(
            join(path, "maglev_lb_config"),
            "applies only with lb_policy MAGLEV (Baton refuses what it would not use)",
        );
    }
    match f.policy {
        None | Some(raw::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Some(raw::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Some(raw::LbPolicy::Random) => LbPolicy::Random,
        // Checked with the cluster's type (`cluster::original_dst`).
        Some(raw::LbPolicy::ClusterProvided) => LbPolicy::ClusterProvided,
        Some(raw::LbPolicy::RingHash) => {
            let mut r = RingHash {
                key,
                ..RingHash::default()
            };
            if let Some(c) = f.ring_hash {
                let p = join(path, "ring_hash_lb_config");
                if let Some(v) = c.minimum_ring_size {
                    r.minimum_ring_size = v.get();
                    if r.minimum_ring_size > MAX_RING_SIZE {
                        errs.push(
                            join(&p, "minimum_ring_size"),
                            format!("must be at most {MAX_RING_SIZE}"),
                        );
                    }
                }
                if let Some(v) = c.maximum_ring_size {
                    r.maximum_ring_size = v.get();
                    if r.maximum_ring_size > MAX_RING_SIZE {
                        errs.push(
                            join(&p, "maximum_ring_size"),
                            format!("must be at most {MAX_RING_SIZE}"),
                        );
                    }
                }
                let in_bounds = r.minimum_ring_size.max(r.maximum_ring_size) <= MAX_RING_SIZE;
                if in_bounds && r.minimum_ring_size > r.maximum_ring_size {
                    errs.push(
                        p,
                        format!(
                            "minimum_ring_size ({}) > maximum_ring_size ({})",
                            r.minimum_ring_size, r.maximum_ring_size
                        ),
                    );
                }
                r.murmur = c.hash_function == Some(HashFunction::MurmurHash2);
            }
            LbPolicy::RingHash(r)
        }
        Some(raw::LbPolicy::Maglev) => {
            let mut m = Maglev {
                key,
                ..Maglev::default()
            };
            if let Some(size) = f.maglev.and_then(|c| c.table_size) {
                m.table_size = size.get();
                let p = join(path, "maglev_lb_config.table_size");
                if m.table_size > MAX_TABLE_SIZE {
                    errs.push(p, format!("must be at most {MAX_TABLE_SIZE}"));
                } else if !proxy_core::cluster::is_prime(m.table_size) {
                    errs.push(p, "the table size of maglev must be a prime number");
                }
            }
            LbPolicy::Maglev(m)
        }
    }
}

/// `route.hash_policy[]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashPolicy {
    header: Option<HeaderPolicy>,
    cookie: Option<CookiePolicy>,
    connection_properties: Option<ConnectionProperties>,
    query_parameter: Option<QueryParameterPolicy>,
    filter_state: Option<Value>,
    #[serde(default)]
    terminal: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderPolicy {
    header_name: String,
    regex_rewrite: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CookiePolicy {
    name: String,
    ttl: Option<Dur>,
    #[serde(default)]
    path: String,
    #[serde(default)]
    attributes: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionProperties {
    #[serde(default)]
    source_ip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryParameterPolicy {
    name: String,
}

/// A route's `hash_policy` (at `path`), validated; `connection_properties` without
/// `source_ip` hashes nothing, as in Envoy.
pub(crate) fn hash_policies(
    raw: Vec<RawHashPolicy>,
    path: &str,
    errs: &mut Errors,
) -> Vec<HashPolicy> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let set = [
            p.header.is_some(),
            p.cookie.is_some(),
            p.connection_properties.is_some(),
            p.query_parameter.is_some(),
            p.filter_state.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            errs.push(
                at,
                "needs exactly one of header, cookie, connection_properties, query_parameter",
            );
            continue;
        }
        let kind = if let Some(h) = p.header {
            let hp = join(&at, "header");
            if h.regex_rewrite.is_some() {
                errs.push(join(&hp, "regex_rewrite"), "is not supported by Baton");
            }
            match http::HeaderName::from_bytes(h.header_name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => HashOn::Header(name),
                Err(_) => {
                    errs.push(
                        join(&hp, "header_name"),
                        "must be a non-empty HTTP header name (pseudo-headers are not supported)",
                    );
                    continue;
                }
            }
        } else if let Some(c) = p.cookie {
            let cp = join(&at, "cookie");
            if c.name.is_empty()
                || c.name
                    .bytes()
                    .any(|b| !b.is_ascii_graphic() || b == b';' || b == b'=')
            {
                errs.push(
                    join(&cp, "name"),
                    "must be a non-empty cookie name (no spaces, ';' or '=')",
                );
            }
            if !c.attributes.is_empty() {
                errs.push(join(&cp, "attributes"), "is not supported by Baton");
            }
            if c.path.bytes().any(|b| b.is_ascii_control() || b == b';') {
                errs.push(
                    join(&cp, "path"),
                    "must not contain ';' or control characters",
                );
            }
            HashOn::Cookie {
                name: c.name,
                ttl: c.ttl.map(|t| t.0.as_secs()),
                path: c.path,
            }
        } else if let Some(c) = p.connection_properties {
            if !c.source_ip {
                continue;
            }
            HashOn::SourceIp
        } else if let Some(q) = p.query_parameter {
            if q.name.is_empty() {
                errs.push(join(&at, "query_parameter.name"), "must not be empty");
            }
            HashOn::QueryParameter(q.name)
        } else {
            errs.push(join(&at, "filter_state"), "is not supported by Baton");
            continue;
        };
        out.push(HashPolicy {
            kind,
            terminal: p.terminal,
        });
    }
    out
}

#[cfg(test)]
mod tests;
