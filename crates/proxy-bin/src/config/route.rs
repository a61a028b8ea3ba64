//! Validation of an HTTP connection manager's `route_config`: virtual hosts and their domains,
//! route matches (path, headers, regexes) and the three route actions.

use std::collections::{HashMap, HashSet};

use http::{HeaderName, StatusCode};
use proxy_core::config::{
    ClusterSpecifier, DirectResponse, FilterConfigs, ForwardAction, HeaderMatchKind, HeaderMatcher,
    MirrorPolicy, PathMatch, PseudoHeader, QueryParameterMatcher, Redirect, RegexRewrite,
    RetryBackOff, RetryOn, RetryPolicy, Route, RouteAction, RouteConfig, RouteMatch,
    TlsContextMatch, VirtualHost,
};
use regex::Regex;

use super::de::join;
use super::raw;
use super::{ConfigError, Errors};

/// The four header-mutation fields of a raw route configuration, virtual host or route, checked
/// (a macro: the three raw types share the fields but no type).
macro_rules! header_mutations {
    ($raw:expr, $path:expr, $errs:expr) => {
        super::headers::mutations(
            super::headers::Raw {
                request_add: $raw.request_headers_to_add,
                request_remove: $raw.request_headers_to_remove,
                response_add: $raw.response_headers_to_add,
                response_remove: $raw.response_headers_to_remove,
            },
            $path,
            $errs,
        )
    };
}

/// Envoy's default route `timeout`.
const DEFAULT_ROUTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Bound on a compiled regex's size, so a hostile pattern cannot take much memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(crate) fn route_config(
    raw: raw::RouteConfiguration,
    path: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
) -> Option<RouteConfig> {
    let before = errs.0.len();
    let mut virtual_hosts = Vec::new();
    // lower-cased domain → name of the virtual host that has it
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, vh) in raw.virtual_hosts.into_iter().enumerate() {
        let vh_path = format!("{path}.virtual_hosts[{i}]");
        if vh.name.is_empty() {
            errs.push(join(&vh_path, "name"), "must not be empty");
        }
        if vh.domains.is_empty() {
            errs.push(join(&vh_path, "domains"), "needs at least one domain");
        }
        for (j, d) in vh.domains.iter().enumerate() {
            let d_path = format!("{vh_path}.domains[{j}]");
            if let Err(m) = check_domain(d) {
                errs.push(d_path, m);
                continue;
            }
            if let Some(other) = seen.insert(d.to_ascii_lowercase(), vh.name.clone()) {
                errs.push(
                    d_path,
                    format!("duplicate domain `{d}` (also in virtual host `{other}`); domains must be unique within a route_config"),
                );
            }
        }
        let vh_headers = header_mutations!(vh, &vh_path, errs);
        let vh_filters = super::filters::filter_configs(vh.typed_per_filter_config, &vh_path, errs);
        let vh_cors = vh
            .cors
            .and_then(|c| errs.take(super::filters::legacy_cors(c, &join(&vh_path, "cors"))));
        let mut routes = Vec::new();
        for (k, r) in vh.routes.into_iter().enumerate() {
            if let Some(r) = route(r, &format!("{vh_path}.routes[{k}]"), clusters, errs) {
                routes.push(r);
            }
        }
        virtual_hosts.push(VirtualHost {
            name: vh.name,
            metadata: raw::Metadata::into_map(vh.metadata),
            domains: vh.domains,
            routes,
            headers: vh_headers,
            filter_configs: vh_filters,
            cors: vh_cors,
        });
    }
    let headers = header_mutations!(raw, path, errs);
    let filter_configs = super::filters::filter_configs(raw.typed_per_filter_config, path, errs);
    (errs.0.len() == before).then(|| RouteConfig {
        filter_configs,
        name: raw.name.unwrap_or_default(),
        virtual_hosts,
        headers,
        most_specific_header_mutations_wins: raw
            .most_specific_header_mutations_wins
            .unwrap_or(false),
    })
}

