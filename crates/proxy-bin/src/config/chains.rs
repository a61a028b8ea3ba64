//! A listener's `filter_chains[]` and `default_filter_chain`: each chain's
//! `filter_chain_match`, `transport_socket` and its one network filter (the HTTP connection
//! manager, delegated to [`super::listener`], or `tcp_proxy`). Chains whose matches overlap are
//! rejected, as Envoy rejects them.

use std::collections::HashSet;
use std::time::Duration;

use proxy_core::config::{
    ChainMatch, ClusterSpecifier, FilterChain, NetworkFilter, NetworkRbac, SourceType, TcpProxy,
};

use super::de::join;
use super::raw;
use super::tls::Secrets;
use super::Errors;

/// Envoy's default `tcp_proxy` `idle_timeout`.
const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Envoy's words for two chains that would match the same connection.
const OVERLAP: &str = "multiple filter chains with overlapping matching rules are defined";

/// What the chains of a listener amount to.
pub(crate) struct Chains {
    pub filter_chains: Vec<FilterChain>,
    pub default: Option<FilterChain>,
}

/// One combination of criteria a chain matches (`None`: any).
type Key = (
    Option<u16>,
    Option<ipnet::IpNet>,
    Option<String>,
    Option<String>,
    Option<String>,
    SourceType,
    Option<ipnet::IpNet>,
    Option<u16>,
);

/// Validates `filter_chains` (at `path`) and `default_filter_chain` (at `default_path`).
pub(crate) fn filter_chains(
    raw_chains: Vec<raw::FilterChain>,
    default: Option<raw::FilterChain>,
    (path, default_path): (&str, &str),
    clusters: &HashSet<String>,
    secrets: &Secrets,
    errs: &mut Errors,
) -> Option<Chains> {
    let before = errs.0.len();
    if raw_chains.is_empty() && default.is_none() {
        errs.push(path, "a listener needs at least one filter chain");
    }
    let mut seen: HashSet<Key> = HashSet::new();
    let mut out = Vec::with_capacity(raw_chains.len());
    for (ci, c) in raw_chains.into_iter().enumerate() {
        let chain_path = format!("{path}[{ci}]");
        if let Some(fc) = chain(c, &chain_path, clusters, secrets, errs) {
            if !keys(&fc.matcher).into_iter().all(|k| seen.insert(k)) {
                errs.push(join(&chain_path, "filter_chain_match"), OVERLAP);
            }
            out.push(fc);
        }
    }
    // Envoy ignores the default chain's `filter_chain_match`: it is the chain for connections
    // no other matches.
    let default = default.and_then(|mut c| {
        c.filter_chain_match = None;
        chain(c, default_path, clusters, secrets, errs)
    });
    (errs.0.len() == before).then_some(Chains {
        filter_chains: out,
        default,
    })
}

/// Every combination of criteria `m` matches (a list left empty matches any value).
fn keys(m: &ChainMatch) -> Vec<Key> {
    fn any<T: Clone>(v: &[T]) -> Vec<Option<T>> {
        if v.is_empty() {
            vec![None]
        } else {
            v.iter().cloned().map(Some).collect()
        }
    }
    let mut out = Vec::new();
    for prefix in any(&m.prefix_ranges) {
        for name in any(&m.server_names) {
            for alpn in any(&m.application_protocols) {
                for source in any(&m.source_prefix_ranges) {
                    for port in any(&m.source_ports) {
                        out.push((
                            m.destination_port,
                            prefix,
                            name.clone(),
                            m.transport_protocol.clone(),
                            alpn.clone(),
                            m.source_type,
                            source,
                            port,
                        ));
                    }
                }
            }
        }
    }
    out
}

