//! Validation of `static_resources.clusters[]`: discovery type, endpoints, load balancing, DNS
//! settings, circuit breakers, the upstream HTTP protocol options and the upstream TLS context.

use std::net::IpAddr;
use std::time::Duration;

use proxy_core::config::{
    Cluster, Discovery, DnsLookupFamily, Endpoint, Locality, OriginalDst, Thresholds,
    DEFAULT_BUFFER_LIMIT, DEFAULT_OVERPROVISIONING_FACTOR,
};
use serde_json::Value;

use super::de::{self, join};
use super::raw;
use super::upstream_options::{self, Codec};
use super::{ConfigError, Errors};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

/// Validates one cluster; records errors and returns `None` if any.
pub(crate) fn cluster(
    value: Value,
    path: &str,
    secrets: &super::tls::Secrets,
    errs: &mut Errors,
) -> Option<Cluster> {
    let mut raw: raw::Cluster = errs.take(de::decode(value, path))?;
    let before = errs.0.len();
    if raw.name.is_empty() {
        errs.push(join(path, "name"), "must not be empty");
    }
    let discovery = match raw.kind {
        None | Some(raw::DiscoveryType::Static) => Discovery::Static,
        Some(raw::DiscoveryType::StrictDns) => Discovery::StrictDns,
        Some(raw::DiscoveryType::LogicalDns) => Discovery::LogicalDns,
        Some(raw::DiscoveryType::OriginalDst) => Discovery::OriginalDst,
    };
    let connect_timeout = raw.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0);
    if connect_timeout.is_zero() {
        errs.push(join(path, "connect_timeout"), "must be greater than 0s");
    }
    let dns_refresh_rate = raw
        .dns_refresh_rate
        .map_or(DEFAULT_DNS_REFRESH_RATE, |d| d.0);
    if dns_refresh_rate < Duration::from_millis(1) {
        errs.push(join(path, "dns_refresh_rate"), "must be at least 1ms");
    }
    let cluster_provided = raw.lb_policy == Some(raw::LbPolicy::ClusterProvided);
    let original_dst = original_dst(&mut raw, discovery, cluster_provided, path, errs);
    let dns_lookup_family = match raw.dns_lookup_family {
        None | Some(raw::DnsLookupFamily::Auto) => DnsLookupFamily::Auto,
        Some(raw::DnsLookupFamily::V4Only) => DnsLookupFamily::V4Only,
        Some(raw::DnsLookupFamily::V6Only) => DnsLookupFamily::V6Only,
        Some(raw::DnsLookupFamily::V4Preferred) => DnsLookupFamily::V4Preferred,
        Some(raw::DnsLookupFamily::All) => DnsLookupFamily::All,
    };

    let overprovisioning_factor = overprovisioning_factor(raw.load_assignment.as_ref(), path, errs);
    let endpoints = endpoints(raw.load_assignment, discovery, path, errs);
    let hc_path = join(path, "health_checks");
    let health_check = super::health::health_checks(raw.health_checks, &hc_path, errs);
    let mut common_lb_config = raw.common_lb_config;
    let lb_policy = super::lb::lb_policy(
        super::lb::LbFields {
            policy: raw.lb_policy,
            ring_hash: raw.ring_hash_lb_config,
            maglev: raw.maglev_lb_config,
            consistent: common_lb_config
                .as_mut()
                .and_then(|c| c.consistent_hashing_lb_config.take()),
        },
        discovery,
        path,
        errs,
    );
    let panic_threshold = super::health::panic_threshold(common_lb_config, path, errs);
    let outlier = super::health::outlier_detection(
        raw.outlier_detection,
        &join(path, "outlier_detection"),
        errs,
    );
    let circuit_breakers = thresholds(raw.circuit_breakers, &join(path, "circuit_breakers"), errs);
    let deprecated = upstream_options::Deprecated {
        http2_protocol_options: raw.http2_protocol_options,
        http_protocol_options: raw.http_protocol_options,
        common_http_protocol_options: raw.common_http_protocol_options,
        max_requests_per_connection: raw.max_requests_per_connection,
    };
    let protocol = upstream_options::protocol_options(
        raw.typed_extension_protocol_options,
        deprecated,
        raw.upstream_connection_options,
        path,
        errs,
    );
    let alpn: &[&str] = match protocol.codec {
        Codec::Http2 => &["h2"],
        Codec::Auto => &["h2", "http/1.1"],
        Codec::Http1 | Codec::Unset => &[],
    };
    let has_tls = raw.transport_socket.is_some();
    let tls = raw.transport_socket.and_then(|ts| {
        errs.take(super::tls::upstream(
            ts,
            &join(path, "transport_socket"),
            alpn,
            protocol.auto_san_validation,
            secrets,
        ))
    });
    if let Some(p) = &protocol.upstream_http_path {
        if !has_tls && (protocol.options.auto_sni || protocol.auto_san_validation) {
            errs.push(
                p.clone(),
                "auto_sni and auto_san_validation apply to TLS connections: the cluster needs a transport_socket",
            );
        }
    }
    let http2 = match protocol.codec {
        Codec::Http2 => true,
        Codec::Http1 | Codec::Auto => false,
        // ALPN offering h2 first, with no explicit protocol options, asks for HTTP/2.
        Codec::Unset => tls
            .as_ref()
            .is_some_and(|t| t.config.alpn_protocols.first().is_some_and(|p| p == b"h2")),
    };
    if protocol.codec == Codec::Auto && tls.is_none() {
        // Envoy 1.40: "ALPN configured for cluster c which has a non-ALPN transport socket".
        errs.push(
            format!(
                "{path}.typed_extension_protocol_options.{}.auto_config",
                raw::HTTP_OPTIONS_KEY
            ),
            "chooses the protocol by ALPN, which needs a TLS transport_socket",
        );
    }

    super::health::require_http2(health_check.as_ref(), http2, path, errs);

    if errs.0.len() != before {
        return None;
    }
    Some(Cluster {
        tls,
        name: raw.name,
        metadata: raw::Metadata::into_map(raw.metadata),
        discovery,
        connect_timeout,
        lb_policy,
        endpoints,
        dns_lookup_family,
        dns_refresh_rate,
        circuit_breakers,
        per_connection_buffer_limit_bytes: raw
            .per_connection_buffer_limit_bytes
            .map_or(DEFAULT_BUFFER_LIMIT, |v| v.0),
        http2,
        upstream: protocol.options,
        health_check,
        panic_threshold,
        outlier,
        overprovisioning_factor,
        original_dst,
    })
}

