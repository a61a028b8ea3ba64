//! The validated configuration the data plane runs on.
//!
//! These types are what is left once `proxy-bin` has parsed and checked an Envoy v3 bootstrap:
//! every value here is already known to be valid (addresses parsed, regexes compiled, clusters
//! referenced by routes exist), so the data plane never re-validates. They carry no serde
//! derives on purpose: the on-disk format (and its field paths) is `proxy-bin`'s concern.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use regex::Regex;

mod chain;
mod compress;
mod filters;
mod health;
mod local_reply;
mod metadata;
mod rbac;
mod upstream;

pub use chain::{
    ChainDigest, ChainId, ChainMatch, FilterChain, NetworkFilter, SourceType, TcpProxy,
};
pub use compress::*;
pub use filters::*;
pub use local_reply::{
    BodyFormat, BodyKind, CompareOp, Comparison, JsonValue, LocalReplyConfig, Mapper, ReplyFilter,
    ReplyHeader,
};
pub use metadata::*;
pub use rbac::*;

pub use upstream::{
    ConnectionLimits, H2Keepalive, Http2Settings, TcpKeepalive, UpstreamOptions,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT,
};

pub use health::{
    CheckKind, GrpcCheck, HealthCheck, HttpCheck, OutlierDetection, TcpCheck,
    DEFAULT_NO_TRAFFIC_INTERVAL, DEFAULT_PANIC_THRESHOLD,
};

/// Everything one generation serves.
#[derive(Clone, Debug, Default)]
pub struct Bootstrap {
    /// `node`: who this proxy is (shown by `/server_info`).
    pub node: Node,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

/// `node` (`config.core.v3.Node`), with the `--service-node` / `--service-cluster` overrides
/// applied by whoever knows the command line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    /// A `google.protobuf.Struct`, as written.
    pub metadata: Metadata,
    pub locality: Option<Locality>,
}

/// `config.core.v3.Locality`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// A `google.protobuf.Struct` (or a `filter_metadata` map of them) kept as written, to be
/// shown again.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// The admin interface (`admin.address`).
#[derive(Clone, Debug)]
pub struct Admin {
    pub address: SocketAddr,
}

/// `static_resources.listeners[]`.
#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// `additional_addresses[].address`: more sockets the listener accepts on, served exactly
    /// as `address` (its stats, hand-over key and name are `address`'s).
    pub additional_addresses: Vec<SocketAddr>,
    /// Soft limit on bytes buffered per connection, each direction (Envoy default 1 MiB).
    pub per_connection_buffer_limit_bytes: u32,
    /// `filter_chains`, in order; at most one matches a connection.
    pub filter_chains: Vec<FilterChain>,
    /// `default_filter_chain`: for a connection no chain matches.
    pub default_filter_chain: Option<FilterChain>,
    /// `access_log`: one line per connection when it closes, including those no chain
    /// matched and those a listener filter refused (as Envoy 1.40).
    pub access_logs: Vec<AccessLog>,
    /// `listener_filters`, run in order on each connection before its chain is chosen.
    pub listener_filters: Vec<ListenerFilter>,
    /// `listener_filters_timeout` when the listener has listener filters (the TLS inspector;
    /// Envoy default 15 s): how long a TLS client may take to send its ClientHello, and a
    /// cleartext client its first bytes. `None`: no listener filters (Envoy then has no such
    /// wait) or `0s` (no limit of its own; a TLS handshake's bound still applies).
    pub listener_filters_timeout: Option<Duration>,
    /// `freebind`: its socket is bound with `IP_FREEBIND` (by whoever binds it).
    pub freebind: bool,
    /// `traffic_direction`: an inbound listener (and its connections) is drained by
    /// `/drain_listeners?inboundonly`, the others only by a drain of all listeners.
    pub direction: drain::Direction,
}

/// One `listener_filters[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerFilter {
    /// `envoy.filters.listener.tls_inspector`: a connection's first bytes are peeked (not
    /// consumed) for a TLS ClientHello's SNI and ALPN.
    TlsInspector,
    /// `envoy.filters.listener.http_inspector`: a cleartext connection's first bytes are peeked
    /// for an HTTP/1.x request line or the HTTP/2 preface (its application protocol).
    HttpInspector,
    /// `envoy.filters.listener.proxy_protocol`.
    ProxyProtocol(ProxyProtocol),
    /// `envoy.filters.listener.original_dst`: a connection redirected by netfilter takes the
    /// address it was originally sent to as its local address.
    OriginalDst,
}

