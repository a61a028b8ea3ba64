//! `clusters[].health_checks`, `clusters[].outlier_detection`, `clusters[].common_lb_config`
//! and the endpoints' `health_check_config`: their on-disk shape (serde structs that reject
//! unknown fields) and their validation into `proxy_core::config`.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use proxy_core::config::{
    CheckKind, GrpcCheck, HealthCheck, HttpCheck, OutlierDetection, TcpCheck,
    DEFAULT_NO_TRAFFIC_INTERVAL, DEFAULT_PANIC_THRESHOLD,
};
use serde::Deserialize;

use super::de::{join, Dur, Int};
use super::Errors;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    timeout: Option<Dur>,
    interval: Option<Dur>,
    interval_jitter: Option<Dur>,
    unhealthy_threshold: Option<Int<u32>>,
    healthy_threshold: Option<Int<u32>>,
    no_traffic_interval: Option<Dur>,
    no_traffic_healthy_interval: Option<Dur>,
    interval_jitter_percent: Option<Int<u32>>,
    reuse_connection: Option<bool>,
    unhealthy_interval: Option<Dur>,
    unhealthy_edge_interval: Option<Dur>,
    healthy_edge_interval: Option<Dur>,
    #[serde(default)]
    always_log_health_check_failures: bool,
    http_health_check: Option<HttpHealthCheck>,
    tcp_health_check: Option<TcpHealthCheck>,
    grpc_health_check: Option<GrpcHealthCheck>,
}

