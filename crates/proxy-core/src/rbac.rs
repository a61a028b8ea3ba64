//! Role-based access control, shared by the HTTP and network RBAC filters: whether a connection
//! (and, for HTTP, a request) is allowed by a set of rules, with Envoy's semantics — `ALLOW`
//! allows what a policy matches, `DENY` denies it, `LOG` allows everything. Pure over what the
//! connection and request tell ([`Subject`]); counting and answering are the filters'.

use std::net::SocketAddr;

use http::{HeaderMap, Method, Uri};

use crate::config::{
    FilterHeaderMatcher, HeaderMatchKind, MatchedField, Permission, Principal, RbacAction,
    RbacRules,
};

/// What a TLS connection's peer told: its server name and its certificate's names.
#[derive(Clone, Debug, Default)]
pub struct TlsPeer {
    /// The ClientHello's server name (empty without one).
    pub sni: String,
    /// The peer certificate's URI SANs.
    pub uri_sans: Vec<String>,
    /// The peer certificate's DNS SANs.
    pub dns_sans: Vec<String>,
    /// The peer certificate's subject, RFC 2253 (empty without a certificate).
    pub subject: String,
}

/// What RBAC reads of a downstream connection when it starts.
#[derive(Clone, Debug)]
pub struct ConnIdentity {
    /// The socket's peer (the connection's remote address may be the PROXY protocol's).
    pub direct_remote: SocketAddr,
    /// `Some` for a TLS connection terminated here.
    pub tls: Option<TlsPeer>,
}

impl ConnIdentity {
    /// Read from the connection's stream (`remote`: its address if the socket has none).
    pub fn of(stream: &crate::io::Stream, remote: SocketAddr) -> Self {
        match stream {
            crate::io::Stream::Plain(s) => ConnIdentity {
                direct_remote: s.peer_addr().unwrap_or(remote),
                tls: None,
            },
            crate::io::Stream::Tls(s) => {
                let (sock, conn) = s.get_ref();
                ConnIdentity {
                    direct_remote: sock.peer_addr().unwrap_or(remote),
                    tls: Some(crate::tls::peer_identity(conn)),
                }
            }
        }
    }

    /// What rules are evaluated on, for this connection from `remote` to `local`.
    pub fn subject<'a>(
        &'a self,
        local: SocketAddr,
        remote: SocketAddr,
        request: Option<RequestHead<'a>>,
    ) -> Subject<'a> {
        Subject {
            local,
            direct_remote: self.direct_remote,
            remote,
            tls: self.tls.as_ref(),
            sni: None,
            request,
        }
    }
}

/// A request's head, for the HTTP filter.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// What the rules are evaluated on.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The connection's local address (restored by a listener filter when one did).
    pub local: SocketAddr,
    /// The socket's peer.
    pub direct_remote: SocketAddr,
    /// The peer after the PROXY protocol (and, for HTTP, `x-forwarded-for`).
    pub remote: SocketAddr,
    /// `Some` on a TLS connection (terminated here, or the ClientHello's name when passed
    /// through: then without certificate).
    pub tls: Option<&'a TlsPeer>,
    /// The server name of a TLS connection passed through (seen by the TLS inspector).
    pub sni: Option<&'a str>,
    pub request: Option<RequestHead<'a>>,
}

/// The outcome of one set of rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'r> {
    pub allowed: bool,
    /// The policy that matched, if one did.
    pub policy: Option<&'r str>,
}

/// A network RBAC filter, ready: its rules and its stats.
#[derive(Debug)]
pub struct NetworkRbacState {
    pub rbac: crate::config::Rbac,
    pub stats: crate::stats::RbacStats,
}

impl NetworkRbacState {
    pub fn new(store: &shm_stats::Store, r: &crate::config::NetworkRbac) -> Self {
        NetworkRbacState {
            rbac: r.rbac.clone(),
            stats: crate::stats::RbacStats::new(store, &format!("{}.", r.stat_prefix), "", ""),
        }
    }
}

