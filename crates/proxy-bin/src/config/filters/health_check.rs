//! `envoy.extensions.filters.http.health_check.v3.HealthCheck`.

use proxy_core::config::{FilterHeaderMatcher, HealthCheckFilter, MatchedField};
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
        let m = super::super::route::header_matcher(h, &format!("{path}.headers[{i}]"))?;
        headers.push(FilterHeaderMatcher {
            field: field.unwrap_or(MatchedField::Header(m.name)),
            kind: m.kind,
            invert: m.invert,
        });
    }
    Ok(HealthCheckFilter {
        pass_through_mode: pass.get(),
        headers,
        service_cluster: String::new(),
    })
}
