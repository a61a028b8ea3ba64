//! Envoy-named stat handles for the data plane, resolved once per listener and cluster so the
//! request path only touches atomics.
//!
//! Names follow Envoy's (`http.<stat_prefix>.downstream_rq_total`,
//! `listener.<address>.downstream_cx_total`, `cluster.<name>.upstream_rq_total`, …) so existing
//! dashboards and the admin's Prometheus tag extraction work unchanged.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use shm_stats::{Counter, Gauge, Histogram, Store};

/// `http.<stat_prefix>.*`: one per HTTP connection manager (listener).
#[derive(Debug)]
pub struct HttpStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_http1_total: Counter,
    pub downstream_cx_http1_active: Gauge,
    pub downstream_cx_http2_total: Counter,
    pub downstream_cx_http2_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_protocol_error: Counter,
    pub downstream_cx_idle_timeout: Counter,
    pub downstream_cx_drain_close: Counter,
    pub downstream_cx_max_requests_reached: Counter,
    pub downstream_cx_max_duration_reached: Counter,
    /// A request that arrived as an idle connection was being closed, answered anyway.
    pub downstream_cx_drain_rescued: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_upgrades_total: Counter,
    pub downstream_cx_upgrades_active: Gauge,
    pub downstream_cx_length_ms: Histogram,
    pub downstream_rq_total: Counter,
    pub downstream_rq_http1_total: Counter,
    pub downstream_rq_http2_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_completed: Counter,
    pub downstream_rq_1xx: Counter,
    pub downstream_rq_2xx: Counter,
    pub downstream_rq_3xx: Counter,
    pub downstream_rq_4xx: Counter,
    pub downstream_rq_5xx: Counter,
    pub downstream_rq_timeout: Counter,
    pub downstream_rq_idle_timeout: Counter,
    pub downstream_rq_header_timeout: Counter,
    pub downstream_rq_rx_reset: Counter,
    /// A request body over the buffer filter's `max_request_bytes` (413).
    pub downstream_rq_too_large: Counter,
    /// `normalize_path` or `path_with_escaped_slashes_action` refused a path (400).
    pub downstream_rq_failed_path_normalization: Counter,
    /// `UNESCAPE_AND_REDIRECT` redirected a path (307).
    pub downstream_rq_redirected_with_normalized_path: Counter,
    pub downstream_rq_time: Histogram,
    pub no_route: Counter,
    /// A `cluster_header` that named no cluster.
    pub no_cluster: Counter,
    pub rq_direct_response: Counter,
    pub rq_redirect: Counter,
    pub upgrade_failed: Counter,
}

/// `listener.<address>.*`.
#[derive(Debug)]
pub struct ListenerStats {
    /// `server.total_connections`: this generation's share is its open downstream connections.
    pub server_total_connections: Gauge,
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_length_ms: Histogram,
    /// Listener filters (the TLS inspector) that did not finish within
    /// `listener_filters_timeout`.
    pub downstream_pre_cx_timeout: Counter,
    /// Connections in the listener filters.
    pub downstream_pre_cx_active: Gauge,
}

/// `tcp.<stat_prefix>.*`: one per `tcp_proxy` filter.
#[derive(Debug)]
pub struct TcpProxyStats {
    pub downstream_cx_total: Counter,
    /// No cluster of that name in the configuration.
    pub downstream_cx_no_route: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    /// Connections closed by the filter's `idle_timeout`.
    pub idle_timeout: Counter,
}

/// `proxy_proto.[<stat_prefix>.]*` of a listener's PROXY protocol filter, and the server-wide
/// `downstream_cx_proxy_proto_error`.
#[derive(Debug)]
pub struct ProxyProtoStats {
    pub not_found_allowed: Counter,
    pub not_found_disallowed: Counter,
    pub v1_found: Counter,
    pub v1_error: Counter,
    pub v2_found: Counter,
    pub v2_error: Counter,
    /// `downstream_cx_proxy_proto_error`: connections closed for a missing or bad header.
    pub error: Counter,
}

