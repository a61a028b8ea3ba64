//! `envoy.extensions.filters.http.csrf.v3.CsrfPolicy` (the filter's, and a route's, which
//! replaces it).

use proxy_core::config::CsrfPolicy;
use serde::Deserialize;
use serde_json::Value;

use super::super::de::join;
use super::super::{raw, ConfigError};
use super::fault::{percentage, Percent};

pub(super) const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    filter_enabled: Option<RuntimePercent>,
    shadow_enabled: Option<RuntimePercent>,
    #[serde(default)]
    additional_origins: Vec<raw::StringMatcher>,
}

/// `RuntimeFractionalPercent`: no runtime, so `default_value` decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimePercent {
    default_value: Option<Percent>,
    #[allow(dead_code)] // no runtime overrides it
    runtime_key: Option<String>,
}

pub(super) fn parse(rest: Value, path: &str) -> Result<CsrfPolicy, ConfigError> {
    let raw: Policy = super::decode(rest, path)?;
    let Some(enabled) = raw.filter_enabled else {
        return Err(ConfigError::new(
            join(path, "filter_enabled"),
            "is required (as in Envoy)",
        ));
    };
    let enabled = percentage(
        enabled.default_value,
        &join(path, "filter_enabled.default_value"),
    )?;
    let shadow = match raw.shadow_enabled {
        None => percentage(None, path)?,
        Some(s) => percentage(s.default_value, &join(path, "shadow_enabled.default_value"))?,
    };
    let additional_origins =
        super::cors::string_matchers(raw.additional_origins, &join(path, "additional_origins"))?;
    Ok(CsrfPolicy {
        enabled,
        shadow,
        additional_origins,
    })
}