/// `envoy.filters.listener.proxy_protocol`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// A connection without a PROXY protocol header is served (with its own addresses).
    pub allow_requests_without_proxy_protocol: bool,
    /// `proxy_proto.<stat_prefix>.*` (`proxy_proto.*` when empty).
    pub stat_prefix: String,
}

/// Which HTTP codec a listener speaks downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CodecType {
    /// HTTP/1.1, or HTTP/2 when the client opens with the h2c prior-knowledge preface.
    #[default]
    Auto,
    Http1,
    Http2,
}

/// The `envoy.filters.network.http_connection_manager` filter of a listener.
#[derive(Clone, Debug)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub codec_type: CodecType,
    pub generate_request_id: bool,
    pub use_remote_address: bool,
    /// `common_http_protocol_options.idle_timeout`: a connection with no active stream for this
    /// long is closed (Envoy default 1 h). `None`: disabled.
    pub idle_timeout: Option<Duration>,
    /// `stream_idle_timeout` (Envoy default 5 min). `None`: disabled.
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout`: the whole request must have been received by then. `None`: disabled.
    pub request_timeout: Option<Duration>,
    /// `request_headers_timeout`: a request head must be complete this long after its first
    /// byte. Unset in the configuration: Baton's default head deadline; `0s`: `None`.
    pub request_headers_timeout: Option<Duration>,
    /// `upgrade_configs[].upgrade_type` that are allowed, lower-cased (e.g. `websocket`).
    pub upgrade_types: Vec<String>,
    pub access_logs: Vec<AccessLog>,
    pub route_config: RouteConfig,
    /// `envoy.filters.http.router`'s `suppress_envoy_headers`.
    pub suppress_envoy_headers: bool,
    /// `max_request_headers_kb` (Envoy default 60, at most 8192): a request head longer than
    /// this is answered 431.
    pub max_request_headers_kb: u32,
    /// `internal_address_config.cidr_ranges`: clients whose address is in one are internal
    /// (their `x-envoy-*` fields are kept). None by default: every client is external.
    pub internal_ranges: Vec<ipnet::IpNet>,
    /// `http_filters` before the router, in order.
    pub http_filters: Vec<HttpFilterEntry>,
    /// `http_protocol_options.accept_http_10` (Envoy's default: off, HTTP/1.0 gets 426).
    pub accept_http_10: bool,
    /// `http_protocol_options.default_host_for_http_10`.
    pub default_host_for_http_10: Option<http::HeaderValue>,
    /// What goes into each response's `server` field, and when.
    pub server: ServerHeader,
    /// `via`: appended to the request's and the response's `via` fields.
    pub via: Option<http::HeaderValue>,
    /// `skip_xff_append`: with `use_remote_address`, `x-forwarded-for` is left as the client
    /// sent it.
    pub skip_xff_append: bool,
    /// `always_set_request_id_in_response`: the response carries the request's `x-request-id`.
    pub always_set_request_id_in_response: bool,
    /// `preserve_external_request_id`: an external client's `x-request-id` is kept with
    /// `use_remote_address` (Envoy otherwise replaces it).
    pub preserve_external_request_id: bool,
    /// `merge_slashes`: runs of `/` in the path become one before routing and forwarding.
    pub merge_slashes: bool,
    /// `common_http_protocol_options.max_requests_per_connection`: the connection closes after
    /// its response to this many requests.
    pub max_requests_per_connection: Option<u64>,
    /// `common_http_protocol_options.max_connection_duration`: the connection is asked to close
    /// (HTTP/1.1: at its next response or while idle; HTTP/2: GOAWAY) this long after it opened.
    pub max_connection_duration: Option<Duration>,
    /// `common_http_protocol_options.max_headers_count` (Envoy's default 100): a request with
    /// more fields is answered 431.
    pub max_headers_count: usize,
    /// `common_http_protocol_options.headers_with_underscores_action`.
    pub underscores: Underscores,
    /// `xff_num_trusted_hops` (0): with `use_remote_address`, the client is the address this
    /// many entries from the right of the `x-forwarded-for` received (see
    /// [`HttpConnectionManager::trusted_client`]).
    pub xff_num_trusted_hops: u32,
    /// `add_user_agent`: the node's service cluster (`--service-cluster`, else `node.cluster`),
    /// set as `x-envoy-downstream-service-cluster` and as `user-agent` when the request has
    /// none. `None`: off.
    pub add_user_agent: Option<http::HeaderValue>,
    /// `http2_protocol_options` of downstream HTTP/2 connections: what is set is announced
    /// and applied (unset: hyper's defaults, not Envoy's).
    pub http2: Http2Settings,
    /// `delayed_close_timeout` (Envoy's default 1 s): how long an HTTP/1.1 connection Baton
    /// closes keeps reading and discarding what the client still sends; zero: it closes at once.
    pub delayed_close_timeout: Duration,
    /// `normalize_path` (Envoy's default off): see [`crate::headers::path::normalize`].
    pub normalize_path: bool,
    /// `path_with_escaped_slashes_action`.
    pub escaped_slashes: EscapedSlashes,
    /// `local_reply_config`; `None`: Baton's replies go out as they are made.
    pub local_reply: Option<std::sync::Arc<LocalReplyConfig>>,
}

/// `server_name` and `server_header_transformation`: what a response's `server` field says.
#[derive(Clone, Debug)]
pub struct ServerHeader {
    /// `server_name` (Envoy's default `envoy`).
    pub name: http::HeaderValue,
    pub transformation: ServerTransformation,
}

impl Default for ServerHeader {
    fn default() -> Self {
        Self {
            name: http::HeaderValue::from_static("envoy"),
            transformation: ServerTransformation::Overwrite,
        }
    }
}

/// `server_header_transformation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerTransformation {
    /// Every response says `server_name`, the upstream's `server` replaced.
    #[default]
    Overwrite,
    /// `server_name` when the response has no `server` of its own.
    AppendIfAbsent,
    /// The upstream's `server` as it is; none on a local reply.
    PassThrough,
}