/// `http_inspector.*` (server-wide, as Envoy names them).
#[derive(Debug)]
pub struct HttpInspectorStats {
    pub http10_found: Counter,
    pub http11_found: Counter,
    pub http2_found: Counter,
    pub http_not_found: Counter,
    pub read_error: Counter,
}

/// `cluster.<name>.*`.
#[derive(Debug)]
pub struct ClusterStats {
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_http1_total: Counter,
    pub upstream_cx_http2_total: Counter,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_overflow: Counter,
    pub upstream_cx_destroy: Counter,
    /// Closed after `common_http_protocol_options.idle_timeout` without a request.
    pub upstream_cx_idle_timeout: Counter,
    /// Closed for having carried `max_requests_per_connection` requests.
    pub upstream_cx_max_requests: Counter,
    /// Closed for having lived `max_connection_duration`.
    pub upstream_cx_max_duration_reached: Counter,
    pub upstream_cx_none_healthy: Counter,
    /// A `tcp_proxy` connection gave up after `max_connect_attempts` failed connects.
    pub upstream_cx_connect_attempts_exceeded: Counter,
    /// An `ORIGINAL_DST` cluster's request header was not an `ip:port`.
    pub original_dst_host_invalid: Counter,
    pub upstream_cx_connect_ms: Histogram,
    pub upstream_cx_rx_bytes_total: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_completed: Counter,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_active: Gauge,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_rx_reset: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_overflow: Counter,
    /// A request whose body could not be held for its mirrors (Envoy's name).
    pub retry_or_shadow_abandoned: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub upstream_rq_1xx: Counter,
    pub upstream_rq_2xx: Counter,
    pub upstream_rq_3xx: Counter,
    pub upstream_rq_4xx: Counter,
    pub upstream_rq_5xx: Counter,
    pub upstream_rq_time: Histogram,
    pub membership_total: Gauge,
    pub membership_healthy: Gauge,
    /// Always 0: Baton has no degraded hosts.
    pub membership_degraded: Gauge,
    /// Always 0: Baton excludes no host from load balancing but unhealthy ones.
    pub membership_excluded: Gauge,
    pub membership_change: Counter,
    /// Hosts chosen in panic mode (too few healthy: every host is used).
    pub lb_healthy_panic: Counter,
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_failure: Counter,
    /// `cluster.<name>.upstream_rq_<code>` handles, created on first use.
    prefix: String,
    store: Store,
}

/// `cluster.<name>.health_check.*`: one per cluster with a health check, counted by the
/// process's health checker only.
#[derive(Debug)]
pub struct HealthCheckStats {
    pub attempt: Counter,
    pub success: Counter,
    /// Every failed check (network failures included).
    pub failure: Counter,
    /// Always 0 until outlier detection exists.
    pub passive_failure: Counter,
    /// Failed checks that could not connect, timed out or lost the connection.
    pub network_failure: Counter,
    /// Always 0: Baton does not verify the cluster name a service answers with.
    pub verify_cluster: Counter,
    /// Hosts that health checking counts as healthy.
    pub healthy: Gauge,
    /// Always 0: Baton has no degraded hosts.
    pub degraded: Gauge,
}

