//! Validation of what a cluster asks of its upstream connections: the typed
//! `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` (`explicit_http_config` or
//! `auto_config`, `common_http_protocol_options`), the deprecated cluster-level
//! `http2_protocol_options` / `http_protocol_options` / `common_http_protocol_options` /
//! `max_requests_per_connection` that Envoy 1.40 still accepts (with a warning), and
//! `upstream_connection_options.tcp_keepalive`.

use std::collections::BTreeMap;
use std::time::Duration;

use proxy_core::config::{
    ConnectionLimits, H2Keepalive, Http2Settings, TcpKeepalive, UpstreamOptions,
};
use serde::Deserialize;
use serde_json::Value;

use super::de::{self, join, Dur, Empty, Int};
use super::raw;
use super::Errors;

/// `HttpProtocolOptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpProtocolOptions {
    explicit_http_config: Option<HttpConfig>,
    auto_config: Option<HttpConfig>,
    common_http_protocol_options: Option<CommonOptions>,
    upstream_http_protocol_options: Option<UpstreamHttpProtocolOptions>,
}

/// `config.core.v3.UpstreamHttpProtocolOptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamHttpProtocolOptions {
    auto_sni: Option<bool>,
    auto_san_validation: Option<bool>,
}

/// `explicit_http_config` / `auto_config`: which codecs, and the HTTP/2 settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    http_protocol_options: Option<Empty>,
    http2_protocol_options: Option<Http2Options>,
}

/// `config.core.v3.Http2ProtocolOptions`, the fields Baton applies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http2Options {
    initial_stream_window_size: Option<Int<u32>>,
    initial_connection_window_size: Option<Int<u32>>,
    max_concurrent_streams: Option<Int<u32>>,
    connection_keepalive: Option<KeepaliveSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepaliveSettings {
    interval: Option<Dur>,
    timeout: Option<Dur>,
}

/// `config.core.v3.HttpProtocolOptions` for upstream connections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommonOptions {
    idle_timeout: Option<Dur>,
    max_requests_per_connection: Option<Int<u32>>,
    max_connection_duration: Option<Dur>,
}

/// `upstream_connection_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamConnectionOptions {
    tcp_keepalive: Option<RawTcpKeepalive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcpKeepalive {
    keepalive_probes: Option<Int<u32>>,
    keepalive_time: Option<Int<u32>>,
    keepalive_interval: Option<Int<u32>>,
}

/// The deprecated cluster-level fields that set what `HttpProtocolOptions` sets.
#[derive(Debug, Default)]
pub(crate) struct Deprecated {
    pub http2_protocol_options: Option<Http2Options>,
    pub http_protocol_options: Option<Empty>,
    pub common_http_protocol_options: Option<CommonOptions>,
    pub max_requests_per_connection: Option<Int<u32>>,
}

/// The codec a cluster's options ask for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Nothing said: HTTP/1.1, or HTTP/2 when the TLS context's ALPN offers `h2` first.
    #[default]
    Unset,
    Http1,
    Http2,
    /// `auto_config`: ALPN decides (TLS clusters only).
    Auto,
}

/// A cluster's validated protocol options.
#[derive(Debug, Default)]
pub(crate) struct Validated {
    pub codec: Codec,
    pub options: UpstreamOptions,
    /// `upstream_http_protocol_options.auto_san_validation`, for the TLS context.
    pub auto_san_validation: bool,
    /// Where `upstream_http_protocol_options` was given, for errors that need TLS.
    pub upstream_http_path: Option<String>,
}

