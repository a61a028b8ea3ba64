//! `envoy.extensions.filters.http.buffer.v3.Buffer` and its per-route `BufferPerRoute`.

use proxy_core::config::{BufferFilter, BufferPerRoute};
use serde::Deserialize;
use serde_json::Value;

use super::super::de::{join, Int};
use super::super::ConfigError;

pub(super) const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer";
pub(super) const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Buffer {
    max_request_bytes: Option<Int<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerRoute {
    disabled: Option<bool>,
    buffer: Option<Value>,
}

pub(super) fn parse(rest: Value, path: &str) -> Result<BufferFilter, ConfigError> {
    let raw: Buffer = super::decode(rest, path)?;
    match raw.max_request_bytes {
        None => Err(ConfigError::new(
            join(path, "max_request_bytes"),
            "is required (as in Envoy)",
        )),
        Some(Int(0)) => Err(ConfigError::new(
            join(path, "max_request_bytes"),
            "must be greater than 0",
        )),
        Some(Int(n)) => Ok(BufferFilter {
            max_request_bytes: n,
        }),
    }
}

pub(super) fn parse_per_route(rest: Value, path: &str) -> Result<BufferPerRoute, ConfigError> {
    let raw: PerRoute = super::decode(rest, path)?;
    match (raw.disabled, raw.buffer) {
        (Some(true), None) => Ok(BufferPerRoute::Disabled),
        (Some(false), None) => Err(ConfigError::new(
            join(path, "disabled"),
            "must be true when set (Envoy: const true)",
        )),
        (None, Some(b)) => Ok(BufferPerRoute::Buffer(parse(b, &join(path, "buffer"))?)),
        (None, None) => Err(ConfigError::new(
            path,
            "needs one of `disabled`, `buffer` (Envoy: the override is required)",
        )),
        (Some(_), Some(_)) => Err(ConfigError::new(
            path,
            "has both `disabled` and `buffer`; give one",
        )),
    }
}
