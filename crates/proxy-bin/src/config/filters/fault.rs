//! `envoy.extensions.filters.http.fault.v3.HTTPFault` (the filter's configuration, and a
//! route's, which replaces it). `response_rate_limit`, the `*_runtime` keys and
//! `filter_metadata` are refused by name.

use proxy_core::config::{
    FaultAbort, FaultAbortKind, FaultDelay, FaultDelayKind, FaultFilter, FractionalPercent,
};
use serde::Deserialize;
use serde_json::Value;

use super::super::de::{join, Dur, Empty, Int};
use super::super::raw;
use super::super::ConfigError;

pub(super) const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFault {
    delay: Option<Delay>,
    abort: Option<Abort>,
    upstream_cluster: Option<String>,
    #[serde(default)]
    headers: Vec<raw::HeaderMatcher>,
    #[serde(default)]
    downstream_nodes: Vec<String>,
    max_active_faults: Option<raw::UInt32>,
    disable_downstream_cluster_stats: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Delay {
    fixed_delay: Option<Dur>,
    header_delay: Option<Empty>,
    percentage: Option<Percent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Abort {
    http_status: Option<Int<u32>>,
    grpc_status: Option<Int<u32>>,
    header_abort: Option<Empty>,
    percentage: Option<Percent>,
}

/// `type.v3.FractionalPercent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Percent {
    numerator: Option<Int<u32>>,
    denominator: Option<Value>,
}

pub(super) fn parse(rest: Value, path: &str) -> Result<FaultFilter, ConfigError> {
    let raw: HttpFault = super::decode(rest, path)?;
    let delay = raw
        .delay
        .map(|d| delay(d, &join(path, "delay")))
        .transpose()?;
    let abort = raw
        .abort
        .map(|a| abort(a, &join(path, "abort")))
        .transpose()?;
    Ok(FaultFilter {
        delay,
        abort,
        upstream_cluster: raw.upstream_cluster.filter(|c| !c.is_empty()),
        headers: super::header_matchers(raw.headers, path)?,
        downstream_nodes: raw.downstream_nodes,
        max_active_faults: raw.max_active_faults.map(|m| m.get()),
        downstream_cluster_stats: !raw.disable_downstream_cluster_stats.unwrap_or(false),
    })
}

fn delay(raw: Delay, path: &str) -> Result<FaultDelay, ConfigError> {
    let kind = match (raw.fixed_delay, raw.header_delay) {
        (Some(d), None) => FaultDelayKind::Fixed(d.0),
        (None, Some(_)) => FaultDelayKind::Header,
        _ => {
            return Err(ConfigError::new(
                path,
                "needs exactly one of `fixed_delay`, `header_delay`",
            ))
        }
    };
    Ok(FaultDelay {
        kind,
        percentage: percentage(raw.percentage, &join(path, "percentage"))?,
    })
}

fn abort(raw: Abort, path: &str) -> Result<FaultAbort, ConfigError> {
    let kind = match (raw.http_status, raw.grpc_status, raw.header_abort) {
        (Some(Int(s)), None, None) => {
            if !(200..600).contains(&s) {
                return Err(ConfigError::new(
                    join(path, "http_status"),
                    format!("{s} is not in [200, 600)"),
                ));
            }
            FaultAbortKind::Http(s as u16)
        }
        (None, Some(Int(g)), None) => FaultAbortKind::Grpc(g),
        (None, None, Some(_)) => FaultAbortKind::Header,
        _ => {
            return Err(ConfigError::new(
                path,
                "needs exactly one of `http_status`, `grpc_status`, `header_abort`",
            ))
        }
    };
    Ok(FaultAbort {
        kind,
        percentage: percentage(raw.percentage, &join(path, "percentage"))?,
    })
}

/// Unset: 0 out of 100, as protobuf's default message is.
pub(crate) fn percentage(
    raw: Option<Percent>,
    path: &str,
) -> Result<FractionalPercent, ConfigError> {
    let Some(raw) = raw else {
        return Ok(FractionalPercent {
            numerator: 0,
            denominator: 100,
        });
    };
    let denominator = match &raw.denominator {
        None => 100,
        Some(Value::String(s)) if s == "HUNDRED" => 100,
        Some(Value::String(s)) if s == "TEN_THOUSAND" => 10_000,
        Some(Value::String(s)) if s == "MILLION" => 1_000_000,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => 100,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => 10_000,
        Some(Value::Number(n)) if n.as_u64() == Some(2) => 1_000_000,
        Some(other) => {
            return Err(ConfigError::new(
                join(path, "denominator"),
                format!("unknown value {other}; expected HUNDRED, TEN_THOUSAND or MILLION"),
            ))
        }
    };
    Ok(FractionalPercent {
        numerator: raw.numerator.map_or(0, |n| n.0),
        denominator,
    })
}
