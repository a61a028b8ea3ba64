//! The HTTP filters in front of the router, as configured: the HCM's `http_filters` entries and
//! the per-route configurations (`typed_per_filter_config`) that may override them.

use super::{HeaderMatchKind, HeaderName};

/// One `http_filters` entry before the router.
#[derive(Clone, Debug)]
pub struct HttpFilterEntry {
    /// `name`: the key a route's `typed_per_filter_config` uses to reach it.
    pub name: String,
    /// `disabled`: off unless a route's (or virtual host's …) per-filter configuration turns it
    /// on.
    pub disabled: bool,
    pub filter: HttpFilter,
}

/// An HTTP filter in front of the router.
#[derive(Clone, Debug)]
pub enum HttpFilter {
    /// `envoy.filters.http.health_check`.
    HealthCheck(HealthCheckFilter),
    /// `envoy.filters.http.buffer`.
    Buffer(BufferFilter),
}

/// `envoy.filters.http.health_check`: requests matching `headers` are health checks, answered
/// here (200, or 503 while the server fails health checks or drains) or, with
/// `pass_through_mode`, forwarded unless failing.
#[derive(Clone, Debug)]
pub struct HealthCheckFilter {
    pub pass_through_mode: bool,
    /// All must match. `:path` is the target as sent (query included), `:method`,
    /// `:authority` (or `host`).
    pub headers: Vec<FilterHeaderMatcher>,
    /// `x-envoy-upstream-healthchecked-cluster`: the node's cluster (empty without one).
    pub service_cluster: String,
}

/// A header matcher that may name a pseudo-header.
#[derive(Clone, Debug)]
pub struct FilterHeaderMatcher {
    pub field: MatchedField,
    pub kind: HeaderMatchKind,
    pub invert: bool,
}

#[derive(Clone, Debug)]
pub enum MatchedField {
    Path,
    Method,
    Authority,
    Header(HeaderName),
}

/// `envoy.filters.http.buffer`: the request body is read whole before it goes upstream (a
/// body longer than `max_request_bytes` is answered 413).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferFilter {
    pub max_request_bytes: u32,
}

/// `envoy.extensions.filters.http.buffer.v3.BufferPerRoute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferPerRoute {
    /// `disabled: true`: this route's bodies stream.
    Disabled,
    /// `buffer`: this route's limit.
    Buffer(BufferFilter),
}

/// One `typed_per_filter_config` entry of a route configuration, virtual host or route.
#[derive(Clone, Debug)]
pub struct PerFilter {
    /// `envoy.config.route.v3.FilterConfig.disabled`. A plain per-filter configuration (or a
    /// `FilterConfig` with `disabled: false`) turns on a filter the HCM list disables.
    pub disabled: bool,
    /// `None`: a `FilterConfig` with `disabled: true` and no `config`.
    pub config: Option<RouteFilterConfig>,
}

/// A filter's per-route configuration.
#[derive(Clone, Debug)]
pub enum RouteFilterConfig {
    Buffer(BufferPerRoute),
}

/// `typed_per_filter_config` of one level: filter name → its entry.
pub type FilterConfigs = Vec<(String, PerFilter)>;

/// The per-filter configurations a route sees: for each filter name, whether the most specific
/// level naming it disables it, and the most specific configuration (route, then virtual host,
/// then route configuration).
#[derive(Clone, Debug, Default)]
pub struct ResolvedFilterConfigs {
    entries: Vec<(String, bool, Option<RouteFilterConfig>)>,
}

impl ResolvedFilterConfigs {
    /// Merge `levels`, most specific first; `None` when no level has any entry.
    pub fn resolve(levels: &[&FilterConfigs]) -> Option<Self> {
        let mut entries: Vec<(String, bool, Option<RouteFilterConfig>)> = Vec::new();
        for level in levels {
            for (name, per) in level.iter() {
                match entries.iter_mut().find(|(n, _, _)| n == name) {
                    // A more specific level decided `disabled`; it may lack a configuration.
                    Some((_, _, config)) => {
                        if config.is_none() {
                            config.clone_from(&per.config);
                        }
                    }
                    None => entries.push((name.clone(), per.disabled, per.config.clone())),
                }
            }
        }
        (!entries.is_empty()).then_some(ResolvedFilterConfigs { entries })
    }

    /// `Some(disabled)` when a level names the filter `name`.
    pub fn disabled(&self, name: &str) -> Option<bool> {
        self.entries
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, d, _)| *d)
    }

    /// The most specific configuration for the filter `name`.
    pub fn config(&self, name: &str) -> Option<&RouteFilterConfig> {
        self.entries
            .iter()
            .find(|(n, _, _)| n == name)
            .and_then(|(_, _, c)| c.as_ref())
    }
}