/// `cluster.<name>.outlier_detection.*`: one per cluster with outlier detection, counted by
/// its detector.
#[derive(Debug)]
pub struct OutlierStats {
    /// Hosts ejected now.
    pub ejections_active: Gauge,
    /// Consecutive-5xx and success-rate ejections within `max_ejection_percent`, enforced or
    /// not (Envoy's deprecated name).
    pub ejections_total: Counter,
    /// Ejections.
    pub ejections_enforced_total: Counter,
    /// Detections not enforced: `max_ejection_percent` would be passed.
    pub ejections_overflow: Counter,
    /// Consecutive-5xx detections (Envoy's deprecated name).
    pub ejections_consecutive_5xx: Counter,
    pub ejections_detected_consecutive_5xx: Counter,
    pub ejections_enforced_consecutive_5xx: Counter,
    pub ejections_detected_consecutive_gateway_failure: Counter,
    pub ejections_enforced_consecutive_gateway_failure: Counter,
    /// Success-rate detections (Envoy's deprecated name).
    pub ejections_success_rate: Counter,
    pub ejections_detected_success_rate: Counter,
    pub ejections_enforced_success_rate: Counter,
    pub ejections_detected_failure_percentage: Counter,
    pub ejections_enforced_failure_percentage: Counter,
    pub ejections_detected_consecutive_local_origin_failure: Counter,
    pub ejections_enforced_consecutive_local_origin_failure: Counter,
    pub ejections_detected_local_origin_success_rate: Counter,
    pub ejections_enforced_local_origin_success_rate: Counter,
    pub ejections_detected_local_origin_failure_percentage: Counter,
    pub ejections_enforced_local_origin_failure_percentage: Counter,
    /// Kinds of detection Baton does not implement, kept at 0 so the names are Envoy's.
    pub never: Vec<Counter>,
}

/// Per-worker cache of `upstream_rq_<code>` counters, so the shared registry is consulted once
/// per code and worker rather than once per response.
#[derive(Debug, Default)]
pub struct CodeCounters {
    by_code: RefCell<HashMap<u16, Counter>>,
}

/// The component of a listener's stat names: `127.0.0.1_10000`, `[__1]_10000`.
pub fn listener_stat_name(addr: &SocketAddr) -> String {
    addr.to_string().replace(':', "_")
}

macro_rules! stat_struct {
    ($store:expr, $prefix:expr, $ty:ident { $($field:ident : $kind:ident),* $(,)? } $(, $extra:ident : $val:expr)*) => {
        $ty {
            $($field: stat_struct!(@make $store, $prefix, $field, $kind),)*
            $($extra: $val,)*
        }
    };
    (@make $store:expr, $prefix:expr, $field:ident, counter) => {
        $store.counter(&format!("{}.{}", $prefix, stringify!($field)))
    };
    (@make $store:expr, $prefix:expr, $field:ident, gauge) => {
        $store.gauge(&format!("{}.{}", $prefix, stringify!($field)))
    };
    (@make $store:expr, $prefix:expr, $field:ident, histogram) => {
        $store.histogram(&format!("{}.{}", $prefix, stringify!($field)))
    };
}

// === impl HttpStats ===

impl HttpStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("http.{stat_prefix}");
        stat_struct!(
            store,
            p,
            HttpStats {
                downstream_cx_total: counter,
                downstream_cx_active: gauge,
                downstream_cx_http1_total: counter,
                downstream_cx_http1_active: gauge,
                downstream_cx_http2_total: counter,
                downstream_cx_http2_active: gauge,
                downstream_cx_destroy: counter,
                downstream_cx_protocol_error: counter,
                downstream_cx_idle_timeout: counter,
                downstream_cx_drain_close: counter,
                downstream_cx_max_requests_reached: counter,
                downstream_cx_max_duration_reached: counter,
                downstream_cx_drain_rescued: counter,
                downstream_cx_rx_bytes_total: counter,
                downstream_cx_tx_bytes_total: counter,
                downstream_cx_upgrades_total: counter,
                downstream_cx_upgrades_active: gauge,
                downstream_cx_length_ms: histogram,
                downstream_rq_total: counter,
                downstream_rq_http1_total: counter,
                downstream_rq_http2_total: counter,
                downstream_rq_active: gauge,
                downstream_rq_completed: counter,
                downstream_rq_1xx: counter,
                downstream_rq_2xx: counter,
                downstream_rq_3xx: counter,
                downstream_rq_4xx: counter,
                downstream_rq_5xx: counter,
                downstream_rq_timeout: counter,
                downstream_rq_idle_timeout: counter,
                downstream_rq_header_timeout: counter,
                downstream_rq_rx_reset: counter,
                downstream_rq_too_large: counter,
                downstream_rq_failed_path_normalization: counter,
                downstream_rq_redirected_with_normalized_path: counter,
                downstream_rq_time: histogram,
                no_route: counter,
                no_cluster: counter,
                rq_direct_response: counter,
                rq_redirect: counter,
                upgrade_failed: counter,
            }
        )
    }

    /// Count a response sent downstream by its class.
    pub fn response_class(&self, status: u16) {
        match status / 100 {
            1 => self.downstream_rq_1xx.inc(),
            2 => self.downstream_rq_2xx.inc(),
            3 => self.downstream_rq_3xx.inc(),
            4 => self.downstream_rq_4xx.inc(),
            _ => self.downstream_rq_5xx.inc(),
        }
    }
}