/// `headers_with_underscores_action`: request fields whose name holds `_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Underscores {
    #[default]
    Allow,
    /// 400, and the connection closes.
    Reject,
    /// The field is removed.
    Drop,
}

/// `path_with_escaped_slashes_action`: a path holding `%2F`, `%2f`, `%5C` or `%5c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// `KEEP_UNCHANGED` (and Envoy's `IMPLEMENTATION_SPECIFIC_DEFAULT`).
    #[default]
    Keep,
    /// 400 (`downstream_rq_failed_path_normalization`), and the connection closes.
    Reject,
    /// 307 to the unescaped path (`downstream_rq_redirected_with_normalized_path`).
    UnescapeAndRedirect,
    UnescapeAndForward,
}

/// Which timeout bounds the time from a request head's first byte to its end (see
/// [`HttpConnectionManager::head_deadline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadTimeout {
    /// `request_headers_timeout` (or Baton's default for it).
    Headers,
    /// `request_timeout`: the request starts with its first byte.
    Request,
    /// `stream_idle_timeout`: a head's bytes are no frame of the stream yet.
    StreamIdle,
}

impl HeadTimeout {
    /// The body of the 408 it is answered with (Envoy's words).
    pub fn body(self) -> &'static str {
        match self {
            HeadTimeout::Headers => "request header timeout",
            HeadTimeout::Request => "request timeout",
            HeadTimeout::StreamIdle => "stream timeout",
        }
    }
}

impl Listener {
    /// Every chain: `filter_chains`, then the default one.
    pub fn chains(&self) -> impl Iterator<Item = &FilterChain> + '_ {
        self.filter_chains.iter().chain(&self.default_filter_chain)
    }

    /// Whether it runs the TLS inspector.
    pub fn tls_inspector(&self) -> bool {
        self.listener_filters
            .contains(&ListenerFilter::TlsInspector)
    }

    /// The HTTP connection manager of its first HTTP chain.
    pub fn first_http(&self) -> Option<&HttpConnectionManager> {
        self.chains().find_map(FilterChain::http)
    }

    /// Every address it listens on: `address`, then `additional_addresses`.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.address).chain(self.additional_addresses.iter().copied())
    }
}

impl HttpConnectionManager {
    /// Whether a client at `ip` is internal (`internal_address_config`).
    #[inline]
    pub fn is_internal(&self, ip: std::net::IpAddr) -> bool {
        !self.internal_ranges.is_empty() && self.internal_ranges.iter().any(|r| r.contains(&ip))
    }

    /// Whether the request from `remote` with `headers` is internal. With trusted hops, as
    /// Envoy 1.40: only a request that came with no `x-forwarded-for` from an internal peer (the
    /// one Envoy forwards with a single `x-forwarded-for` entry).
    #[inline]
    pub fn is_internal_request(&self, remote: std::net::IpAddr, headers: &http::HeaderMap) -> bool {
        self.is_internal(remote)
            && (self.xff_num_trusted_hops == 0
                || headers
                    .get(&crate::headers::X_FORWARDED_FOR)
                    .is_none_or(|v| v.is_empty()))
    }

