//! Validation of TLS settings: a filter chain's or a cluster's `transport_socket`
//! (`envoy.transport_sockets.tls` with a `DownstreamTlsContext` / `UpstreamTlsContext`), and the
//! listener filter `envoy.filters.listener.tls_inspector`. The raw shapes live here rather than
//! in [`super::raw`] because nothing else uses them; the contexts are built (files read, keys
//! checked against certificates, expiry checked) by [`proxy_core::tls`], so `--mode validate`
//! catches every problem a start would.

use std::time::SystemTime;

use proxy_core::tls::{
    self, CertSpec, ClientSpec, ClientTls, CommonSpec, PemSource, SanMatcher, SanType, ServerSpec,
    ServerTls, StringMatch, TlsVersion,
};
use serde::Deserialize;
use serde_json::Value;

use super::de::{self, join, proto_enum};
use super::ConfigError;

mod secrets;
pub(crate) use secrets::{secrets, Secrets};

pub(crate) const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
pub(crate) const DOWNSTREAM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
pub(crate) const UPSTREAM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
pub(crate) const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
pub(crate) const TLS_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// `transport_socket` of a filter chain or cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransportSocket {
    pub name: String,
    pub typed_config: Option<Value>,
}

/// `listener_filters[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerFilter {
    pub name: String,
    pub typed_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownstreamTlsContext {
    common_tls_context: Option<CommonTlsContext>,
    require_client_certificate: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTlsContext {
    common_tls_context: Option<CommonTlsContext>,
    sni: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonTlsContext {
    #[serde(default)]
    tls_certificates: Vec<TlsCertificate>,
    #[serde(default)]
    tls_certificate_sds_secret_configs: Vec<secrets::SdsSecretConfig>,
    validation_context_sds_secret_config: Option<secrets::SdsSecretConfig>,
    #[serde(default)]
    alpn_protocols: Vec<String>,
    tls_params: Option<TlsParams>,
    validation_context: Option<ValidationContext>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsCertificate {
    certificate_chain: Option<FileOrInline>,
    private_key: Option<FileOrInline>,
}

/// `config.core.v3.DataSource` with `filename` or `inline_string`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOrInline {
    filename: Option<String>,
    inline_string: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsParams {
    tls_minimum_protocol_version: Option<Protocol>,
    tls_maximum_protocol_version: Option<Protocol>,
    #[serde(default)]
    cipher_suites: Vec<String>,
}

proto_enum! {
    enum Protocol {
        Auto = ("TLS_AUTO", 0),
        V1_0 = ("TLSv1_0", 1),
        V1_1 = ("TLSv1_1", 2),
        V1_2 = ("TLSv1_2", 3),
        V1_3 = ("TLSv1_3", 4),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidationContext {
    trusted_ca: Option<FileOrInline>,
    #[serde(default)]
    match_typed_subject_alt_names: Vec<RawSanMatcher>,
    /// Deprecated (Envoy 1.40 warns): matched against every name type.
    #[serde(default)]
    match_subject_alt_names: Vec<super::raw::StringMatcher>,
}

/// `SubjectAltNameMatcher`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSanMatcher {
    san_type: Option<SanTypeName>,
    matcher: Option<super::raw::StringMatcher>,
}

proto_enum! {
    enum SanTypeName {
        Unspecified = ("SAN_TYPE_UNSPECIFIED", 0),
        Email = ("EMAIL", 1),
        Dns = ("DNS", 2),
        Uri = ("URI", 3),
        IpAddress = ("IP_ADDRESS", 4),
        OtherName = ("OTHER_NAME", 5),
    }
}

/// One `listener_filters[]` entry: the TLS inspector or the PROXY protocol.
pub(crate) fn listener_filter(
    f: ListenerFilter,
    path: &str,
) -> Result<proxy_core::config::ListenerFilter, ConfigError> {
    use proxy_core::config::{ListenerFilter as F, ProxyProtocol};
    let tc_path = join(path, "typed_config");
    let url = f
        .typed_config
        .as_ref()
        .and_then(|tc| tc.get("@type"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (f.typed_config, url.as_deref(), f.name.as_str()) {
        (Some(tc), Some(PROXY_PROTOCOL_TYPE), _) => {
            let raw: RawProxyProtocol = de::any(tc, &tc_path, PROXY_PROTOCOL_TYPE)?;
            Ok(F::ProxyProtocol(ProxyProtocol {
                allow_requests_without_proxy_protocol: raw
                    .allow_requests_without_proxy_protocol
                    .unwrap_or(false),
                stat_prefix: raw.stat_prefix.unwrap_or_default(),
            }))
        }
        (Some(tc), Some(HTTP_INSPECTOR_TYPE), _) => {
            let _: Empty = de::any(tc, &tc_path, HTTP_INSPECTOR_TYPE)?;
            Ok(F::HttpInspector)
        }
        // `traffic_direction` (Windows only in Envoy) is refused as an unknown field.
        (Some(tc), Some(ORIGINAL_DST_TYPE), _) => {
            let _: Empty = de::any(tc, &tc_path, ORIGINAL_DST_TYPE)?;
            Ok(F::OriginalDst)
        }
        (Some(tc), _, _) => {
            let _: Empty = de::any(tc, &tc_path, TLS_INSPECTOR_TYPE)?;
            Ok(F::TlsInspector)
        }
        (None, _, TLS_INSPECTOR) => Ok(F::TlsInspector),
        (None, _, HTTP_INSPECTOR) => Ok(F::HttpInspector),
        (None, _, PROXY_PROTOCOL) => Ok(F::ProxyProtocol(ProxyProtocol::default())),
        (None, _, ORIGINAL_DST) => Ok(F::OriginalDst),
        (None, _, other) => Err(ConfigError::new(
            join(path, "name"),
            format!(
                "unsupported listener filter `{other}`; Baton supports {TLS_INSPECTOR}, {HTTP_INSPECTOR}, {PROXY_PROTOCOL} and {ORIGINAL_DST}"
            ),
        )),
    }
}

pub(crate) const PROXY_PROTOCOL: &str = "envoy.filters.listener.proxy_protocol";
const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
const ORIGINAL_DST_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
const HTTP_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const PROXY_PROTOCOL_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";

/// `ProxyProtocol`: `rules`, `pass_through_tlvs`, `disallowed_versions` are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxyProtocol {
    allow_requests_without_proxy_protocol: Option<bool>,
    stat_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The TLS context of a filter chain's `transport_socket`.
pub(crate) fn downstream(
    ts: TransportSocket,
    path: &str,
    secrets: &Secrets,
) -> Result<ServerTls, ConfigError> {
    let tc_path = join(path, "typed_config");
    let tc = socket_config(ts, path, &tc_path)?;
    let raw: DownstreamTlsContext = de::any(tc, &tc_path, DOWNSTREAM_TYPE)?;
    let (common, origins) = common(raw.common_tls_context, &tc_path, secrets)?;
    let spec = ServerSpec {
        common,
        require_client_certificate: raw.require_client_certificate.unwrap_or(false),
    };
    tls::server_config(&spec, SystemTime::now())
        .map_err(|e| ConfigError::new(secrets::locate(&tc_path, &origins, &e.field), e.message))
}

/// The TLS context of a cluster's `transport_socket`. `http2`: the cluster is configured for
/// HTTP/2, so `h2` is offered by ALPN when `alpn_protocols` is empty (as Envoy).
pub(crate) fn upstream(
    ts: TransportSocket,
    path: &str,
    alpn: &[&str],
    auto_san_validation: bool,
    secrets: &Secrets,
) -> Result<ClientTls, ConfigError> {
    let tc_path = join(path, "typed_config");
    let tc = socket_config(ts, path, &tc_path)?;
    let raw: UpstreamTlsContext = de::any(tc, &tc_path, UPSTREAM_TYPE)?;
    let (mut common, origins) = common(raw.common_tls_context, &tc_path, secrets)?;
    // The protocols the cluster's HTTP options ask for, unless the context names its own.
    if common.alpn_protocols.is_empty() {
        common.alpn_protocols = alpn.iter().map(|p| (*p).to_owned()).collect();
    }
    let spec = ClientSpec {
        common,
        sni: raw.sni.filter(|s| !s.is_empty()),
        auto_san_validation,
    };
    tls::client_config(&spec, SystemTime::now())
        .map_err(|e| ConfigError::new(secrets::locate(&tc_path, &origins, &e.field), e.message))
}

fn socket_config(ts: TransportSocket, path: &str, tc_path: &str) -> Result<Value, ConfigError> {
    if ts.name != TLS_SOCKET && ts.name != "tls" {
        if ts.name == "envoy.transport_sockets.raw_buffer" {
            return Err(ConfigError::new(
                join(path, "name"),
                "unsupported: omit transport_socket for cleartext",
            ));
        }
        return Err(ConfigError::new(
            join(path, "name"),
            format!(
                "unsupported transport socket `{}`; Baton supports only {TLS_SOCKET}",
                ts.name
            ),
        ));
    }
    ts.typed_config
        .ok_or_else(|| ConfigError::new(tc_path, "required field is missing"))
}

/// The `common_tls_context` of the `typed_config` at `path`, static secrets resolved, and
/// where those came from.
fn common(
    raw: Option<CommonTlsContext>,
    path: &str,
    secrets: &Secrets,
) -> Result<(CommonSpec, secrets::Origins), ConfigError> {
    let Some(mut raw) = raw else {
        return Ok((CommonSpec::default(), Vec::new()));
    };
    let path = join(path, "common_tls_context");
    let origins = secrets.resolve(&mut raw, &path)?;
    let mut out = CommonSpec::default();
    for (i, c) in raw.tls_certificates.into_iter().enumerate() {
        let p = format!("{path}.tls_certificates[{i}]");
        let certificate_chain = source(c.certificate_chain, &join(&p, "certificate_chain"))?;
        let private_key = source(c.private_key, &join(&p, "private_key"))?;
        out.tls_certificates.push(CertSpec {
            certificate_chain,
            private_key,
        });
    }
    for (i, a) in raw.alpn_protocols.iter().enumerate() {
        if a.is_empty() || a.len() > 255 {
            return Err(ConfigError::new(
                format!("{path}.alpn_protocols[{i}]"),
                "an ALPN protocol name is 1 to 255 bytes",
            ));
        }
    }
    out.alpn_protocols = raw.alpn_protocols;
    if let Some(p) = raw.tls_params {
        let pp = join(&path, "tls_params");
        out.min_version = version(
            p.tls_minimum_protocol_version,
            &join(&pp, "tls_minimum_protocol_version"),
        )?;
        out.max_version = version(
            p.tls_maximum_protocol_version,
            &join(&pp, "tls_maximum_protocol_version"),
        )?;
        // `[A|B]` is BoringSSL's equal-preference group; rustls keeps the listed order.
        for s in p.cipher_suites {
            let inner = s.trim_start_matches('[').trim_end_matches(']');
            out.cipher_suites
                .extend(inner.split('|').map(|n| n.trim().to_owned()));
        }
    }
    if let Some(v) = raw.validation_context {
        let vp = join(&path, "validation_context");
        if let Some(ca) = v.trusted_ca {
            out.trusted_ca = Some(source(Some(ca), &join(&vp, "trusted_ca"))?);
        }
        for (i, m) in v.match_typed_subject_alt_names.into_iter().enumerate() {
            let p = format!("{vp}.match_typed_subject_alt_names[{i}]");
            let san_type = match m.san_type {
                Some(SanTypeName::Email) => SanType::Email,
                Some(SanTypeName::Dns) => SanType::Dns,
                Some(SanTypeName::Uri) => SanType::Uri,
                Some(SanTypeName::IpAddress) => SanType::IpAddress,
                Some(SanTypeName::OtherName) => {
                    return Err(ConfigError::new(
                        join(&p, "san_type"),
                        "unsupported value: Baton matches EMAIL, DNS, URI and IP_ADDRESS names",
                    ))
                }
                None | Some(SanTypeName::Unspecified) => {
                    // Envoy 1.40: "value must not be in list [SAN_TYPE_UNSPECIFIED]".
                    return Err(ConfigError::new(
                        join(&p, "san_type"),
                        "value must not be SAN_TYPE_UNSPECIFIED",
                    ));
                }
            };
            let Some(matcher) = m.matcher else {
                return Err(ConfigError::new(
                    join(&p, "matcher"),
                    "required field is missing",
                ));
            };
            let (matcher, ignore_case) = san_string_matcher(matcher, &join(&p, "matcher"))?;
            out.san_matchers.push(SanMatcher {
                san_type,
                matcher,
                ignore_case,
            });
        }
        for (i, m) in v.match_subject_alt_names.into_iter().enumerate() {
            let p = format!("{vp}.match_subject_alt_names[{i}]");
            let (matcher, ignore_case) = san_string_matcher(m, &p)?;
            out.san_matchers
                .extend(SanMatcher::untyped(matcher, ignore_case));
        }
    }
    Ok((out, origins))
}

/// A `StringMatcher` for subject alternative names: exactly one of `exact`, `prefix`,
/// `suffix`, `contains`, `safe_regex`, and `ignore_case` (not with `safe_regex`, as Envoy).
fn san_string_matcher(
    raw: super::raw::StringMatcher,
    path: &str,
) -> Result<(StringMatch, bool), ConfigError> {
    let ignore_case = raw.ignore_case.unwrap_or(false);
    let mut kinds: Vec<(&str, StringMatch)> = Vec::new();
    for (field, v, make) in [
        (
            "exact",
            raw.exact,
            StringMatch::Exact as fn(String) -> StringMatch,
        ),
        ("prefix", raw.prefix, StringMatch::Prefix),
        ("suffix", raw.suffix, StringMatch::Suffix),
        ("contains", raw.contains, StringMatch::Contains),
    ] {
        if let Some(v) = v {
            kinds.push((field, make(v)));
        }
    }
    if let Some(r) = raw.safe_regex {
        if ignore_case {
            // Envoy 1.40: "ignore_case has no effect for safe_regex."
            return Err(ConfigError::new(
                join(path, "ignore_case"),
                "has no effect for safe_regex",
            ));
        }
        let re = super::route::compile_regex(&r, &join(path, "safe_regex"))?;
        kinds.push(("safe_regex", StringMatch::Regex(re)));
    }
    match kinds.len() {
        1 => Ok((kinds.remove(0).1, ignore_case)),
        0 => Err(ConfigError::new(
            path,
            "needs one of `exact`, `prefix`, `suffix`, `contains`, `safe_regex`",
        )),
        _ => Err(ConfigError::new(
            join(path, kinds[1].0),
            format!("conflicts with `{}`: give exactly one", kinds[0].0),
        )),
    }
}

fn version(p: Option<Protocol>, path: &str) -> Result<Option<TlsVersion>, ConfigError> {
    match p {
        None | Some(Protocol::Auto) => Ok(None),
        Some(Protocol::V1_2) => Ok(Some(TlsVersion::V1_2)),
        Some(Protocol::V1_3) => Ok(Some(TlsVersion::V1_3)),
        Some(Protocol::V1_0 | Protocol::V1_1) => Err(ConfigError::new(
            path,
            "unsupported value: rustls implements TLSv1_2 and TLSv1_3 only",
        )),
    }
}

fn source(raw: Option<FileOrInline>, path: &str) -> Result<PemSource, ConfigError> {
    match raw {
        Some(FileOrInline {
            filename: Some(f),
            inline_string: None,
        }) if !f.is_empty() => Ok(PemSource::File(f.into())),
        Some(FileOrInline {
            filename: None,
            inline_string: Some(s),
        }) => Ok(PemSource::Inline(s)),
        Some(FileOrInline {
            filename: Some(_),
            inline_string: Some(_),
        }) => Err(ConfigError::new(
            path,
            "give either `filename` or `inline_string`, not both",
        )),
        _ => Err(ConfigError::new(
            join(path, "filename"),
            "required field is missing (or give `inline_string`)",
        )),
    }
}