/// The header an `ORIGINAL_DST` cluster with `use_http_header` reads by default.
const DEFAULT_ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";
/// Envoy's default `cleanup_interval`.
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(5);

/// An `ORIGINAL_DST` cluster's settings, checked as Envoy 1.40 checks them (its messages in
/// the comments); what only such a cluster uses is refused on any other.
fn original_dst(
    raw: &mut raw::Cluster,
    discovery: Discovery,
    cluster_provided: bool,
    path: &str,
    errs: &mut Errors,
) -> Option<OriginalDst> {
    let lb_path = join(path, "original_dst_lb_config");
    let ci_path = join(path, "cleanup_interval");
    if discovery != Discovery::OriginalDst {
        if cluster_provided {
            // "cluster provided LB specified but cluster 'c' did not provide one."
            errs.push(
                join(path, "lb_policy"),
                "CLUSTER_PROVIDED needs a cluster that provides its load balancer (type ORIGINAL_DST)",
            );
        }
        if raw.original_dst_lb_config.is_some() {
            errs.push(lb_path, "only an ORIGINAL_DST cluster uses it");
        }
        if raw.cleanup_interval.is_some() {
            errs.push(ci_path, "only an ORIGINAL_DST cluster uses it");
        }
        return None;
    }
    let before = errs.0.len();
    if !cluster_provided {
        // "LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST. Only
        // 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"
        errs.push(
            join(path, "lb_policy"),
            "only CLUSTER_PROVIDED is allowed with cluster type ORIGINAL_DST (and is not the default)",
        );
    }
    if raw.load_assignment.take().is_some() {
        errs.push(
            join(path, "load_assignment"),
            "ORIGINAL_DST clusters must have no load assignment configured",
        );
    }
    if !raw.health_checks.is_empty() {
        errs.push(
            join(path, "health_checks"),
            "unsupported on an ORIGINAL_DST cluster",
        );
    }
    if raw.outlier_detection.is_some() {
        errs.push(
            join(path, "outlier_detection"),
            "unsupported on an ORIGINAL_DST cluster",
        );
    }
    let cleanup_interval = raw
        .cleanup_interval
        .map_or(DEFAULT_CLEANUP_INTERVAL, |d| d.0);
    if cleanup_interval.is_zero() {
        errs.push(ci_path, "must be greater than 0s");
    }
    let lb = raw.original_dst_lb_config.take();
    let use_header = lb.as_ref().and_then(|l| l.use_http_header).unwrap_or(false);
    let name = lb
        .as_ref()
        .and_then(|l| l.http_header_name.clone())
        .filter(|n| !n.is_empty());
    let header = match (use_header, name) {
        (false, None) => None,
        (false, Some(n)) => {
            errs.push(
                join(&lb_path, "http_header_name"),
                format!("`{n}` is given but use_http_header is false; set use_http_header to true to use it"),
            );
            None
        }
        (true, None) => Some(http::HeaderName::from_static(DEFAULT_ORIGINAL_DST_HEADER)),
        (true, Some(n)) => {
            let h = http::HeaderName::from_bytes(n.as_bytes()).ok();
            if h.is_none() {
                errs.push(
                    join(&lb_path, "http_header_name"),
                    format!("`{n}` is not an HTTP header name"),
                );
            }
            h
        }
    };
    let port_override = lb
        .as_ref()
        .and_then(|l| l.upstream_port_override.as_ref())
        .and_then(|p| match u16::try_from(p.0) {
            Ok(p) => Some(p),
            Err(_) => {
                errs.push(
                    join(&lb_path, "upstream_port_override"),
                    "must be less than or equal to 65535",
                );
                None
            }
        });
    (errs.0.len() == before).then_some(OriginalDst {
        header,
        port_override,
        cleanup_interval,
    })
}

