//! Just enough DER to read an X.509 certificate's `notAfter` (RFC 5280 §4.1.2.5), so an
//! expired certificate is refused when the configuration is loaded, and its
//! `subjectPublicKeyInfo`, so a key is matched with an X.509 v1 certificate (which webpki, reading
//! v3 only, will not parse; Envoy's own example certificate is v1). A full X.509 parser would be
//! a large dependency for these few fields (and the subject's text for RBAC); rustls verifies everything else at handshake time.

use std::time::{Duration, SystemTime};

/// One DER element: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The fields of `tbsCertificate` from `validity` on (`validity`, `subject`,
/// `subjectPublicKeyInfo`, …), or `None` if `der` is not a certificate this can read.
fn from_validity(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // `[0] EXPLICIT version`, absent in a v1 certificate.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    Some(rest)
}

/// The certificate's whole `subjectPublicKeyInfo` element (tag and length included, as
/// rustls' `SubjectPublicKeyInfoDer`), or `None` if `der` is not a certificate this can read.
pub fn subject_public_key_info(der: &[u8]) -> Option<&[u8]> {
    let rest = from_validity(der)?;
    // validity, subject.
    let rest = tlv(tlv(rest)?.2)?.2;
    let (tag, _, after) = tlv(rest)?;
    (tag == SEQUENCE).then(|| &rest[..rest.len() - after.len()])
}

/// One `subjectAltName` entry of the kinds Envoy matches (RFC 5280 §4.2.1.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeneralName {
    /// `rfc822Name`.
    Email(String),
    Dns(String),
    Uri(String),
    IpAddress(std::net::IpAddr),
}

/// The `subjectAltName` OID, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT extensions` of `tbsCertificate`.
const EXTENSIONS: u8 = 0xa3;

/// The certificate's DNS, URI, email and IP address alternative names (other kinds left
/// out); empty without the extension, `None` if `der` is not a certificate this can read.
pub fn subject_alt_names(der: &[u8]) -> Option<Vec<GeneralName>> {
    let rest = from_validity(der)?;
    // validity, subject, subjectPublicKeyInfo; then issuerUniqueID [1], subjectUniqueID [2]
    // and extensions [3], each optional.
    let mut rest = tlv(tlv(tlv(rest)?.2)?.2)?.2;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (tag, body, after) = tlv(rest)?;
        rest = after;
        if tag != EXTENSIONS {
            continue;
        }
        let (tag, mut exts, _) = tlv(body)?;
        if tag != SEQUENCE {
            return None;
        }
        while !exts.is_empty() {
            let (tag, ext, after) = tlv(exts)?;
            exts = after;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, mut fields) = tlv(ext)?;
            if tag != OID || oid != SAN_OID {
                continue;
            }
            // `critical BOOLEAN DEFAULT FALSE`, then the value.
            let (mut tag, mut value, after) = tlv(fields)?;
            if tag == 0x01 {
                fields = after;
                (tag, value, _) = tlv(fields)?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            let (tag, mut names, _) = tlv(value)?;
            if tag != SEQUENCE {
                return None;
            }
            while !names.is_empty() {
                let (tag, v, after) = tlv(names)?;
                names = after;
                let text = || String::from_utf8(v.to_vec()).ok();
                let name = match tag {
                    0x81 => GeneralName::Email(text()?),
                    0x82 => GeneralName::Dns(text()?),
                    0x86 => GeneralName::Uri(text()?),
                    0x87 => match v.len() {
                        4 => GeneralName::IpAddress(<[u8; 4]>::try_from(v).ok()?.into()),
                        16 => GeneralName::IpAddress(<[u8; 16]>::try_from(v).ok()?.into()),
                        _ => return None,
                    },
                    // otherName, x400Address, directoryName, ediPartyName, registeredID.
                    _ => continue,
                };
                out.push(name);
            }
        }
    }
    Some(out)
}

