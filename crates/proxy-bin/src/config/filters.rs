//! An HCM's `http_filters`: the filters Baton runs in front of the router, in order, and the
//! router last (its `suppress_envoy_headers`).

use proxy_core::config::{FilterHeaderMatcher, HealthCheckFilter, HttpFilter, MatchedField};
use serde::Deserialize;
use serde_json::Value;

use super::de::{self, join};
use super::raw;
use super::ConfigError;

const HEALTH_CHECK_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck";

/// `envoy.extensions.filters.http.health_check.v3.HealthCheck` (`cache_time` and
/// `cluster_min_healthy_percentages` are refused by name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheck {
    pass_through_mode: Option<BoolValue>,
    #[serde(default)]
    headers: Vec<raw::HeaderMatcher>,
}

/// A `google.protobuf.BoolValue`: `true` or `{value: true}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BoolValue {
    Plain(bool),
    Wrapped { value: bool },
}

/// The filters before the router, and the router's `suppress_envoy_headers`. The router must
/// be there, last.
pub(crate) fn http_filters(
    filters: Vec<raw::HttpFilter>,
    path: &str,
) -> Result<(bool, Vec<HttpFilter>), ConfigError> {
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
            (Parsed::Filter(_), true) => {
                return Err(ConfigError::new(
                    p,
                    "the last HTTP filter must be the router, envoy.filters.http.router",
                ))
            }
            (Parsed::Filter(f), false) => out.push(f),
        }
    }
    Ok((false, out))
}

/// One entry of `http_filters`.
enum Parsed {
    /// The router, with its `suppress_envoy_headers`.
    Router(bool),
    Filter(HttpFilter),
}

fn filter(f: raw::HttpFilter, p: &str) -> Result<Parsed, ConfigError> {
    let Some(tc) = f.typed_config else {
        if f.name == "envoy.filters.http.router" {
            return Ok(Parsed::Router(false));
        }
        return Err(ConfigError::new(
            join(p, "name"),
            format!(
                "unsupported HTTP filter `{}` without a typed_config; Baton supports the router and envoy.filters.http.health_check (with its typed_config)",
                f.name
            ),
        ));
    };
    let tc_path = join(p, "typed_config");
    let (url, rest) = de::split_any(tc, &tc_path)?;
    if url == raw::ROUTER_TYPE {
        let r: raw::Router = de::decode(rest, &tc_path)?;
        return Ok(Parsed::Router(r.suppress_envoy_headers.unwrap_or(false)));
    }
    if url == HEALTH_CHECK_TYPE {
        return Ok(Parsed::Filter(HttpFilter::HealthCheck(health_check(
            rest, &tc_path,
        )?)));
    }
    Err(ConfigError::new(
        join(&tc_path, "@type"),
        format!(
            "unsupported HTTP filter `{url}`; Baton supports the router ({}) and the health check ({HEALTH_CHECK_TYPE})",
            raw::ROUTER_TYPE
        ),
    ))
}

fn health_check(rest: Value, path: &str) -> Result<HealthCheckFilter, ConfigError> {
    let raw: HealthCheck = de::decode(rest, path)?;
    let Some(pass) = raw.pass_through_mode else {
        return Err(ConfigError::new(
            join(path, "pass_through_mode"),
            "is required (as in Envoy)",
        ));
    };
    let pass_through_mode = match pass {
        BoolValue::Plain(b) | BoolValue::Wrapped { value: b } => b,
    };
    let mut headers = Vec::new();
    for (i, mut h) in raw.headers.into_iter().enumerate() {
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
        let m = super::route::header_matcher(h, &format!("{path}.headers[{i}]"))?;
        headers.push(FilterHeaderMatcher {
            field: field.unwrap_or(MatchedField::Header(m.name)),
            kind: m.kind,
            invert: m.invert,
        });
    }
    Ok(HealthCheckFilter {
        pass_through_mode,
        headers,
        service_cluster: String::new(),
    })
}