/// `load_assignment.policy.overprovisioning_factor`: more than 0 (Envoy's rule), default 140.
fn overprovisioning_factor(la: Option<&raw::LoadAssignment>, path: &str, errs: &mut Errors) -> u32 {
    let v = la.and_then(|la| la.policy.as_ref()?.overprovisioning_factor.as_ref());
    match v {
        None => DEFAULT_OVERPROVISIONING_FACTOR,
        Some(v) if v.0 == 0 => {
            errs.push(
                join(path, "load_assignment.policy.overprovisioning_factor"),
                "must be greater than 0",
            );
            DEFAULT_OVERPROVISIONING_FACTOR
        }
        Some(v) => v.0,
    }
}

fn endpoints(
    la: Option<raw::LoadAssignment>,
    discovery: Discovery,
    path: &str,
    errs: &mut Errors,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let la_path = join(path, "load_assignment");
    let Some(la) = la else {
        if discovery == Discovery::LogicalDns {
            errs.push(la_path, "a LOGICAL_DNS cluster needs exactly one endpoint");
        }
        return out;
    };
    if la.cluster_name.is_empty() {
        errs.push(join(&la_path, "cluster_name"), "must not be empty");
    }
    // Counted as written, so a bad endpoint is not also reported as a missing one.
    let mut count = 0;
    for (i, mut loc) in la.endpoints.into_iter().enumerate() {
        let loc_path = format!("{la_path}.endpoints[{i}]");
        let Some(group) = errs.take(locality_group(&mut loc, &loc_path)) else {
            continue;
        };
        for (j, lb) in loc.lb_endpoints.into_iter().enumerate() {
            count += 1;
            let p = format!("{loc_path}.lb_endpoints[{j}]");
            if let Some(mut e) = errs.take(endpoint(lb, discovery, &p)) {
                e.locality.clone_from(&group.locality);
                e.locality_weight = group.weight;
                e.priority = group.priority;
                out.push(e);
            }
        }
    }
    if discovery == Discovery::LogicalDns && count != 1 {
        errs.push(
            join(&la_path, "endpoints"),
            format!("a LOGICAL_DNS cluster needs exactly one endpoint, found {count}"),
        );
    }
    out
}

