//! An HCM's `http_filters`: the filters Baton runs in front of the router, in order, and the
//! router last (its `suppress_envoy_headers`); and the per-filter configurations of routes,
//! virtual hosts and route configurations (`typed_per_filter_config`). Each filter's own
//! configuration is parsed in its module below.

mod buffer;
mod compressor;
mod cors;
mod csrf;
pub(crate) mod fault;
mod health_check;
mod local_ratelimit;
mod metadata;
mod per_route;
mod rbac;

use proxy_core::config::{FilterHeaderMatcher, HttpFilter, HttpFilterEntry, MatchedField};
use serde_json::Value;

use super::de::{self, join};
use super::raw;
use super::ConfigError;

pub(crate) use cors::legacy as legacy_cors;
pub(crate) use per_route::filter_configs;
pub(crate) use rbac::{
    parse_network as network_rbac, uses_sni as rbac_uses_sni, NETWORK_TYPE as NETWORK_RBAC_TYPE,
};

/// The filters Baton has, by the type URL of their `typed_config`.
const SUPPORTED: &str =
    "the router, envoy.filters.http.health_check, envoy.filters.http.buffer, envoy.filters.http.fault, envoy.filters.http.local_ratelimit, envoy.filters.http.cors, envoy.filters.http.csrf, envoy.filters.http.rbac, envoy.filters.http.compressor, envoy.filters.http.set_metadata and envoy.filters.http.header_to_metadata";

/// The filters before the router, and the router's `suppress_envoy_headers`. The router must
/// be there, last.
pub(crate) fn http_filters(
    filters: Vec<raw::HttpFilter>,
    path: &str,
) -> Result<(bool, Vec<HttpFilterEntry>), ConfigError> {
    let n = filters.len();
    if n == 0 {
        // Envoy 1.40 validates such a manager, then answers no request: with no router nothing
        // ends the stream, and clients wait until they give up.
        return Err(ConfigError::new(
            path,
            "must contain the router filter, envoy.filters.http.router (without it Envoy accepts the configuration but never answers a request)",
        ));
    }
    let mut out = Vec::new();
    for (i, f) in filters.into_iter().enumerate() {
        let p = format!("{path}[{i}]");
        let last = i + 1 == n;
        match (filter(f, &p)?, last) {
            (Parsed::Router(suppress), true) => return Ok((suppress, out)),
            (Parsed::Router(_), false) => {
                return Err(ConfigError::new(
                    p,
                    "the router must be the last HTTP filter (Envoy: a terminal filter)",
                ))
            }
            (Parsed::Filter(_) | Parsed::Skipped, true) => {
                return Err(ConfigError::new(
                    p,
                    "the last HTTP filter must be the router, envoy.filters.http.router",
                ))
            }
            (Parsed::Filter(f), false) => out.push(f),
            (Parsed::Skipped, false) => {}
        }
    }
    Ok((false, out))
}

/// One entry of `http_filters`.
enum Parsed {
    /// The router, with its `suppress_envoy_headers`.
    Router(bool),
    Filter(HttpFilterEntry),
    /// `is_optional` and of a type Baton does not have: left out, as Envoy leaves out an
    /// optional filter it has no implementation for.
    Skipped,
}

