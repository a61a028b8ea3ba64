//! The HTTP filters in front of the router, as configured: the HCM's `http_filters` entries and
//! the per-route configurations (`typed_per_filter_config`) that may override them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{HeaderAdd, HeaderMatchKind, HeaderName};

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
    /// `envoy.filters.http.fault`.
    Fault(Box<FaultFilter>),
    /// `envoy.filters.http.local_ratelimit`.
    LocalRateLimit(Box<LocalRateLimit>),
    /// `envoy.filters.http.cors`: its policies are the routes' (per-filter or legacy `cors`).
    Cors,
    /// `envoy.filters.http.csrf`.
    Csrf(Box<CsrfPolicy>),
    /// `envoy.filters.http.rbac`.
    Rbac(Box<super::RbacFilter>),
    /// `envoy.filters.http.compressor`.
    Compressor(Box<super::CompressorFilter>),
    /// `envoy.filters.http.set_metadata`.
    SetMetadata(Box<super::SetMetadata>),
    /// `envoy.filters.http.header_to_metadata`.
    HeaderToMetadata(Box<super::HeaderToMetadata>),
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

/// `envoy.filters.http.fault` (`HTTPFault`): delays and aborts injected into matching
/// requests.
#[derive(Clone, Debug, Default)]
pub struct FaultFilter {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Faults only for requests routed to this cluster.
    pub upstream_cluster: Option<String>,
    /// All must match.
    pub headers: Vec<FilterHeaderMatcher>,
    /// Faults only for requests whose `x-envoy-downstream-service-node` is one of these.
    pub downstream_nodes: Vec<String>,
    /// At most this many faulted requests at once (unlimited by default).
    pub max_active_faults: Option<u32>,
    /// `!disable_downstream_cluster_stats`: also count per
    /// `x-envoy-downstream-service-cluster`.
    pub downstream_cluster_stats: bool,
}

/// A `type.v3.FractionalPercent`: `numerator` out of `denominator` (100, 10 000, 1 000 000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FractionalPercent {
    pub numerator: u32,
    pub denominator: u32,
}

impl FractionalPercent {
    /// A roll with `random` (uniform over `u64`): whether it falls within the fraction.
    pub fn hit(self, random: u64) -> bool {
        random % u64::from(self.denominator.max(1)) < u64::from(self.numerator)
    }
}

/// `FaultDelay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultDelay {
    pub kind: FaultDelayKind,
    /// Unset in the configuration: 0 out of 100 (never), as in Envoy.
    pub percentage: FractionalPercent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultDelayKind {
    /// `fixed_delay`.
    Fixed(std::time::Duration),
    /// `header_delay`: `x-envoy-fault-delay-request` (milliseconds).
    Header,
}

/// `FaultAbort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultAbort {
    pub kind: FaultAbortKind,
    /// Unset in the configuration: 0 out of 100 (never), as in Envoy.
    pub percentage: FractionalPercent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAbortKind {
    /// `http_status`, in [200, 600).
    Http(u16),
    /// `grpc_status`: a gRPC request gets a trailers-only answer with this status; any other
    /// 200 with Envoy's body.
    Grpc(u32),
    /// `header_abort`: `x-envoy-fault-abort-request` (an HTTP status) or
    /// `x-envoy-fault-abort-grpc-request`.
    Header,
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
    /// A route's `HTTPFault` replaces the filter's whole configuration.
    Fault(Box<FaultFilter>),
    /// A route's `LocalRateLimit`, with its own bucket and stats.
    LocalRateLimit(Box<LocalRateLimit>),
    /// `CorsPolicy`: merged field by field across levels, most specific first.
    Cors(Box<CorsPolicy>),
    /// A route's `CsrfPolicy` replaces the filter's.
    Csrf(Box<CsrfPolicy>),
    /// `RBACPerRoute.rbac` replaces the filter's rules (its stats stay the filter's); without
    /// rules the filter lets everything through, uncounted.
    Rbac(Box<super::Rbac>),
    Compressor(super::CompressorPerRoute),
}

