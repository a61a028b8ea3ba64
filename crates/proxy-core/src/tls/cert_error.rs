//! Why rustls (through webpki) will not use a certificate, in words for a configuration error
//! rather than the library's debug names.

use rustls::{CertificateError, Error};

/// `e` (from loading a certificate used as `role`, e.g. "a trusted CA") as a sentence.
pub(super) fn words(e: &Error, role: &str) -> String {
    let Error::InvalidCertificate(ce) = e else {
        return e.to_string();
    };
    match ce {
        CertificateError::BadEncoding => "it is not a DER-encoded X.509 certificate".to_owned(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".to_owned()
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(w) => webpki_words(w, role),
            None => other.0.to_string(),
        },
        other => other.to_string(),
    }
}

fn webpki_words(e: &webpki::Error, role: &str) -> String {
    use webpki::Error as W;
    match e {
        W::UnsupportedCertVersion => {
            format!("its X.509 version is not accepted for {role} (only v3, and v1 for a certificate Baton serves)")
        }
        W::BadDer | W::TrailingData(_) => {
            "its DER encoding is malformed (not an X.509 certificate)".to_owned()
        }
        W::BadDerTime | W::InvalidCertValidity => "its validity period is malformed".to_owned(),
        W::InvalidSerialNumber => {
            "its serial number is invalid (zero, negative or longer than 20 bytes)".to_owned()
        }
        W::UnsupportedCriticalExtension => {
            "it has a critical extension that rustls does not understand".to_owned()
        }
        W::MalformedExtensions | W::ExtensionValueInvalid => {
            "its extensions are malformed".to_owned()
        }
        W::CaUsedAsEndEntity => "it is a CA certificate, not one for a server or client".to_owned(),
        W::EndEntityUsedAsCa => format!("it is not a CA certificate, so it cannot be {role}"),
        W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "it is signed with an algorithm rustls does not support".to_owned()
        }
        other => format!("webpki refuses it ({other})"),
    }
}