/// Run a chain's network RBAC filters on a connection, in order, counting each one's
/// decisions: `false` when one denies it (the filters after it do not run).
pub fn network_allows(filters: &[NetworkRbacState], s: &Subject<'_>) -> bool {
    for f in filters {
        if let Some(shadow) = &f.rbac.shadow_rules {
            if evaluate(shadow, s).allowed {
                f.stats.shadow_allowed.inc();
            } else {
                f.stats.shadow_denied.inc();
            }
        }
        let Some(rules) = &f.rbac.rules else { continue };
        let d = evaluate(rules, s);
        if d.allowed {
            f.stats.allowed.inc();
        } else {
            f.stats.denied.inc();
            tracing::debug!(
                policy = d.policy.unwrap_or("none"),
                remote = %s.remote,
                "RBAC: connection denied"
            );
            return false;
        }
    }
    true
}

/// Evaluate `rules` on `s`.
pub fn evaluate<'r>(rules: &'r RbacRules, s: &Subject<'_>) -> Decision<'r> {
    let policy = rules
        .policies
        .iter()
        .find(|(_, p)| {
            p.permissions.iter().any(|m| permission(m, s))
                && p.principals.iter().any(|m| principal(m, s))
        })
        .map(|(name, _)| name.as_str());
    let allowed = match rules.action {
        RbacAction::Allow => policy.is_some(),
        RbacAction::Deny => policy.is_none(),
        RbacAction::Log => true,
    };
    Decision { allowed, policy }
}

fn permission(p: &Permission, s: &Subject<'_>) -> bool {
    match p {
        Permission::Any => true,
        Permission::And(all) => all.iter().all(|p| permission(p, s)),
        Permission::Or(any) => any.iter().any(|p| permission(p, s)),
        Permission::Not(p) => !permission(p, s),
        Permission::Header(h) => s.request.is_some_and(|r| header(h, r)),
        Permission::UrlPath(m) => s.request.is_some_and(|r| string(m, r.uri.path())),
        Permission::DestinationIp(net) => net.contains(&s.local.ip()),
        Permission::DestinationPort(port) => s.local.port() == *port,
        Permission::DestinationPortRange(start, end) => {
            (*start..*end).contains(&u32::from(s.local.port()))
        }
        Permission::RequestedServerName(m) => string(m, server_name(s)),
    }
}

fn principal(p: &Principal, s: &Subject<'_>) -> bool {
    match p {
        Principal::Any => true,
        Principal::And(all) => all.iter().all(|p| principal(p, s)),
        Principal::Or(any) => any.iter().any(|p| principal(p, s)),
        Principal::Not(p) => !principal(p, s),
        Principal::Authenticated(name) => match (s.tls, name) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(peer), Some(m)) => {
                peer.uri_sans.iter().any(|n| string(m, n))
                    || peer.dns_sans.iter().any(|n| string(m, n))
                    || string(m, &peer.subject)
            }
        },
        Principal::DirectRemoteIp(net) => net.contains(&s.direct_remote.ip()),
        Principal::RemoteIp(net) => net.contains(&s.remote.ip()),
        Principal::Header(h) => s.request.is_some_and(|r| header(h, r)),
        Principal::UrlPath(m) => s.request.is_some_and(|r| string(m, r.uri.path())),
    }
}

fn server_name<'a>(s: &Subject<'a>) -> &'a str {
    s.tls.map(|t| t.sni.as_str()).or(s.sni).unwrap_or("")
}

