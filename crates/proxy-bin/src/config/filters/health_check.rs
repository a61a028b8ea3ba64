//! `envoy.extensions.filters.http.health_check.v3.HealthCheck`.

use proxy_core::config::HealthCheckFilter;
use serde::Deserialize;
use serde_json::Value;

use super::super::de::join;
use super::super::raw;
use super::super::ConfigError;
use super::BoolValue;

pub(super) const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck";

/// `cache_time` and `cluster_min_healthy_percentages` are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheck {
    pass_through_mode: Option<BoolValue>,
    #[serde(default)]
    headers: Vec<raw::HeaderMatcher>,
}

pub(super) fn parse(rest: Value, path: &str) -> Result<HealthCheckFilter, ConfigError> {
    let raw: HealthCheck = super::decode(rest, path)?;
    let Some(pass) = raw.pass_through_mode else {
        return Err(ConfigError::new(
            join(path, "pass_through_mode"),
            "is required (as in Envoy)",
        ));
    };
    let headers = super::header_matchers(raw.headers, path)?;
    Ok(HealthCheckFilter {
        pass_through_mode: pass.get(),
        headers,
        service_cluster: String::new(),
    })
}