/// Envoy's domain forms: `*`, `*suffix`, `prefix*`, or an exact name; optionally `:port`.
fn check_domain(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("a domain must not be empty".into());
    }
    if d.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "domain `{d}` contains whitespace or control characters"
        ));
    }
    let stars = d.matches('*').count();
    let ok = stars == 0 || d == "*" || (stars == 1 && (d.starts_with('*') || d.ends_with('*')));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid wildcard domain `{d}`: only `*`, `*suffix` and `prefix*` are allowed"
        ))
    }
}

fn route(
    mut raw: raw::Route,
    path: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
) -> Option<Route> {
    let cors = raw
        .route
        .as_mut()
        .and_then(|a| a.cors.take())
        .and_then(|c| errs.take(super::filters::legacy_cors(c, &join(path, "route.cors"))));
    let matcher = route_match(raw.matcher, &join(path, "match"), errs);
    let action = match (raw.route, raw.direct_response, raw.redirect) {
        (Some(a), None, None) => forward(a, &join(path, "route"), clusters, errs),
        (None, Some(d), None) => errs.take(direct(d, &join(path, "direct_response"))),
        (None, None, Some(r)) => errs.take(redirect(r, &join(path, "redirect"))),
        (None, None, None) => {
            errs.push(
                path,
                "needs an action: one of `route`, `direct_response`, `redirect`",
            );
            None
        }
        _ => {
            errs.push(
                path,
                "has more than one action: give exactly one of `route`, `direct_response`, `redirect`",
            );
            None
        }
    };
    let headers = header_mutations!(raw, path, errs);
    let filter_configs = super::filters::filter_configs(raw.typed_per_filter_config, path, errs);
    Some(Route {
        filter_configs,
        cors,
        name: raw.name.unwrap_or_default(),
        metadata: raw::Metadata::into_map(raw.metadata),
        matcher: matcher?,
        action: action?,
        headers,
    })
}