// === impl ListenerStats ===

impl ListenerStats {
    pub fn new(store: &Store, addr: &SocketAddr) -> Self {
        let p = format!("listener.{}", listener_stat_name(addr));
        stat_struct!(
            store,
            p,
            ListenerStats {
                downstream_cx_total: counter,
                downstream_cx_active: gauge,
                downstream_cx_destroy: counter,
                downstream_cx_length_ms: histogram,
                downstream_pre_cx_timeout: counter,
                downstream_pre_cx_active: gauge,
            },
            server_total_connections: store.gauge("server.total_connections")
        )
    }
}

// === impl TcpProxyStats ===

impl TcpProxyStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("tcp.{stat_prefix}");
        stat_struct!(
            store,
            p,
            TcpProxyStats {
                downstream_cx_total: counter,
                downstream_cx_no_route: counter,
                downstream_cx_rx_bytes_total: counter,
                downstream_cx_tx_bytes_total: counter,
                idle_timeout: counter,
            }
        )
    }
}

// === impl HttpInspectorStats ===

impl HttpInspectorStats {
    pub fn new(store: &Store) -> Self {
        stat_struct!(
            store,
            "http_inspector",
            HttpInspectorStats {
                http10_found: counter,
                http11_found: counter,
                http2_found: counter,
                http_not_found: counter,
                read_error: counter,
            }
        )
    }
}

// === impl ProxyProtoStats ===

impl ProxyProtoStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = if stat_prefix.is_empty() {
            "proxy_proto".to_owned()
        } else {
            format!("proxy_proto.{stat_prefix}")
        };
        let c = |name: &str| store.counter(&format!("{p}.{name}"));
        Self {
            not_found_allowed: c("not_found_allowed"),
            not_found_disallowed: c("not_found_disallowed"),
            v1_found: c("versions.v1.found"),
            v1_error: c("versions.v1.error"),
            v2_found: c("versions.v2.found"),
            v2_error: c("versions.v2.error"),
            error: store.counter("downstream_cx_proxy_proto_error"),
        }
    }
}

// === impl HealthCheckStats ===

impl HealthCheckStats {
    pub fn new(store: &Store, cluster: &str) -> Self {
        let p = format!("cluster.{cluster}.health_check");
        stat_struct!(
            store,
            p,
            HealthCheckStats {
                attempt: counter,
                success: counter,
                failure: counter,
                passive_failure: counter,
                network_failure: counter,
                verify_cluster: counter,
                healthy: gauge,
                degraded: gauge,
            }
        )
    }
}

// === impl OutlierStats ===

