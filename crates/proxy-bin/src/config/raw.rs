//! The on-disk shape of the Envoy v3 bootstrap subset Baton implements, as serde structs that
//! reject every field they do not list. Fields holding a `google.protobuf.Any` (and the entries
//! of the two top-level lists) stay `serde_json::Value` here and are decoded separately, so one
//! bad listener or cluster does not hide the errors of the others.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::de::{proto_enum, Dur, Empty, Int};

pub(crate) const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub(crate) const ROUTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub(crate) const FILE_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
pub(crate) const STDOUT_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
pub(crate) const STDERR_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";
pub(crate) const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
pub(crate) const HTTP_OPTIONS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bootstrap {
    pub node: Option<Node>,
    pub admin: Option<Admin>,
    pub static_resources: Option<StaticResources>,
}

/// `config.core.v3.Node`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Node {
    pub id: Option<String>,
    pub cluster: Option<String>,
    /// A `google.protobuf.Struct`.
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub locality: Option<Locality>,
}

/// `config.core.v3.Locality`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Locality {
    pub region: Option<String>,
    pub zone: Option<String>,
    pub sub_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub address: Option<Address>,
    pub access_log_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StaticResources {
    #[serde(default)]
    pub listeners: Vec<Value>,
    #[serde(default)]
    pub clusters: Vec<Value>,
    #[serde(default)]
    pub secrets: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Address {
    pub socket_address: SocketAddress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SocketAddress {
    pub address: String,
    pub port_value: Option<Int<i64>>,
    #[allow(dead_code)] // only TCP parses
    pub protocol: Option<Protocol>,
}

proto_enum! {
    pub(crate) enum Protocol {
        Tcp = ("TCP", 0),
    }
}

/// `config.core.v3.Metadata`: `filter_metadata` only (namespace → Struct).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    #[serde(default)]
    pub filter_metadata: BTreeMap<String, serde_json::Map<String, Value>>,
}

impl Metadata {
    /// As the runtime keeps it: namespace → Struct.
    pub(crate) fn into_map(this: Option<Self>) -> proxy_core::config::Metadata {
        this.map(|m| {
            m.filter_metadata
                .into_iter()
                .map(|(k, v)| (k, Value::Object(v)))
                .collect()
        })
        .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Listeners and the HTTP connection manager.

proto_enum! {
    pub(crate) enum TrafficDirection {
        Unspecified = ("UNSPECIFIED", 0),
        Inbound = ("INBOUND", 1),
        Outbound = ("OUTBOUND", 2),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    /// Absent or empty: a random UUID, as Envoy names such listeners.
    pub name: Option<String>,
    pub traffic_direction: Option<TrafficDirection>,
    pub freebind: Option<bool>,
    #[serde(default)]
    pub additional_addresses: Vec<AdditionalAddress>,
    pub listener_filters_timeout: Option<Dur>,
    pub address: Address,
    pub per_connection_buffer_limit_bytes: Option<Int<u32>>,
    #[serde(default)]
    pub listener_filters: Vec<super::tls::ListenerFilter>,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
    pub default_filter_chain: Option<FilterChain>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
}

/// `listener.v3.AdditionalAddress`: the address only (no `socket_options`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdditionalAddress {
    pub address: Address,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterChain {
    /// Informational only.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub filter_chain_match: Option<FilterChainMatch>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    pub transport_socket: Option<super::tls::TransportSocket>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterChainMatch {
    pub destination_port: Option<UInt32>,
    #[serde(default)]
    pub prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    #[serde(default)]
    pub application_protocols: Vec<String>,
    pub source_type: Option<SourceType>,
    #[serde(default)]
    pub source_prefix_ranges: Vec<CidrRange>,
    #[serde(default)]
    pub source_ports: Vec<Int<u32>>,
}

proto_enum! {
    pub(crate) enum SourceType {
        Any = ("ANY", 0),
        SameIpOrLoopback = ("SAME_IP_OR_LOOPBACK", 1),
        External = ("EXTERNAL", 2),
    }
}

pub(crate) const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TcpProxy {
    pub stat_prefix: String,
    pub cluster: Option<String>,
    pub weighted_clusters: Option<WeightedClusters>,
    pub idle_timeout: Option<Dur>,
    pub max_connect_attempts: Option<UInt32>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
    #[serde(default)]
    pub hash_policy: Vec<TcpHashPolicy>,
}

/// `tcp_proxy.hash_policy[]` (`type.v3.HashPolicy`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TcpHashPolicy {
    pub source_ip: Option<super::de::Empty>,
    pub filter_state: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filter {
    pub name: String,
    pub typed_config: Option<Value>,
}

proto_enum! {
    pub(crate) enum CodecType {
        Auto = ("AUTO", 0),
        Http1 = ("HTTP1", 1),
        Http2 = ("HTTP2", 2),
    }
}

proto_enum! {
    pub(crate) enum ServerHeaderTransformation {
        Overwrite = ("OVERWRITE", 0),
        AppendIfAbsent = ("APPEND_IF_ABSENT", 1),
        PassThrough = ("PASS_THROUGH", 2),
    }
}

proto_enum! {
    pub(crate) enum PathWithEscapedSlashesAction {
        ImplementationSpecificDefault = ("IMPLEMENTATION_SPECIFIC_DEFAULT", 0),
        KeepUnchanged = ("KEEP_UNCHANGED", 1),
        RejectRequest = ("REJECT_REQUEST", 2),
        UnescapeAndRedirect = ("UNESCAPE_AND_REDIRECT", 3),
        UnescapeAndForward = ("UNESCAPE_AND_FORWARD", 4),
    }
}

proto_enum! {
    pub(crate) enum HeadersWithUnderscoresAction {
        Allow = ("ALLOW", 0),
        RejectRequest = ("REJECT_REQUEST", 1),
        DropHeader = ("DROP_HEADER", 2),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpConnectionManager {
    pub stat_prefix: String,
    pub codec_type: Option<CodecType>,
    pub generate_request_id: Option<bool>,
    pub use_remote_address: Option<bool>,
    pub skip_xff_append: Option<bool>,
    pub via: Option<String>,
    pub server_name: Option<String>,
    pub server_header_transformation: Option<ServerHeaderTransformation>,
    pub always_set_request_id_in_response: Option<bool>,
    pub preserve_external_request_id: Option<bool>,
    pub merge_slashes: Option<bool>,
    pub local_reply_config: Option<LocalReplyConfig>,
    pub normalize_path: Option<bool>,
    pub add_user_agent: Option<bool>,
    pub delayed_close_timeout: Option<Dur>,
    pub http2_protocol_options: Option<super::upstream_options::Http2Options>,
    pub xff_num_trusted_hops: Option<Int<u32>>,
    pub path_with_escaped_slashes_action: Option<PathWithEscapedSlashesAction>,
    pub common_http_protocol_options: Option<CommonHttpProtocolOptions>,
    pub stream_idle_timeout: Option<Dur>,
    pub request_timeout: Option<Dur>,
    pub request_headers_timeout: Option<Dur>,
    pub max_request_headers_kb: Option<Int<u32>>,
    pub internal_address_config: Option<InternalAddressConfig>,
    pub http_protocol_options: Option<Http1ProtocolOptions>,
    #[serde(default)]
    pub upgrade_configs: Vec<UpgradeConfig>,
    #[serde(default)]
    pub access_log: Vec<AccessLog>,
    pub route_config: RouteConfiguration,
    #[serde(default)]
    pub http_filters: Vec<HttpFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommonHttpProtocolOptions {
    pub idle_timeout: Option<Dur>,
    pub max_requests_per_connection: Option<Int<u32>>,
    pub max_connection_duration: Option<Dur>,
    pub max_headers_count: Option<Int<u32>>,
    pub headers_with_underscores_action: Option<HeadersWithUnderscoresAction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Http1ProtocolOptions {
    pub accept_http_10: Option<bool>,
    pub default_host_for_http_10: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InternalAddressConfig {
    /// Baton listens on TCP only, so no client comes over a Unix socket.
    pub unix_sockets: Option<bool>,
    #[serde(default)]
    pub cidr_ranges: Vec<CidrRange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CidrRange {
    pub address_prefix: String,
    pub prefix_len: Option<Int<u8>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpgradeConfig {
    pub upgrade_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLog {
    /// Informational: the `@type` of `typed_config` decides the logger.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub typed_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAccessLog {
    pub path: String,
    pub format: Option<String>,
    pub log_format: Option<SubstitutionFormatString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamAccessLog {
    pub log_format: Option<SubstitutionFormatString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubstitutionFormatString {
    pub text_format: Option<String>,
    pub text_format_source: Option<DataSource>,
}

/// `local_reply_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalReplyConfig {
    #[serde(default)]
    pub mappers: Vec<ResponseMapper>,
    pub body_format: Option<BodyFormatString>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseMapper {
    pub filter: Option<AccessLogFilter>,
    pub status_code: Option<Int<u32>>,
    pub body: Option<DataSource>,
    pub body_format_override: Option<BodyFormatString>,
    #[serde(default)]
    pub headers_to_add: Vec<HeaderValueOption>,
}

/// `config.core.v3.SubstitutionFormatString` as a local reply's body format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BodyFormatString {
    pub text_format: Option<String>,
    pub text_format_source: Option<DataSource>,
    pub json_format: Option<serde_json::Map<String, Value>>,
    pub content_type: Option<String>,
}

/// `config.accesslog.v3.AccessLogFilter`: the filters Baton evaluates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLogFilter {
    pub status_code_filter: Option<ComparisonHolder>,
    pub duration_filter: Option<ComparisonHolder>,
    pub not_health_check_filter: Option<Empty>,
    pub header_filter: Option<HeaderFilter>,
    pub response_flag_filter: Option<ResponseFlagFilter>,
    pub and_filter: Option<FilterList>,
    pub or_filter: Option<FilterList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ComparisonHolder {
    pub comparison: Option<Comparison>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Comparison {
    pub op: Option<ComparisonOp>,
    pub value: Option<RuntimeUInt32>,
}

proto_enum! {
    pub(crate) enum ComparisonOp {
        Ge = ("GE", 0),
        Eq = ("EQ", 1),
        Le = ("LE", 2),
        Ne = ("NE", 3),
    }
}

/// `config.core.v3.RuntimeUInt32`: Baton has no runtime, so the key always falls back to the
/// default, as Envoy's does when the runtime does not have it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuntimeUInt32 {
    pub default_value: Option<Int<u32>>,
    #[allow(dead_code)]
    pub runtime_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderFilter {
    pub header: Option<HeaderMatcher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseFlagFilter {
    #[serde(default)]
    pub flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterList {
    #[serde(default)]
    pub filters: Vec<AccessLogFilter>,
}

/// `config.core.v3.DataSource`, inline strings only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataSource {
    pub inline_string: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpFilter {
    pub name: String,
    pub typed_config: Option<Value>,
    pub disabled: Option<bool>,
    pub is_optional: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Router {
    pub suppress_envoy_headers: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Routes.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfiguration {
    pub name: Option<String>,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    pub most_specific_header_mutations_wins: Option<bool>,
    #[serde(default)]
    pub typed_per_filter_config: serde_json::Map<String, Value>,
}

/// A `HeaderValueOption`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderValueOption {
    pub header: HeaderValue,
    pub append: Option<bool>,
    pub append_action: Option<AppendAction>,
    pub keep_empty_value: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VirtualHost {
    pub name: String,
    /// The legacy CORS policy (`config.route.v3.CorsPolicy`).
    pub cors: Option<Value>,
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub typed_per_filter_config: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub name: Option<String>,
    pub metadata: Option<Metadata>,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub route: Option<RouteAction>,
    pub direct_response: Option<DirectResponse>,
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub typed_per_filter_config: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteMatch {
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub safe_regex: Option<RegexMatcher>,
    pub path_separated_prefix: Option<String>,
    pub case_sensitive: Option<bool>,
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default)]
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// `GrpcRouteMatchOptions`, which has no fields.
    pub grpc: Option<Empty>,
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
    pub tls_context: Option<TlsContextMatchOptions>,
}

/// `RouteMatch.TlsContextMatchOptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsContextMatchOptions {
    pub presented: Option<super::filters::BoolValue>,
    pub validated: Option<super::filters::BoolValue>,
}

/// `config.route.v3.QueryParameterMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryParameterMatcher {
    pub name: String,
    pub string_match: Option<StringMatcher>,
    pub present_match: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegexMatcher {
    #[allow(dead_code)] // only the empty form parses
    pub google_re2: Option<Empty>,
    pub regex: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderMatcher {
    pub name: String,
    pub string_match: Option<StringMatcher>,
    pub exact_match: Option<String>,
    pub prefix_match: Option<String>,
    pub suffix_match: Option<String>,
    pub contains_match: Option<String>,
    pub safe_regex_match: Option<RegexMatcher>,
    pub present_match: Option<bool>,
    pub invert_match: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StringMatcher {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub safe_regex: Option<RegexMatcher>,
    pub ignore_case: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteAction {
    pub cluster: Option<String>,
    pub weighted_clusters: Option<WeightedClusters>,
    pub cluster_header: Option<String>,
    pub cluster_not_found_response_code: Option<ClusterNotFoundCode>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RegexMatchAndSubstitute>,
    pub host_rewrite_literal: Option<String>,
    pub host_rewrite_header: Option<String>,
    pub host_rewrite_path_regex: Option<RegexMatchAndSubstitute>,
    pub timeout: Option<Dur>,
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    pub idle_timeout: Option<Dur>,
    #[serde(default)]
    pub upgrade_configs: Vec<RouteUpgradeConfig>,
    #[serde(default)]
    pub hash_policy: Vec<super::lb::RawHashPolicy>,
    /// The legacy CORS policy (`config.route.v3.CorsPolicy`).
    pub cors: Option<Value>,
}

/// `RouteAction.RequestMirrorPolicy`; `trace_sampled`, `cluster_header` and the others are
/// refused as unknown.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestMirrorPolicy {
    #[serde(default)]
    pub cluster: String,
    pub runtime_fraction: Option<RuntimeFractionalPercent>,
    pub disable_shadow_host_suffix_append: Option<bool>,
}

/// `RouteAction.UpgradeConfig`; `connect_config` is refused as unknown.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteUpgradeConfig {
    #[serde(default)]
    pub upgrade_type: String,
    pub enabled: Option<super::filters::BoolValue>,
}

/// `RuntimeFractionalPercent`: Baton has no runtime, so `default_value` decides, as Envoy's
/// does when the key is not set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuntimeFractionalPercent {
    pub default_value: Option<super::filters::fault::Percent>,
    #[allow(dead_code)] // no runtime overrides it
    pub runtime_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegexMatchAndSubstitute {
    pub pattern: RegexMatcher,
    pub substitution: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightedClusters {
    pub clusters: Vec<ClusterWeight>,
    /// Deprecated in Envoy; when given it must equal the weights' sum.
    pub total_weight: Option<UInt32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterWeight {
    pub name: String,
    pub weight: Option<UInt32>,
    #[serde(default)]
    pub typed_per_filter_config: serde_json::Map<String, Value>,
}

/// A `google.protobuf.UInt32Value`: a number, or `{value: N}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum UInt32 {
    Plain(Int<u32>),
    Wrapped { value: Int<u32> },
}

impl UInt32 {
    pub fn get(&self) -> u32 {
        match self {
            UInt32::Plain(v) | UInt32::Wrapped { value: v } => v.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryPolicy {
    pub retry_on: Option<String>,
    pub num_retries: Option<UInt32>,
    pub per_try_timeout: Option<Dur>,
    #[serde(default)]
    pub retriable_status_codes: Vec<Int<u32>>,
    pub retry_back_off: Option<RetryBackOff>,
    #[serde(default)]
    pub retry_host_predicate: Vec<TypedExtension>,
    pub host_selection_retry_max_attempts: Option<Int<i64>>,
    #[serde(default)]
    pub retriable_headers: Vec<HeaderMatcher>,
    #[serde(default)]
    pub retriable_request_headers: Vec<HeaderMatcher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBackOff {
    pub base_interval: Option<Dur>,
    pub max_interval: Option<Dur>,
}

/// An extension by name, with its typed configuration (read by whoever knows the name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TypedExtension {
    pub name: String,
    pub typed_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectResponse {
    pub status: Int<u32>,
    pub body: Option<DataSource>,
}

proto_enum! {
    pub(crate) enum ClusterNotFoundCode {
        ServiceUnavailable = ("SERVICE_UNAVAILABLE", 0),
        NotFound = ("NOT_FOUND", 1),
        InternalServerError = ("INTERNAL_SERVER_ERROR", 2),
    }
}

proto_enum! {
    pub(crate) enum RedirectCode {
        MovedPermanently = ("MOVED_PERMANENTLY", 0),
        Found = ("FOUND", 1),
        SeeOther = ("SEE_OTHER", 2),
        TemporaryRedirect = ("TEMPORARY_REDIRECT", 3),
        PermanentRedirect = ("PERMANENT_REDIRECT", 4),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redirect {
    pub scheme_redirect: Option<String>,
    pub https_redirect: Option<bool>,
    pub host_redirect: Option<String>,
    pub port_redirect: Option<Int<u32>>,
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub response_code: Option<RedirectCode>,
    pub strip_query: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Clusters.

proto_enum! {
    pub(crate) enum DiscoveryType {
        Static = ("STATIC", 0),
        StrictDns = ("STRICT_DNS", 1),
        LogicalDns = ("LOGICAL_DNS", 2),
        OriginalDst = ("ORIGINAL_DST", 4),
    }
}

proto_enum! {
    pub(crate) enum LbPolicy {
        RoundRobin = ("ROUND_ROBIN", 0),
        LeastRequest = ("LEAST_REQUEST", 1),
        RingHash = ("RING_HASH", 2),
        Random = ("RANDOM", 3),
        Maglev = ("MAGLEV", 5),
        ClusterProvided = ("CLUSTER_PROVIDED", 6),
    }
}

proto_enum! {
    pub(crate) enum DnsLookupFamily {
        Auto = ("AUTO", 0),
        V4Only = ("V4_ONLY", 1),
        V6Only = ("V6_ONLY", 2),
        V4Preferred = ("V4_PREFERRED", 3),
        All = ("ALL", 4),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
    pub name: String,
    pub metadata: Option<Metadata>,
    #[serde(rename = "type")]
    pub kind: Option<DiscoveryType>,
    pub connect_timeout: Option<Dur>,
    pub lb_policy: Option<LbPolicy>,
    pub ring_hash_lb_config: Option<super::lb::RingHashLbConfig>,
    pub maglev_lb_config: Option<super::lb::MaglevLbConfig>,
    pub load_assignment: Option<LoadAssignment>,
    pub dns_lookup_family: Option<DnsLookupFamily>,
    pub dns_refresh_rate: Option<Dur>,
    pub circuit_breakers: Option<CircuitBreakers>,
    pub per_connection_buffer_limit_bytes: Option<Int<u32>>,
    #[serde(default)]
    pub typed_extension_protocol_options: BTreeMap<String, Value>,
    pub transport_socket: Option<super::tls::TransportSocket>,
    #[serde(default)]
    pub health_checks: Vec<super::health::RawHealthCheck>,
    pub common_lb_config: Option<super::health::CommonLbConfig>,
    pub outlier_detection: Option<super::health::RawOutlierDetection>,
    pub upstream_connection_options: Option<super::upstream_options::UpstreamConnectionOptions>,
    /// Deprecated in Envoy for `typed_extension_protocol_options` (still accepted by 1.40).
    pub http2_protocol_options: Option<super::upstream_options::Http2Options>,
    pub http_protocol_options: Option<Empty>,
    pub common_http_protocol_options: Option<super::upstream_options::CommonOptions>,
    pub max_requests_per_connection: Option<Int<u32>>,
    pub cleanup_interval: Option<Dur>,
    pub original_dst_lb_config: Option<OriginalDstLbConfig>,
}

/// `original_dst_lb_config`: the other fields (`use_port_from_host_filter_state`, ...) are
/// refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginalDstLbConfig {
    pub use_http_header: Option<bool>,
    pub http_header_name: Option<String>,
    pub upstream_port_override: Option<Int<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadAssignment {
    pub cluster_name: String,
    #[serde(default)]
    pub endpoints: Vec<LocalityLbEndpoints>,
    pub policy: Option<LoadAssignmentPolicy>,
}

/// `load_assignment.policy`: only the overprovisioning factor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadAssignmentPolicy {
    pub overprovisioning_factor: Option<Int<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalityLbEndpoints {
    pub locality: Option<Locality>,
    #[serde(default)]
    pub lb_endpoints: Vec<LbEndpoint>,
    pub load_balancing_weight: Option<Int<u32>>,
    pub priority: Option<Int<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LbEndpoint {
    pub endpoint: Endpoint,
    pub load_balancing_weight: Option<Int<u32>>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub address: Address,
    pub hostname: Option<String>,
    pub health_check_config: Option<super::health::HealthCheckConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CircuitBreakers {
    #[serde(default)]
    pub thresholds: Vec<Thresholds>,
}

proto_enum! {
    pub(crate) enum Priority {
        Default = ("DEFAULT", 0),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Thresholds {
    #[allow(dead_code)] // only DEFAULT parses
    pub priority: Option<Priority>,
    pub max_connections: Option<Int<u32>>,
    pub max_pending_requests: Option<Int<u32>>,
    pub max_requests: Option<Int<u32>>,
    pub max_retries: Option<Int<u32>>,
}