/// One chain; `None` (errors recorded) when invalid.
fn chain(
    raw: raw::FilterChain,
    path: &str,
    clusters: &HashSet<String>,
    secrets: &Secrets,
    errs: &mut Errors,
) -> Option<FilterChain> {
    let before = errs.0.len();
    let matcher = chain_match(
        raw.filter_chain_match.unwrap_or_default(),
        &join(path, "filter_chain_match"),
        errs,
    );
    let (rbac, filter) = network_filters(raw.filters, &join(path, "filters"), clusters, errs);
    let tls = match raw.transport_socket {
        None => None,
        Some(ts) => Some(errs.take(super::tls::downstream(
            ts,
            &join(path, "transport_socket"),
            secrets,
        ))?),
    };
    if tls.is_none() {
        // A chain passing TLS through: Baton does not give its network filters the server name
        // the TLS inspector read.
        if let Some(i) = rbac
            .iter()
            .position(|r| super::filters::rbac_uses_sni(&r.rbac))
        {
            errs.push(
                format!("{path}.filters[{i}].typed_config"),
                "requested_server_name is evaluated only on chains that terminate TLS (with a transport_socket); not supported on a chain passing TLS through",
            );
        }
    }
    if errs.0.len() != before {
        return None;
    }
    Some(FilterChain {
        name: raw.name.unwrap_or_default(),
        // Set by the listener, from the chain as written.
        digest: [0; 32],
        matcher,
        tls,
        rbac,
        filter: filter?,
    })
}

/// A port of a `UInt32Value` / `uint32` field: 1..=65535.
fn port_of(v: u32, path: String, errs: &mut Errors) -> Option<u16> {
    match u16::try_from(v) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            errs.push(path, format!("port {v} is out of range 1..=65535"));
            None
        }
    }
}

fn chain_match(raw: raw::FilterChainMatch, path: &str, errs: &mut Errors) -> ChainMatch {
    let destination_port = raw
        .destination_port
        .and_then(|p| port_of(p.get(), join(path, "destination_port"), errs));
    let source_ports = raw
        .source_ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| port_of(p.0, format!("{path}.source_ports[{i}]"), errs))
        .collect();
    let server_names = super::listener::server_names(&raw.server_names, path, errs);
    ChainMatch {
        destination_port,
        prefix_ranges: super::listener::cidrs(
            raw.prefix_ranges,
            &join(path, "prefix_ranges"),
            errs,
        ),
        server_names,
        transport_protocol: raw.transport_protocol.filter(|t| !t.is_empty()),
        application_protocols: raw.application_protocols,
        source_type: match raw.source_type {
            None | Some(raw::SourceType::Any) => SourceType::Any,
            Some(raw::SourceType::SameIpOrLoopback) => SourceType::SameIpOrLoopback,
            Some(raw::SourceType::External) => SourceType::External,
        },
        source_prefix_ranges: super::listener::cidrs(
            raw.source_prefix_ranges,
            &join(path, "source_prefix_ranges"),
            errs,
        ),
        source_ports,
    }
}

/// A chain's filters: `envoy.filters.network.rbac` filters, then exactly one terminal filter,
/// the HTTP connection manager or `tcp_proxy`.
fn network_filters(
    filters: Vec<raw::Filter>,
    path: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
) -> (Vec<NetworkRbac>, Option<NetworkFilter>) {
    let n = filters.len();
    let mut rbac = Vec::new();
    let mut terminal = None;
    for (i, f) in filters.into_iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        let url = f
            .typed_config
            .as_ref()
            .and_then(|tc| tc.get("@type"))
            .and_then(|t| t.as_str());
        if url == Some(super::filters::NETWORK_RBAC_TYPE) {
            if i + 1 == n {
                errs.push(
                    fpath,
                    "the last filter of a chain must be terminal: envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy",
                );
                continue;
            }
            let tc_path = join(&fpath, "typed_config");
            let tc = f.typed_config.unwrap_or_default();
            if let Some(r) = errs.take(super::filters::network_rbac(strip_type(tc), &tc_path)) {
                rbac.push(r);
            }
            continue;
        }
        if i + 1 != n {
            errs.push(
                fpath,
                "unsupported: Baton supports envoy.filters.network.rbac filters followed by one terminal filter, the HTTP connection manager or tcp_proxy",
            );
            continue;
        }
        terminal = network_filter(f, &fpath, clusters, errs);
    }
    if n == 0 {
        errs.push(
            path,
            "the filter chain needs a terminal filter: envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy",
        );
    }
    (rbac, terminal)
}

/// An `Any` without its `@type`.
fn strip_type(mut tc: serde_json::Value) -> serde_json::Value {
    if let Some(m) = tc.as_object_mut() {
        m.remove("@type");
    }
    tc
}