impl OutlierStats {
    pub fn new(store: &Store, cluster: &str) -> Self {
        let p = format!("cluster.{cluster}.outlier_detection");
        let never = ["ejections_detected_degradation"]
            .iter()
            .map(|n| store.counter(&format!("{p}.{n}")))
            .collect();
        stat_struct!(
            store,
            p,
            OutlierStats {
                ejections_active: gauge,
                ejections_total: counter,
                ejections_enforced_total: counter,
                ejections_overflow: counter,
                ejections_consecutive_5xx: counter,
                ejections_detected_consecutive_5xx: counter,
                ejections_enforced_consecutive_5xx: counter,
                ejections_detected_consecutive_gateway_failure: counter,
                ejections_enforced_consecutive_gateway_failure: counter,
                ejections_success_rate: counter,
                ejections_detected_success_rate: counter,
                ejections_enforced_success_rate: counter,
                ejections_detected_failure_percentage: counter,
                ejections_enforced_failure_percentage: counter,
                ejections_detected_consecutive_local_origin_failure: counter,
                ejections_enforced_consecutive_local_origin_failure: counter,
                ejections_detected_local_origin_success_rate: counter,
                ejections_enforced_local_origin_success_rate: counter,
                ejections_detected_local_origin_failure_percentage: counter,
                ejections_enforced_local_origin_failure_percentage: counter,
            },
            never: never
        )
    }
}

// === impl ClusterStats ===

impl ClusterStats {
    pub fn new(store: &Store, cluster: &str) -> Self {
        let p = format!("cluster.{cluster}");
        stat_struct!(store, p, ClusterStats {
            upstream_cx_total: counter,
            upstream_cx_active: gauge,
            upstream_cx_http1_total: counter,
            upstream_cx_http2_total: counter,
            upstream_cx_connect_fail: counter,
            upstream_cx_connect_timeout: counter,
            upstream_cx_overflow: counter,
            upstream_cx_destroy: counter,
            upstream_cx_idle_timeout: counter,
            upstream_cx_max_requests: counter,
            upstream_cx_max_duration_reached: counter,
            upstream_cx_none_healthy: counter,
                upstream_cx_connect_attempts_exceeded: counter,
            original_dst_host_invalid: counter,
            upstream_cx_connect_ms: histogram,
            upstream_cx_rx_bytes_total: counter,
            upstream_cx_tx_bytes_total: counter,
            upstream_rq_total: counter,
            upstream_rq_active: gauge,
            upstream_rq_completed: counter,
            upstream_rq_pending_overflow: counter,
            upstream_rq_pending_total: counter,
            upstream_rq_pending_active: gauge,
            upstream_rq_timeout: counter,
            upstream_rq_per_try_timeout: counter,
            upstream_rq_rx_reset: counter,
            upstream_rq_retry: counter,
            upstream_rq_retry_success: counter,
            upstream_rq_retry_overflow: counter,
            retry_or_shadow_abandoned: counter,
            upstream_rq_retry_limit_exceeded: counter,
            upstream_rq_retry_backoff_exponential: counter,
            upstream_rq_1xx: counter,
            upstream_rq_2xx: counter,
            upstream_rq_3xx: counter,
            upstream_rq_4xx: counter,
            upstream_rq_5xx: counter,
            upstream_rq_time: histogram,
            membership_total: gauge,
            membership_healthy: gauge,
            membership_degraded: gauge,
            membership_excluded: gauge,
            membership_change: counter,
            lb_healthy_panic: counter,
            update_attempt: counter,
            update_success: counter,
            update_failure: counter,
        }, prefix: p.clone(), store: store.clone())
    }

    /// Count a response received from upstream: its class and its exact code.
    pub fn response(&self, status: u16, codes: &CodeCounters) {
        match status / 100 {
            1 => self.upstream_rq_1xx.inc(),
            2 => self.upstream_rq_2xx.inc(),
            3 => self.upstream_rq_3xx.inc(),
            4 => self.upstream_rq_4xx.inc(),
            _ => self.upstream_rq_5xx.inc(),
        }
        let mut map = codes.by_code.borrow_mut();
        map.entry(status)
            .or_insert_with(|| {
                self.store
                    .counter(&format!("{}.upstream_rq_{status}", self.prefix))
            })
            .inc();
    }
}

// === HealthCheckFilterStats ===

/// `http.<stat_prefix>.health_check.*`: the health-check HTTP filter's (only with one).
#[derive(Debug)]
pub struct HealthCheckFilterStats {
    pub request_total: Counter,
    pub ok: Counter,
    pub failed: Counter,
    pub cached_response: Counter,
    pub degraded: Counter,
    pub failed_cluster_empty: Counter,
    pub failed_cluster_not_found: Counter,
    pub failed_cluster_unhealthy: Counter,
}

