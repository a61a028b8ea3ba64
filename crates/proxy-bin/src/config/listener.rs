//! Validation of `static_resources.listeners[]`: addresses, the filter chains (one cleartext
//! chain, or TLS chains chosen by SNI that all share one HTTP connection manager), the HTTP
//! connection manager (timeouts, access logs, the router filter); `route_config` is delegated to
//! [`super::route`], TLS contexts to [`super::tls`].

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use proxy_core::config::{
    AccessLog, AccessLogSink, ChainDigest, CodecType, EscapedSlashes, HttpConnectionManager,
    Listener, ListenerFilter, ServerHeader, ServerTransformation, Underscores,
    DEFAULT_BUFFER_LIMIT,
};
use serde_json::Value;

use super::de::{self, join};
use super::raw;
use super::tls::Secrets;
use super::{ConfigError, Errors};

/// Envoy's default `common_http_protocol_options.idle_timeout`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Envoy's default `listener_filters_timeout`.
const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default `stream_idle_timeout`.
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Baton's `request_headers_timeout` when none is configured (Envoy has none): a request head
/// still incomplete a minute after its first byte is answered 408, as nginx's
/// `client_header_timeout` does by default. `0s` turns it off.
const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Envoy's `max_request_headers_kb` default and bound.
const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
const MAX_REQUEST_HEADERS_KB: u32 = 8192;

/// A port as written (`port_value`), checked to be in range; absent means 0.
pub(crate) fn port(raw: &raw::SocketAddress, path: &str) -> Result<u16, ConfigError> {
    let v = raw.port_value.map_or(0, |p| p.0);
    u16::try_from(v).map_err(|_| {
        ConfigError::new(
            join(path, "port_value"),
            format!("port {v} is out of range 0..=65535"),
        )
    })
}

/// A listening address: an IPv4 or IPv6 literal (no brackets) and a port (0 = any free port).
pub(crate) fn socket_address(
    raw: &raw::SocketAddress,
    path: &str,
) -> Result<SocketAddr, ConfigError> {
    let ip: IpAddr = raw.address.parse().map_err(|_| {
        ConfigError::new(
            join(path, "address"),
            format!(
                "`{}` is not an IPv4 or IPv6 address literal (write IPv6 without brackets)",
                raw.address
            ),
        )
    })?;
    Ok(SocketAddr::new(ip, port(raw, path)?))
}