/// What an `endpoints[]` entry gives each of its `lb_endpoints`.
struct LocalityGroup {
    locality: Option<Locality>,
    weight: Option<u32>,
    priority: u32,
}

/// An `endpoints[]` entry's `locality`, `priority` and `load_balancing_weight`.
fn locality_group(
    loc: &mut raw::LocalityLbEndpoints,
    path: &str,
) -> Result<LocalityGroup, ConfigError> {
    if loc.load_balancing_weight.is_some_and(|w| w.0 == 0) {
        return Err(ConfigError::new(
            join(path, "load_balancing_weight"),
            "must be at least 1",
        ));
    }
    Ok(LocalityGroup {
        locality: loc.locality.take().map(super::locality),
        weight: loc.load_balancing_weight.map(|w| w.0),
        priority: loc.priority.map_or(0, |p| p.0),
    })
}

fn endpoint(
    lb: raw::LbEndpoint,
    discovery: Discovery,
    path: &str,
) -> Result<Endpoint, ConfigError> {
    let sa_path = join(path, "endpoint.address.socket_address");
    let sa = &lb.endpoint.address.socket_address;
    let host = sa.address.clone();
    let addr_path = join(&sa_path, "address");
    if discovery == Discovery::Static {
        if host.parse::<IpAddr>().is_err() {
            return Err(ConfigError::new(
                addr_path,
                format!("`{host}` is not an IP address literal, which a STATIC cluster needs (use STRICT_DNS or LOGICAL_DNS for names)"),
            ));
        }
    } else if host.parse::<IpAddr>().is_err() && !is_dns_name(&host) {
        return Err(ConfigError::new(
            addr_path,
            format!("`{host}` is neither an IP address nor a valid DNS name"),
        ));
    }
    let port = super::listener::port(sa, &sa_path)?;
    if port == 0 {
        return Err(ConfigError::new(
            join(&sa_path, "port_value"),
            "an upstream endpoint needs a port in 1..=65535",
        ));
    }
    let health_check_port =
        super::health::check_port(lb.endpoint.health_check_config, &join(path, "endpoint"))?;
    let weight = lb.load_balancing_weight.map_or(1, |w| w.0);
    if weight == 0 {
        return Err(ConfigError::new(
            join(path, "load_balancing_weight"),
            "must be at least 1",
        ));
    }
    Ok(Endpoint {
        host,
        port,
        weight,
        hostname: lb.endpoint.hostname.filter(|h| !h.is_empty()),
        health_check_port,
        metadata: raw::Metadata::into_map(lb.metadata),
        locality: None,
        locality_weight: None,
        priority: 0,
    })
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1..=63 bytes, 253 bytes at most.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn thresholds(cb: Option<raw::CircuitBreakers>, path: &str, errs: &mut Errors) -> Thresholds {
    let mut t = Thresholds::default();
    let Some(cb) = cb else { return t };
    if cb.thresholds.len() > 1 {
        errs.push(
            format!("{path}.thresholds[1]"),
            "only one thresholds entry (priority DEFAULT) is supported",
        );
    }
    if let Some(raw) = cb.thresholds.into_iter().next() {
        let d = Thresholds::default();
        t = Thresholds {
            max_connections: raw.max_connections.map_or(d.max_connections, |v| v.0),
            max_pending_requests: raw
                .max_pending_requests
                .map_or(d.max_pending_requests, |v| v.0),
            max_requests: raw.max_requests.map_or(d.max_requests, |v| v.0),
            max_retries: raw.max_retries.map_or(d.max_retries, |v| v.0),
        };
    }
    t
}

#[cfg(test)]
mod tests {
    use super::is_dns_name;

    #[test]
    fn dns_names() {
        for ok in ["localhost", "a.b.c", "svc_1.example.com.", "x-y"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in ["", ".", "a..b", "a b", "a/b", &"x".repeat(64), "é.com"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