fn filter(f: raw::HttpFilter, p: &str) -> Result<Parsed, ConfigError> {
    let disabled = f.disabled.unwrap_or(false);
    let Some(tc) = f.typed_config else {
        if f.name == "envoy.filters.http.router" {
            return router(false, disabled, p);
        }
        return Err(ConfigError::new(
            join(p, "name"),
            format!(
                "unsupported HTTP filter `{}` without a typed_config; Baton supports {SUPPORTED} (each with its typed_config)",
                f.name
            ),
        ));
    };
    let tc_path = join(p, "typed_config");
    let (url, rest) = de::split_any(tc, &tc_path)?;
    let filter = match url.as_str() {
        raw::ROUTER_TYPE => {
            let r: raw::Router = de::decode(rest, &tc_path)?;
            return router(r.suppress_envoy_headers.unwrap_or(false), disabled, p);
        }
        health_check::TYPE => HttpFilter::HealthCheck(health_check::parse(rest, &tc_path)?),
        buffer::TYPE => HttpFilter::Buffer(buffer::parse(rest, &tc_path)?),
        fault::TYPE => HttpFilter::Fault(Box::new(fault::parse(rest, &tc_path)?)),
        csrf::TYPE => HttpFilter::Csrf(Box::new(csrf::parse(rest, &tc_path)?)),
        rbac::TYPE => HttpFilter::Rbac(Box::new(rbac::parse(rest, &tc_path)?)),
        compressor::TYPE => HttpFilter::Compressor(Box::new(compressor::parse(rest, &tc_path)?)),
        metadata::SET_TYPE => {
            HttpFilter::SetMetadata(Box::new(metadata::parse_set(rest, &tc_path)?))
        }
        metadata::HEADER_TYPE => {
            HttpFilter::HeaderToMetadata(Box::new(metadata::parse_header(rest, &tc_path)?))
        }
        cors::TYPE => {
            cors::parse_filter(rest, &tc_path)?;
            HttpFilter::Cors
        }
        local_ratelimit::TYPE => {
            HttpFilter::LocalRateLimit(Box::new(local_ratelimit::parse(rest, &tc_path)?))
        }
        _ if f.is_optional == Some(true) && !envoy_filter(&url) => return Ok(Parsed::Skipped),
        _ => {
            return Err(ConfigError::new(
                join(&tc_path, "@type"),
                format!("unsupported HTTP filter `{url}`; Baton supports {SUPPORTED}"),
            ))
        }
    };
    Ok(Parsed::Filter(HttpFilterEntry {
        name: f.name,
        disabled,
        filter,
    }))
}

fn router(suppress: bool, disabled: bool, p: &str) -> Result<Parsed, ConfigError> {
    if disabled {
        return Err(ConfigError::new(
            join(p, "disabled"),
            "the router, the terminal filter, cannot be disabled",
        ));
    }
    Ok(Parsed::Router(suppress))
}

/// Whether `url` is the type of one of Envoy's HTTP filters: an optional one is not left out,
/// since Envoy would run it.
pub(super) fn envoy_filter(url: &str) -> bool {
    url.starts_with("type.googleapis.com/envoy.extensions.filters.http.")
}

/// A `google.protobuf.BoolValue`: `true` or `{value: true}`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum BoolValue {
    Plain(bool),
    Wrapped { value: bool },
}

impl BoolValue {
    pub(crate) fn get(self) -> bool {
        match self {
            BoolValue::Plain(b) | BoolValue::Wrapped { value: b } => b,
        }
    }
}

/// A filter's `headers[]`: header matchers that may name `:path` (as sent, query included),
/// `:method` or `:authority` (`host`).
fn header_matchers(
    raw: Vec<raw::HeaderMatcher>,
    path: &str,
) -> Result<Vec<FilterHeaderMatcher>, ConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h, &format!("{path}.headers[{i}]")))
        .collect()
}

/// One header matcher at `path`, which may name a pseudo-header.
fn header_matcher(
    mut h: raw::HeaderMatcher,
    path: &str,
) -> Result<FilterHeaderMatcher, ConfigError> {
    let field = match h.name.to_ascii_lowercase().as_str() {
        ":path" => Some(MatchedField::Path),
        ":method" => Some(MatchedField::Method),
        ":authority" | "host" => Some(MatchedField::Authority),
        _ => None,
    };
    if field.is_some() {
        // Checked as an ordinary name; the field it reads is the pseudo-header's.
        h.name = "x-pseudo".into();
    }
    let m = super::route::header_matcher(h, path)?;
    Ok(FilterHeaderMatcher {
        field: field.unwrap_or(MatchedField::Header(m.name)),
        kind: m.kind,
        invert: m.invert,
    })
}

/// Decode `rest` (an `Any` without its `@type`) into `T`.
fn decode<T: serde::de::DeserializeOwned>(rest: Value, path: &str) -> Result<T, ConfigError> {
    de::decode(rest, path)
}
