//! `typed_per_filter_config` of a route configuration, virtual host or route: filter name →
//! the filter's per-route configuration, or an `envoy.config.route.v3.FilterConfig` wrapping
//! one (`disabled`, `is_optional`, `config`).

use proxy_core::config::{FilterConfigs, PerFilter, RouteFilterConfig};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::de::{self, join};
use super::super::{ConfigError, Errors};
use super::{buffer, compressor, cors, csrf, fault, local_ratelimit, rbac};

const FILTER_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// The per-route configuration types Baton has.
const SUPPORTED: &str =
    "envoy.config.route.v3.FilterConfig, the buffer filter's BufferPerRoute, the fault filter's HTTPFault, the local rate limit filter's LocalRateLimit, the CORS filter's CorsPolicy, the CSRF filter's CsrfPolicy, the RBAC filter's RBACPerRoute and the compressor filter's CompressorPerRoute";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    config: Option<Value>,
    is_optional: Option<bool>,
    disabled: Option<bool>,
}

/// Every entry of `typed_per_filter_config` at `path` (errors pushed to `errs`).
pub(crate) fn filter_configs(
    raw: Map<String, Value>,
    path: &str,
    errs: &mut Errors,
) -> FilterConfigs {
    let path = join(path, "typed_per_filter_config");
    let mut out = Vec::new();
    for (name, any) in raw {
        let p = join(&path, &name);
        match entry(any, &p) {
            Ok(Some(per)) => out.push((name, per)),
            Ok(None) => {}
            Err(e) => errs.0.push(e),
        }
    }
    out
}

/// One entry; `None`: an optional configuration of a type neither Baton nor Envoy has a filter
/// for (Envoy ignores it too; an optional configuration of one of Envoy's filters is refused,
/// since Envoy would honour it).
fn entry(any: Value, path: &str) -> Result<Option<PerFilter>, ConfigError> {
    let (url, rest) = de::split_any(any, path)?;
    if url != FILTER_CONFIG_TYPE {
        return Ok(Some(PerFilter {
            disabled: false,
            config: Some(config(&url, rest, path)?),
        }));
    }
    let fc: FilterConfig = de::decode(rest, path)?;
    let disabled = fc.disabled.unwrap_or(false);
    let Some(inner) = fc.config else {
        if disabled {
            return Ok(Some(PerFilter {
                disabled,
                config: None,
            }));
        }
        return Err(ConfigError::new(
            join(path, "config"),
            "is required unless `disabled` is true (Envoy: empty route/virtual host per filter configuration)",
        ));
    };
    let cpath = join(path, "config");
    let (url, rest) = de::split_any(inner, &cpath)?;
    if fc.is_optional == Some(true) && !known(&url) && !super::envoy_filter(&url) {
        return Ok(None);
    }
    Ok(Some(PerFilter {
        disabled,
        config: Some(config(&url, rest, &cpath)?),
    }))
}

/// Whether Baton has a per-route configuration of type `url`.
fn known(url: &str) -> bool {
    [
        buffer::PER_ROUTE_TYPE,
        fault::TYPE,
        local_ratelimit::TYPE,
        cors::POLICY_TYPE,
        csrf::TYPE,
        rbac::PER_ROUTE_TYPE,
        compressor::PER_ROUTE_TYPE,
    ]
    .contains(&url)
}

fn config(url: &str, rest: Value, path: &str) -> Result<RouteFilterConfig, ConfigError> {
    match url {
        buffer::PER_ROUTE_TYPE => Ok(RouteFilterConfig::Buffer(buffer::parse_per_route(
            rest, path,
        )?)),
        fault::TYPE => Ok(RouteFilterConfig::Fault(Box::new(fault::parse(
            rest, path,
        )?))),
        local_ratelimit::TYPE => Ok(RouteFilterConfig::LocalRateLimit(Box::new(
            local_ratelimit::parse(rest, path)?,
        ))),
        cors::POLICY_TYPE => Ok(RouteFilterConfig::Cors(Box::new(cors::policy(rest, path)?))),
        csrf::TYPE => Ok(RouteFilterConfig::Csrf(Box::new(csrf::parse(rest, path)?))),
        rbac::PER_ROUTE_TYPE => Ok(RouteFilterConfig::Rbac(Box::new(rbac::parse_per_route(
            rest, path,
        )?))),
        compressor::PER_ROUTE_TYPE => Ok(RouteFilterConfig::Compressor(
            compressor::parse_per_route(rest, path)?,
        )),
        _ => Err(ConfigError::new(
            join(path, "@type"),
            format!("unsupported per-filter configuration `{url}`; Baton supports {SUPPORTED}"),
        )),
    }
}
