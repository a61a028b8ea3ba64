//! TLS with rustls (ring provider only): building the downstream `ServerConfig`s and upstream
//! `ClientConfig`s from Envoy's `DownstreamTlsContext` / `UpstreamTlsContext` settings, checked
//! at configuration load (files readable, keys matching their certificates, certificates not
//! expired, cipher suites and versions rustls supports). Choosing a listener's filter chain (by
//! SNI among others) is [`crate::chain`]'s.
//!
//! Every config is built with `builder_with_provider(ring)`, never the process-default provider,
//! so no second provider can ever be picked up. The validated model carries the ready
//! `Arc<ServerConfig>` / `Arc<ClientConfig>`, so a generation reads its certificates exactly
//! once, when its configuration is loaded — a hot restart is how certificates rotate.

mod cert_error;
mod san;
mod stats;
mod verify;
mod x509;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};

pub use san::{SanMatcher, SanType, StringMatch};
pub use stats::SslStats;
pub use x509::not_after;

/// What a TLS connection's peer told, for RBAC: its server name and its certificate's URI and
/// DNS SANs and subject.
pub fn peer_identity(conn: &rustls::ServerConnection) -> crate::rbac::TlsPeer {
    let mut peer = crate::rbac::TlsPeer {
        sni: conn.server_name().unwrap_or("").to_owned(),
        ..Default::default()
    };
    if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
        for name in x509::subject_alt_names(cert).unwrap_or_default() {
            match name {
                x509::GeneralName::Uri(u) => peer.uri_sans.push(u),
                x509::GeneralName::Dns(d) => peer.dns_sans.push(d),
                _ => {}
            }
        }
        peer.subject = x509::subject_rfc2253(cert).unwrap_or_default();
    }
    peer
}

/// Where PEM text comes from: Envoy's `DataSource` (`filename` or `inline_string`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Inline(String),
}

/// One `tls_certificates[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    pub certificate_chain: PemSource,
    pub private_key: PemSource,
}

/// `tls_params.tls_minimum_protocol_version` / `tls_maximum_protocol_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// The settings shared by both directions (`common_tls_context`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommonSpec {
    pub tls_certificates: Vec<CertSpec>,
    pub alpn_protocols: Vec<String>,
    /// `None`: the direction's default (TLSv1_2).
    pub min_version: Option<TlsVersion>,
    /// `None`: the direction's default (TLSv1_3 downstream, TLSv1_2 upstream, as Envoy).
    pub max_version: Option<TlsVersion>,
    /// Envoy (BoringSSL) names, already split out of `[a|b]` groups; empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// `validation_context.trusted_ca`.
    pub trusted_ca: Option<PemSource>,
    /// `validation_context.match_typed_subject_alt_names` (with the deprecated
    /// `match_subject_alt_names` spelled out); empty: any name.
    pub san_matchers: Vec<SanMatcher>,
}

/// `DownstreamTlsContext`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSpec {
    pub common: CommonSpec,
    pub require_client_certificate: bool,
}

/// `UpstreamTlsContext`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientSpec {
    pub common: CommonSpec,
    /// `sni`: the server name sent; `None`: the endpoint's host name when it is a DNS name.
    pub sni: Option<String>,
    /// The cluster's `auto_san_validation`: the certificate must be valid for the server name
    /// the connection sends (the request's host, with `auto_sni`), whatever SAN matchers say.
    pub auto_san_validation: bool,
}

/// A TLS setting that cannot be used. `field` is relative to the TLS context
/// (`common_tls_context.tls_certificates[0].private_key`), for the caller to prefix.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TlsError {
    pub field: String,
    pub message: String,
}

impl TlsError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A ready downstream TLS context.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
}

/// A ready upstream TLS context.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// `config` offering `http/1.1` alone, when `config` offers `h2` too: for a connection
    /// that may switch protocols (WebSocket), which only HTTP/1.1 can.
    pub http1_config: Option<Arc<ClientConfig>>,
    pub sni: Option<String>,
}

/// The cipher suites rustls (ring) implements, by Envoy's (BoringSSL's) name.
const SUITES: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Envoy's name of a negotiated suite (`ssl.ciphers.<name>`).
pub fn suite_name(s: CipherSuite) -> Option<&'static str> {
    SUITES.iter().find(|(_, c)| *c == s).map(|(n, _)| *n)
}

/// Every suite name this build supports, in preference order.
pub fn supported_suite_names() -> impl Iterator<Item = &'static str> {
    SUITES.iter().map(|(n, _)| *n)
}