/// Compiles a regex that must match the whole input (anchored), as Envoy's `safe_regex`.
pub(crate) fn compile_regex(raw: &raw::RegexMatcher, path: &str) -> Result<Regex, ConfigError> {
    let build = |pattern: &str| {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    // Checked on its own first: wrapping can turn an invalid pattern such as `a)|(b` valid.
    build(&raw.regex)
        .and_then(|_| build(&format!("^(?:{})$", raw.regex)))
        .map_err(|e| {
            let msg = e.to_string().replace('\n', " ");
            ConfigError::new(
                join(path, "regex"),
                format!(
                    "invalid regex: {}",
                    msg.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            )
        })
}

fn route_match(raw: raw::RouteMatch, path: &str, errs: &mut Errors) -> Option<RouteMatch> {
    let before = errs.0.len();
    let path_match = match (
        raw.prefix,
        raw.path,
        raw.safe_regex,
        raw.path_separated_prefix,
    ) {
        (Some(p), None, None, None) => Some(PathMatch::Prefix(p)),
        (None, Some(p), None, None) => Some(PathMatch::Exact(p)),
        (None, None, Some(r), None) => errs
            .take(compile_regex(&r, &join(path, "safe_regex")))
            .map(PathMatch::Regex),
        (None, None, None, Some(p)) => errs
            .take(separated_prefix(p, &join(path, "path_separated_prefix")))
            .map(PathMatch::SeparatedPrefix),
        _ => {
            errs.push(
                path,
                "needs exactly one of `prefix`, `path`, `safe_regex`, `path_separated_prefix`",
            );
            None
        }
    };
    let mut headers = Vec::new();
    let mut pseudo_headers = Vec::new();
    for (i, mut h) in raw.headers.into_iter().enumerate() {
        let hpath = format!("{path}.headers[{i}]");
        if h.name.starts_with(':') {
            let pseudo = match h.name.as_str() {
                ":method" => PseudoHeader::Method,
                ":path" => PseudoHeader::Path,
                ":authority" => PseudoHeader::Authority,
                ":scheme" => PseudoHeader::Scheme,
                other => {
                    errs.push(
                        join(&hpath, "name"),
                        format!("pseudo-header `{other}` is not supported; `:method`, `:path`, `:authority` and `:scheme` are"),
                    );
                    continue;
                }
            };
            // Checked as any other field's matcher, under a stand-in name.
            h.name = "x-pseudo".to_owned();
            if let Some(m) = errs.take(header_matcher(h, &hpath)) {
                pseudo_headers.push((pseudo, m));
            }
        } else if let Some(h) = errs.take(header_matcher(h, &hpath)) {
            headers.push(h);
        }
    }
    let runtime_fraction = match raw.runtime_fraction {
        None => None,
        Some(f) => {
            let fpath = join(path, "runtime_fraction.default_value");
            match f.default_value {
                None => {
                    errs.push(fpath, "is required");
                    None
                }
                Some(d) => errs.take(super::filters::fault::percentage(Some(d), &fpath)),
            }
        }
    };
    let mut query_parameters = Vec::new();
    for (i, q) in raw.query_parameters.into_iter().enumerate() {
        let at = format!("{path}.query_parameters[{i}]");
        if let Some(q) = errs.take(query_matcher(q, &at)) {
            query_parameters.push(q);
        }
    }
    if errs.0.len() != before {
        return None;
    }
    Some(RouteMatch {
        path: path_match?,
        case_sensitive: raw.case_sensitive.unwrap_or(true),
        headers,
        query_parameters,
        pseudo_headers,
        grpc: raw.grpc.is_some(),
        runtime_fraction,
        tls_context: raw.tls_context.map(|t| TlsContextMatch {
            presented: t.presented.map(|b| b.get()),
            validated: t.validated.map(|b| b.get()),
        }),
    })
}

/// `path_separated_prefix`: as Envoy validates it, at least two characters, no `?` or `#`, not
/// ending with `/`.
fn separated_prefix(p: String, path: &str) -> Result<String, ConfigError> {
    if p.len() < 2 || p.ends_with('/') || p.contains(['?', '#']) {
        return Err(ConfigError::new(
            path,
            format!(
                "`{p}` must be at least two characters, without `?` or `#`, and not end with `/`"
            ),
        ));
    }
    Ok(p)
}

/// `match.query_parameters[]`: `string_match` (as for headers) or `present_match: true`.
fn query_matcher(
    raw: raw::QueryParameterMatcher,
    path: &str,
) -> Result<QueryParameterMatcher, ConfigError> {
    if raw.name.is_empty() {
        return Err(ConfigError::new(join(path, "name"), "must not be empty"));
    }
    let kind = match (raw.string_match, raw.present_match) {
        (Some(s), None) => string_matcher(s, &join(path, "string_match"))?,
        (None, Some(true)) => HeaderMatchKind::Present(true),
        (None, Some(false)) => {
            return Err(ConfigError::new(
                join(path, "present_match"),
                "unsupported value: only `true` (Envoy never matches `false`)",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                join(path, "present_match"),
                "conflicts with `string_match`: give exactly one",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                path,
                "needs one of `string_match`, `present_match`",
            ))
        }
    };
    Ok(QueryParameterMatcher {
        name: raw.name,
        kind,
    })
}

pub(crate) fn header_matcher(
    raw: raw::HeaderMatcher,
    path: &str,
) -> Result<HeaderMatcher, ConfigError> {
    let name_path = join(path, "name");
    if raw.name.starts_with(':') {
        return Err(ConfigError::new(
            name_path,
            format!(
                "pseudo-header `{}` is not supported in header matchers",
                raw.name
            ),
        ));
    }
    let name = HeaderName::from_bytes(raw.name.as_bytes()).map_err(|_| {
        ConfigError::new(
            name_path,
            format!("`{}` is not a valid header name", raw.name),
        )
    })?;
    let mut kinds: Vec<(&str, HeaderMatchKind)> = Vec::new();
    if let Some(s) = raw.string_match {
        kinds.push((
            "string_match",
            string_matcher(s, &join(path, "string_match"))?,
        ));
    }
    let legacy = [
        ("exact_match", raw.exact_match.map(HeaderMatchKind::Exact)),
        (
            "prefix_match",
            raw.prefix_match.map(HeaderMatchKind::Prefix),
        ),
        (
            "suffix_match",
            raw.suffix_match.map(HeaderMatchKind::Suffix),
        ),
        (
            "contains_match",
            raw.contains_match.map(HeaderMatchKind::Contains),
        ),
        (
            "present_match",
            raw.present_match.map(HeaderMatchKind::Present),
        ),
    ];
    for (field, k) in legacy {
        if let Some(k) = k {
            kinds.push((field, k));
        }
    }
    if let Some(r) = raw.safe_regex_match {
        let re = compile_regex(&r, &join(path, "safe_regex_match"))?;
        kinds.push(("safe_regex_match", HeaderMatchKind::Regex(re)));
    }
    let kind = match kinds.len() {
        // Envoy: no match specifier means "the header is present".
        0 => HeaderMatchKind::Present(true),
        1 => kinds.remove(0).1,
        _ => {
            return Err(ConfigError::new(
                join(path, kinds[1].0),
                format!(
                    "conflicts with `{}`: give exactly one header match specifier",
                    kinds[0].0
                ),
            ))
        }
    };
    Ok(HeaderMatcher {
        name,
        kind,
        invert: raw.invert_match.unwrap_or(false),
    })
}

fn string_matcher(raw: raw::StringMatcher, path: &str) -> Result<HeaderMatchKind, ConfigError> {
    if raw.ignore_case == Some(true) {
        return Err(ConfigError::new(
            join(path, "ignore_case"),
            "unsupported value: Baton does not implement case-insensitive header matching",
        ));
    }
    let mut kinds: Vec<(&str, HeaderMatchKind)> = Vec::new();
    let plain = [
        ("exact", raw.exact.map(HeaderMatchKind::Exact)),
        ("prefix", raw.prefix.map(HeaderMatchKind::Prefix)),
        ("suffix", raw.suffix.map(HeaderMatchKind::Suffix)),
        ("contains", raw.contains.map(HeaderMatchKind::Contains)),
    ];
    for (field, k) in plain {
        if let Some(k) = k {
            kinds.push((field, k));
        }
    }
    if let Some(r) = raw.safe_regex {
        let re = compile_regex(&r, &join(path, "safe_regex"))?;
        kinds.push(("safe_regex", HeaderMatchKind::Regex(re)));
    }
    match kinds.len() {
        1 => Ok(kinds.remove(0).1),
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

/// A string that will be written into a header or path: no CR, LF or NUL.
fn check_header_safe(s: &str, path: &str) -> Result<(), ConfigError> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        Err(ConfigError::new(
            path,
            "must not contain CR, LF or NUL characters",
        ))
    } else {
        Ok(())
    }
}

/// `cluster` or `weighted_clusters` (exactly one), every cluster named known.
fn cluster_specifier(
    raw: &mut raw::RouteAction,
    path: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
    filter_configs: &mut Vec<FilterConfigs>,
) -> Option<ClusterSpecifier> {
    let mut known = |name: &str, p: String| {
        let ok = clusters.contains(name);
        if !ok {
            errs.push(
                p,
                format!("unknown cluster `{name}` (not in static_resources.clusters)"),
            );
        }
        ok
    };
    if let Some(h) = &raw.cluster_header {
        let hpath = join(path, "cluster_header");
        if raw.cluster.is_some() || raw.weighted_clusters.is_some() {
            errs.push(
                hpath,
                "give one of `cluster`, `weighted_clusters`, `cluster_header`",
            );
            return None;
        }
        if h.starts_with(':') {
            errs.push(
                hpath,
                format!("pseudo-header `{h}` is not supported: name a request header"),
            );
            return None;
        }
        return match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(ClusterSpecifier::Header(name)),
            Err(_) => {
                errs.push(hpath, format!("`{h}` is not a header name"));
                None
            }
        };
    }
    match (&raw.cluster, &mut raw.weighted_clusters) {
        (Some(c), None) => {
            known(c, join(path, "cluster")).then(|| ClusterSpecifier::Cluster(c.clone()))
        }
        (None, Some(w)) => {
            let wpath = join(path, "weighted_clusters");
            let mut out = Vec::with_capacity(w.clusters.len());
            let mut configs = Vec::new();
            for (i, c) in w.clusters.iter_mut().enumerate() {
                let weight = c.weight.as_ref().map_or(0, raw::UInt32::get);
                let cpath = format!("{wpath}.clusters[{i}]");
                if known(&c.name, join(&cpath, "name")) && weight > 0 {
                    out.push((c.name.clone(), weight));
                    let per = std::mem::take(&mut c.typed_per_filter_config);
                    configs.push((per, cpath));
                }
            }
            if configs.iter().any(|(per, _)| !per.is_empty()) {
                *filter_configs = configs
                    .into_iter()
                    .map(|(per, p)| super::filters::filter_configs(per, &p, errs))
                    .collect();
            }
            weighted(out, w, &wpath, errs)
        }
        (Some(_), Some(_)) => {
            errs.push(
                path.to_owned(),
                "`cluster` and `weighted_clusters` are exclusive",
            );
            None
        }
        (None, None) => {
            errs.push(
                path.to_owned(),
                "needs `cluster`, `weighted_clusters` or `cluster_header`",
            );
            None
        }
    }
}

/// The checked weighted clusters: some weight in all, and `total_weight` (when given) their sum.
fn weighted(
    out: Vec<(String, u32)>,
    w: &raw::WeightedClusters,
    path: &str,
    errs: &mut Errors,
) -> Option<ClusterSpecifier> {
    let sum: u64 = out.iter().map(|(_, n)| u64::from(*n)).sum();
    if out.is_empty() || sum == 0 {
        errs.push(
            join(path, "clusters"),
            "needs a cluster with a positive weight",
        );
        return None;
    }
    if let Some(t) = &w.total_weight {
        if u64::from(t.get()) != sum {
            errs.push(
                join(path, "total_weight"),
                format!("is {}, the weights add up to {sum}", t.get()),
            );
            return None;
        }
    }
    Some(ClusterSpecifier::Weighted(out))
}

fn forward(
    mut raw: raw::RouteAction,
    path: &str,
    clusters: &HashSet<String>,
    errs: &mut Errors,
) -> Option<RouteAction> {
    let before = errs.0.len();
    let mut weighted_filter_configs = Vec::new();
    let cluster = cluster_specifier(&mut raw, path, clusters, errs, &mut weighted_filter_configs);
    if let Some(p) = &raw.prefix_rewrite {
        errs.take(check_header_safe(p, &join(path, "prefix_rewrite")));
    }
    if let Some(h) = &raw.host_rewrite_literal {
        if h.is_empty() {
            errs.push(join(path, "host_rewrite_literal"), "must not be empty");
        } else {
            errs.take(check_header_safe(h, &join(path, "host_rewrite_literal")));
        }
    }
    if raw.prefix_rewrite.is_some() && raw.regex_rewrite.is_some() {
        errs.push(
            join(path, "regex_rewrite"),
            "give either `prefix_rewrite` or `regex_rewrite`, not both",
        );
    }
    let path_regex = raw
        .regex_rewrite
        .take()
        .and_then(|r| errs.take(regex_rewrite(r, &join(path, "regex_rewrite"))))
        .map(Box::new);
    let host_rewrites = [
        raw.host_rewrite_literal.is_some(),
        raw.host_rewrite_header.is_some(),
        raw.host_rewrite_path_regex.is_some(),
    ];
    if host_rewrites.iter().filter(|&&b| b).count() > 1 {
        errs.push(
            path.to_owned(),
            "give one of `host_rewrite_literal`, `host_rewrite_header`, `host_rewrite_path_regex`",
        );
    }
    let host_rewrite_header = raw.host_rewrite_header.take().and_then(|h| {
        let name = http::HeaderName::from_bytes(h.as_bytes()).ok();
        if name.is_none() {
            errs.push(
                join(path, "host_rewrite_header"),
                format!("`{h}` is not a header name"),
            );
        }
        name
    });
    let host_rewrite_path_regex = raw
        .host_rewrite_path_regex
        .take()
        .and_then(|r| errs.take(regex_rewrite(r, &join(path, "host_rewrite_path_regex"))))
        .map(Box::new);
    let retry_policy = match raw.retry_policy {
        Some(r) => Some(retry_policy(r, &join(path, "retry_policy"), errs)?),
        None => None,
    };
    let mut mirrors = Vec::with_capacity(raw.request_mirror_policies.len());
    for (i, m) in raw.request_mirror_policies.into_iter().enumerate() {
        let mpath = format!("{path}.request_mirror_policies[{i}]");
        if let Some(m) = errs.take(mirror_policy(m, &mpath, clusters)) {
            mirrors.push(m);
        }
    }
    let mut upgrades: Vec<(String, bool)> = Vec::new();
    for (i, u) in raw.upgrade_configs.into_iter().enumerate() {
        let t = u.upgrade_type.to_ascii_lowercase();
        let p = format!("{path}.upgrade_configs[{i}].upgrade_type");
        if t.is_empty() || !t.bytes().all(super::listener::is_token_byte) {
            errs.push(p, "must be a non-empty HTTP token such as `websocket`");
        } else if t == "connect" {
            errs.push(p, "`CONNECT` is not supported by Baton");
        } else if upgrades.iter().any(|(have, _)| *have == t) {
            errs.push(p, format!("duplicate upgrade type `{t}`"));
        } else {
            upgrades.push((t, u.enabled.is_none_or(|b| b.get())));
        }
    }
    let hash_policy = super::lb::hash_policies(
        std::mem::take(&mut raw.hash_policy),
        &join(path, "hash_policy"),
        errs,
    );
    if errs.0.len() != before {
        return None;
    }
    Some(RouteAction::Forward(ForwardAction {
        cluster: cluster?,
        prefix_rewrite: raw.prefix_rewrite,
        regex_rewrite: path_regex,
        host_rewrite_literal: raw.host_rewrite_literal,
        host_rewrite_header,
        host_rewrite_path_regex,
        timeout: match raw.timeout {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(d) => d.nonzero(),
        },
        retry_policy,
        hash_policy,
        weighted_filter_configs,
        mirrors,
        idle_timeout: raw.idle_timeout.map(|d| d.nonzero()),
        upgrades,
        cluster_not_found_response_code: match raw.cluster_not_found_response_code {
            None | Some(raw::ClusterNotFoundCode::ServiceUnavailable) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Some(raw::ClusterNotFoundCode::NotFound) => StatusCode::NOT_FOUND,
            Some(raw::ClusterNotFoundCode::InternalServerError) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        },
    }))
}

/// A `request_mirror_policies[]` entry: a known `cluster`, the fraction of requests mirrored.
fn mirror_policy(
    raw: raw::RequestMirrorPolicy,
    path: &str,
    clusters: &HashSet<String>,
) -> Result<MirrorPolicy, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::new(
            join(path, "cluster"),
            "is required (Baton does not support `cluster_header` here)",
        ));
    }
    if !clusters.contains(&raw.cluster) {
        return Err(ConfigError::new(
            join(path, "cluster"),
            format!(
                "unknown cluster `{}` (not in static_resources.clusters)",
                raw.cluster
            ),
        ));
    }
    let fraction = match raw.runtime_fraction {
        None => None,
        Some(f) => {
            let fpath = join(path, "runtime_fraction");
            let Some(d) = f.default_value else {
                return Err(ConfigError::new(
                    join(&fpath, "default_value"),
                    "is required",
                ));
            };
            Some(super::filters::fault::percentage(
                Some(d),
                &join(&fpath, "default_value"),
            )?)
        }
    };
    Ok(MirrorPolicy {
        cluster: raw.cluster,
        fraction,
        host_suffix: !raw.disable_shadow_host_suffix_append.unwrap_or(false),
    })
}

