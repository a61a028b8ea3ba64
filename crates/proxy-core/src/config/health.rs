//! A cluster's active health check (`clusters[].health_checks[]`), its outlier detection, and
//! the load-balancing settings that depend on health (`common_lb_config`), validated.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// Envoy's default `no_traffic_interval`.
pub const DEFAULT_NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);
/// Envoy's default `common_lb_config.healthy_panic_threshold`, in percent.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;

/// One `health_checks[]` entry.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    /// How long one check may take, connect included.
    pub timeout: Duration,
    /// Between checks of a healthy host of a cluster that has seen traffic.
    pub interval: Duration,
    /// A random extra delay in `0..=interval_jitter` added to every interval.
    pub interval_jitter: Duration,
    /// Consecutive failures that take a healthy host out.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that bring an unhealthy host back.
    pub healthy_threshold: u32,
    /// Between checks while the cluster has not opened any upstream connection yet.
    pub no_traffic_interval: Duration,
    /// The same for a host that passes (default `no_traffic_interval`).
    pub no_traffic_healthy_interval: Duration,
    /// A random extra delay of up to this percent of the interval, added to every interval.
    pub interval_jitter_percent: u32,
    /// Keep a check's connection for the next check (Envoy's default).
    pub reuse_connection: bool,
    /// Between checks of an unhealthy host (default `interval`).
    pub unhealthy_interval: Duration,
    /// Before the first check after a host turns unhealthy (default `unhealthy_interval`).
    pub unhealthy_edge_interval: Duration,
    /// Before the first check after a host turns healthy (default `interval`).
    pub healthy_edge_interval: Duration,
    /// Log every failed check, not only the ones that change a host's health.
    pub always_log_failures: bool,
    pub kind: CheckKind,
}

/// What one check does.
#[derive(Clone, Debug)]
pub enum CheckKind {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Grpc(GrpcCheck),
}

/// `grpc_health_check`: `grpc.health.v1.Health/Check` over HTTP/2; passes on `SERVING`.
#[derive(Clone, Debug, Default)]
pub struct GrpcCheck {
    /// The `service` asked about (empty: the server as a whole).
    pub service_name: String,
    /// The `:authority` sent; empty in the configuration means the cluster's name.
    pub authority: String,
}

/// `http_health_check`.
#[derive(Clone, Debug)]
pub struct HttpCheck {
    /// The `host` field sent; empty in the configuration means the cluster's name.
    pub host: String,
    pub path: String,
    /// Half-open `[start, end)` status ranges that pass; Envoy's default is `[200, 201)`.
    pub expected_statuses: Vec<(u16, u16)>,
    /// `request_headers_to_add`, in order, after `host` and `user-agent`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `codec_client_type: HTTP2`: HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
}

/// `tcp_health_check`: connect, write `send` (if any), and find every `receive` block in order
/// in what comes back (none: the connect alone passes).
#[derive(Clone, Debug, Default)]
pub struct TcpCheck {
    pub send: Vec<u8>,
    pub receive: Vec<Vec<u8>>,
}

// === impl HttpCheck ===

impl HttpCheck {
    /// Whether `status` passes.
    pub fn expects(&self, status: u16) -> bool {
        self.expected_statuses
            .iter()
            .any(|&(start, end)| (start..end).contains(&status))
    }
}

/// `clusters[].outlier_detection`: ejection on consecutive errors, on a success rate far below
/// the other hosts', and on a failure percentage over a threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetection {
    /// Consecutive 5xx (local connect failures, resets and timeouts count as 503/504) that
    /// detect an outlier; 0 never does.
    pub consecutive_5xx: u32,
    /// Consecutive 502, 503 or 504 (local failures count) that detect an outlier; 0 never does.
    pub consecutive_gateway_failure: u32,
    /// Percent chance that a consecutive-5xx detection ejects.
    pub enforcing_consecutive_5xx: u32,
    /// Percent chance that a consecutive-gateway-failure detection ejects (Envoy: 0).
    pub enforcing_consecutive_gateway_failure: u32,
    /// How often ejections are reviewed (ended, or their multiplier lowered).
    pub interval: Duration,
    /// An ejection lasts this times the host's ejection count...
    pub base_ejection_time: Duration,
    /// ...but no longer than this (nor less than `base_ejection_time`).
    pub max_ejection_time: Duration,
    /// No ejection that would leave more than this percent of the hosts ejected.
    pub max_ejection_percent: u32,
    /// A passing active health check ends an ejection.
    pub uneject_on_health_check: bool,
    /// Hosts with enough requests in an interval for success-rate detection to run.
    pub success_rate_minimum_hosts: u32,
    /// Requests in an interval for a host to count in success-rate detection.
    pub success_rate_request_volume: u32,
    /// A host is an outlier below the mean success rate minus this / 1000 standard deviations.
    pub success_rate_stdev_factor: u32,
    /// Percent chance that a success-rate detection ejects.
    pub enforcing_success_rate: u32,
    /// A host failing at least this percent of its requests is an outlier.
    pub failure_percentage_threshold: u32,
    /// Hosts with enough requests in an interval for failure-percentage detection to run.
    pub failure_percentage_minimum_hosts: u32,
    /// Requests in an interval for a host to count in failure-percentage detection.
    pub failure_percentage_request_volume: u32,
    /// Percent chance that a failure-percentage detection ejects (Envoy: 0).
    pub enforcing_failure_percentage: u32,
    /// Local failures (connect failures, resets, timeouts) are counted apart from the
    /// upstream's 5xx: by `consecutive_local_origin_failure` and the local-origin rates.
    pub split_external_local_origin_errors: bool,
    /// With the split: consecutive local failures that detect an outlier; 0 never does.
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub enforcing_failure_percentage_local_origin: u32,
}

impl Default for OutlierDetection {
    /// Envoy's defaults.
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            uneject_on_health_check: true,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_success_rate: 100,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            enforcing_failure_percentage: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_local_origin_success_rate: 100,
            enforcing_failure_percentage_local_origin: 0,
        }
    }
}
