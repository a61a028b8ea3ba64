//! `envoy.extensions.filters.http.cors.v3.Cors` (the filter: no fields), its per-route
//! `CorsPolicy`, and the legacy `cors` of virtual hosts and route actions
//! (`config.route.v3.CorsPolicy`, the same fields). `shadow_enabled` and
//! `allow_private_network_access: true` are refused.

use proxy_core::config::{CorsPolicy, HeaderMatchKind};
use serde::Deserialize;
use serde_json::Value;

use super::super::de::join;
use super::super::{raw, ConfigError};
use super::fault::{percentage, Percent};
use super::BoolValue;

pub(super) const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
pub(super) const POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[serde(default)]
    allow_origin_string_match: Vec<raw::StringMatcher>,
    allow_methods: Option<String>,
    allow_headers: Option<String>,
    expose_headers: Option<String>,
    max_age: Option<String>,
    allow_credentials: Option<BoolValue>,
    filter_enabled: Option<RuntimePercent>,
    allow_private_network_access: Option<BoolValue>,
    forward_not_matching_preflights: Option<BoolValue>,
}

/// `RuntimeFractionalPercent`: no runtime, so `default_value` decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimePercent {
    default_value: Option<Percent>,
    #[allow(dead_code)] // no runtime overrides it
    runtime_key: Option<String>,
}

pub(super) fn parse_filter(rest: Value, path: &str) -> Result<(), ConfigError> {
    let _: Filter = super::decode(rest, path)?;
    Ok(())
}

/// The legacy `cors` of a virtual host or route action.
pub(crate) fn legacy(value: Value, path: &str) -> Result<CorsPolicy, ConfigError> {
    policy(value, path)
}

pub(super) fn policy(rest: Value, path: &str) -> Result<CorsPolicy, ConfigError> {
    let raw: Policy = super::decode(rest, path)?;
    if raw.allow_private_network_access.is_some_and(|b| b.get()) {
        return Err(ConfigError::new(
            join(path, "allow_private_network_access"),
            "is not supported by Baton",
        ));
    }
    let allow_origin = string_matchers(
        raw.allow_origin_string_match,
        &join(path, "allow_origin_string_match"),
    )?;
    let enabled = match raw.filter_enabled {
        None => None,
        Some(r) => Some(percentage(
            r.default_value,
            &join(path, "filter_enabled.default_value"),
        )?),
    };
    Ok(CorsPolicy {
        allow_origin,
        allow_methods: raw.allow_methods.filter(|s| !s.is_empty()),
        allow_headers: raw.allow_headers.filter(|s| !s.is_empty()),
        expose_headers: raw.expose_headers.filter(|s| !s.is_empty()),
        max_age: raw.max_age.filter(|s| !s.is_empty()),
        allow_credentials: raw.allow_credentials.map(BoolValue::get),
        enabled,
        forward_not_matching_preflights: raw.forward_not_matching_preflights.map(BoolValue::get),
    })
}

/// `type.matcher.v3.StringMatcher`s (through the header matcher's checks).
pub(super) fn string_matchers(
    raw: Vec<raw::StringMatcher>,
    path: &str,
) -> Result<Vec<HeaderMatchKind>, ConfigError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, sm)| string_matcher(sm, &format!("{path}[{i}]")))
        .collect()
}

/// One `StringMatcher` at `path`.
pub(super) fn string_matcher(
    sm: raw::StringMatcher,
    path: &str,
) -> Result<HeaderMatchKind, ConfigError> {
    let m = super::super::route::header_matcher(
        raw::HeaderMatcher {
            name: "origin".into(),
            string_match: Some(sm),
            exact_match: None,
            prefix_match: None,
            suffix_match: None,
            contains_match: None,
            safe_regex_match: None,
            present_match: None,
            invert_match: None,
        },
        path,
    )?;
    Ok(m.kind)
}