/// `typed_per_filter_config` of one level: filter name → its entry.
pub type FilterConfigs = Vec<(String, PerFilter)>;

/// The per-filter configurations a route sees: for each filter name, whether the most specific
/// level naming it disables it, and the most specific configuration (route, then virtual host,
/// then route configuration).
#[derive(Clone, Debug, Default)]
pub struct ResolvedFilterConfigs {
    entries: Vec<(String, bool, Option<RouteFilterConfig>)>,
    /// The legacy `cors` of the route's action and its virtual host, merged (for a CORS
    /// filter with no per-filter policy).
    legacy_cors: Option<CorsPolicy>,
}

impl ResolvedFilterConfigs {
    /// Merge `levels`, most specific first, and the legacy CORS policies (route, virtual
    /// host); `None` when there is nothing.
    pub fn resolve(
        levels: &[&FilterConfigs],
        legacy_cors: [Option<&CorsPolicy>; 2],
    ) -> Option<Self> {
        let mut entries: Vec<(String, bool, Option<RouteFilterConfig>)> = Vec::new();
        for level in levels {
            for (name, per) in level.iter() {
                match entries.iter_mut().find(|(n, _, _)| n == name) {
                    // A more specific level decided `disabled`; it may lack a configuration.
                    Some((_, _, config)) => match (config, &per.config) {
                        (
                            Some(RouteFilterConfig::Cors(mine)),
                            Some(RouteFilterConfig::Cors(less)),
                        ) => {
                            mine.fill_from(less);
                        }
                        (config @ None, _) => config.clone_from(&per.config),
                        _ => {}
                    },
                    None => entries.push((name.clone(), per.disabled, per.config.clone())),
                }
            }
        }
        let legacy_cors = match legacy_cors {
            [Some(r), Some(v)] => {
                let mut p = r.clone();
                p.fill_from(v);
                Some(p)
            }
            [r, v] => r.or(v).cloned(),
        };
        (!entries.is_empty() || legacy_cors.is_some()).then_some(ResolvedFilterConfigs {
            entries,
            legacy_cors,
        })
    }

    /// The legacy `cors` policy (route action's over the virtual host's).
    pub fn legacy_cors(&self) -> Option<&CorsPolicy> {
        self.legacy_cors.as_ref()
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

/// `envoy.filters.http.local_ratelimit` (`LocalRateLimit`): a token bucket in front of the
/// router.
#[derive(Clone, Debug)]
pub struct LocalRateLimit {
    /// Stats are `<stat_prefix>.http_local_rate_limit.*`.
    pub stat_prefix: String,
    /// `status.code` (default 429).
    pub status: u16,
    /// `token_bucket`: shared by every worker (one per configuration, as Envoy's), unless
    /// `per_connection`.
    pub bucket: Arc<TokenBucket>,
    /// `filter_enabled.default_value`; unset: 0% (the filter does nothing), as Envoy.
    pub enabled: FractionalPercent,
    /// `filter_enforced.default_value`; unset: 0% (limited requests only counted).
    pub enforced: FractionalPercent,
    /// `response_headers_to_add`: on limited responses.
    pub response_headers_to_add: Vec<HeaderAdd>,
    /// `request_headers_to_add_when_not_enforced`.
    pub request_headers_when_not_enforced: Vec<HeaderAdd>,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit_headers: bool,
    /// `local_rate_limit_per_downstream_connection`: a bucket per connection.
    pub per_connection: bool,
}

/// A token bucket filled continuously at `tokens_per_fill` per `fill_interval`, up to
/// `max_tokens`, full at the start. Shared between threads (a mutex held for a few
/// instructions).
#[derive(Debug)]
pub struct TokenBucket {
    pub max_tokens: u32,
    /// Tokens per second.
    rate: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug, Clone, Copy)]
struct BucketState {
    tokens: f64,
    at: Instant,
}

/// What a bucket answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    pub allowed: bool,
    /// Whole tokens left.
    pub remaining: u32,
    /// Seconds until the next token (0 while any is left), rounded up.
    pub reset_secs: u64,
}