/// Whether a header matcher (which may name `:path`, `:method`, `:authority`) accepts a
/// request. A header sent more than once is matched on its values joined with `,`, as Envoy.
fn header(m: &FilterHeaderMatcher, r: RequestHead<'_>) -> bool {
    let joined;
    let value: Option<&str> = match &m.field {
        MatchedField::Path => r.uri.path_and_query().map(|p| p.as_str()),
        MatchedField::Method => Some(r.method.as_str()),
        MatchedField::Authority => r.uri.authority().map(|a| a.as_str()).or_else(|| {
            r.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        }),
        MatchedField::Header(name) => {
            let mut values = r.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => None,
                (Some(v), None) => v.to_str().ok(),
                (Some(first), Some(second)) => {
                    let mut all = vec![first, second];
                    all.extend(values);
                    joined = all
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()))
                        .collect::<Vec<_>>()
                        .join(",");
                    Some(joined.as_str())
                }
            }
        }
    };
    match (&m.kind, value) {
        (HeaderMatchKind::Present(p), v) => (v.is_some() == *p) != m.invert,
        // A missing header matches no value, inverted or not (Envoy 1.40: an inverted exact
        // match denied a request without the header).
        (_, None) => false,
        (kind, Some(v)) => string(kind, v) != m.invert,
    }
}