/// The certificate's subject as RFC 2253 text (`CN=client,O=Acme`: the last RDN first), the
/// form Envoy matches an RBAC `principal_name` against; `None` if `der` is not a certificate
/// this can read.
pub fn subject_rfc2253(der: &[u8]) -> Option<String> {
    let rest = from_validity(der)?;
    let (tag, mut rdns, _) = tlv(tlv(rest)?.2)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (tag, mut set, after) = tlv(rdns)?;
        rdns = after;
        if tag != 0x31 {
            return None;
        }
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let (tag, atv, after) = tlv(set)?;
            set = after;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(atv)?;
            if tag != OID {
                return None;
            }
            let (vtag, v, _) = tlv(value)?;
            let text = match vtag {
                // UTF8String, PrintableString, IA5String, T61String.
                0x0c | 0x13 | 0x16 | 0x14 => escape_rfc2253(v),
                // Anything else as `#` and the DER in hex.
                _ => {
                    let whole = &value[..value.len() - tlv(value)?.2.len()];
                    let mut s = String::from("#");
                    for b in whole {
                        s.push_str(&format!("{b:02X}"));
                    }
                    s
                }
            };
            rdn.push(format!("{}={text}", attribute_name(oid)));
        }
        parts.push(rdn.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

/// The short name OpenSSL prints for an attribute, else its dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    let known = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "street",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    // Dotted: the first byte holds two arcs, then base-128 arcs.
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc = 0u64;
    for (i, b) in oid.iter().enumerate() {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if i == 0 || arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A string attribute's value escaped as RFC 2253 asks (and bytes past ASCII as `\XX`, as
/// OpenSSL prints them).
fn escape_rfc2253(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len());
    let last = v.len().saturating_sub(1);
    for (i, &b) in v.iter().enumerate() {
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                s.push('\\');
                s.push(char::from(b));
            }
            b'#' if i == 0 => s.push_str("\\#"),
            b' ' if i == 0 || i == last => s.push_str("\\ "),
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\{b:02X}")),
        }
    }
    s
}

/// The certificate's `notAfter`, or `None` if `der` is not a certificate this can read.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let rest = from_validity(der)?;
    let (tag, validity, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after) = tlv(validity)?;
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let text = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (h, m, s) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
    }

    #[test]
    fn reads_subject_alt_names_of_every_kind() {
        let mut p = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        p.subject_alt_names.extend([
            rcgen::SanType::URI("spiffe://td/ns/x".try_into().unwrap()),
            rcgen::SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
            rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
            rcgen::SanType::IpAddress("::1".parse().unwrap()),
            rcgen::SanType::DnsName("*.wild.example".try_into().unwrap()),
        ]);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let names = subject_alt_names(cert.der()).unwrap();
        assert_eq!(
            names,
            vec![
                GeneralName::Dns("a.example".into()),
                GeneralName::Uri("spiffe://td/ns/x".into()),
                GeneralName::Email("ops@example.com".into()),
                GeneralName::IpAddress("127.0.0.1".parse().unwrap()),
                GeneralName::IpAddress("::1".parse().unwrap()),
                GeneralName::Dns("*.wild.example".into()),
            ]
        );
        // No extension: no names.
        let p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(subject_alt_names(cert.der()), Some(vec![]));
        assert!(subject_alt_names(b"").is_none());
    }

    #[test]
    fn subject_as_rfc_2253_last_rdn_first_and_escaped() {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "a,b+c ".to_owned());
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme".to_owned());
        p.distinguished_name
            .push(rcgen::DnType::CountryName, "FR".to_owned());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            subject_rfc2253(cert.der()).as_deref(),
            Some("C=FR,O=Acme,CN=a\\,b\\+c\\ ")
        );
        assert_eq!(attribute_name(&[0x2a, 0x03, 0x04]), "1.2.3.4");
        assert_eq!(subject_rfc2253(b"\x30\x00"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(subject_public_key_info(b"").is_none());
        assert!(subject_public_key_info(&[0x30, 0x02, 0x30, 0x00]).is_none());
        assert!(not_after(b"").is_none());
        assert!(not_after(&[0x30, 0x05, 1, 2]).is_none());
        assert!(not_after(&[0x30, 0x02, 0x30, 0x00]).is_none());
    }
}