/// A `RegexMatchAndSubstitute`: the pattern unanchored (every match is replaced), the
/// substitution's `\N` group references turned into the `regex` crate's `${N}`.
fn regex_rewrite(
    raw: raw::RegexMatchAndSubstitute,
    path: &str,
) -> Result<RegexRewrite, ConfigError> {
    // Checked as a match pattern is (size, syntax), then compiled as written.
    compile_regex(&raw.pattern, &join(path, "pattern"))?;
    let regex = regex::RegexBuilder::new(&raw.pattern.regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            ConfigError::new(join(path, "pattern.regex"), format!("invalid regex: {e}"))
        })?;
    let mut substitution = String::with_capacity(raw.substitution.len() + 8);
    let mut chars = raw.substitution.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => substitution.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    let group = d.to_digit(10).unwrap_or(0) as usize;
                    if group > regex.captures_len() - 1 {
                        return Err(ConfigError::new(
                            join(path, "substitution"),
                            format!("`\\{group}` names no group of the pattern"),
                        ));
                    }
                    substitution.push_str(&format!("${{{group}}}"));
                }
                Some('\\') => {
                    chars.next();
                    substitution.push('\\');
                }
                _ => {
                    return Err(ConfigError::new(
                        join(path, "substitution"),
                        "a `\\` must be followed by a digit or another `\\`",
                    ))
                }
            },
            c => substitution.push(c),
        }
    }
    Ok(RegexRewrite {
        regex,
        substitution,
    })
}