/// The digest of each of a listener's `filter_chains` (in order) and of its
/// `default_filter_chain`: SHA-256 of what decides whether a live connection can go on, on that
/// chain, in the next generation — the chain's `filter_chain_match` and `transport_socket`, a
/// `tcp_proxy` filter's whole configuration (its connection is bound to the upstream that
/// configuration chose), and of an HTTP connection manager only its `codec_type` (a connection
/// between requests carries nothing else from it: its next request is routed by the new
/// configuration, as a new connection's would be). Read from the chain as loaded (keys in snake
/// case and sorted, nulls removed).
fn chain_digests(listener: &Value) -> (Vec<ChainDigest>, Option<ChainDigest>) {
    fn digest(chain: &Value) -> ChainDigest {
        let filters: Vec<Value> = chain
            .get("filters")
            .and_then(Value::as_array)
            .map(|fs| fs.iter().map(filter_identity).collect())
            .unwrap_or_default();
        let identity = serde_json::json!({
            "filter_chain_match": chain.get("filter_chain_match"),
            "transport_socket": chain.get("transport_socket"),
            "filters": filters,
        });
        let d = ring::digest::digest(&ring::digest::SHA256, identity.to_string().as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
    fn filter_identity(filter: &Value) -> Value {
        let tc = filter.get("typed_config");
        match tc.and_then(|t| t.get("@type")).and_then(Value::as_str) {
            Some(raw::HCM_TYPE) => serde_json::json!({
                "@type": raw::HCM_TYPE,
                "codec_type": tc.and_then(|t| t.get("codec_type")),
            }),
            _ => filter.clone(),
        }
    }
    let chains = listener
        .get("filter_chains")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(digest).collect())
        .unwrap_or_default();
    (chains, listener.get("default_filter_chain").map(digest))
}

/// Validates one listener; records errors and returns `None` if any.
pub(crate) fn listener(
    value: Value,
    path: &str,
    clusters: &HashSet<String>,
    secrets: &Secrets,
    errs: &mut Errors,
) -> Option<Listener> {
    let digests = chain_digests(&value);
    let raw: raw::Listener = errs.take(de::decode(value, path))?;
    let before = errs.0.len();
    // Envoy 1.40 names a listener without a name (or with an empty one) by a random UUID v4;
    // its stats are named by address (`listener.<addr>.*`) either way.
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(proxy_core::headers::new_uuid);
    let address = errs.take(socket_address(
        &raw.address.socket_address,
        &join(path, "address.socket_address"),
    ));
    let mut additional_addresses = Vec::new();
    for (i, a) in raw.additional_addresses.iter().enumerate() {
        let p = format!("{path}.additional_addresses[{i}].address.socket_address");
        if let Some(a) = errs.take(socket_address(&a.address.socket_address, &p)) {
            additional_addresses.push(a);
        }
    }
    let per_connection_buffer_limit_bytes = raw
        .per_connection_buffer_limit_bytes
        .map_or(DEFAULT_BUFFER_LIMIT, |v| v.0);

    // Envoy bounds its listener filters (here the TLS inspector's wait for the ClientHello) by
    // listener_filters_timeout, 15 s unless set; with no listener filter there is no such wait.
    let listener_filters_timeout = if raw.listener_filters.is_empty() {
        None
    } else {
        raw.listener_filters_timeout
            .map_or(Some(DEFAULT_LISTENER_FILTERS_TIMEOUT), |d| d.nonzero())
    };
    let mut listener_filters = Vec::with_capacity(raw.listener_filters.len());
    for (i, f) in raw.listener_filters.into_iter().enumerate() {
        let p = format!("{path}.listener_filters[{i}]");
        if let Some(f) = errs.take(super::tls::listener_filter(f, &p)) {
            let pp = |f: &ListenerFilter| matches!(f, ListenerFilter::ProxyProtocol(_));
            if listener_filters.contains(&f) {
                errs.push(p, "the listener already has this listener filter");
            } else if pp(&f) && listener_filters.iter().any(pp) {
                errs.push(p, "unsupported: a second PROXY protocol filter");
            }
            listener_filters.push(f);
        }
    }

    let access_logs = access_logs(raw.access_log, path, errs);
    let chains = super::chains::filter_chains(
        raw.filter_chains,
        raw.default_filter_chain,
        (
            &join(path, "filter_chains"),
            &join(path, "default_filter_chain"),
        ),
        clusters,
        secrets,
        errs,
    );
    if errs.0.len() != before {
        return None;
    }
    let direction = match raw.traffic_direction {
        None | Some(raw::TrafficDirection::Unspecified) => drain::Direction::Unspecified,
        Some(raw::TrafficDirection::Inbound) => drain::Direction::Inbound,
        Some(raw::TrafficDirection::Outbound) => drain::Direction::Outbound,
    };
    let mut chains = chains?;
    // Chains that failed validation were reported above: here every chain is at its index.
    for (fc, digest) in chains.filter_chains.iter_mut().zip(&digests.0) {
        fc.digest = *digest;
    }
    if let (Some(fc), Some(digest)) = (chains.default.as_mut(), digests.1) {
        fc.digest = digest;
    }
    Some(Listener {
        name,
        additional_addresses,
        listener_filters_timeout,
        direction,
        freebind: raw.freebind.unwrap_or(false),
        address: address?,
        per_connection_buffer_limit_bytes,
        listener_filters,
        access_logs,
        filter_chains: chains.filter_chains,
        default_filter_chain: chains.default,
    })
}

/// `filter_chain_match.server_names`, lowercased without a trailing dot.
pub(crate) fn server_names(names: &[String], fcm_path: &str, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::with_capacity(names.len());
    for (ni, n) in names.iter().enumerate() {
        let np = format!("{fcm_path}.server_names[{ni}]");
        let lower = n.trim_end_matches('.').to_ascii_lowercase();
        let bare = lower.strip_prefix("*.").unwrap_or(&lower);
        if bare.is_empty() || bare.contains('*') || !bare.bytes().all(is_server_name_byte) {
            errs.push(
                np,
                format!("`{n}` is not a server name or `*.suffix` wildcard"),
            );
        } else {
            out.push(lower);
        }
    }
    out
}

pub(crate) fn http_filter(
    f: raw::Filter,
    path: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
) -> Option<HttpConnectionManager> {
    let tc_path = join(path, "typed_config");
    let Some(tc) = f.typed_config else {
        errs.push(
            tc_path,
            format!(
                "required field is missing (filter `{}`; Baton supports only envoy.filters.network.http_connection_manager)",
                f.name
            ),
        );
        return None;
    };
    let raw: raw::HttpConnectionManager = errs.take(de::any(tc, &tc_path, raw::HCM_TYPE))?;
    hcm(raw, &tc_path, clusters, errs)
}

/// An HCM's timeouts with Envoy's defaults (and Baton's for `request_headers_timeout`); `0s`
/// turns one off.
struct Timeouts {
    idle: Option<Duration>,
    stream_idle: Option<Duration>,
    request: Option<Duration>,
    request_headers: Option<Duration>,
}

impl Timeouts {
    fn of(raw: &raw::HttpConnectionManager) -> Self {
        let or_default = |d: Option<de::Dur>, default: Duration| match d {
            None => Some(default),
            Some(d) => d.nonzero(),
        };
        let idle = raw
            .common_http_protocol_options
            .as_ref()
            .and_then(|o| o.idle_timeout);
        Self {
            idle: or_default(idle, DEFAULT_IDLE_TIMEOUT),
            stream_idle: or_default(raw.stream_idle_timeout, DEFAULT_STREAM_IDLE_TIMEOUT),
            request: raw.request_timeout.and_then(|d| d.nonzero()),
            request_headers: or_default(
                raw.request_headers_timeout,
                DEFAULT_REQUEST_HEADERS_TIMEOUT,
            ),
        }
    }
}

fn hcm(
    raw: raw::HttpConnectionManager,
    path: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
) -> Option<HttpConnectionManager> {
    let before = errs.0.len();
    if raw.stat_prefix.is_empty() {
        errs.push(join(path, "stat_prefix"), "must not be empty");
    }
    let codec_type = match raw.codec_type {
        None | Some(raw::CodecType::Auto) => CodecType::Auto,
        Some(raw::CodecType::Http1) => CodecType::Http1,
        Some(raw::CodecType::Http2) => CodecType::Http2,
    };
    let t = Timeouts::of(&raw);
    let max_request_headers_kb = raw
        .max_request_headers_kb
        .map_or(DEFAULT_MAX_REQUEST_HEADERS_KB, |v| v.0);
    if !(1..=MAX_REQUEST_HEADERS_KB).contains(&max_request_headers_kb) {
        errs.push(
            join(path, "max_request_headers_kb"),
            format!("must be between 1 and {MAX_REQUEST_HEADERS_KB} (KiB)"),
        );
    }

    let server = server_header(&raw, path, errs);
    let via = raw.via.as_deref().and_then(|v| {
        let hv = http::HeaderValue::from_str(v)
            .ok()
            .filter(|_| !v.is_empty());
        if hv.is_none() {
            errs.push(join(path, "via"), format!("`{v}` is not a header value"));
        }
        hv
    });
    let common = connection_limits(raw.common_http_protocol_options.as_ref(), path, errs);

    let internal_ranges = raw
        .internal_address_config
        .map(|c| internal_ranges(c, &join(path, "internal_address_config"), errs))
        .unwrap_or_default();
    let (accept_http_10, default_host_for_http_10) = raw
        .http_protocol_options
        .map(|o| http1_options(o, &join(path, "http_protocol_options"), errs))
        .unwrap_or_default();

    let mut upgrade_types: Vec<String> = Vec::new();
    for (i, u) in raw.upgrade_configs.iter().enumerate() {
        let t = u.upgrade_type.to_ascii_lowercase();
        let p = format!("{path}.upgrade_configs[{i}].upgrade_type");
        if t.is_empty() || !t.bytes().all(is_token_byte) {
            errs.push(p, "must be a non-empty HTTP token such as `websocket`");
        } else if upgrade_types.contains(&t) {
            errs.push(p, format!("duplicate upgrade type `{t}`"));
        } else {
            upgrade_types.push(t);
        }
    }

    let access_logs = access_logs(raw.access_log, path, errs);
    let http2 = raw
        .http2_protocol_options
        .map(|o| super::upstream_options::http2(o, &join(path, "http2_protocol_options"), errs))
        .unwrap_or_default();
    let local_reply = raw.local_reply_config.map(|c| {
        std::sync::Arc::new(super::local_reply::local_reply_config(
            c,
            &join(path, "local_reply_config"),
            errs,
        ))
    });

    let route_config = super::route::route_config(
        raw.route_config,
        &join(path, "route_config"),
        clusters,
        errs,
    );
    let filters = errs.take(super::filters::http_filters(
        raw.http_filters,
        &join(path, "http_filters"),
    ));

    if errs.0.len() != before {
        return None;
    }
    Some(HttpConnectionManager {
        stat_prefix: raw.stat_prefix,
        codec_type,
        generate_request_id: raw.generate_request_id.unwrap_or(true),
        use_remote_address: raw.use_remote_address.unwrap_or(false),
        idle_timeout: t.idle,
        stream_idle_timeout: t.stream_idle,
        request_timeout: t.request,
        request_headers_timeout: t.request_headers,
        upgrade_types,
        access_logs,
        route_config: route_config?,
        suppress_envoy_headers: filters.as_ref()?.0,
        http_filters: filters?.1,
        max_request_headers_kb,
        internal_ranges,
        accept_http_10,
        default_host_for_http_10,
        server,
        via,
        skip_xff_append: raw.skip_xff_append.unwrap_or(false),
        always_set_request_id_in_response: raw.always_set_request_id_in_response.unwrap_or(false),
        preserve_external_request_id: raw.preserve_external_request_id.unwrap_or(false),
        merge_slashes: raw.merge_slashes.unwrap_or(false),
        max_requests_per_connection: common.max_requests,
        max_connection_duration: common.max_duration,
        max_headers_count: common.max_headers,
        underscores: common.underscores,
        xff_num_trusted_hops: raw.xff_num_trusted_hops.map_or(0, |n| n.0),
        // The node's cluster is filled in once the node is known.
        add_user_agent: (raw.add_user_agent == Some(true))
            .then(|| http::HeaderValue::from_static("")),
        normalize_path: raw.normalize_path.unwrap_or(false),
        delayed_close_timeout: raw
            .delayed_close_timeout
            .map_or(Duration::from_secs(1), |d| d.0),
        http2,
        escaped_slashes: match raw.path_with_escaped_slashes_action {
            None
            | Some(raw::PathWithEscapedSlashesAction::ImplementationSpecificDefault)
            | Some(raw::PathWithEscapedSlashesAction::KeepUnchanged) => EscapedSlashes::Keep,
            Some(raw::PathWithEscapedSlashesAction::RejectRequest) => EscapedSlashes::Reject,
            Some(raw::PathWithEscapedSlashesAction::UnescapeAndRedirect) => {
                EscapedSlashes::UnescapeAndRedirect
            }
            Some(raw::PathWithEscapedSlashesAction::UnescapeAndForward) => {
                EscapedSlashes::UnescapeAndForward
            }
        },
        local_reply,
    })
}

/// `server_name` (Envoy's default `envoy`) and `server_header_transformation`.
fn server_header(raw: &raw::HttpConnectionManager, path: &str, errs: &mut Errors) -> ServerHeader {
    let mut server = ServerHeader::default();
    if let Some(name) = &raw.server_name {
        match http::HeaderValue::from_str(name) {
            Ok(v) if !name.is_empty() => server.name = v,
            _ => errs.push(
                join(path, "server_name"),
                format!("`{name}` is not a header value"),
            ),
        }
    }
    server.transformation = match raw.server_header_transformation {
        None | Some(raw::ServerHeaderTransformation::Overwrite) => ServerTransformation::Overwrite,
        Some(raw::ServerHeaderTransformation::AppendIfAbsent) => {
            ServerTransformation::AppendIfAbsent
        }
        Some(raw::ServerHeaderTransformation::PassThrough) => ServerTransformation::PassThrough,
    };
    server
}

/// What `common_http_protocol_options` says of a downstream connection and its requests
/// (`idle_timeout` is read with the other timeouts).
struct ConnectionLimits {
    max_requests: Option<u64>,
    max_duration: Option<Duration>,
    max_headers: usize,
    underscores: Underscores,
}

/// Envoy's default `max_headers_count`, and the most it takes.
const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;

fn connection_limits(
    raw: Option<&raw::CommonHttpProtocolOptions>,
    path: &str,
    errs: &mut Errors,
) -> ConnectionLimits {
    let p = join(path, "common_http_protocol_options");
    let max_headers = raw
        .and_then(|o| o.max_headers_count.as_ref())
        .map_or(DEFAULT_MAX_HEADERS_COUNT, |v| v.0);
    if max_headers == 0 {
        errs.push(join(&p, "max_headers_count"), "must be at least 1");
    }
    ConnectionLimits {
        // 0, as unset: no limit (Envoy).
        max_requests: raw
            .and_then(|o| o.max_requests_per_connection.as_ref())
            .map(|v| u64::from(v.0))
            .filter(|&n| n > 0),
        max_duration: raw
            .and_then(|o| o.max_connection_duration)
            .and_then(|d| d.nonzero()),
        max_headers: max_headers as usize,
        underscores: match raw.and_then(|o| o.headers_with_underscores_action) {
            None | Some(raw::HeadersWithUnderscoresAction::Allow) => Underscores::Allow,
            Some(raw::HeadersWithUnderscoresAction::RejectRequest) => Underscores::Reject,
            Some(raw::HeadersWithUnderscoresAction::DropHeader) => Underscores::Drop,
        },
    }
}

/// `internal_address_config`. `unix_sockets` holds whatever its value: Baton's listeners are
/// TCP, no client comes over a Unix socket.
fn internal_ranges(
    raw: raw::InternalAddressConfig,
    path: &str,
    errs: &mut Errors,
) -> Vec<ipnet::IpNet> {
    let _ = raw.unix_sockets;
    cidr_ranges(raw.cidr_ranges, path, errs)
}

/// `http_protocol_options`: whether HTTP/1.0 is accepted, and the `Host` given to an HTTP/1.0
/// request without one.
fn http1_options(
    raw: raw::Http1ProtocolOptions,
    path: &str,
    errs: &mut Errors,
) -> (bool, Option<http::HeaderValue>) {
    let host = raw.default_host_for_http_10.and_then(|h| {
        let v = http::HeaderValue::from_str(&h)
            .ok()
            .filter(|v| !h.is_empty() && proxy_core::headers::valid_host(v.as_bytes()));
        if v.is_none() {
            errs.push(
                join(path, "default_host_for_http_10"),
                format!("`{h}` is not a host[:port]"),
            );
        }
        v
    });
    (raw.accept_http_10.unwrap_or(false), host)
}

/// `cidr_ranges[]` (`address_prefix` an IP literal, `prefix_len` within its family's bits;
/// absent means the whole address).
fn cidr_ranges(raw: Vec<raw::CidrRange>, path: &str, errs: &mut Errors) -> Vec<ipnet::IpNet> {
    cidrs(raw, &join(path, "cidr_ranges"), errs)
}

/// A list of `CidrRange`s (at `path`); an absent `prefix_len` is the whole address.
pub(crate) fn cidrs(raw: Vec<raw::CidrRange>, path: &str, errs: &mut Errors) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Ok(ip) = r.address_prefix.parse::<std::net::IpAddr>() else {
            errs.push(
                join(&p, "address_prefix"),
                format!("`{}` is not an IP address", r.address_prefix),
            );
            continue;
        };
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let len = r.prefix_len.map_or(bits, |l| l.0);
        match ipnet::IpNet::new(ip, len) {
            Ok(net) => out.push(net.trunc()),
            Err(_) => errs.push(
                join(&p, "prefix_len"),
                format!("must be at most {bits} for `{ip}`"),
            ),
        }
    }
    out
}