    /// The client's address as `xff_num_trusted_hops` trusts `x-forwarded-for` (as received):
    /// with `use_remote_address` the `xff_num_trusted_hops`-th entry from the right, without it
    /// the one after those; `None` when no hop is trusted or that entry is missing or not an
    /// address (the peer is the client then).
    pub fn trusted_client(&self, headers: &http::HeaderMap) -> Option<std::net::IpAddr> {
        let hops = self.xff_num_trusted_hops as usize;
        if hops == 0 {
            return None;
        }
        let skip = if self.use_remote_address {
            hops - 1
        } else {
            hops
        };
        let xff = headers
            .get(&crate::headers::X_FORWARDED_FOR)?
            .to_str()
            .ok()?;
        xff.rsplit(',').nth(skip)?.trim().parse().ok()
    }

    /// How long an upgrade tunnel may go with no byte either way: the shorter of
    /// `stream_idle_timeout` (the upgraded stream stays open) and `idle_timeout`.
    pub fn tunnel_idle_timeout(&self) -> Option<Duration> {
        self.tunnel_idle_timeout_with(self.stream_idle_timeout)
    }

    /// [`Self::tunnel_idle_timeout`] with `stream_idle` for the stream idle timeout (a route's
    /// `idle_timeout` over the HCM's).
    pub fn tunnel_idle_timeout_with(&self, stream_idle: Option<Duration>) -> Option<Duration> {
        match (stream_idle, self.idle_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long a request head may take from its first byte, and which timeout that is: the
    /// shortest of `request_headers_timeout`, `request_timeout` and `stream_idle_timeout`
    /// (as in Envoy, the stream and its timers exist from a head's first byte). `None`: a head
    /// may take forever (all three disabled).
    pub fn head_deadline(&self) -> Option<(Duration, HeadTimeout)> {
        [
            (self.request_headers_timeout, HeadTimeout::Headers),
            (self.request_timeout, HeadTimeout::Request),
            (self.stream_idle_timeout, HeadTimeout::StreamIdle),
        ]
        .into_iter()
        .filter_map(|(d, which)| d.map(|d| (d, which)))
        .min_by_key(|(d, _)| *d)
    }

    /// The longest request head accepted, in bytes (hyper's smallest buffer limit, 8 KiB, at
    /// least).
    pub fn max_request_head(&self) -> usize {
        (self.max_request_headers_kb as usize * 1024).max(crate::http1::MIN_HEAD_LIMIT)
    }
}

/// One `access_log` entry.
#[derive(Clone, Debug)]
pub struct AccessLog {
    pub sink: AccessLogSink,
    /// `log_format.text_format_source.inline_string` (or the older `format`); `None` means
    /// Envoy's default format.
    pub format: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogSink {
    File(PathBuf),
    Stdout,
    Stderr,
}

/// `route_config`.
#[derive(Clone, Debug, Default)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub headers: HeaderMutations,
    /// `most_specific_header_mutations_wins`: apply the route's mutations last, not first.
    pub most_specific_header_mutations_wins: bool,
    /// `typed_per_filter_config`.
    pub filter_configs: FilterConfigs,
}

/// `request_headers_to_add`, `request_headers_to_remove`, `response_headers_to_add`,
/// `response_headers_to_remove` of one level (route configuration, virtual host, route).
#[derive(Clone, Debug, Default)]
pub struct HeaderMutations {
    pub request_add: Vec<HeaderAdd>,
    pub request_remove: Vec<http::HeaderName>,
    pub response_add: Vec<HeaderAdd>,
    pub response_remove: Vec<http::HeaderName>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// One `HeaderValueOption`.
#[derive(Clone, Debug)]
pub struct HeaderAdd {
    pub name: http::HeaderName,
    /// As written: Envoy's command operators (`%REQ(x)%`, `%DOWNSTREAM_REMOTE_ADDRESS%`, …)
    /// are rendered per message.
    pub value: String,
    pub action: AppendAction,
    /// `keep_empty_value`: a value that renders empty is still added.
    pub keep_empty_value: bool,
}

/// `append_action` (or the older `append`: true is the first, false the third).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AppendAction {
    #[default]
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Clone, Debug)]
pub struct VirtualHost {
    pub name: String,
    /// `metadata.filter_metadata`.
    pub metadata: Metadata,
    /// As written: `*`, `example.com`, `*.example.com`, `example.*`, optionally with `:port`.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub headers: HeaderMutations,
    /// `typed_per_filter_config`.
    pub filter_configs: FilterConfigs,
    /// The legacy `cors` policy.
    pub cors: Option<CorsPolicy>,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    /// `metadata.filter_metadata`.
    pub metadata: Metadata,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub headers: HeaderMutations,
    /// `typed_per_filter_config`.
    pub filter_configs: FilterConfigs,
    /// The legacy `route.cors` policy.
    pub cors: Option<CorsPolicy>,
}

#[derive(Clone, Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// `match.case_sensitive` (default true) for prefix and path.
    pub case_sensitive: bool,
    /// All must match.
    pub headers: Vec<HeaderMatcher>,
    /// `query_parameters`: all must match.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// `headers[]` on `:method`, `:path` (with the query), `:authority`, `:scheme`.
    pub pseudo_headers: Vec<(PseudoHeader, HeaderMatcher)>,
    /// `grpc: {}`: `content-type` is `application/grpc` or `application/grpc+…`.
    pub grpc: bool,
    /// `runtime_fraction.default_value`: the share of requests matched (rolled per request).
    pub runtime_fraction: Option<FractionalPercent>,
    /// `tls_context.{presented,validated}`: whether the client presented a certificate, and
    /// whether it was validated, must be as given.
    pub tls_context: Option<TlsContextMatch>,
}

