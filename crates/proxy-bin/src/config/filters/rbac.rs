//! `envoy.extensions.filters.http.rbac.v3.RBAC` (and a route's `RBACPerRoute`) and
//! `envoy.extensions.filters.network.rbac.v3.RBAC`: rules of `config.rbac.v3` — policies of
//! permissions and principals. What Baton does not evaluate (metadata, filter state, CEL
//! conditions, the matcher API, custom matchers, audit logging, per-rule stats) is refused with
//! its path.

use proxy_core::config::{
    FilterHeaderMatcher, HeaderMatchKind, NetworkRbac, Permission, Principal, Rbac, RbacAction,
    RbacFilter, RbacPolicy, RbacRules,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::de::{join, Int};
use super::super::{raw, ConfigError, Errors};

pub(super) const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
pub(super) const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
pub(crate) const NETWORK_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRbac {
    rules: Option<Rules>,
    shadow_rules: Option<Rules>,
    #[serde(default)]
    rules_stat_prefix: String,
    #[serde(default)]
    shadow_rules_stat_prefix: String,
    matcher: Option<Value>,
    shadow_matcher: Option<Value>,
    track_per_rule_stats: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerRoute {
    rbac: Option<HttpRbac>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetRbac {
    rules: Option<Rules>,
    shadow_rules: Option<Rules>,
    #[serde(default)]
    stat_prefix: String,
    #[serde(default)]
    shadow_rules_stat_prefix: String,
    matcher: Option<Value>,
    shadow_matcher: Option<Value>,
    enforcement_type: Option<String>,
    delay_deny: Option<Value>,
}

/// `config.rbac.v3.RBAC`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    action: Option<String>,
    #[serde(default)]
    policies: Map<String, Value>,
    audit_logging_options: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[serde(default)]
    permissions: Vec<Value>,
    #[serde(default)]
    principals: Vec<Value>,
    condition: Option<Value>,
    checked_condition: Option<Value>,
    cel_config: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    and_rules: Option<PermissionSet>,
    or_rules: Option<PermissionSet>,
    any: Option<bool>,
    header: Option<raw::HeaderMatcher>,
    url_path: Option<PathMatcher>,
    destination_ip: Option<raw::CidrRange>,
    destination_port: Option<Int<u32>>,
    destination_port_range: Option<Range>,
    not_rule: Option<Value>,
    requested_server_name: Option<raw::StringMatcher>,
    metadata: Option<Value>,
    matcher: Option<Value>,
    uri_template: Option<Value>,
    sourced_metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionSet {
    #[serde(default)]
    rules: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    and_ids: Option<PrincipalSet>,
    or_ids: Option<PrincipalSet>,
    any: Option<bool>,
    authenticated: Option<Authenticated>,
    source_ip: Option<raw::CidrRange>,
    direct_remote_ip: Option<raw::CidrRange>,
    remote_ip: Option<raw::CidrRange>,
    header: Option<raw::HeaderMatcher>,
    url_path: Option<PathMatcher>,
    not_id: Option<Value>,
    metadata: Option<Value>,
    filter_state: Option<Value>,
    sourced_metadata: Option<Value>,
    custom: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalSet {
    #[serde(default)]
    ids: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Authenticated {
    principal_name: Option<raw::StringMatcher>,
}

/// `type.matcher.v3.PathMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathMatcher {
    path: Option<raw::StringMatcher>,
}

/// `type.v3.Int32Range`: `[start, end)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    start: Option<Int<i64>>,
    end: Option<Int<i64>>,
}

/// The HTTP filter's configuration.
pub(super) fn parse(rest: Value, path: &str) -> Result<RbacFilter, ConfigError> {
    let raw: HttpRbac = super::decode(rest, path)?;
    let rules_stat_prefix = raw.rules_stat_prefix.clone();
    let shadow_rules_stat_prefix = raw.shadow_rules_stat_prefix.clone();
    Ok(RbacFilter {
        rbac: http_rbac(raw, path)?,
        rules_stat_prefix,
        shadow_rules_stat_prefix,
    })
}

/// A route's `RBACPerRoute`: its `rbac` replaces the filter's rules; without one (or without
/// rules in it) the filter is off for the route.
pub(super) fn parse_per_route(rest: Value, path: &str) -> Result<Rbac, ConfigError> {
    let raw: PerRoute = super::decode(rest, path)?;
    match raw.rbac {
        None => Ok(Rbac::default()),
        Some(r) => {
            let p = join(path, "rbac");
            for (set, name) in [
                (!r.rules_stat_prefix.is_empty(), "rules_stat_prefix"),
                (
                    !r.shadow_rules_stat_prefix.is_empty(),
                    "shadow_rules_stat_prefix",
                ),
            ] {
                if set {
                    return Err(ConfigError::new(
                        join(&p, name),
                        "is the filter's (a route's rules count in the filter's stats); not supported in RBACPerRoute",
                    ));
                }
            }
            http_rbac(r, &p)
        }
    }
}

fn http_rbac(raw: HttpRbac, path: &str) -> Result<Rbac, ConfigError> {
    refuse(
        &[
            (raw.matcher.is_some(), "matcher", "the matcher API"),
            (
                raw.shadow_matcher.is_some(),
                "shadow_matcher",
                "the matcher API",
            ),
            (
                raw.track_per_rule_stats == Some(true),
                "track_per_rule_stats",
                "per-rule stats",
            ),
        ],
        path,
    )?;
    Ok(Rbac {
        rules: raw
            .rules
            .map(|r| rules(r, &join(path, "rules")))
            .transpose()?,
        shadow_rules: raw
            .shadow_rules
            .map(|r| rules(r, &join(path, "shadow_rules")))
            .transpose()?,
    })
}

/// The network filter's configuration.
pub(crate) fn parse_network(rest: Value, path: &str) -> Result<NetworkRbac, ConfigError> {
    let raw: NetRbac = super::decode(rest, path)?;
    if raw.stat_prefix.is_empty() {
        return Err(ConfigError::new(
            join(path, "stat_prefix"),
            "is required (as in Envoy)",
        ));
    }
    let continuous = raw.enforcement_type.as_deref() == Some("CONTINUOUS");
    refuse(
        &[
            (raw.matcher.is_some(), "matcher", "the matcher API"),
            (
                raw.shadow_matcher.is_some(),
                "shadow_matcher",
                "the matcher API",
            ),
            (
                continuous,
                "enforcement_type",
                "CONTINUOUS enforcement (rules are checked once per connection)",
            ),
            (raw.delay_deny.is_some(), "delay_deny", "a delayed denial"),
            (
                !raw.shadow_rules_stat_prefix.is_empty(),
                "shadow_rules_stat_prefix",
                "a shadow rules stat prefix on the network filter",
            ),
        ],
        path,
    )?;
    if let Some(e) = &raw.enforcement_type {
        if e != "ONE_TIME_ON_FIRST_BYTE" && e != "CONTINUOUS" {
            return Err(ConfigError::new(
                join(path, "enforcement_type"),
                format!("unknown enforcement type `{e}`"),
            ));
        }
    }
    Ok(NetworkRbac {
        stat_prefix: raw.stat_prefix,
        rbac: Rbac {
            rules: raw
                .rules
                .map(|r| rules(r, &join(path, "rules")))
                .transpose()?,
            shadow_rules: raw
                .shadow_rules
                .map(|r| rules(r, &join(path, "shadow_rules")))
                .transpose()?,
        },
    })
}

/// Whether `rbac` has a `requested_server_name` permission.
pub(crate) fn uses_sni(rbac: &Rbac) -> bool {
    fn perm(p: &Permission) -> bool {
        match p {
            Permission::RequestedServerName(_) => true,
            Permission::And(v) | Permission::Or(v) => v.iter().any(perm),
            Permission::Not(p) => perm(p),
            _ => false,
        }
    }
    [&rbac.rules, &rbac.shadow_rules]
        .into_iter()
        .flatten()
        .flat_map(|r| &r.policies)
        .any(|(_, p)| p.permissions.iter().any(perm))
}

/// Refuse each field set that Baton does not honour.
fn refuse(fields: &[(bool, &str, &str)], path: &str) -> Result<(), ConfigError> {
    match fields.iter().find(|(set, _, _)| *set) {
        Some((_, name, what)) => Err(ConfigError::new(
            join(path, name),
            format!("{what} is not supported by Baton"),
        )),
        None => Ok(()),
    }
}

fn rules(raw: Rules, path: &str) -> Result<RbacRules, ConfigError> {
    let action = match raw.action.as_deref() {
        None | Some("ALLOW") => RbacAction::Allow,
        Some("DENY") => RbacAction::Deny,
        Some("LOG") => RbacAction::Log,
        Some(other) => {
            return Err(ConfigError::new(
                join(path, "action"),
                format!("unknown action `{other}` (ALLOW, DENY or LOG)"),
            ))
        }
    };
    refuse(
        &[(
            raw.audit_logging_options.is_some(),
            "audit_logging_options",
            "audit logging",
        )],
        path,
    )?;
    let mut policies = Vec::new();
    for (name, v) in raw.policies {
        let p = join(&join(path, "policies"), &name);
        policies.push((name, policy(v, &p)?));
    }
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(RbacRules { action, policies })
}

fn policy(v: Value, path: &str) -> Result<RbacPolicy, ConfigError> {
    let raw: Policy = super::decode(v, path)?;
    refuse(
        &[
            (raw.condition.is_some(), "condition", "a CEL condition"),
            (
                raw.checked_condition.is_some(),
                "checked_condition",
                "a CEL condition",
            ),
            (raw.cel_config.is_some(), "cel_config", "CEL"),
        ],
        path,
    )?;
    for (empty, name) in [
        (raw.permissions.is_empty(), "permissions"),
        (raw.principals.is_empty(), "principals"),
    ] {
        if empty {
            return Err(ConfigError::new(
                join(path, name),
                "must have at least one entry (as in Envoy)",
            ));
        }
    }
    let permissions = raw
        .permissions
        .into_iter()
        .enumerate()
        .map(|(i, v)| permission(v, &format!("{path}.permissions[{i}]")))
        .collect::<Result<_, _>>()?;
    let principals = raw
        .principals
        .into_iter()
        .enumerate()
        .map(|(i, v)| principal(v, &format!("{path}.principals[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(RbacPolicy {
        permissions,
        principals,
    })
}

/// Exactly one of a oneof's fields must be set.
fn one_of(set: &[(bool, &str)], path: &str) -> Result<(), ConfigError> {
    match set.iter().filter(|(s, _)| *s).count() {
        1 => Ok(()),
        0 => Err(ConfigError::new(
            path,
            "must set one rule (Envoy: oneof `rule`/`identifier` is required)",
        )),
        _ => Err(ConfigError::new(
            path,
            format!(
                "sets more than one of {}; only one is allowed",
                set.iter()
                    .filter(|(s, _)| *s)
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn permission(v: Value, path: &str) -> Result<Permission, ConfigError> {
    let r: RawPermission = super::decode(v, path)?;
    refuse(
        &[
            (
                r.metadata.is_some(),
                "metadata",
                "dynamic metadata matching",
            ),
            (r.matcher.is_some(), "matcher", "a custom matcher"),
            (
                r.uri_template.is_some(),
                "uri_template",
                "URI template matching",
            ),
            (
                r.sourced_metadata.is_some(),
                "sourced_metadata",
                "metadata matching",
            ),
        ],
        path,
    )?;
    one_of(
        &[
            (r.and_rules.is_some(), "and_rules"),
            (r.or_rules.is_some(), "or_rules"),
            (r.any.is_some(), "any"),
            (r.header.is_some(), "header"),
            (r.url_path.is_some(), "url_path"),
            (r.destination_ip.is_some(), "destination_ip"),
            (r.destination_port.is_some(), "destination_port"),
            (r.destination_port_range.is_some(), "destination_port_range"),
            (r.not_rule.is_some(), "not_rule"),
            (r.requested_server_name.is_some(), "requested_server_name"),
        ],
        path,
    )?;
    let set = |s: PermissionSet, name: &str| -> Result<Vec<Permission>, ConfigError> {
        let p = join(path, name);
        if s.rules.len() < 2 {
            return Err(ConfigError::new(
                join(&p, "rules"),
                "must have at least two entries (as in Envoy)",
            ));
        }
        s.rules
            .into_iter()
            .enumerate()
            .map(|(i, v)| permission(v, &format!("{p}.rules[{i}]")))
            .collect()
    };
    Ok(if let Some(s) = r.and_rules {
        Permission::And(set(s, "and_rules")?)
    } else if let Some(s) = r.or_rules {
        Permission::Or(set(s, "or_rules")?)
    } else if let Some(any) = r.any {
        any_true(any, &join(path, "any"))?;
        Permission::Any
    } else if let Some(h) = r.header {
        Permission::Header(header(h, &join(path, "header"))?)
    } else if let Some(u) = r.url_path {
        Permission::UrlPath(path_matcher(u, &join(path, "url_path"))?)
    } else if let Some(c) = r.destination_ip {
        Permission::DestinationIp(cidr(c, &join(path, "destination_ip"))?)
    } else if let Some(port) = r.destination_port {
        let Ok(port) = u16::try_from(port.0) else {
            return Err(ConfigError::new(
                join(path, "destination_port"),
                "must be at most 65535",
            ));
        };
        Permission::DestinationPort(port)
    } else if let Some(range) = r.destination_port_range {
        let p = join(path, "destination_port_range");
        let (start, end) = (range.start.map_or(0, |v| v.0), range.end.map_or(0, |v| v.0));
        let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(end)) else {
            return Err(ConfigError::new(p, "start and end must not be negative"));
        };
        if s > e {
            return Err(ConfigError::new(p, "start must not be after end"));
        }
        Permission::DestinationPortRange(s, e)
    } else if let Some(n) = r.not_rule {
        Permission::Not(Box::new(permission(n, &join(path, "not_rule"))?))
    } else if let Some(sm) = r.requested_server_name {
        Permission::RequestedServerName(string_matcher(sm, &join(path, "requested_server_name"))?)
    } else {
        return Err(ConfigError::new(path, "must set one rule"));
    })
}

fn principal(v: Value, path: &str) -> Result<Principal, ConfigError> {
    let r: RawPrincipal = super::decode(v, path)?;
    refuse(
        &[
            (
                r.metadata.is_some(),
                "metadata",
                "dynamic metadata matching",
            ),
            (
                r.filter_state.is_some(),
                "filter_state",
                "filter state matching",
            ),
            (
                r.sourced_metadata.is_some(),
                "sourced_metadata",
                "metadata matching",
            ),
            (r.custom.is_some(), "custom", "a custom principal"),
        ],
        path,
    )?;
    one_of(
        &[
            (r.and_ids.is_some(), "and_ids"),
            (r.or_ids.is_some(), "or_ids"),
            (r.any.is_some(), "any"),
            (r.authenticated.is_some(), "authenticated"),
            (r.source_ip.is_some(), "source_ip"),
            (r.direct_remote_ip.is_some(), "direct_remote_ip"),
            (r.remote_ip.is_some(), "remote_ip"),
            (r.header.is_some(), "header"),
            (r.url_path.is_some(), "url_path"),
            (r.not_id.is_some(), "not_id"),
        ],
        path,
    )?;
    let set = |s: PrincipalSet, name: &str| -> Result<Vec<Principal>, ConfigError> {
        let p = join(path, name);
        if s.ids.len() < 2 {
            return Err(ConfigError::new(
                join(&p, "ids"),
                "must have at least two entries (as in Envoy)",
            ));
        }
        s.ids
            .into_iter()
            .enumerate()
            .map(|(i, v)| principal(v, &format!("{p}.ids[{i}]")))
            .collect()
    };
    Ok(if let Some(s) = r.and_ids {
        Principal::And(set(s, "and_ids")?)
    } else if let Some(s) = r.or_ids {
        Principal::Or(set(s, "or_ids")?)
    } else if let Some(any) = r.any {
        any_true(any, &join(path, "any"))?;
        Principal::Any
    } else if let Some(a) = r.authenticated {
        Principal::Authenticated(
            a.principal_name
                .map(|sm| string_matcher(sm, &join(path, "authenticated.principal_name")))
                .transpose()?,
        )
    } else if let Some(c) = r.source_ip {
        Principal::RemoteIp(cidr(c, &join(path, "source_ip"))?)
    } else if let Some(c) = r.direct_remote_ip {
        Principal::DirectRemoteIp(cidr(c, &join(path, "direct_remote_ip"))?)
    } else if let Some(c) = r.remote_ip {
        Principal::RemoteIp(cidr(c, &join(path, "remote_ip"))?)
    } else if let Some(h) = r.header {
        Principal::Header(header(h, &join(path, "header"))?)
    } else if let Some(u) = r.url_path {
        Principal::UrlPath(path_matcher(u, &join(path, "url_path"))?)
    } else if let Some(n) = r.not_id {
        Principal::Not(Box::new(principal(n, &join(path, "not_id"))?))
    } else {
        return Err(ConfigError::new(path, "must set one identifier"));
    })
}

fn any_true(any: bool, path: &str) -> Result<(), ConfigError> {
    if any {
        Ok(())
    } else {
        Err(ConfigError::new(path, "must be true (as in Envoy)"))
    }
}

fn header(h: raw::HeaderMatcher, path: &str) -> Result<FilterHeaderMatcher, ConfigError> {
    super::header_matcher(h, path)
}

fn path_matcher(u: PathMatcher, path: &str) -> Result<HeaderMatchKind, ConfigError> {
    let Some(sm) = u.path else {
        return Err(ConfigError::new(join(path, "path"), "is required"));
    };
    string_matcher(sm, &join(path, "path"))
}

fn string_matcher(sm: raw::StringMatcher, path: &str) -> Result<HeaderMatchKind, ConfigError> {
    super::cors::string_matcher(sm, path)
}

fn cidr(c: raw::CidrRange, path: &str) -> Result<ipnet::IpNet, ConfigError> {
    let mut errs = Errors::default();
    let mut nets = super::super::listener::cidrs(vec![c], path, &mut errs);
    if let Some(e) = errs.0.pop() {
        // The list's path has the entry's index; this is a single range.
        return Err(ConfigError::new(
            e.path.replacen(&format!("{path}[0]"), path, 1),
            e.message,
        ));
    }
    nets.pop()
        .ok_or_else(|| ConfigError::new(path, "is not a CIDR range"))
}