impl HealthCheckFilterStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("http.{stat_prefix}.health_check");
        stat_struct!(
            store,
            p,
            HealthCheckFilterStats {
                request_total: counter,
                ok: counter,
                failed: counter,
                cached_response: counter,
                degraded: counter,
                failed_cluster_empty: counter,
                failed_cluster_not_found: counter,
                failed_cluster_unhealthy: counter,
            }
        )
    }
}

// === FaultFilterStats ===

/// `http.<stat_prefix>.fault.*`: the fault filter's (only with one).
#[derive(Debug)]
pub struct FaultFilterStats {
    pub delays_injected: Counter,
    pub aborts_injected: Counter,
    pub response_rl_injected: Counter,
    pub faults_overflow: Counter,
    pub active_faults: Gauge,
    /// `….fault.<downstream cluster>.{delays,aborts}_injected`, created on first use.
    prefix: String,
    store: Store,
}

impl FaultFilterStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("http.{stat_prefix}.fault");
        stat_struct!(
            store,
            p,
            FaultFilterStats {
                delays_injected: counter,
                aborts_injected: counter,
                response_rl_injected: counter,
                faults_overflow: counter,
                active_faults: gauge,
            },
            prefix: p.clone(),
            store: store.clone()
        )
    }

    /// `….fault.<cluster>.<what>` (`delays_injected`, `aborts_injected`): a downstream
    /// cluster's count.
    pub fn downstream_cluster(&self, cluster: &str, what: &str) {
        self.store
            .counter(&format!("{}.{cluster}.{what}", self.prefix))
            .inc();
    }
}

// === CorsStats ===

/// `http.<stat_prefix>.cors.*`: the CORS filter's (only with one).
#[derive(Debug)]
pub struct CorsStats {
    pub origin_valid: Counter,
    pub origin_invalid: Counter,
}

impl CorsStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("http.{stat_prefix}.cors");
        stat_struct!(
            store,
            p,
            CorsStats {
                origin_valid: counter,
                origin_invalid: counter,
            }
        )
    }
}

// === CsrfStats ===

/// `http.<stat_prefix>.csrf.*`: the CSRF filter's (only with one).
#[derive(Debug)]
pub struct CsrfStats {
    pub missing_source_origin: Counter,
    pub request_invalid: Counter,
    pub request_valid: Counter,
}

impl CsrfStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("http.{stat_prefix}.csrf");
        stat_struct!(
            store,
            p,
            CsrfStats {
                missing_source_origin: counter,
                request_invalid: counter,
                request_valid: counter,
            }
        )
    }
}

// === RbacStats ===

/// `<prefix>rbac.*`: one RBAC filter's (`http.<stat_prefix>.` for the HTTP filter, `<stat_prefix>.`
/// for the network one), with the rules' and shadow rules' own prefixes.
#[derive(Debug)]
pub struct RbacStats {
    pub allowed: Counter,
    pub denied: Counter,
    pub shadow_allowed: Counter,
    pub shadow_denied: Counter,
}

impl RbacStats {
    /// `prefix` ends with `.` (or is empty); Envoy 1.40 puts a `.` after each non-empty
    /// rules prefix not ending with one (`rbac.r_.allowed`).
    pub fn new(store: &Store, prefix: &str, rules: &str, shadow: &str) -> Self {
        let join = |p: &str| {
            if p.is_empty() || p.ends_with('.') {
                format!("{prefix}rbac.{p}")
            } else {
                format!("{prefix}rbac.{p}.")
            }
        };
        let (r, s) = (join(rules), join(shadow));
        RbacStats {
            allowed: store.counter(&format!("{r}allowed")),
            denied: store.counter(&format!("{r}denied")),
            shadow_allowed: store.counter(&format!("{s}shadow_allowed")),
            shadow_denied: store.counter(&format!("{s}shadow_denied")),
        }
    }
}