/// `match.tls_context`; a field not given is not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsContextMatch {
    pub presented: Option<bool>,
    pub validated: Option<bool>,
}

/// A request pseudo-header a route may match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoHeader {
    Method,
    Path,
    Authority,
    Scheme,
}

/// One `match.query_parameters[]` entry: the request's first parameter named `name` (exactly,
/// as written in the query string), its value as written (not percent-decoded), as Envoy 1.40
/// matches them. `Present(true)`: the parameter is there, with or without a value.
#[derive(Clone, Debug)]
pub struct QueryParameterMatcher {
    pub name: String,
    pub kind: HeaderMatchKind,
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Must match the whole path (without the query string), as Envoy's `safe_regex`.
    Regex(Regex),
    /// `path_separated_prefix`: the path (without the query string) is the prefix, or the
    /// prefix then `/…` (`/api` matches `/api`, `/api/x`, `/api?q`, not `/apix`).
    SeparatedPrefix(String),
}

#[derive(Clone, Debug)]
pub struct HeaderMatcher {
    pub name: HeaderName,
    pub kind: HeaderMatchKind,
    pub invert: bool,
}

impl HeaderMatcher {
    /// Whether `headers` match (the first value of the name; a regex is anchored when built).
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        let value = headers.get(&self.name).map(|v| v.to_str().unwrap_or(""));
        let Some(v) = value else {
            // A missing field matches no value, inverted or not (Envoy 1.40).
            return matches!(self.kind, HeaderMatchKind::Present(want) if want == self.invert);
        };
        let result = match &self.kind {
            HeaderMatchKind::Present(want) => *want,
            HeaderMatchKind::Exact(s) => v == s,
            HeaderMatchKind::Prefix(s) => v.starts_with(s.as_str()),
            HeaderMatchKind::Suffix(s) => v.ends_with(s.as_str()),
            HeaderMatchKind::Contains(s) => v.contains(s.as_str()),
            HeaderMatchKind::Regex(re) => re.is_match(v),
        };
        result != self.invert
    }
}

#[derive(Clone, Debug)]
pub enum HeaderMatchKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Must match the whole value.
    Regex(Regex),
    /// `present_match: true` (header present) or `false` (absent).
    Present(bool),
}

// Forwarding is what nearly every route does (see `router::Action`).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum RouteAction {
    Forward(ForwardAction),
    Direct(DirectResponse),
    Redirect(Redirect),
}

