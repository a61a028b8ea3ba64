//! Building TLS contexts from generated certificates: what loads, and what is refused with the
//! field that is wrong.

use std::time::SystemTime;

use super::cert_error::words;
use super::*;
use rustls::{CertificateError, Error};

struct Pair {
    cert: String,
    key: String,
}

fn self_signed(name: &str) -> Pair {
    let k = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    Pair {
        cert: k.cert.pem(),
        key: k.key_pair.serialize_pem(),
    }
}

fn expired(name: &str) -> Pair {
    let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn spec(chain: PemSource, key: PemSource) -> ServerSpec {
    ServerSpec {
        common: CommonSpec {
            tls_certificates: vec![CertSpec {
                certificate_chain: chain,
                private_key: key,
            }],
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        },
        require_client_certificate: false,
    }
}

fn inline(p: &Pair) -> ServerSpec {
    spec(
        PemSource::Inline(p.cert.clone()),
        PemSource::Inline(p.key.clone()),
    )
}

#[test]
fn builds_from_inline_pem_with_alpn() {
    let tls = server_config(&inline(&self_signed("a.test")), SystemTime::now()).unwrap();
    assert_eq!(
        tls.config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn reads_not_after_of_generated_certificates() {
    let p = expired("old.test");
    let der = CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap();
    let t = not_after(der.as_ref()).unwrap();
    // 2001-01-01T00:00:00Z.
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs, 978_307_200);
}

#[test]
fn refuses_expired_certificate() {
    let e = server_config(&inline(&expired("old.test")), SystemTime::now()).unwrap_err();
    assert_eq!(
        e.field,
        "common_tls_context.tls_certificates[0].certificate_chain.inline_string"
    );
    assert!(e.message.contains("expired"), "{e}");
}

#[test]
fn refuses_key_of_another_certificate() {
    let a = self_signed("a.test");
    let b = self_signed("b.test");
    let s = spec(PemSource::Inline(a.cert), PemSource::Inline(b.key));
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert!(e.field.ends_with("private_key.inline_string"), "{e}");
    assert!(e.message.contains("does not match"), "{e}");
}

#[test]
fn missing_file_names_the_file_and_field() {
    let a = self_signed("a.test");
    let s = spec(
        PemSource::File("/nonexistent/baton/cert.pem".into()),
        PemSource::Inline(a.key),
    );
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert_eq!(
        e.field,
        "common_tls_context.tls_certificates[0].certificate_chain.filename"
    );
    assert!(e.message.contains("/nonexistent/baton/cert.pem"), "{e}");
}

#[test]
fn reads_files() {
    let dir = std::env::temp_dir().join(format!("baton-tls-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = self_signed("a.test");
    std::fs::write(dir.join("c.pem"), &a.cert).unwrap();
    std::fs::write(dir.join("k.pem"), &a.key).unwrap();
    let s = spec(
        PemSource::File(dir.join("c.pem")),
        PemSource::File(dir.join("k.pem")),
    );
    let r = server_config(&s, SystemTime::now());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(r.is_ok());
}

#[test]
fn garbage_pem_is_refused() {
    let a = self_signed("a.test");
    let s = spec(
        PemSource::Inline("nothing here".into()),
        PemSource::Inline(a.key),
    );
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert!(e.message.contains("no PEM CERTIFICATE"), "{e}");
}

#[test]
fn cipher_suites_and_versions() {
    let mut s = inline(&self_signed("a.test"));
    s.common.cipher_suites = vec!["ECDHE-ECDSA-AES128-GCM-SHA256".into()];
    s.common.max_version = Some(TlsVersion::V1_2);
    let tls = server_config(&s, SystemTime::now()).unwrap();
    let suites: Vec<_> = tls
        .config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| s.suite())
        .collect();
    assert!(suites.contains(&CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));
    assert!(!suites.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384));

    s.common.cipher_suites = vec!["ECDHE-ECDSA-AES128-GCM-SHA256".into(), "AES128-SHA".into()];
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert_eq!(e.field, "common_tls_context.tls_params.cipher_suites[1]");

    s.common.cipher_suites.clear();
    s.common.min_version = Some(TlsVersion::V1_3);
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert!(e.field.ends_with("tls_minimum_protocol_version"), "{e}");
}

#[test]
fn require_client_certificate_needs_a_ca() {
    let mut s = inline(&self_signed("a.test"));
    s.require_client_certificate = true;
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert_eq!(e.field, "require_client_certificate");
    let ca = self_signed("ca.test");
    s.common.trusted_ca = Some(PemSource::Inline(ca.cert));
    assert!(server_config(&s, SystemTime::now()).is_ok());
}

#[test]
fn client_config_checks_sni_and_ca() {
    let c = client_config(
        &ClientSpec {
            common: CommonSpec {
                trusted_ca: Some(PemSource::Inline(self_signed("ca.test").cert)),
                alpn_protocols: vec!["h2".into()],
                ..Default::default()
            },
            sni: Some("up.test".into()),
            auto_san_validation: false,
        },
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(c.config.alpn_protocols, vec![b"h2".to_vec()]);
    let e = client_config(
        &ClientSpec {
            sni: Some("bad name!".into()),
            ..Default::default()
        },
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(e.field, "sni");
}

/// An X.509 v1 self-signed certificate (no extensions, as `openssl x509 -req` writes it and as
/// Envoy's own example certificate is) and its key.
fn v1() -> Pair {
    Pair {
        cert: include_str!("../../../../tests/fixtures/tls/x509v1-cert.pem").to_owned(),
        key: include_str!("../../../../tests/fixtures/tls/x509v1-key.pem").to_owned(),
    }
}

#[test]
fn x509_v1_certificates_load_as_served_certificates_and_as_trusted_cas() {
    let p = v1();
    assert!(p.cert.contains("BEGIN CERTIFICATE"));
    let mut s = inline(&p);
    s.common.trusted_ca = Some(PemSource::Inline(p.cert.clone()));
    s.require_client_certificate = true;
    server_config(&s, SystemTime::now()).unwrap_or_else(|e| panic!("{e}"));
    // The key check still works without webpki: another key is refused.
    let other = self_signed("b.test");
    let s = spec(PemSource::Inline(p.cert), PemSource::Inline(other.key));
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert!(e.message.contains("does not match"), "{e}");
}

#[test]
fn an_unusable_certificate_is_explained_in_words() {
    let a = self_signed("a.test");
    // A PEM CERTIFICATE block whose contents are not a certificate.
    let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    let s = spec(PemSource::Inline(junk.into()), PemSource::Inline(a.key));
    let e = server_config(&s, SystemTime::now()).unwrap_err();
    assert!(e.field.ends_with("certificate_chain.inline_string"), "{e}");
    assert!(
        e.message
            .contains("unusable certificate: it is not a DER-encoded X.509 certificate"),
        "{e}"
    );
    assert!(!e.message.contains("Other("), "{e}");
    let e = words(
        &Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(webpki::Error::UnsupportedCertVersion),
        ))),
        "an upstream server's certificate",
    );
    assert_eq!(
        e,
        "its X.509 version is not accepted for an upstream server's certificate (only v3, and v1 for a certificate Baton serves)"
    );
}