/// Letters, digits, `-`, `_` and `.` (SNI host names).
fn is_server_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// RFC 9110 token characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(crate) fn access_log(raw: raw::AccessLog, path: &str) -> Result<AccessLog, ConfigError> {
    let tc_path = join(path, "typed_config");
    let tc = raw.typed_config.ok_or_else(|| {
        ConfigError::new(
            &tc_path,
            "required field is missing (FileAccessLog, StdoutAccessLog or StderrAccessLog)",
        )
    })?;
    let (url, rest) = de::split_any(tc, &tc_path)?;
    match url.as_str() {
        raw::FILE_LOG_TYPE => {
            let f: raw::FileAccessLog = de::decode(rest, &tc_path)?;
            if f.path.is_empty() {
                return Err(ConfigError::new(
                    join(&tc_path, "path"),
                    "must not be empty",
                ));
            }
            let format = match (f.format, f.log_format) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        join(&tc_path, "format"),
                        "give either `format` or `log_format`, not both",
                    ))
                }
                (Some(s), None) => Some(s),
                (None, Some(lf)) => log_format(lf, &join(&tc_path, "log_format"))?,
                (None, None) => None,
            };
            Ok(AccessLog {
                sink: AccessLogSink::File(PathBuf::from(f.path)),
                format,
            })
        }
        raw::STDOUT_LOG_TYPE | raw::STDERR_LOG_TYPE => {
            let s: raw::StreamAccessLog = de::decode(rest, &tc_path)?;
            let format = match s.log_format {
                Some(lf) => log_format(lf, &join(&tc_path, "log_format"))?,
                None => None,
            };
            let sink = if url == raw::STDOUT_LOG_TYPE {
                AccessLogSink::Stdout
            } else {
                AccessLogSink::Stderr
            };
            Ok(AccessLog { sink, format })
        }
        other => Err(ConfigError::new(
            join(&tc_path, "@type"),
            format!(
                "unsupported access logger `{other}`; Baton supports {}, {} and {}",
                raw::FILE_LOG_TYPE,
                raw::STDOUT_LOG_TYPE,
                raw::STDERR_LOG_TYPE
            ),
        )),
    }
}

/// `access_log[]` of the HTTP connection manager, listener or `tcp_proxy` at `path`.
pub(crate) fn access_logs(
    raw: Vec<raw::AccessLog>,
    path: &str,
    errs: &mut Errors,
) -> Vec<AccessLog> {
    let mut out = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        if let Some(l) = errs.take(access_log(a, &format!("{path}.access_log[{i}]"))) {
            out.push(l);
        }
    }
    out
}

fn log_format(
    raw: raw::SubstitutionFormatString,
    path: &str,
) -> Result<Option<String>, ConfigError> {
    match (raw.text_format, raw.text_format_source) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            path,
            "give either `text_format` or `text_format_source`, not both",
        )),
        (Some(s), None) => Ok(Some(s)),
        (None, Some(src)) => Ok(Some(src.inline_string)),
        (None, None) => Err(ConfigError::new(
            join(path, "text_format_source"),
            "required field is missing",
        )),
    }
}