/// `route` action: send to a cluster.
#[derive(Clone, Debug)]
pub struct ForwardAction {
    pub cluster: ClusterSpecifier,
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`: every match in the path (not the query) replaced; not with
    /// `prefix_rewrite`.
    pub regex_rewrite: Option<Box<RegexRewrite>>,
    /// The `host_rewrite_specifier`: `host_rewrite_literal`, ...
    pub host_rewrite_literal: Option<String>,
    /// ... `host_rewrite_header` (the host from this request field, when it has a value) ...
    pub host_rewrite_header: Option<HeaderName>,
    /// ... or `host_rewrite_path_regex` (the host from the path, without the query, rewritten).
    pub host_rewrite_path_regex: Option<Box<RegexRewrite>>,
    /// Whole-response timeout (Envoy default 15 s); `None`: disabled (`0s`).
    pub timeout: Option<Duration>,
    pub retry_policy: Option<RetryPolicy>,
    /// `hash_policy[]`, in order: the hash a RING_HASH or MAGLEV cluster picks a host by.
    pub hash_policy: Vec<HashPolicy>,
    /// `weighted_clusters.clusters[].typed_per_filter_config`, in the order of
    /// [`ClusterSpecifier::Weighted`]'s clusters; empty when none has any.
    pub weighted_filter_configs: Vec<FilterConfigs>,
    /// `cluster_not_found_response_code`: the answer when [`ClusterSpecifier::Header`] names no
    /// cluster (503 by default, as Envoy).
    pub cluster_not_found_response_code: http::StatusCode,
    /// `request_mirror_policies[]`.
    pub mirrors: Vec<MirrorPolicy>,
    /// The route's `idle_timeout`, over the HCM's `stream_idle_timeout`: `None` not set,
    /// `Some(None)` disabled (`0s`).
    pub idle_timeout: Option<Option<Duration>>,
    /// `upgrade_configs[]`: upgrade type (lower case) and whether the route allows it, over
    /// the HCM's list.
    pub upgrades: Vec<(String, bool)>,
}

impl ForwardAction {
    /// The stream idle timeout of a request on this route, the HCM's being `hcm`.
    #[inline]
    pub fn stream_idle_timeout(&self, hcm: Option<Duration>) -> Option<Duration> {
        match self.idle_timeout {
            None => hcm,
            Some(t) => t,
        }
    }
}

/// `request_mirror_policies[]`: a copy of the request to `cluster`, fire and forget.
#[derive(Clone, Debug)]
pub struct MirrorPolicy {
    pub cluster: String,
    /// `runtime_fraction.default_value`; `None`: every request.
    pub fraction: Option<filters::FractionalPercent>,
    /// `!disable_shadow_host_suffix_append`: the host gets `-shadow` (before any port).
    pub host_suffix: bool,
}

/// Envoy's `RegexMatchAndSubstitute`: every match of `regex` (unanchored) replaced by
/// `substitution`, whose `\N` are the match's groups.
#[derive(Clone, Debug)]
pub struct RegexRewrite {
    pub regex: Regex,
    /// In the `regex` crate's syntax (`${N}` for a group, `$$` for `$`).
    pub substitution: String,
}

impl RegexRewrite {
    /// `text` with every match replaced.
    pub fn apply<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        self.regex.replace_all(text, self.substitution.as_str())
    }
}

/// One `route.hash_policy[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashPolicy {
    pub kind: HashOn,
    /// `terminal`: once a hash exists, later policies are skipped.
    pub terminal: bool,
}

/// What a hash policy hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// `header.header_name` (lower case): every value, sorted, hashed as one string.
    Header(http::header::HeaderName),
    /// `cookie`: the request's cookie `name`; with `ttl`, one is generated (and set on the
    /// response) when the request has none.
    Cookie {
        name: String,
        /// `ttl` in seconds; `None`: never generated.
        ttl: Option<u64>,
        path: String,
    },
    /// `connection_properties.source_ip`.
    SourceIp,
    /// `query_parameter.name`: its first value, as written.
    QueryParameter(String),
}

/// Which cluster a route sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterSpecifier {
    /// `cluster`.
    Cluster(String),
    /// `weighted_clusters.clusters[]`: one picked per request, in proportion to its weight
    /// (the weights are positive; their sum is the total).
    Weighted(Vec<(String, u32)>),
    /// `cluster_header`: the cluster named by this request field, looked up per request (a
    /// route action only).
    Header(HeaderName),
}

