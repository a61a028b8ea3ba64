//! Envoy's TLS stats under a prefix (`listener.<address>.ssl.*`, `cluster.<name>.ssl.*`):
//! `handshake`, `connection_error`, `session_reused`, `no_certificate`, `fail_verify_no_cert`,
//! `fail_verify_error`, `fail_verify_san`, `versions.<TLSv1.x>`, `ciphers.<name>`, `curves.<name>`. Every handle is
//! created up front so a handshake only touches atomics.

use std::io;

use rustls::{CommonState, HandshakeKind, NamedGroup, ProtocolVersion};
use shm_stats::{Counter, Store};

use super::SUITES;

/// The key exchange groups of the ring provider, by Envoy's name.
const CURVES: &[(&str, NamedGroup)] = &[
    ("X25519", NamedGroup::X25519),
    ("P-256", NamedGroup::secp256r1),
    ("P-384", NamedGroup::secp384r1),
];

/// TLS stats of one listener or cluster.
#[derive(Debug)]
pub struct SslStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub session_reused: Counter,
    pub no_certificate: Counter,
    pub fail_verify_no_cert: Counter,
    pub fail_verify_error: Counter,
    /// The chain verified, but no subject alternative name matched.
    pub fail_verify_san: Counter,
    tls12: Counter,
    tls13: Counter,
    ciphers: Vec<Counter>,
    curves: Vec<Counter>,
}

impl SslStats {
    /// Handles named `<prefix>.ssl.*`.
    pub fn new(store: &Store, prefix: &str) -> Self {
        let c = |name: &str| store.counter(&format!("{prefix}.ssl.{name}"));
        Self {
            handshake: c("handshake"),
            connection_error: c("connection_error"),
            session_reused: c("session_reused"),
            no_certificate: c("no_certificate"),
            fail_verify_no_cert: c("fail_verify_no_cert"),
            fail_verify_error: c("fail_verify_error"),
            fail_verify_san: c("fail_verify_san"),
            tls12: c("versions.TLSv1.2"),
            tls13: c("versions.TLSv1.3"),
            ciphers: SUITES
                .iter()
                .map(|(n, _)| c(&format!("ciphers.{n}")))
                .collect(),
            curves: CURVES
                .iter()
                .map(|(n, _)| c(&format!("curves.{n}")))
                .collect(),
        }
    }

    /// Count a completed handshake. `peer_cert`: whether the peer presented a certificate
    /// (downstream: a client certificate).
    pub fn record_handshake(&self, conn: &CommonState, peer_cert: bool) {
        self.handshake.inc();
        match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => self.tls13.inc(),
            Some(ProtocolVersion::TLSv1_2) => self.tls12.inc(),
            _ => {}
        }
        if let Some(s) = conn.negotiated_cipher_suite() {
            let suite = s.suite();
            if let Some(i) = SUITES.iter().position(|(_, c)| *c == suite) {
                self.ciphers[i].inc();
            }
        }
        if let Some(g) = conn.negotiated_key_exchange_group() {
            let name = g.name();
            if let Some(i) = CURVES.iter().position(|(_, c)| *c == name) {
                self.curves[i].inc();
            }
        }
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.session_reused.inc();
        }
        if !peer_cert {
            self.no_certificate.inc();
        }
    }

    /// Count a failed handshake; `e` is what tokio-rustls returned.
    pub fn record_error(&self, e: &io::Error) {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        // A name check failing is not a connection error to Envoy 1.40 (seen: an upstream
        // SAN mismatch counts `fail_verify_san` 1, `connection_error` 0).
        let san = matches!(
            tls,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure
                    | rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
            ))
        );
        if !san {
            self.connection_error.inc();
        }
        match tls {
            Some(rustls::Error::NoCertificatesPresented) => self.fail_verify_no_cert.inc(),
            // SAN matchers, or the name sent (`auto_san_validation`, Baton's own check).
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure
                | rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => self.fail_verify_san.inc(),
            Some(rustls::Error::InvalidCertificate(_)) => self.fail_verify_error.inc(),
            _ => {}
        }
    }
}