fn retry_policy(raw: raw::RetryPolicy, path: &str, errs: &mut Errors) -> Option<RetryPolicy> {
    let before = errs.0.len();
    let mut on = RetryOn::default();
    for cond in raw.retry_on.as_deref().unwrap_or("").split(',') {
        let cond = cond.trim();
        if !cond.is_empty() && !on.set(cond) {
            errs.push(
                join(path, "retry_on"),
                format!("unsupported retry condition `{cond}`; Baton supports 5xx, gateway-error, connect-failure, reset, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, envoy-ratelimited"),
            );
        }
    }
    let mut codes = Vec::new();
    for (i, c) in raw.retriable_status_codes.iter().enumerate() {
        match u16::try_from(c.0) {
            Ok(code) if (100..=599).contains(&code) => codes.push(code),
            _ => errs.push(
                format!("{path}.retriable_status_codes[{i}]"),
                format!("{} is not an HTTP status code (100..=599)", c.0),
            ),
        }
    }
    let back_off = raw
        .retry_back_off
        .map(|b| retry_back_off(b, &join(path, "retry_back_off"), errs))
        .unwrap_or_default();
    let mut previous_hosts = false;
    for (i, p) in raw.retry_host_predicate.iter().enumerate() {
        let pp = format!("{path}.retry_host_predicate[{i}]");
        const PREVIOUS_HOSTS: &str =
            "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";
        let type_ok = match &p.typed_config {
            None => true,
            Some(v) => {
                let t = v.get("@type").and_then(|t| t.as_str());
                let fields = v.as_object().map_or(0, |o| o.len());
                t == Some(PREVIOUS_HOSTS) && fields == 1
            }
        };
        if p.name != "envoy.retry_host_predicates.previous_hosts" || !type_ok {
            errs.push(
                pp,
                "Baton knows one retry host predicate: `envoy.retry_host_predicates.previous_hosts` (PreviousHostsPredicate, no fields)",
            );
        } else {
            previous_hosts = true;
        }
    }
    let host_selection_retry_max_attempts = match raw.host_selection_retry_max_attempts {
        None => 1,
        Some(n) if n.0 >= 0 => n.0.min(i64::from(u32::MAX)) as u32,
        Some(n) => {
            errs.push(
                join(path, "host_selection_retry_max_attempts"),
                format!("{} is negative", n.0),
            );
            1
        }
    };
    let matchers = |list: Vec<raw::HeaderMatcher>, field: &str, errs: &mut Errors| {
        list.into_iter()
            .enumerate()
            .filter_map(|(i, m)| errs.take(header_matcher(m, &format!("{path}.{field}[{i}]"))))
            .collect::<Vec<_>>()
    };
    let retriable_headers = matchers(raw.retriable_headers, "retriable_headers", errs);
    let retriable_request_headers = matchers(
        raw.retriable_request_headers,
        "retriable_request_headers",
        errs,
    );
    (errs.0.len() == before).then(|| RetryPolicy {
        retry_on: on,
        num_retries: raw.num_retries.map_or(1, |n| n.get()),
        per_try_timeout: raw.per_try_timeout.and_then(|d| d.nonzero()),
        retriable_status_codes: codes,
        back_off,
        previous_hosts,
        host_selection_retry_max_attempts,
        retriable_headers,
        retriable_request_headers,
    })
}