fn provider(common: &CommonSpec) -> Result<CryptoProvider, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    if common.cipher_suites.is_empty() {
        return Ok(p);
    }
    let mut wanted = Vec::with_capacity(common.cipher_suites.len());
    for (i, name) in common.cipher_suites.iter().enumerate() {
        match SUITES.iter().find(|(n, _)| n == name) {
            Some((_, s)) => wanted.push(*s),
            None => {
                return Err(TlsError::new(
                    format!("common_tls_context.tls_params.cipher_suites[{i}]"),
                    format!(
                        "unsupported cipher suite `{name}`; rustls supports {}",
                        supported_suite_names().collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        }
    }
    // As Envoy (BoringSSL), `cipher_suites` governs TLS 1.2; TLS 1.3's suites are always on
    // unless some are named explicitly.
    let names_13 = wanted
        .iter()
        .any(|s| suite_name(*s).is_some_and(|n| n.starts_with("TLS_")));
    p.cipher_suites.retain(|s| {
        let c = s.suite();
        wanted.contains(&c) || (!names_13 && matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
    });
    Ok(p)
}

fn versions(
    common: &CommonSpec,
    default_max: TlsVersion,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let min = common.min_version.unwrap_or(TlsVersion::V1_2);
    let max = common.max_version.unwrap_or(default_max.max(min));
    if min > max {
        return Err(TlsError::new(
            "common_tls_context.tls_params.tls_minimum_protocol_version",
            "is above tls_maximum_protocol_version",
        ));
    }
    let mut out = Vec::new();
    if min <= TlsVersion::V1_3 && max >= TlsVersion::V1_3 {
        out.push(&rustls::version::TLS13);
    }
    if min <= TlsVersion::V1_2 && max >= TlsVersion::V1_2 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

/// Read a PEM source's text; `field` names it in errors.
fn read_pem(src: &PemSource, field: &str) -> Result<Vec<u8>, TlsError> {
    match src {
        PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        PemSource::File(p) => std::fs::read(p).map_err(|e| {
            TlsError::new(
                format!("{field}.filename"),
                format!("could not read {}: {e}", p.display()),
            )
        }),
    }
}

fn describe(src: &PemSource, field: &str) -> String {
    match src {
        PemSource::File(p) => format!("{field}.filename ({})", p.display()),
        PemSource::Inline(_) => format!("{field}.inline_string"),
    }
}

fn certs(src: &PemSource, field: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(src, field)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(describe(src, field), format!("could not parse PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            describe(src, field),
            "contains no PEM CERTIFICATE block",
        ));
    }
    Ok(certs)
}

fn roots(src: &PemSource, field: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(src, field)? {
        store.add(c).map_err(|e| {
            TlsError::new(
                describe(src, field),
                format!(
                    "unusable CA certificate: {}",
                    cert_error::words(&e, "a trusted CA")
                ),
            )
        })?;
    }
    Ok(Arc::new(store))
}

/// Load one certificate and key, checking that they match and that the certificate has not
/// expired at `now`.
fn certified_key(
    spec: &CertSpec,
    field: &str,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain_field = format!("{field}.certificate_chain");
    let key_field = format!("{field}.private_key");
    let chain = certs(&spec.certificate_chain, &chain_field)?;
    let key_pem = read_pem(&spec.private_key, &key_field)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError::new(
            describe(&spec.private_key, &key_field),
            format!("could not parse a PEM private key: {e}"),
        )
    })?;
    let key = provider.key_provider.load_private_key(key).map_err(|e| {
        TlsError::new(
            describe(&spec.private_key, &key_field),
            format!("could not use private key: {e}"),
        )
    })?;
    let ck = CertifiedKey::new(chain, key);
    let leaf = ck.cert.first().map(|c| c.as_ref()).unwrap_or_default();
    let mismatch = || {
        TlsError::new(
            describe(&spec.private_key, &key_field),
            format!(
                "private key does not match the certificate in {}",
                describe(&spec.certificate_chain, &chain_field)
            ),
        )
    };
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(mismatch())
        }
        // webpki reads X.509 v3 only; a v1 certificate (Envoy's examples) is compared here.
        Err(e) => match (x509::subject_public_key_info(leaf), ck.key.public_key()) {
            (Some(spki), Some(key)) if spki == key.as_ref() => {}
            (Some(_), Some(_)) => return Err(mismatch()),
            (Some(_), None) => {}
            (None, _) => {
                return Err(TlsError::new(
                    describe(&spec.certificate_chain, &chain_field),
                    format!(
                        "unusable certificate: {}",
                        cert_error::words(&e, "a certificate")
                    ),
                ))
            }
        },
    }
    match not_after(leaf) {
        Some(t) if t < now => {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            return Err(TlsError::new(
                describe(&spec.certificate_chain, &chain_field),
                format!(
                    "certificate has expired (notAfter is {secs} seconds after the Unix epoch)"
                ),
            ));
        }
        Some(_) => {}
        None => {
            return Err(TlsError::new(
                describe(&spec.certificate_chain, &chain_field),
                "could not read the certificate's validity period",
            ))
        }
    }
    Ok(Arc::new(ck))
}

