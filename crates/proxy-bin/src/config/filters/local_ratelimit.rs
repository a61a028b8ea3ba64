//! `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit` (the filter's, and a
//! route's with its own bucket). Descriptors, `rate_limits`, `local_cluster_rate_limit` and
//! the other descriptor-related fields are refused by name.

use std::sync::Arc;

use proxy_core::config::{HeaderAdd, LocalRateLimit, TokenBucket};
use serde::Deserialize;
use serde_json::Value;

use super::super::de::{join, Dur, Int};
use super::super::{raw, ConfigError, Errors};
use super::fault::{percentage, Percent};

pub(super) const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    stat_prefix: Option<String>,
    status: Option<Status>,
    token_bucket: Option<Bucket>,
    filter_enabled: Option<RuntimePercent>,
    filter_enforced: Option<RuntimePercent>,
    #[serde(default)]
    request_headers_to_add_when_not_enforced: Vec<raw::HeaderValueOption>,
    #[serde(default)]
    response_headers_to_add: Vec<raw::HeaderValueOption>,
    local_rate_limit_per_downstream_connection: Option<bool>,
    enable_x_ratelimit_headers: Option<Value>,
    #[serde(default)]
    descriptors: Vec<Value>,
    stage: Option<Int<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    code: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bucket {
    max_tokens: Option<Int<u32>>,
    tokens_per_fill: Option<raw::UInt32>,
    fill_interval: Option<Dur>,
}

/// `config.core.v3.RuntimeFractionalPercent`: Baton has no runtime, so a `runtime_key` always
/// falls back to `default_value`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimePercent {
    default_value: Option<Percent>,
    #[allow(dead_code)] // no runtime overrides it
    runtime_key: Option<String>,
}

pub(super) fn parse(rest: Value, path: &str) -> Result<LocalRateLimit, ConfigError> {
    let raw: Raw = super::decode(rest, path)?;
    if !raw.descriptors.is_empty() {
        return Err(ConfigError::new(
            join(path, "descriptors"),
            "descriptors are not supported by Baton (only the token bucket)",
        ));
    }
    if raw.stage.is_some_and(|s| s.0 != 0) {
        return Err(ConfigError::new(
            join(path, "stage"),
            "only stage 0 is supported (stages go with descriptors)",
        ));
    }
    let stat_prefix = raw
        .stat_prefix
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConfigError::new(join(path, "stat_prefix"), "is required (as in Envoy)"))?;
    let status = match raw.status {
        None => 429,
        Some(s) => status(&s.code, &join(path, "status.code"))?,
    };
    let bucket = bucket(raw.token_bucket, &join(path, "token_bucket"))?;
    let x_ratelimit_headers = match raw.enable_x_ratelimit_headers {
        None => false,
        Some(Value::String(s)) if s == "OFF" => false,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
        Some(Value::String(s)) if s == "DRAFT_VERSION_03" => true,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
        Some(other) => {
            return Err(ConfigError::new(
                join(path, "enable_x_ratelimit_headers"),
                format!("unknown value {other}; expected OFF or DRAFT_VERSION_03"),
            ))
        }
    };
    let enabled = runtime_percent(raw.filter_enabled, &join(path, "filter_enabled"))?;
    let enforced = runtime_percent(raw.filter_enforced, &join(path, "filter_enforced"))?;
    let mut errs = Errors(Vec::new());
    let response_headers_to_add = plain_adds(
        raw.response_headers_to_add,
        &join(path, "response_headers_to_add"),
        false,
        &mut errs,
    );
    let request_headers_when_not_enforced = plain_adds(
        raw.request_headers_to_add_when_not_enforced,
        &join(path, "request_headers_to_add_when_not_enforced"),
        true,
        &mut errs,
    );
    if let Some(e) = errs.0.into_iter().next() {
        return Err(e);
    }
    Ok(LocalRateLimit {
        stat_prefix,
        status,
        bucket: Arc::new(bucket),
        enabled,
        enforced,
        response_headers_to_add,
        request_headers_when_not_enforced,
        x_ratelimit_headers,
        per_connection: raw
            .local_rate_limit_per_downstream_connection
            .unwrap_or(false),
    })
}

fn status(code: &Value, path: &str) -> Result<u16, ConfigError> {
    let n = code
        .as_u64()
        .or_else(|| code.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ConfigError::new(path, "expected a numeric status code"))?;
    if !(400..600).contains(&n) {
        return Err(ConfigError::new(
            path,
            format!("{n}: Baton takes an error status, 400 to 599"),
        ));
    }
    Ok(n as u16)
}

fn bucket(raw: Option<Bucket>, path: &str) -> Result<TokenBucket, ConfigError> {
    let Some(b) = raw else {
        return Err(ConfigError::new(
            path,
            "is required (Baton limits by the token bucket only)",
        ));
    };
    let max = match b.max_tokens {
        Some(Int(n)) if n > 0 => n,
        _ => {
            return Err(ConfigError::new(
                join(path, "max_tokens"),
                "is required and must be greater than 0",
            ))
        }
    };
    let per_fill = b.tokens_per_fill.map_or(1, |t| t.get());
    if per_fill == 0 {
        return Err(ConfigError::new(
            join(path, "tokens_per_fill"),
            "must be greater than 0",
        ));
    }
    let interval = match b.fill_interval {
        Some(d) if !d.0.is_zero() => d.0,
        _ => {
            return Err(ConfigError::new(
                join(path, "fill_interval"),
                "is required and must be greater than 0",
            ))
        }
    };
    Ok(TokenBucket::new(max, per_fill, interval))
}

fn runtime_percent(
    raw: Option<RuntimePercent>,
    path: &str,
) -> Result<proxy_core::config::FractionalPercent, ConfigError> {
    match raw {
        None => percentage(None, path),
        Some(r) => match r.default_value {
            None => Err(ConfigError::new(
                join(path, "default_value"),
                "is required (as in Envoy)",
            )),
            Some(p) => percentage(Some(p), &join(path, "default_value")),
        },
    }
}

/// Header additions without command operators (`%…%` is refused here).
fn plain_adds(
    raw: Vec<raw::HeaderValueOption>,
    path: &str,
    request: bool,
    errs: &mut Errors,
) -> Vec<HeaderAdd> {
    for (i, o) in raw.iter().enumerate() {
        if o.header.value.contains('%') {
            errs.push(
                format!("{path}[{i}].header.value"),
                "command operators (%…%) are not supported in this filter's headers",
            );
        }
    }
    super::super::headers::adds(raw, path, request, errs)
}