/// `retry_back_off`: `base_interval` required and positive; `max_interval` (ten times the base
/// by default) not below it, as Envoy validates them.
fn retry_back_off(raw: raw::RetryBackOff, path: &str, errs: &mut Errors) -> RetryBackOff {
    let Some(base) = raw.base_interval.and_then(|d| d.nonzero()) else {
        errs.push(
            join(path, "base_interval"),
            "is required and must be greater than 0",
        );
        return RetryBackOff::default();
    };
    let max = raw
        .max_interval
        .and_then(|d| d.nonzero())
        .unwrap_or(base * 10);
    if max < base {
        errs.push(
            join(path, "max_interval"),
            "must be greater than or equal to the base_interval",
        );
    }
    RetryBackOff { base, max }
}

fn direct(raw: raw::DirectResponse, path: &str) -> Result<RouteAction, ConfigError> {
    let code = raw.status.0;
    let status = u16::try_from(code)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            ConfigError::new(
                join(path, "status"),
                format!("status {code} is out of range 200..=599"),
            )
        })?;
    Ok(RouteAction::Direct(DirectResponse {
        status,
        body: raw
            .body
            .map(|b| bytes::Bytes::from(b.inline_string.into_bytes())),
    }))
}

fn redirect(raw: raw::Redirect, path: &str) -> Result<RouteAction, ConfigError> {
    let scheme_redirect = match (raw.scheme_redirect, raw.https_redirect) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                join(path, "https_redirect"),
                "give either `scheme_redirect` or `https_redirect`, not both",
            ))
        }
        (Some(s), None) => {
            let valid = s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            if !valid {
                return Err(ConfigError::new(
                    join(path, "scheme_redirect"),
                    format!("`{s}` is not a URL scheme"),
                ));
            }
            Some(s.to_ascii_lowercase())
        }
        (None, Some(true)) => Some("https".to_owned()),
        (None, Some(false)) | (None, None) => None,
    };
    if let Some(h) = &raw.host_redirect {
        check_header_safe(h, &join(path, "host_redirect"))?;
    }
    let port_redirect = match raw.port_redirect.map(|p| p.0) {
        None | Some(0) => None,
        Some(p) => Some(u16::try_from(p).map_err(|_| {
            ConfigError::new(
                join(path, "port_redirect"),
                format!("port {p} is out of range 1..=65535"),
            )
        })?),
    };
    if raw.path_redirect.is_some() && raw.prefix_rewrite.is_some() {
        return Err(ConfigError::new(
            join(path, "prefix_rewrite"),
            "give either `path_redirect` or `prefix_rewrite`, not both",
        ));
    }
    if let Some(p) = &raw.path_redirect {
        check_header_safe(p, &join(path, "path_redirect"))?;
    }
    if let Some(p) = &raw.prefix_rewrite {
        check_header_safe(p, &join(path, "prefix_rewrite"))?;
    }
    let response_code = match raw.response_code {
        None | Some(raw::RedirectCode::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
        Some(raw::RedirectCode::Found) => StatusCode::FOUND,
        Some(raw::RedirectCode::SeeOther) => StatusCode::SEE_OTHER,
        Some(raw::RedirectCode::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
        Some(raw::RedirectCode::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
    };
    Ok(RouteAction::Redirect(Redirect {
        scheme_redirect,
        host_redirect: raw.host_redirect,
        port_redirect,
        path_redirect: raw.path_redirect,
        prefix_rewrite: raw.prefix_rewrite,
        response_code,
        strip_query: raw.strip_query.unwrap_or(false),
    }))
}