impl ClusterSpecifier {
    /// Every cluster named.
    pub fn names(&self) -> Vec<&str> {
        match self {
            ClusterSpecifier::Cluster(c) => vec![c.as_str()],
            ClusterSpecifier::Weighted(w) => w.iter().map(|(c, _)| c.as_str()).collect(),
            ClusterSpecifier::Header(_) => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Envoy default 1.
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    /// `retriable_status_codes`, used with `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `retry_back_off` (Envoy's defaults: 25 ms base, ten times that at most).
    pub back_off: RetryBackOff,
    /// `retry_host_predicate` `envoy.retry_host_predicates.previous_hosts`: a retry avoids the
    /// hosts already tried, re-picking up to `host_selection_retry_max_attempts` times.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (Envoy default 1).
    pub host_selection_retry_max_attempts: u32,
    /// `retriable_headers`, used with `retriable-headers`: a response with a field that
    /// matches any of them is retried.
    pub retriable_headers: Vec<HeaderMatcher>,
    /// `retriable_request_headers`: when given, only a request that matches one of them is
    /// retried.
    pub retriable_request_headers: Vec<HeaderMatcher>,
}

/// Envoy's jittered exponential back-off between retries: the n-th retry waits a uniform
/// random time below `base × (2ⁿ − 1)`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBackOff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryBackOff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

impl RetryBackOff {
    /// The wait before retry number `retry` (1 for the first), drawn with `random` (a uniform
    /// `u64`), as Envoy's `JitteredExponentialBackOffStrategy` draws it.
    pub fn wait(&self, retry: u32, random: u64) -> Duration {
        let base = self.base.as_millis().max(1) as u64;
        let max = self.max.as_millis() as u64;
        let multiplier = (1u64 << retry.clamp(1, 62)) - 1;
        let ceiling = multiplier.saturating_mul(base);
        Duration::from_millis((random % ceiling).min(max))
    }
}

/// The `retry_on` conditions Baton implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, connect failure, reset.
    pub five_xx: bool,
    /// `gateway-error`: 502, 503, 504, connect failure, reset.
    pub gateway_error: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `reset`: upstream reset or disconnect before response headers.
    pub reset: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `refused-stream`: HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    /// `retriable-status-codes`.
    pub retriable_status_codes: bool,
    /// `retriable-headers`: see [`RetryPolicy::retriable_headers`].
    pub retriable_headers: bool,
    /// `envoy-ratelimited`: a response with `x-envoy-ratelimited`.
    pub envoy_ratelimited: bool,
}

impl RetryOn {
    /// Turn on the condition named `name` as `retry_on` writes it; `false` when Baton does
    /// not know it.
    pub fn set(&mut self, name: &str) -> bool {
        let flag = match name {
            "5xx" => &mut self.five_xx,
            "gateway-error" => &mut self.gateway_error,
            "connect-failure" => &mut self.connect_failure,
            "reset" => &mut self.reset,
            "retriable-4xx" => &mut self.retriable_4xx,
            "refused-stream" => &mut self.refused_stream,
            "retriable-status-codes" => &mut self.retriable_status_codes,
            "retriable-headers" => &mut self.retriable_headers,
            "envoy-ratelimited" => &mut self.envoy_ratelimited,
            _ => return false,
        };
        *flag = true;
        true
    }

    /// The conditions of both.
    pub fn union(self, o: RetryOn) -> RetryOn {
        RetryOn {
            five_xx: self.five_xx || o.five_xx,
            gateway_error: self.gateway_error || o.gateway_error,
            connect_failure: self.connect_failure || o.connect_failure,
            reset: self.reset || o.reset,
            retriable_4xx: self.retriable_4xx || o.retriable_4xx,
            refused_stream: self.refused_stream || o.refused_stream,
            retriable_status_codes: self.retriable_status_codes || o.retriable_status_codes,
            retriable_headers: self.retriable_headers || o.retriable_headers,
            envoy_ratelimited: self.envoy_ratelimited || o.envoy_ratelimited,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Option<bytes::Bytes>,
}

#[derive(Clone, Debug)]
pub struct Redirect {
    pub scheme_redirect: Option<String>,
    pub host_redirect: Option<String>,
    pub port_redirect: Option<u16>,
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    pub response_code: StatusCode,
    pub strip_query: bool,
}

/// `static_resources.clusters[]`.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub discovery: Discovery,
    /// Envoy default 5 s.
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub endpoints: Vec<Endpoint>,
    pub dns_lookup_family: DnsLookupFamily,
    /// Envoy default 5 s.
    pub dns_refresh_rate: Duration,
    pub circuit_breakers: Thresholds,
    pub per_connection_buffer_limit_bytes: u32,
    /// Upstream speaks HTTP/2 (prior knowledge, or by ALPN over TLS) instead of HTTP/1.1.
    pub http2: bool,
    /// `transport_socket` `envoy.transport_sockets.tls` (`UpstreamTlsContext`); `None`: cleartext.
    pub tls: Option<crate::tls::ClientTls>,
    /// `metadata.filter_metadata`.
    pub metadata: Metadata,
    /// `health_checks[0]`; `None`: every host counts as healthy.
    pub health_check: Option<HealthCheck>,
    /// `common_lb_config.healthy_panic_threshold` in percent: below this share of healthy
    /// hosts, balance across all of them. 0 turns panic mode off.
    pub panic_threshold: f64,
    /// `outlier_detection`; `None`: no passive ejection.
    pub outlier: Option<OutlierDetection>,
    /// `load_assignment.policy.overprovisioning_factor` (Envoy's 140): a priority level with
    /// this percent times its healthy share at 100% or more takes all the load it is due.
    pub overprovisioning_factor: u32,
    /// Socket options, HTTP/2 settings and connection limits of its upstream connections.
    pub upstream: UpstreamOptions,
    /// An `ORIGINAL_DST` cluster's settings (`Some` exactly when `discovery` is
    /// [`Discovery::OriginalDst`]).
    pub original_dst: Option<OriginalDst>,
}

/// An `ORIGINAL_DST` cluster: its hosts are made on demand from each downstream connection's
/// original destination (or a request header), and forgotten when unused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalDst {
    /// `original_dst_lb_config.use_http_header`: the header (`http_header_name`, default
    /// `x-envoy-original-dst-host`) whose `ip:port` a request goes to.
    pub header: Option<http::HeaderName>,
    /// `original_dst_lb_config.upstream_port_override`: the port used, whatever the address's.
    pub port_override: Option<u16>,
    /// `cleanup_interval` (Envoy default 5 s): a host unused for one whole interval is removed.
    pub cleanup_interval: Duration,
}

/// Envoy's default `overprovisioning_factor`.
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    Static,
    StrictDns,
    LogicalDns,
    /// `ORIGINAL_DST`: see [`OriginalDst`].
    OriginalDst,
}