/// The typed `typed_extension_protocol_options` and the deprecated fields of the cluster at
/// `path`.
pub(crate) fn protocol_options(
    typed: BTreeMap<String, Value>,
    deprecated: Deprecated,
    connection: Option<UpstreamConnectionOptions>,
    path: &str,
    errs: &mut Errors,
) -> Validated {
    let mut out = Validated::default();
    let mut typed_given = false;
    for (key, v) in typed {
        let p = format!("{path}.typed_extension_protocol_options.{key}");
        if key != raw::HTTP_OPTIONS_KEY {
            errs.push(
                p,
                format!(
                    "unsupported protocol options; Baton supports only {}",
                    raw::HTTP_OPTIONS_KEY
                ),
            );
            continue;
        }
        typed_given = true;
        let Some(o) = errs.take(de::any::<HttpProtocolOptions>(
            v,
            &p,
            raw::HTTP_OPTIONS_TYPE,
        )) else {
            continue;
        };
        match (o.explicit_http_config, o.auto_config) {
            (Some(e), None) => {
                let ep = join(&p, "explicit_http_config");
                match (e.http_protocol_options, e.http2_protocol_options) {
                    (Some(_), None) => out.codec = Codec::Http1,
                    (None, Some(h2)) => {
                        out.codec = Codec::Http2;
                        out.options.http2 =
                            http2(h2, &join(&ep, "http2_protocol_options"), errs);
                    }
                    _ => errs.push(
                        ep,
                        "needs exactly one of `http_protocol_options: {}` and `http2_protocol_options: {}`",
                    ),
                }
            }
            (None, Some(a)) => {
                let ap = join(&p, "auto_config");
                // Envoy requires both, so that ALPN has two protocols to choose from.
                match (a.http_protocol_options, a.http2_protocol_options) {
                    (Some(_), Some(h2)) => {
                        out.codec = Codec::Auto;
                        out.options.auto_http = true;
                        out.options.http2 =
                            http2(h2, &join(&ap, "http2_protocol_options"), errs);
                    }
                    (None, _) => errs.push(
                        join(&ap, "http_protocol_options"),
                        "required field is missing",
                    ),
                    (_, None) => errs.push(
                        join(&ap, "http2_protocol_options"),
                        "required field is missing",
                    ),
                }
            }
            (Some(_), Some(_)) => errs.push(
                join(&p, "auto_config"),
                "conflicts with `explicit_http_config`: give exactly one",
            ),
            (None, None) => errs.push(
                p.clone(),
                "needs `explicit_http_config` or `auto_config` (Baton has no use_downstream_protocol_config)",
            ),
        }
        if let Some(c) = o.common_http_protocol_options {
            out.options.limits = limits(c);
        }
        if let Some(u) = o.upstream_http_protocol_options {
            let up = join(&p, "upstream_http_protocol_options");
            out.options.auto_sni = u.auto_sni.unwrap_or(false);
            out.auto_san_validation = u.auto_san_validation.unwrap_or(false);
            if out.auto_san_validation && !out.options.auto_sni {
                // Baton's TLS verifies the name it sends; Envoy can verify another one.
                errs.push(
                    join(&up, "auto_san_validation"),
                    "Baton validates the upstream certificate against the name it sends, so auto_san_validation needs auto_sni: true",
                );
            }
            out.upstream_http_path = Some(up);
        }
    }
    deprecated_fields(deprecated, typed_given, path, &mut out, errs);
    if let Some(c) = connection {
        let cp = join(path, "upstream_connection_options");
        if let Some(k) = c.tcp_keepalive {
            out.options.tcp_keepalive = Some(tcp_keepalive(k, &join(&cp, "tcp_keepalive"), errs));
        }
    }
    out
}

/// The deprecated cluster-level forms, used only when no typed options are given (Baton
/// refuses the mix rather than guess which one wins).
fn deprecated_fields(
    d: Deprecated,
    typed_given: bool,
    path: &str,
    out: &mut Validated,
    errs: &mut Errors,
) {
    let given = [
        ("http2_protocol_options", d.http2_protocol_options.is_some()),
        ("http_protocol_options", d.http_protocol_options.is_some()),
        (
            "common_http_protocol_options",
            d.common_http_protocol_options.is_some(),
        ),
        (
            "max_requests_per_connection",
            d.max_requests_per_connection.is_some(),
        ),
    ];
    if typed_given {
        for (field, _) in given.iter().filter(|(_, g)| *g) {
            errs.push(
                join(path, field),
                format!(
                    "deprecated; not combined with typed_extension_protocol_options.{} (move it there)",
                    raw::HTTP_OPTIONS_KEY
                ),
            );
        }
        return;
    }
    match (d.http_protocol_options, d.http2_protocol_options) {
        (Some(_), Some(_)) => errs.push(
            join(path, "http2_protocol_options"),
            "conflicts with `http_protocol_options`: give at most one",
        ),
        (Some(_), None) => out.codec = Codec::Http1,
        (None, Some(h2)) => {
            out.codec = Codec::Http2;
            out.options.http2 = http2(h2, &join(path, "http2_protocol_options"), errs);
        }
        (None, None) => {}
    }
    if let Some(c) = d.common_http_protocol_options {
        out.options.limits = limits(c);
    }
    if let Some(n) = d.max_requests_per_connection {
        if out.options.limits.max_requests_per_connection.is_some() {
            errs.push(
                join(path, "max_requests_per_connection"),
                "conflicts with common_http_protocol_options.max_requests_per_connection",
            );
        }
        out.options.limits.max_requests_per_connection = (n.0 > 0).then_some(n.0);
    }
}