// === LocalRateLimitStats ===

/// `<stat_prefix>.http_local_rate_limit.*`: one local rate limit configuration's.
#[derive(Debug)]
pub struct LocalRateLimitStats {
    pub enabled: Counter,
    pub enforced: Counter,
    pub ok: Counter,
    pub rate_limited: Counter,
    /// Always 0: Baton has no shadow mode (descriptors' `shadow_mode`).
    pub shadow_mode: Counter,
}

impl LocalRateLimitStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let p = format!("{stat_prefix}.http_local_rate_limit");
        stat_struct!(
            store,
            p,
            LocalRateLimitStats {
                enabled: counter,
                enforced: counter,
                ok: counter,
                rate_limited: counter,
                shadow_mode: counter,
            }
        )
    }
}

// === CompressorStats ===

/// `http.<stat_prefix>.compressor.<library name>.<gzip|brotli|zstd>.*`: one compressor
/// filter's. The direction counters of the response are under `response.` when the filter has
/// a `response_direction_config`, as Envoy keeps them; the request's always under `request.`.
#[derive(Debug)]
pub struct CompressorStats {
    pub response: CompressorDirectionStats,
    pub request: CompressorDirectionStats,
    pub no_accept_header: Counter,
    pub header_identity: Counter,
    pub header_compressor_used: Counter,
    pub header_compressor_overshadowed: Counter,
    pub header_wildcard: Counter,
    pub header_not_valid: Counter,
    pub not_compressed_etag: Counter,
}

/// One direction's counters of a compressor filter.
#[derive(Debug, Clone)]
pub struct CompressorDirectionStats {
    pub compressed: Counter,
    pub not_compressed: Counter,
    pub total_uncompressed_bytes: Counter,
    pub total_compressed_bytes: Counter,
    pub content_length_too_small: Counter,
}

impl CompressorStats {
    pub fn new(
        store: &Store,
        stat_prefix: &str,
        library_name: &str,
        library: &str,
        response_scoped: bool,
    ) -> Self {
        let p = format!("http.{stat_prefix}.compressor.{library_name}.{library}");
        let direction = |d: String| {
            stat_struct!(
                store,
                d,
                CompressorDirectionStats {
                    compressed: counter,
                    not_compressed: counter,
                    total_uncompressed_bytes: counter,
                    total_compressed_bytes: counter,
                    content_length_too_small: counter,
                }
            )
        };
        let response = direction(if response_scoped {
            format!("{p}.response")
        } else {
            p.clone()
        });
        let request = direction(format!("{p}.request"));
        stat_struct!(
            store,
            p,
            CompressorStats {
                no_accept_header: counter,
                header_identity: counter,
                header_compressor_used: counter,
                header_compressor_overshadowed: counter,
                header_wildcard: counter,
                header_not_valid: counter,
                not_compressed_etag: counter,
            },
            response: response,
            request: request
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_envoy() {
        let store = Store::new();
        let h = HttpStats::new(&store, "ingress_http");
        h.downstream_rq_total.inc();
        let c = ClusterStats::new(&store, "backend");
        let codes = CodeCounters::default();
        c.response(503, &codes);
        c.response(503, &codes);
        let l = ListenerStats::new(&store, &"[::1]:10000".parse().unwrap());
        l.downstream_cx_total.inc();
        let snap = store.snapshot();
        let get = |n: &str| {
            snap.stats
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("http.ingress_http.downstream_rq_total"),
            Some(shm_stats::Value::Counter(1))
        );
        assert_eq!(
            get("cluster.backend.upstream_rq_503"),
            Some(shm_stats::Value::Counter(2))
        );
        assert_eq!(
            get("cluster.backend.upstream_rq_5xx"),
            Some(shm_stats::Value::Counter(2))
        );
        assert_eq!(
            get("listener.[__1]_10000.downstream_cx_total"),
            Some(shm_stats::Value::Counter(1))
        );
    }
}
