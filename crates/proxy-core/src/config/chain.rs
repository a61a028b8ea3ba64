//! A listener's filter chains, validated: what each matches (`filter_chain_match`), its
//! transport socket and its network filter (the HTTP connection manager or `tcp_proxy`).

use std::time::Duration;

use super::{ClusterSpecifier, HttpConnectionManager};

/// One `filter_chains[]` entry (or the `default_filter_chain`).
#[derive(Clone, Debug)]
pub struct FilterChain {
    /// `name`, as written (empty when not given).
    pub name: String,
    /// A digest of the chain as configured (its match, transport socket and filters), so that a
    /// connection moving to the next generation goes on only on the same chain, unchanged.
    pub digest: ChainDigest,
    pub matcher: ChainMatch,
    /// `transport_socket` `envoy.transport_sockets.tls`; `None`: the bytes are passed to the
    /// network filter as they come (cleartext, or TLS passed through).
    pub tls: Option<crate::tls::ServerTls>,
    /// `envoy.filters.network.rbac` filters before the terminal one, in order.
    pub rbac: Vec<super::NetworkRbac>,
    pub filter: NetworkFilter,
}

/// SHA-256 of a filter chain's configuration, as the configuration loader computes it.
pub type ChainDigest = [u8; 32];

/// Which filter chain a connection is served by, as it travels to the next generation: the
/// chain's `name` and the digest of its configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainId {
    pub name: String,
    pub digest: ChainDigest,
}

/// The one terminal network filter of a chain.
#[derive(Clone, Debug)]
pub enum NetworkFilter {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Box<HttpConnectionManager>),
    /// `envoy.filters.network.tcp_proxy`.
    TcpProxy(TcpProxy),
}

/// `envoy.filters.network.tcp_proxy`.
#[derive(Clone, Debug)]
pub struct TcpProxy {
    /// `tcp.<stat_prefix>.*`.
    pub stat_prefix: String,
    /// `cluster` or `weighted_clusters`. A cluster the configuration does not have is not an
    /// error (as in Envoy): its connections are closed and counted as `downstream_cx_no_route`.
    pub cluster: ClusterSpecifier,
    /// No byte either way for this long closes both ends (Envoy default 1 h). `None`: never.
    pub idle_timeout: Option<Duration>,
    /// `max_connect_attempts` (Envoy default 1, at least 1).
    pub max_connect_attempts: u32,
    /// `access_log`: one line per connection when it closes.
    pub access_logs: Vec<super::AccessLog>,
    /// `hash_policy[0].source_ip`: a RING_HASH or MAGLEV cluster picks by the client's IP.
    pub hash_source_ip: bool,
}

/// `filter_chain_match`: every criterion left empty matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    /// `prefix_ranges`: the destination (local) address.
    pub prefix_ranges: Vec<ipnet::IpNet>,
    /// Lower-cased, without a trailing dot: `example.com` or `*.example.com`.
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer` (or another protocol a listener filter may detect).
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
    pub source_type: SourceType,
    pub source_prefix_ranges: Vec<ipnet::IpNet>,
    pub source_ports: Vec<u16>,
}

/// `filter_chain_match.source_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SourceType {
    #[default]
    Any,
    /// `SAME_IP_OR_LOOPBACK`: the client's address is a loopback one or the listener's own.
    SameIpOrLoopback,
    /// `EXTERNAL`: any other client.
    External,
}

impl ChainMatch {
    /// Whether every criterion is empty (the chain matches every connection).
    pub fn is_empty(&self) -> bool {
        *self == ChainMatch::default()
    }
}

impl FilterChain {
    /// The chain's identity across generations.
    pub fn id(&self) -> ChainId {
        ChainId {
            name: self.name.clone(),
            digest: self.digest,
        }
    }

    /// The chain's HTTP connection manager, if that is its filter.
    pub fn http(&self) -> Option<&HttpConnectionManager> {
        match &self.filter {
            NetworkFilter::Http(h) => Some(h),
            NetworkFilter::TcpProxy(_) => None,
        }
    }
}