/// A `StringMatcher` on `v`.
fn string(m: &HeaderMatchKind, v: &str) -> bool {
    match m {
        HeaderMatchKind::Exact(s) => v == s,
        HeaderMatchKind::Prefix(s) => v.starts_with(s.as_str()),
        HeaderMatchKind::Suffix(s) => v.ends_with(s.as_str()),
        HeaderMatchKind::Contains(s) => v.contains(s.as_str()),
        HeaderMatchKind::Regex(re) => re
            .find(v)
            .is_some_and(|f| f.start() == 0 && f.end() == v.len()),
        HeaderMatchKind::Present(p) => *p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RbacPolicy, RbacRules};

    fn rules(action: RbacAction, permission: Permission, principal: Principal) -> RbacRules {
        RbacRules {
            action,
            policies: vec![(
                "p".into(),
                RbacPolicy {
                    permissions: vec![permission],
                    principals: vec![principal],
                },
            )],
        }
    }

    fn subject<'a>(tls: Option<&'a TlsPeer>, head: Option<RequestHead<'a>>) -> Subject<'a> {
        Subject {
            local: "10.0.0.1:8443".parse().unwrap(),
            direct_remote: "192.0.2.1:5000".parse().unwrap(),
            remote: "198.51.100.7:0".parse().unwrap(),
            tls,
            sni: None,
            request: head,
        }
    }

    #[test]
    fn actions_allow_deny_and_log() {
        let s = subject(None, None);
        let hit = |a| rules(a, Permission::DestinationPort(8443), Principal::Any);
        let miss = |a| rules(a, Permission::DestinationPort(1), Principal::Any);
        assert_eq!(
            evaluate(&hit(RbacAction::Allow), &s),
            Decision {
                allowed: true,
                policy: Some("p")
            }
        );
        assert!(!evaluate(&miss(RbacAction::Allow), &s).allowed);
        assert!(!evaluate(&hit(RbacAction::Deny), &s).allowed);
        assert!(evaluate(&miss(RbacAction::Deny), &s).allowed);
        assert!(evaluate(&hit(RbacAction::Log), &s).allowed);
        assert!(evaluate(&miss(RbacAction::Log), &s).allowed);
    }

    #[test]
    fn addresses_ports_and_combinators() {
        let s = subject(None, None);
        let net = |t: &str| t.parse::<ipnet::IpNet>().unwrap();
        let allowed = |perm, princ| evaluate(&rules(RbacAction::Allow, perm, princ), &s).allowed;
        assert!(allowed(
            Permission::DestinationIp(net("10.0.0.0/8")),
            Principal::DirectRemoteIp(net("192.0.2.0/24"))
        ));
        assert!(!allowed(
            Permission::Any,
            Principal::RemoteIp(net("192.0.2.0/24"))
        ));
        assert!(allowed(
            Permission::DestinationPortRange(8443, 8444),
            Principal::RemoteIp(net("198.51.100.0/24"))
        ));
        // The range's end is exclusive.
        assert!(!allowed(
            Permission::DestinationPortRange(8000, 8443),
            Principal::Any
        ));
        assert!(allowed(Permission::And(vec![]), Principal::Any));
        assert!(!allowed(Permission::Or(vec![]), Principal::Any));
        assert!(allowed(
            Permission::Not(Box::new(Permission::DestinationPort(1))),
            Principal::Not(Box::new(Principal::Authenticated(None)))
        ));
        // Without a request, header and path rules do not match.
        assert!(!allowed(
            Permission::UrlPath(HeaderMatchKind::Prefix("/".into())),
            Principal::Any
        ));
    }

    #[test]
    fn authenticated_names_uri_then_dns_then_subject() {
        let peer = TlsPeer {
            sni: "api.test".into(),
            uri_sans: vec!["spiffe://t/a".into()],
            dns_sans: vec!["a.test".into()],
            subject: "CN=a,O=T".into(),
        };
        let s = subject(Some(&peer), None);
        let name = |m: HeaderMatchKind| {
            evaluate(
                &rules(
                    RbacAction::Allow,
                    Permission::Any,
                    Principal::Authenticated(Some(m)),
                ),
                &s,
            )
            .allowed
        };
        assert!(name(HeaderMatchKind::Exact("spiffe://t/a".into())));
        assert!(name(HeaderMatchKind::Exact("a.test".into())));
        assert!(name(HeaderMatchKind::Exact("CN=a,O=T".into())));
        assert!(!name(HeaderMatchKind::Exact("b.test".into())));
        let sni = |m: HeaderMatchKind| {
            evaluate(
                &rules(
                    RbacAction::Allow,
                    Permission::RequestedServerName(m),
                    Principal::Any,
                ),
                &s,
            )
            .allowed
        };
        assert!(sni(HeaderMatchKind::Suffix(".test".into())));
        // A cleartext connection: not authenticated, no server name.
        let plain = subject(None, None);
        let any_auth = rules(
            RbacAction::Allow,
            Permission::Any,
            Principal::Authenticated(None),
        );
        assert!(!evaluate(&any_auth, &plain).allowed);
        assert!(evaluate(&any_auth, &s).allowed);
    }

    #[test]
    fn headers_join_repeated_values_and_pseudo_headers_read_the_request() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        let uri: Uri = "/p/q?x=1".parse().unwrap();
        let head = RequestHead {
            method: &Method::PUT,
            uri: &uri,
            headers: &headers,
        };
        let s = subject(None, Some(head));
        let header = |field, kind, invert| {
            let m = FilterHeaderMatcher {
                field,
                kind,
                invert,
            };
            evaluate(
                &rules(RbacAction::Allow, Permission::Header(m), Principal::Any),
                &s,
            )
            .allowed
        };
        let name = || MatchedField::Header(http::HeaderName::from_static("x-a"));
        assert!(header(name(), HeaderMatchKind::Exact("1,2".into()), false));
        assert!(!header(name(), HeaderMatchKind::Exact("1".into()), false));
        assert!(header(
            MatchedField::Path,
            HeaderMatchKind::Exact("/p/q?x=1".into()),
            false
        ));
        assert!(header(
            MatchedField::Method,
            HeaderMatchKind::Exact("GET".into()),
            true
        ));
        let missing = || MatchedField::Header(http::HeaderName::from_static("x-b"));
        assert!(!header(missing(), HeaderMatchKind::Exact("1".into()), true));
        assert!(header(missing(), HeaderMatchKind::Present(true), true));
        let path = |m| {
            evaluate(
                &rules(RbacAction::Allow, Permission::UrlPath(m), Principal::Any),
                &s,
            )
            .allowed
        };
        assert!(path(HeaderMatchKind::Exact("/p/q".into())));
    }
}