impl Discovery {
    /// Resolved from DNS names, now and every `dns_refresh_rate`.
    pub fn is_dns(self) -> bool {
        matches!(self, Discovery::StrictDns | Discovery::LogicalDns)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    /// `CLUSTER_PROVIDED`: the cluster chooses its host (an `ORIGINAL_DST` cluster's only
    /// policy).
    ClusterProvided,
    /// `RING_HASH` with `ring_hash_lb_config`.
    RingHash(RingHash),
    /// `MAGLEV` with `maglev_lb_config`.
    Maglev(Maglev),
}

impl LbPolicy {
    /// A consistent-hashing policy: picks by the route's `hash_policy` hash.
    pub fn hashes(&self) -> bool {
        matches!(self, LbPolicy::RingHash(_) | LbPolicy::Maglev(_))
    }
}

/// What a host is hashed as on a ring or Maglev table: its `envoy.lb` `hash_key` metadata when
/// set, else its address (`ip:port`), or its DNS name with
/// `common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HashKey {
    #[default]
    Address,
    Hostname,
}

/// `ring_hash_lb_config`, as Envoy 1.40 builds the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingHash {
    /// `minimum_ring_size` (Envoy default 1024).
    pub minimum_ring_size: u64,
    /// `maximum_ring_size` (Envoy default 8M).
    pub maximum_ring_size: u64,
    /// `hash_function` `MURMUR_HASH_2` (else `XX_HASH`).
    pub murmur: bool,
    pub key: HashKey,
}

impl Default for RingHash {
    fn default() -> Self {
        Self {
            minimum_ring_size: 1024,
            maximum_ring_size: 8 * 1024 * 1024,
            murmur: false,
            key: HashKey::Address,
        }
    }
}

/// `maglev_lb_config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maglev {
    /// `table_size`, a prime (Envoy default 65537).
    pub table_size: u64,
    pub key: HashKey,
}

impl Default for Maglev {
    fn default() -> Self {
        Self {
            table_size: 65537,
            key: HashKey::Address,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DnsLookupFamily {
    /// Envoy's AUTO: IPv6 preferred, IPv4 fallback.
    #[default]
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

/// One `lb_endpoints[]` entry. `host` is an IP literal for STATIC clusters, a DNS name (or IP)
/// otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `load_balancing_weight`, default 1.
    pub weight: u32,
    /// `endpoint.hostname`: the host's name for `/clusters` (and the default upstream SNI);
    /// not used to connect.
    pub hostname: Option<String>,
    /// `health_check_config.port_value`: health checks go to this port instead.
    pub health_check_port: Option<u16>,
    /// `lb_endpoints[].metadata.filter_metadata`.
    pub metadata: Metadata,
    /// The enclosing `endpoints[]`' `locality`.
    pub locality: Option<Locality>,
    /// The enclosing `endpoints[]`' `priority` (0 is the highest).
    pub priority: u32,
    /// The enclosing `endpoints[]`' `load_balancing_weight`. Envoy weighs localities by it only
    /// with `common_lb_config.locality_weighted_lb_config`, which Baton does not accept, so
    /// (as in Envoy without it) hosts are balanced across localities by their own weights.
    pub locality_weight: Option<u32>,
}

impl Endpoint {
    /// The name `/clusters` shows: `hostname` when given, else the address or DNS name.
    pub fn shown_hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| self.host.clone())
    }
}

/// `circuit_breakers.thresholds[]` at the DEFAULT priority (Envoy defaults 1024 each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;
