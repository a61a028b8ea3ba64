//! `envoy.filters.http.rbac` and `envoy.filters.network.rbac` as configured: an enforced set of
//! rules and a shadow one, each an action and named policies of permissions (what is asked for)
//! and principals (who asks).

use super::{FilterHeaderMatcher, HeaderMatchKind};

/// `envoy.extensions.filters.{http,network}.rbac.v3.RBAC` (the HTTP filter's, a route's
/// `RBACPerRoute.rbac`, or the network filter's).
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    /// `rules`: enforced; `None`: every request passes, uncounted (as Envoy).
    pub rules: Option<RbacRules>,
    /// `shadow_rules`: evaluated and counted only.
    pub shadow_rules: Option<RbacRules>,
}

/// The HTTP filter: its rules and the parts of its stats' names.
#[derive(Clone, Debug)]
pub struct RbacFilter {
    pub rbac: Rbac,
    /// `rules_stat_prefix`: `http.<stat_prefix>.rbac.<rules_stat_prefix>.{allowed,denied}`.
    pub rules_stat_prefix: String,
    /// `shadow_rules_stat_prefix`: `….rbac.<prefix>.shadow_{allowed,denied}`.
    pub shadow_rules_stat_prefix: String,
}

/// The network filter: its rules and its stat prefix.
#[derive(Clone, Debug)]
pub struct NetworkRbac {
    /// Stats are `<stat_prefix>.rbac.*`.
    pub stat_prefix: String,
    pub rbac: Rbac,
}

/// `config.rbac.v3.RBAC`: an action and its policies.
#[derive(Clone, Debug)]
pub struct RbacRules {
    pub action: RbacAction,
    /// `policies`, sorted by name (Envoy's order: the first that matches is the one named).
    pub policies: Vec<(String, RbacPolicy)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacAction {
    /// Allowed when a policy matches.
    Allow,
    /// Denied when a policy matches.
    Deny,
    /// Always allowed (a match only marks the request for logging).
    Log,
}

/// `config.rbac.v3.Policy`: matches when one permission and one principal match.
#[derive(Clone, Debug)]
pub struct RbacPolicy {
    pub permissions: Vec<Permission>,
    pub principals: Vec<Principal>,
}

/// `config.rbac.v3.Permission`.
#[derive(Clone, Debug)]
pub enum Permission {
    Any,
    /// `and_rules`: all (none: true).
    And(Vec<Permission>),
    /// `or_rules`: one (none: false).
    Or(Vec<Permission>),
    Not(Box<Permission>),
    /// `header` (a pseudo-header `:path` is the target with its query).
    Header(FilterHeaderMatcher),
    /// `url_path.path`: the path without its query.
    UrlPath(HeaderMatchKind),
    /// `destination_ip`: the connection's local address (as restored by a listener filter).
    DestinationIp(ipnet::IpNet),
    DestinationPort(u16),
    /// `destination_port_range`: `[start, end)`.
    DestinationPortRange(u32, u32),
    /// `requested_server_name`: the TLS server name (empty without one).
    RequestedServerName(HeaderMatchKind),
}

/// `config.rbac.v3.Principal`.
#[derive(Clone, Debug)]
pub enum Principal {
    Any,
    /// `and_ids`: all (none: true).
    And(Vec<Principal>),
    /// `or_ids`: one (none: false).
    Or(Vec<Principal>),
    Not(Box<Principal>),
    /// `authenticated`: a TLS connection; with `principal_name`, the peer certificate's URI
    /// SANs, then DNS SANs, then subject must match.
    Authenticated(Option<HeaderMatchKind>),
    /// `direct_remote_ip`: the socket's peer.
    DirectRemoteIp(ipnet::IpNet),
    /// `remote_ip` (and the deprecated `source_ip`): the peer after the PROXY protocol and, for
    /// HTTP, `x-forwarded-for`.
    RemoteIp(ipnet::IpNet),
    Header(FilterHeaderMatcher),
    UrlPath(HeaderMatchKind),
}