/// Several certificates (say RSA and ECDSA) in one context: the first whose key can sign with
/// a scheme the client offers.
#[derive(Debug)]
struct MultiCert(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for MultiCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|ck| ck.key.choose_scheme(schemes).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

/// Build a downstream context, reading every file now. `now` decides expiry.
pub fn server_config(spec: &ServerSpec, now: SystemTime) -> Result<ServerTls, TlsError> {
    let common = &spec.common;
    let provider = Arc::new(provider(common)?);
    let versions = versions(common, TlsVersion::V1_3)?;
    if common.tls_certificates.is_empty() {
        return Err(TlsError::new(
            "common_tls_context.tls_certificates",
            "a downstream TLS context needs at least one certificate",
        ));
    }
    let mut keys = Vec::with_capacity(common.tls_certificates.len());
    for (i, c) in common.tls_certificates.iter().enumerate() {
        keys.push(certified_key(
            c,
            &format!("common_tls_context.tls_certificates[{i}]"),
            &provider,
            now,
        )?);
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::new("common_tls_context.tls_params", e.to_string()))?;
    let ca_field = "common_tls_context.validation_context.trusted_ca";
    check_san_needs_ca(common)?;
    let builder = match &common.trusted_ca {
        Some(ca) => {
            let roots = roots(ca, ca_field)?;
            let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let b = if spec.require_client_certificate {
                b
            } else {
                b.allow_unauthenticated()
            };
            let v = b
                .build()
                .map_err(|e| TlsError::new(ca_field, format!("could not build verifier: {e}")))?;
            if common.san_matchers.is_empty() {
                builder.with_client_cert_verifier(v)
            } else {
                builder.with_client_cert_verifier(Arc::new(verify::SanClientVerifier::new(
                    v,
                    common.san_matchers.clone(),
                )))
            }
        }
        None if spec.require_client_certificate => return Err(TlsError::new(
            "require_client_certificate",
            "needs common_tls_context.validation_context.trusted_ca to verify client certificates",
        )),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(MultiCert(keys)));
    config.alpn_protocols = common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    // Stateless resumption, as Envoy and nginx do by default.
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsError::new("", format!("could not create session ticketer: {e}")))?;
    Ok(ServerTls {
        config: Arc::new(config),
    })
}

/// Build an upstream context, reading every file now. Without `trusted_ca` the server's
/// certificate is not verified (as Envoy without a `validation_context`), but its handshake
/// signature still is.
pub fn client_config(spec: &ClientSpec, now: SystemTime) -> Result<ClientTls, TlsError> {
    let common = &spec.common;
    let provider = Arc::new(provider(common)?);
    let versions = versions(common, TlsVersion::V1_2)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::new("common_tls_context.tls_params", e.to_string()))?;
    let ca_field = "common_tls_context.validation_context.trusted_ca";
    check_san_needs_ca(common)?;
    if spec.auto_san_validation && common.trusted_ca.is_none() {
        return Err(TlsError::new(
            "common_tls_context.validation_context.trusted_ca",
            "required by the cluster's auto_san_validation, to verify the certificate it validates the name of",
        ));
    }
    let builder = match &common.trusted_ca {
        // Envoy's SAN override: the name sent replaces the matchers.
        Some(ca) if common.san_matchers.is_empty() || spec.auto_san_validation => {
            builder.with_root_certificates(roots(ca, ca_field)?)
        }
        // As Envoy with SAN matchers: the chain is verified, then the names matched; the
        // server name itself is not compared.
        Some(ca) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::SanServerVerifier::new(
                roots(ca, ca_field)?,
                provider.clone(),
                common.san_matchers.clone(),
            ))),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertVerify(provider.clone()))),
    };
    let mut config = match common.tls_certificates.as_slice() {
        [] => builder.with_no_client_auth(),
        [one] => {
            let field = "common_tls_context.tls_certificates[0]";
            let ck = certified_key(one, field, &provider, now)?;
            let key_pem = read_pem(&one.private_key, &format!("{field}.private_key"))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                TlsError::new(
                    format!("{field}.private_key"),
                    format!("could not parse a PEM private key: {e}"),
                )
            })?;
            builder
                .with_client_auth_cert(ck.cert.clone(), key)
                .map_err(|e| {
                    TlsError::new(field, format!("could not use client certificate: {e}"))
                })?
        }
        _ => {
            return Err(TlsError::new(
                "common_tls_context.tls_certificates[1]",
                "an upstream TLS context takes at most one client certificate",
            ))
        }
    };
    config.alpn_protocols = common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    if let Some(sni) = &spec.sni {
        if ServerName::try_from(sni.as_str()).is_err() {
            return Err(TlsError::new(
                "sni",
                format!("`{sni}` is not a valid server name"),
            ));
        }
    }
    let offers = |p: &[u8]| config.alpn_protocols.iter().any(|a| a == p);
    let http1_config = (offers(b"h2") && offers(b"http/1.1")).then(|| {
        let mut c = config.clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    });
    Ok(ClientTls {
        config: Arc::new(config),
        http1_config,
        sni: spec.sni.clone(),
    })
}

/// Envoy 1.40 refuses SAN matchers without a `trusted_ca`, in its words.
fn check_san_needs_ca(common: &CommonSpec) -> Result<(), TlsError> {
    if common.trusted_ca.is_none() && !common.san_matchers.is_empty() {
        return Err(TlsError::new(
            "common_tls_context.validation_context.match_typed_subject_alt_names",
            "SAN-based verification of peer certificates without trusted CA is insecure and not allowed",
        ));
    }
    Ok(())
}

/// Accepts any server certificate; still checks the handshake signature with it.
#[derive(Debug)]
struct NoCertVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