impl TokenBucket {
    pub fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> Self {
        TokenBucket {
            max_tokens,
            rate: f64::from(tokens_per_fill) / fill_interval.as_secs_f64().max(1e-9),
            state: Mutex::new(BucketState {
                tokens: f64::from(max_tokens),
                at: Instant::now(),
            }),
        }
    }

    /// A fresh bucket with this one's shape (a connection's own).
    pub fn fresh(&self) -> Self {
        TokenBucket {
            max_tokens: self.max_tokens,
            rate: self.rate,
            state: Mutex::new(BucketState {
                tokens: f64::from(self.max_tokens),
                at: Instant::now(),
            }),
        }
    }

    /// Take one token at `now`, if there is one.
    pub fn consume(&self, now: Instant) -> Consumed {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(f64::from(self.max_tokens));
        s.at = now.max(s.at);
        let allowed = s.tokens >= 1.0;
        if allowed {
            s.tokens -= 1.0;
        }
        let reset_secs = if s.tokens >= 1.0 {
            0
        } else {
            ((1.0 - s.tokens) / self.rate).ceil() as u64
        };
        Consumed {
            allowed,
            remaining: s.tokens.floor() as u32,
            reset_secs,
        }
    }
}

/// `envoy.extensions.filters.http.cors.v3.CorsPolicy` (or the legacy `config.route.v3`
/// one): each field unset (`None`, empty) defers to a less specific level's.
#[derive(Clone, Debug, Default)]
pub struct CorsPolicy {
    /// `allow_origin_string_match`: an origin matching one is allowed.
    pub allow_origin: Vec<HeaderMatchKind>,
    pub allow_methods: Option<String>,
    pub allow_headers: Option<String>,
    pub expose_headers: Option<String>,
    pub max_age: Option<String>,
    pub allow_credentials: Option<bool>,
    /// `filter_enabled.default_value` (default 100%).
    pub enabled: Option<FractionalPercent>,
    /// `forward_not_matching_preflights` (default true).
    pub forward_not_matching_preflights: Option<bool>,
}

impl CorsPolicy {
    /// Fill what this level leaves unset from a less specific one.
    pub fn fill_from(&mut self, less: &CorsPolicy) {
        if self.allow_origin.is_empty() {
            self.allow_origin.clone_from(&less.allow_origin);
        }
        fn fill<T: Clone>(mine: &mut Option<T>, less: &Option<T>) {
            if mine.is_none() {
                mine.clone_from(less);
            }
        }
        fill(&mut self.allow_methods, &less.allow_methods);
        fill(&mut self.allow_headers, &less.allow_headers);
        fill(&mut self.expose_headers, &less.expose_headers);
        fill(&mut self.max_age, &less.max_age);
        fill(&mut self.allow_credentials, &less.allow_credentials);
        fill(&mut self.enabled, &less.enabled);
        fill(
            &mut self.forward_not_matching_preflights,
            &less.forward_not_matching_preflights,
        );
    }
}

/// `envoy.extensions.filters.http.csrf.v3.CsrfPolicy`: a request that may change state
/// (`POST`, `PUT`, `DELETE`, `PATCH`) must come from its own origin or an allowed one.
#[derive(Clone, Debug)]
pub struct CsrfPolicy {
    /// `filter_enabled.default_value` (required): checked and enforced.
    pub enabled: FractionalPercent,
    /// `shadow_enabled.default_value` (default 0%): checked and counted only.
    pub shadow: FractionalPercent,
    /// `additional_origins`: source origins (host and port) also accepted.
    pub additional_origins: Vec<HeaderMatchKind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(n: u32) -> PerFilter {
        PerFilter {
            disabled: false,
            config: Some(RouteFilterConfig::Buffer(BufferPerRoute::Buffer(
                BufferFilter {
                    max_request_bytes: n,
                },
            ))),
        }
    }

