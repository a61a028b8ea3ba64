//! Envoy's `validation_context.match_typed_subject_alt_names` (and the deprecated
//! `match_subject_alt_names`): a verified peer certificate is accepted when one of its
//! subject alternative names of a matcher's type matches that matcher. As Envoy: a DNS name
//! and an `exact` matcher compare as DNS names (case-insensitively, a `*.` wildcard in the
//! certificate standing for one label); an IP address compares in its text form.

use regex::Regex;

use super::x509::{self, GeneralName};

/// `san_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanType {
    Dns,
    Uri,
    Email,
    IpAddress,
}

/// A `type.matcher.v3.StringMatcher`.
#[derive(Clone, Debug)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Must match the whole value.
    Regex(Regex),
}

/// One `match_typed_subject_alt_names[]` entry.
#[derive(Clone, Debug)]
pub struct SanMatcher {
    pub san_type: SanType,
    pub matcher: StringMatch,
    /// `ignore_case` (not with `safe_regex`).
    pub ignore_case: bool,
}

impl PartialEq for SanMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.san_type == other.san_type
            && self.ignore_case == other.ignore_case
            && match (&self.matcher, &other.matcher) {
                (StringMatch::Exact(a), StringMatch::Exact(b))
                | (StringMatch::Prefix(a), StringMatch::Prefix(b))
                | (StringMatch::Suffix(a), StringMatch::Suffix(b))
                | (StringMatch::Contains(a), StringMatch::Contains(b)) => a == b,
                (StringMatch::Regex(a), StringMatch::Regex(b)) => a.as_str() == b.as_str(),
                _ => false,
            }
    }
}

impl Eq for SanMatcher {}

// === impl SanMatcher ===

impl SanMatcher {
    /// The deprecated `match_subject_alt_names[]` entry: Envoy matches it against the DNS,
    /// URI, email and IP address names alike.
    pub fn untyped(matcher: StringMatch, ignore_case: bool) -> Vec<SanMatcher> {
        [
            SanType::Dns,
            SanType::Uri,
            SanType::Email,
            SanType::IpAddress,
        ]
        .into_iter()
        .map(|san_type| SanMatcher {
            san_type,
            matcher: matcher.clone(),
            ignore_case,
        })
        .collect()
    }

    fn matches(&self, name: &GeneralName) -> bool {
        let value = match (self.san_type, name) {
            (SanType::Dns, GeneralName::Dns(v))
            | (SanType::Uri, GeneralName::Uri(v))
            | (SanType::Email, GeneralName::Email(v)) => v.clone(),
            (SanType::IpAddress, GeneralName::IpAddress(ip)) => ip.to_string(),
            _ => return false,
        };
        if let (SanType::Dns, StringMatch::Exact(want)) = (self.san_type, &self.matcher) {
            return dns_name_match(want, &value);
        }
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_owned()
            }
        };
        let v = fold(&value);
        match &self.matcher {
            StringMatch::Exact(w) => v == fold(w),
            StringMatch::Prefix(w) => v.starts_with(&fold(w)),
            StringMatch::Suffix(w) => v.ends_with(&fold(w)),
            StringMatch::Contains(w) => v.contains(&fold(w)),
            StringMatch::Regex(re) => re.find(&value).is_some_and(|m| m.len() == value.len()),
        }
    }
}

/// Whether `cert_der`'s names satisfy `matchers`: no matcher, or one name matching one.
pub fn accepted(matchers: &[SanMatcher], cert_der: &[u8]) -> bool {
    if matchers.is_empty() {
        return true;
    }
    let Some(names) = x509::subject_alt_names(cert_der) else {
        return false;
    };
    names.iter().any(|n| matchers.iter().any(|m| m.matches(n)))
}

/// `name` (a configured DNS name) against `pattern` (a certificate's, maybe `*.` wildcard),
/// case-insensitively; the wildcard stands for exactly one non-empty label.
fn dns_name_match(name: &str, pattern: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if name == pattern {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => name
            .strip_suffix(suffix)
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(san_type: SanType, matcher: StringMatch) -> SanMatcher {
        SanMatcher {
            san_type,
            matcher,
            ignore_case: false,
        }
    }

    #[test]
    fn dns_exact_follows_dns_rules() {
        assert!(dns_name_match("A.Example", "a.example"));
        assert!(dns_name_match("x.wild.example", "*.wild.example"));
        assert!(!dns_name_match("y.x.wild.example", "*.wild.example"));
        assert!(!dns_name_match("wild.example", "*.wild.example"));
        assert!(!dns_name_match("x.wild.example", "x*.wild.example"));
    }

    #[test]
    fn each_matcher_kind_and_type() {
        let dns = GeneralName::Dns("api.example.com".into());
        let uri = GeneralName::Uri("spiffe://td/ns/prod/sa/api".into());
        let ip = GeneralName::IpAddress("10.0.0.1".parse().unwrap());
        let email = GeneralName::Email("Ops@Example.com".into());
        assert!(m(SanType::Dns, StringMatch::Exact("API.example.com".into())).matches(&dns));
        assert!(m(SanType::Dns, StringMatch::Suffix(".example.com".into())).matches(&dns));
        assert!(!m(SanType::Uri, StringMatch::Suffix(".example.com".into())).matches(&dns));
        assert!(m(SanType::Uri, StringMatch::Prefix("spiffe://td/".into())).matches(&uri));
        assert!(m(SanType::Uri, StringMatch::Contains("/prod/".into())).matches(&uri));
        let re = Regex::new("spiffe://td/ns/[a-z]+/sa/api").unwrap();
        assert!(m(SanType::Uri, StringMatch::Regex(re)).matches(&uri));
        let partial = Regex::new("ns/prod").unwrap();
        assert!(!m(SanType::Uri, StringMatch::Regex(partial)).matches(&uri));
        assert!(m(SanType::IpAddress, StringMatch::Exact("10.0.0.1".into())).matches(&ip));
        assert!(!m(SanType::Dns, StringMatch::Exact("10.0.0.1".into())).matches(&ip));
        assert!(!m(SanType::Email, StringMatch::Exact("ops@example.com".into())).matches(&email));
        let folded = SanMatcher {
            ignore_case: true,
            ..m(SanType::Email, StringMatch::Exact("ops@example.com".into()))
        };
        assert!(folded.matches(&email));
        let any = SanMatcher::untyped(StringMatch::Exact("10.0.0.1".into()), false);
        assert!(any.iter().any(|m| m.matches(&ip)));
    }
}