/// `grpc_health_check` (`initial_metadata` is not supported).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcHealthCheck {
    #[serde(default)]
    service_name: String,
    #[serde(default)]
    authority: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpHealthCheck {
    #[serde(default)]
    host: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    expected_statuses: Vec<Int64Range>,
    #[serde(default)]
    request_headers_to_add: Vec<HeaderValueOption>,
    codec_client_type: Option<CodecClientType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum CodecClientType {
    #[serde(rename = "HTTP1")]
    Http1,
    #[serde(rename = "HTTP2")]
    Http2,
    #[serde(rename = "HTTP3")]
    Http3,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Int64Range {
    #[serde(default = "zero")]
    start: Int<i64>,
    #[serde(default = "zero")]
    end: Int<i64>,
}

fn zero() -> Int<i64> {
    Int(0)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderValueOption {
    header: RawHeader,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpHealthCheck {
    send: Option<Payload>,
    #[serde(default)]
    receive: Vec<Payload>,
}

/// `config.core.v3.HealthCheck.Payload`: only `text` (hex).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    text: String,
}

/// `clusters[].outlier_detection`: consecutive errors, success rate, failure percentage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutlierDetection {
    consecutive_5xx: Option<Int<u32>>,
    consecutive_gateway_failure: Option<Int<u32>>,
    enforcing_consecutive_5xx: Option<Int<u32>>,
    enforcing_consecutive_gateway_failure: Option<Int<u32>>,
    interval: Option<Dur>,
    base_ejection_time: Option<Dur>,
    max_ejection_time: Option<Dur>,
    max_ejection_percent: Option<Int<u32>>,
    enforcing_success_rate: Option<Int<u32>>,
    successful_active_health_check_uneject_host: Option<bool>,
    success_rate_minimum_hosts: Option<Int<u32>>,
    success_rate_request_volume: Option<Int<u32>>,
    success_rate_stdev_factor: Option<Int<u32>>,
    failure_percentage_threshold: Option<Int<u32>>,
    failure_percentage_minimum_hosts: Option<Int<u32>>,
    failure_percentage_request_volume: Option<Int<u32>>,
    enforcing_failure_percentage: Option<Int<u32>>,
    split_external_local_origin_errors: Option<bool>,
    consecutive_local_origin_failure: Option<Int<u32>>,
    enforcing_consecutive_local_origin_failure: Option<Int<u32>>,
    enforcing_local_origin_success_rate: Option<Int<u32>>,
    enforcing_failure_percentage_local_origin: Option<Int<u32>>,
}

/// `clusters[].common_lb_config`: the panic threshold, and consistent hashing's options
/// (validated with the policy, in `lb`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommonLbConfig {
    healthy_panic_threshold: Option<Percent>,
    pub consistent_hashing_lb_config: Option<super::lb::ConsistentHashingLbConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Percent {
    #[serde(default)]
    value: f64,
}

/// `lb_endpoints[].endpoint.health_check_config`: only the port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckConfig {
    port_value: Option<Int<u32>>,
}

/// The panic threshold in percent of `common_lb_config` at `path` (the cluster's).
pub(crate) fn panic_threshold(lb: Option<CommonLbConfig>, path: &str, errs: &mut Errors) -> f64 {
    let Some(p) = lb.and_then(|l| l.healthy_panic_threshold) else {
        return DEFAULT_PANIC_THRESHOLD;
    };
    if !(0.0..=100.0).contains(&p.value) {
        errs.push(
            join(path, "common_lb_config.healthy_panic_threshold.value"),
            "must be a percentage in 0..=100",
        );
    }
    p.value
}

/// The port of an endpoint's `health_check_config` at `path`.
pub(crate) fn check_port(
    cfg: Option<HealthCheckConfig>,
    path: &str,
) -> Result<Option<u16>, super::ConfigError> {
    let Some(port) = cfg.and_then(|c| c.port_value) else {
        return Ok(None);
    };
    match u16::try_from(port.0) {
        // 0 is proto3's unset: the endpoint's own port.
        Ok(0) => Ok(None),
        Ok(p) => Ok(Some(p)),
        _ => Err(super::ConfigError::new(
            join(path, "health_check_config.port_value"),
            "must be a port in 1..=65535",
        )),
    }
}

/// The cluster's `outlier_detection` (at `path`), validated.
pub(crate) fn outlier_detection(
    raw: Option<RawOutlierDetection>,
    path: &str,
    errs: &mut Errors,
) -> Option<OutlierDetection> {
    let raw = raw?;
    let d = OutlierDetection::default();
    let or = |v: Option<Int<u32>>, default: u32| v.map_or(default, |v| v.0);
    let mut positive = |v: Option<Dur>, field: &str, default: Duration| match v {
        Some(v) if v.0.is_zero() => {
            errs.push(join(path, field), "must be greater than 0s");
            default
        }
        Some(v) => v.0,
        None => default,
    };
    let od = OutlierDetection {
        consecutive_5xx: or(raw.consecutive_5xx, d.consecutive_5xx),
        consecutive_gateway_failure: or(
            raw.consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        enforcing_consecutive_5xx: or(raw.enforcing_consecutive_5xx, d.enforcing_consecutive_5xx),
        enforcing_consecutive_gateway_failure: or(
            raw.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
        ),
        interval: positive(raw.interval, "interval", d.interval),
        base_ejection_time: positive(
            raw.base_ejection_time,
            "base_ejection_time",
            d.base_ejection_time,
        ),
        max_ejection_time: positive(
            raw.max_ejection_time,
            "max_ejection_time",
            d.max_ejection_time,
        ),
        max_ejection_percent: or(raw.max_ejection_percent, d.max_ejection_percent),
        uneject_on_health_check: raw
            .successful_active_health_check_uneject_host
            .unwrap_or(d.uneject_on_health_check),
        success_rate_minimum_hosts: or(
            raw.success_rate_minimum_hosts,
            d.success_rate_minimum_hosts,
        ),
        success_rate_request_volume: or(
            raw.success_rate_request_volume,
            d.success_rate_request_volume,
        ),
        success_rate_stdev_factor: or(raw.success_rate_stdev_factor, d.success_rate_stdev_factor),
        enforcing_success_rate: or(raw.enforcing_success_rate, d.enforcing_success_rate),
        failure_percentage_threshold: or(
            raw.failure_percentage_threshold,
            d.failure_percentage_threshold,
        ),
        failure_percentage_minimum_hosts: or(
            raw.failure_percentage_minimum_hosts,
            d.failure_percentage_minimum_hosts,
        ),
        failure_percentage_request_volume: or(
            raw.failure_percentage_request_volume,
            d.failure_percentage_request_volume,
        ),
        enforcing_failure_percentage: or(
            raw.enforcing_failure_percentage,
            d.enforcing_failure_percentage,
        ),
        split_external_local_origin_errors: raw
            .split_external_local_origin_errors
            .unwrap_or(d.split_external_local_origin_errors),
        consecutive_local_origin_failure: or(
            raw.consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        enforcing_consecutive_local_origin_failure: or(
            raw.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
        ),
        enforcing_local_origin_success_rate: or(
            raw.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
        ),
        enforcing_failure_percentage_local_origin: or(
            raw.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
        ),
    };
    check_percentages(&od, path, errs);
    Some(od)
}

/// Every percentage of `od` is within 0..=100.
fn check_percentages(od: &OutlierDetection, path: &str, errs: &mut Errors) {
    for (field, v) in [
        ("enforcing_consecutive_5xx", od.enforcing_consecutive_5xx),
        (
            "enforcing_consecutive_gateway_failure",
            od.enforcing_consecutive_gateway_failure,
        ),
        ("max_ejection_percent", od.max_ejection_percent),
        ("enforcing_success_rate", od.enforcing_success_rate),
        (
            "failure_percentage_threshold",
            od.failure_percentage_threshold,
        ),
        (
            "enforcing_failure_percentage",
            od.enforcing_failure_percentage,
        ),
        (
            "enforcing_consecutive_local_origin_failure",
            od.enforcing_consecutive_local_origin_failure,
        ),
        (
            "enforcing_local_origin_success_rate",
            od.enforcing_local_origin_success_rate,
        ),
        (
            "enforcing_failure_percentage_local_origin",
            od.enforcing_failure_percentage_local_origin,
        ),
    ] {
        if v > 100 {
            errs.push(join(path, field), "must be a percentage in 0..=100");
        }
    }
}

/// The cluster's `health_checks` (at `path`): at most one, validated.
pub(crate) fn health_checks(
    raw: Vec<RawHealthCheck>,
    path: &str,
    errs: &mut Errors,
) -> Option<HealthCheck> {
    if raw.len() > 1 {
        errs.push(
            format!("{path}[1]"),
            "only one health check per cluster is supported",
        );
    }
    let hc = raw.into_iter().next()?;
    health_check(hc, &format!("{path}[0]"), errs)
}

fn health_check(raw: RawHealthCheck, path: &str, errs: &mut Errors) -> Option<HealthCheck> {
    let mut required = |d: Option<Dur>, field: &str| match d {
        Some(d) if !d.0.is_zero() => d.0,
        Some(_) => {
            errs.push(join(path, field), "must be greater than 0s");
            Duration::ZERO
        }
        None => {
            errs.push(join(path, field), "required field is missing");
            Duration::ZERO
        }
    };
    let timeout = required(raw.timeout, "timeout");
    let interval = required(raw.interval, "interval");
    let mut optional = |d: Option<Dur>, field: &str, default: Duration| match d {
        Some(d) if d.0.is_zero() => {
            errs.push(join(path, field), "must be greater than 0s");
            default
        }
        Some(d) => d.0,
        None => default,
    };
    let no_traffic_interval = optional(
        raw.no_traffic_interval,
        "no_traffic_interval",
        DEFAULT_NO_TRAFFIC_INTERVAL,
    );
    let no_traffic_healthy_interval = optional(
        raw.no_traffic_healthy_interval,
        "no_traffic_healthy_interval",
        no_traffic_interval,
    );
    let unhealthy_interval = optional(raw.unhealthy_interval, "unhealthy_interval", interval);
    let unhealthy_edge_interval = optional(
        raw.unhealthy_edge_interval,
        "unhealthy_edge_interval",
        unhealthy_interval,
    );
    let healthy_edge_interval =
        optional(raw.healthy_edge_interval, "healthy_edge_interval", interval);
    let mut threshold = |v: Option<Int<u32>>, field: &str| {
        v.map(|v| v.0).unwrap_or_else(|| {
            errs.push(join(path, field), "required field is missing");
            0
        })
    };
    let unhealthy_threshold = threshold(raw.unhealthy_threshold, "unhealthy_threshold");
    let healthy_threshold = threshold(raw.healthy_threshold, "healthy_threshold");
    let kind = match (
        raw.http_health_check,
        raw.tcp_health_check,
        raw.grpc_health_check,
    ) {
        (Some(h), None, None) => {
            http_check(h, &join(path, "http_health_check"), errs).map(CheckKind::Http)
        }
        (None, Some(t), None) => {
            tcp_check(t, &join(path, "tcp_health_check"), errs).map(CheckKind::Tcp)
        }
        (None, None, Some(g)) => {
            grpc_check(g, &join(path, "grpc_health_check"), errs).map(CheckKind::Grpc)
        }
        _ => {
            errs.push(
                path,
                "needs exactly one of `http_health_check`, `tcp_health_check` and `grpc_health_check` (the others are not supported)",
            );
            None
        }
    };
    Some(HealthCheck {
        timeout,
        interval,
        interval_jitter: raw.interval_jitter.map_or(Duration::ZERO, |d| d.0),
        unhealthy_threshold,
        healthy_threshold,
        no_traffic_interval,
        no_traffic_healthy_interval,
        interval_jitter_percent: raw.interval_jitter_percent.map_or(0, |v| v.0),
        reuse_connection: raw.reuse_connection.unwrap_or(true),
        unhealthy_interval,
        unhealthy_edge_interval,
        healthy_edge_interval,
        always_log_failures: raw.always_log_health_check_failures,
        kind: kind?,
    })
}

fn http_check(raw: HttpHealthCheck, path: &str, errs: &mut Errors) -> Option<HttpCheck> {
    let before = errs.0.len();
    if raw.codec_client_type == Some(CodecClientType::Http3) {
        errs.push(
            join(path, "codec_client_type"),
            "HTTP3 health checks are not supported; only HTTP1 and HTTP2",
        );
    }
    if raw.path.is_empty() {
        errs.push(join(path, "path"), "required field is missing");
    } else if !raw.path.starts_with('/') || raw.path.parse::<http::uri::PathAndQuery>().is_err() {
        errs.push(
            join(path, "path"),
            format!("`{}` is not a valid request path", raw.path),
        );
    }
    if HeaderValue::from_str(&raw.host).is_err() || raw.host.contains(char::is_whitespace) {
        errs.push(
            join(path, "host"),
            format!("`{}` is not a valid host", raw.host),
        );
    }
    let mut expected_statuses = Vec::new();
    for (i, r) in raw.expected_statuses.iter().enumerate() {
        let (start, end) = (r.start.0, r.end.0);
        if !(100 <= start && start < end && end <= 600) {
            errs.push(
                format!("{path}.expected_statuses[{i}]"),
                format!("[{start}, {end}) is not a status range within [100, 600)"),
            );
            continue;
        }
        // In range: both fit a u16.
        expected_statuses.push((start as u16, end as u16));
    }
    if expected_statuses.is_empty() && raw.expected_statuses.is_empty() {
        expected_statuses.push((200, 201));
    }
    let mut headers = Vec::new();
    for (i, h) in raw.request_headers_to_add.into_iter().enumerate() {
        let p = format!("{path}.request_headers_to_add[{i}].header");
        let name = HeaderName::from_bytes(h.header.key.as_bytes());
        match name {
            Ok(n) if n == http::header::HOST => {
                errs.push(join(&p, "key"), "set the host with `host` instead");
            }
            Ok(n) => match HeaderValue::from_str(&h.header.value) {
                Ok(v) => headers.push((n, v)),
                Err(_) => errs.push(join(&p, "value"), "not a valid header value"),
            },
            Err(_) => errs.push(
                join(&p, "key"),
                format!(
                    "`{}` is not a valid header name (pseudo-headers are not supported)",
                    h.header.key
                ),
            ),
        }
    }
    (errs.0.len() == before).then_some(HttpCheck {
        host: raw.host,
        path: raw.path,
        expected_statuses,
        headers,
        http2: raw.codec_client_type == Some(CodecClientType::Http2),
    })
}

fn grpc_check(raw: GrpcHealthCheck, path: &str, errs: &mut Errors) -> Option<GrpcCheck> {
    let before = errs.0.len();
    let authority_ok = raw.authority.is_empty()
        || raw
            .authority
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| a.as_str() == raw.authority);
    if !authority_ok {
        errs.push(
            join(path, "authority"),
            format!("`{}` is not a valid authority", raw.authority),
        );
    }
    (errs.0.len() == before).then_some(GrpcCheck {
        service_name: raw.service_name,
        authority: raw.authority,
    })
}

/// Envoy 1.40 refuses a gRPC check of a cluster that does not speak HTTP/2 upstream.
pub(crate) fn require_http2(hc: Option<&HealthCheck>, http2: bool, path: &str, errs: &mut Errors) {
    if hc.is_some_and(|h| matches!(h.kind, CheckKind::Grpc(_))) && !http2 {
        errs.push(
            join(path, "health_checks[0].grpc_health_check"),
            "the cluster must speak HTTP/2 upstream for gRPC health checking (`http2_protocol_options` in its `typed_extension_protocol_options`)",
        );
    }
}

fn tcp_check(raw: TcpHealthCheck, path: &str, errs: &mut Errors) -> Option<TcpCheck> {
    let before = errs.0.len();
    let mut hex = |p: &Payload, at: String| {
        decode_hex(&p.text).unwrap_or_else(|e| {
            errs.push(join(&at, "text"), e);
            Vec::new()
        })
    };
    let send = raw
        .send
        .as_ref()
        .map(|p| hex(p, join(path, "send")))
        .unwrap_or_default();
    let receive = raw
        .receive
        .iter()
        .enumerate()
        .map(|(i, p)| hex(p, format!("{path}.receive[{i}]")))
        .collect();
    (errs.0.len() == before).then_some(TcpCheck { send, receive })
}

/// Hex text (either case) to bytes.
fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("`{text}` is not hex: odd number of digits"));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("`{text}` is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests;