    fn limit(r: &ResolvedFilterConfigs, name: &str) -> Option<u32> {
        match r.config(name) {
            Some(RouteFilterConfig::Buffer(BufferPerRoute::Buffer(b))) => Some(b.max_request_bytes),
            _ => None,
        }
    }

    #[test]
    fn the_most_specific_level_wins_for_disabled_and_config() {
        let route = vec![(
            "b".to_owned(),
            PerFilter {
                disabled: true,
                config: None,
            },
        )];
        let vhost = vec![("b".to_owned(), buffer(8)), ("c".to_owned(), buffer(9))];
        let rc = vec![("c".to_owned(), buffer(1)), ("d".to_owned(), buffer(2))];
        let r = ResolvedFilterConfigs::resolve(&[&route, &vhost, &rc], [None, None]).unwrap();
        assert_eq!(r.disabled("b"), Some(true));
        // A level that only disables leaves the configuration to the next one.
        assert_eq!(limit(&r, "b"), Some(8));
        assert_eq!((r.disabled("c"), limit(&r, "c")), (Some(false), Some(9)));
        assert_eq!(limit(&r, "d"), Some(2));
        assert_eq!(r.disabled("x"), None);
        assert!(ResolvedFilterConfigs::resolve(&[&vec![], &vec![]], [None, None]).is_none());
    }

    #[test]
    fn cors_policies_merge_field_by_field() {
        let route = CorsPolicy {
            expose_headers: Some("x-r".into()),
            ..Default::default()
        };
        let vhost = CorsPolicy {
            expose_headers: Some("x-v".into()),
            allow_methods: Some("GET".into()),
            allow_origin: vec![HeaderMatchKind::Exact("o".into())],
            ..Default::default()
        };
        let at = |p: CorsPolicy| {
            vec![(
                "cors".to_owned(),
                PerFilter {
                    disabled: false,
                    config: Some(RouteFilterConfig::Cors(Box::new(p))),
                },
            )]
        };
        let r = ResolvedFilterConfigs::resolve(&[&at(route), &at(vhost)], [None, None]).unwrap();
        let Some(RouteFilterConfig::Cors(p)) = r.config("cors") else {
            panic!("no policy")
        };
        assert_eq!(p.expose_headers.as_deref(), Some("x-r"));
        assert_eq!(p.allow_methods.as_deref(), Some("GET"));
        assert_eq!(p.allow_origin.len(), 1);
    }

    #[test]
    fn a_token_bucket_refills_continuously_up_to_its_size() {
        let b = TokenBucket::new(2, 1, Duration::from_secs(10));
        let t = Instant::now();
        let c = b.consume(t);
        assert_eq!((c.allowed, c.remaining, c.reset_secs), (true, 1, 0));
        let c = b.consume(t);
        assert_eq!((c.allowed, c.remaining, c.reset_secs), (true, 0, 10));
        assert!(!b.consume(t + Duration::from_secs(5)).allowed);
        let c = b.consume(t + Duration::from_secs(10));
        assert_eq!((c.allowed, c.remaining), (true, 0));
        // Never more than max_tokens however long it waits.
        let later = t + Duration::from_secs(1000);
        assert_eq!(b.consume(later).remaining, 1);
        assert_eq!(b.fresh().consume(later).remaining, 1);
    }

    #[test]
    fn fractional_percent_bounds() {
        let never = FractionalPercent {
            numerator: 0,
            denominator: 100,
        };
        let always = FractionalPercent {
            numerator: 100,
            denominator: 100,
        };
        let over = FractionalPercent {
            numerator: 200,
            denominator: 100,
        };
        for r in [0, 1, 99, 100, u64::MAX] {
            assert!(!never.hit(r));
            assert!(always.hit(r));
            assert!(over.hit(r));
        }
    }
}