/// Envoy's range for HTTP/2 window sizes.
const WINDOW_RANGE: std::ops::RangeInclusive<u32> = 65_535..=2_147_483_647;

pub(crate) fn http2(o: Http2Options, path: &str, errs: &mut Errors) -> Http2Settings {
    let mut out = Http2Settings::default();
    for (field, v, slot) in [
        (
            "initial_stream_window_size",
            o.initial_stream_window_size,
            &mut out.initial_stream_window_size,
        ),
        (
            "initial_connection_window_size",
            o.initial_connection_window_size,
            &mut out.initial_connection_window_size,
        ),
    ] {
        if let Some(Int(v)) = v {
            if WINDOW_RANGE.contains(&v) {
                *slot = Some(v);
            } else {
                errs.push(
                    join(path, field),
                    "value must be inside range [65535, 2147483647]",
                );
            }
        }
    }
    if let Some(Int(v)) = o.max_concurrent_streams {
        if (1..=2_147_483_647).contains(&v) {
            out.max_concurrent_streams = Some(v);
        } else {
            errs.push(
                join(path, "max_concurrent_streams"),
                "value must be inside range [1, 2147483647]",
            );
        }
    }
    if let Some(k) = o.connection_keepalive {
        let kp = join(path, "connection_keepalive");
        let timeout = match k.timeout {
            None => {
                errs.push(join(&kp, "timeout"), "required field is missing");
                None
            }
            Some(t) if t.0 < Duration::from_millis(1) => {
                errs.push(join(&kp, "timeout"), "must be at least 1ms");
                None
            }
            Some(t) => Some(t.0),
        };
        match k.interval {
            Some(i) if i.0 < Duration::from_millis(1) => {
                errs.push(join(&kp, "interval"), "must be at least 1ms")
            }
            // Without an interval Envoy sends no periodic PING.
            Some(i) => {
                out.keepalive = timeout.map(|timeout| H2Keepalive {
                    interval: i.0,
                    timeout,
                })
            }
            None => {}
        }
    }
    out
}

fn limits(c: CommonOptions) -> ConnectionLimits {
    ConnectionLimits {
        // `0s` disables it, as Envoy.
        idle_timeout: c
            .idle_timeout
            .map_or(ConnectionLimits::default().idle_timeout, Dur::nonzero),
        max_requests_per_connection: c
            .max_requests_per_connection
            .and_then(|n| (n.0 > 0).then_some(n.0)),
        max_connection_duration: c.max_connection_duration.and_then(Dur::nonzero),
    }
}

fn tcp_keepalive(k: RawTcpKeepalive, path: &str, errs: &mut Errors) -> TcpKeepalive {
    let mut nonzero = |field: &str, v: Option<Int<u32>>| match v {
        Some(Int(0)) => {
            errs.push(join(path, field), "must be at least 1");
            None
        }
        Some(Int(v)) => Some(v),
        None => None,
    };
    TcpKeepalive {
        probes: nonzero("keepalive_probes", k.keepalive_probes),
        time: nonzero("keepalive_time", k.keepalive_time).map(|s| Duration::from_secs(s.into())),
        interval: nonzero("keepalive_interval", k.keepalive_interval)
            .map(|s| Duration::from_secs(s.into())),
    }
}