/// A chain's terminal filter: the HTTP connection manager or `tcp_proxy`.
fn network_filter(
    f: raw::Filter,
    fpath: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
) -> Option<NetworkFilter> {
    let is_tcp = f
        .typed_config
        .as_ref()
        .and_then(|tc| tc.get("@type"))
        .and_then(|t| t.as_str())
        == Some(raw::TCP_PROXY_TYPE);
    if is_tcp {
        let tc_path = join(fpath, "typed_config");
        let raw: raw::TcpProxy = errs.take(super::de::any(
            f.typed_config?,
            &tc_path,
            raw::TCP_PROXY_TYPE,
        ))?;
        tcp_proxy(raw, &tc_path, errs).map(NetworkFilter::TcpProxy)
    } else {
        super::listener::http_filter(f, fpath, clusters, errs)
            .map(|h| NetworkFilter::Http(Box::new(h)))
    }
}

/// `tcp_proxy`. Its clusters need not exist (as in Envoy: connections to a missing one are
/// closed and counted in `downstream_cx_no_route`).
fn tcp_proxy(raw: raw::TcpProxy, path: &str, errs: &mut Errors) -> Option<TcpProxy> {
    let before = errs.0.len();
    if raw.stat_prefix.is_empty() {
        errs.push(join(path, "stat_prefix"), "must not be empty");
    }
    let max_connect_attempts = raw.max_connect_attempts.map_or(1, |v| v.get());
    if max_connect_attempts == 0 {
        errs.push(
            join(path, "max_connect_attempts"),
            "must be greater than or equal to 1",
        );
    }
    let cluster = match (raw.cluster, raw.weighted_clusters) {
        (Some(c), None) if !c.is_empty() => Some(ClusterSpecifier::Cluster(c)),
        (None, Some(w)) => weighted(w, &join(path, "weighted_clusters"), errs),
        (Some(_), Some(_)) => {
            errs.push(path, "`cluster` and `weighted_clusters` are exclusive");
            None
        }
        _ => {
            errs.push(path, "needs `cluster` or `weighted_clusters`");
            None
        }
    };
    let access_logs = super::listener::access_logs(raw.access_log, path, errs);
    let hash_path = join(path, "hash_policy");
    if raw.hash_policy.len() > 1 {
        errs.push(&hash_path, "must have at most 1 item");
    }
    let mut hash_source_ip = false;
    for (i, h) in raw.hash_policy.iter().enumerate() {
        let at = format!("{hash_path}[{i}]");
        match (&h.source_ip, &h.filter_state) {
            (Some(_), None) => hash_source_ip = true,
            (None, Some(_)) => errs.push(join(&at, "filter_state"), "is not supported by Baton"),
            _ => errs.push(at, "needs exactly one of source_ip, filter_state"),
        }
    }
    if errs.0.len() != before {
        return None;
    }
    Some(TcpProxy {
        hash_source_ip,
        stat_prefix: raw.stat_prefix,
        cluster: cluster?,
        idle_timeout: raw
            .idle_timeout
            .map_or(Some(DEFAULT_TCP_IDLE_TIMEOUT), |d| d.nonzero()),
        max_connect_attempts,
        access_logs,
    })
}

/// `weighted_clusters.clusters[]`: at least one, each named, each weight at least 1.
fn weighted(w: raw::WeightedClusters, path: &str, errs: &mut Errors) -> Option<ClusterSpecifier> {
    if w.total_weight.is_some() {
        errs.push(
            join(path, "total_weight"),
            "unknown field (tcp_proxy's weighted_clusters has no total_weight)",
        );
    }
    if w.clusters.is_empty() {
        errs.push(join(path, "clusters"), "needs at least one cluster");
        return None;
    }
    let mut out = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.into_iter().enumerate() {
        let weight = c.weight.as_ref().map_or(0, raw::UInt32::get);
        if c.name.is_empty() {
            errs.push(format!("{path}.clusters[{i}].name"), "must not be empty");
        } else if weight == 0 {
            errs.push(
                format!("{path}.clusters[{i}].weight"),
                "must be greater than or equal to 1",
            );
        } else {
            out.push((c.name, weight));
        }
    }
    Some(ClusterSpecifier::Weighted(out))
}
