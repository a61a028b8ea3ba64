//! Route selection: a virtual host by the request's authority, then the first route whose match
//! accepts the request — Envoy's order and rules, compiled once per configuration.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use regex::Regex;

use crate::config::{
    ClusterSpecifier, DirectResponse, ForwardAction, FractionalPercent, HeaderMatchKind,
    HeaderMatcher, PathMatch, PseudoHeader, Redirect, ResolvedFilterConfigs, RouteAction,
    RouteConfig, TlsContextMatch,
};
use crate::error::BuildError;

/// A compiled `route_config`, shared by every worker.
#[derive(Debug)]
pub struct Router {
    exact: HashMap<String, usize>,
    /// `*.example.com` → `.example.com`, longest first.
    suffixes: Vec<(String, usize)>,
    /// `example.*` → `example.`, longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    vhosts: Vec<VirtualHost>,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// Header mutations of the route, its virtual host and the route configuration.
    pub mutations: Option<Box<Mutations>>,
    /// `typed_per_filter_config` of the route, its virtual host and the route configuration,
    /// most specific first.
    pub filter_configs: Option<Box<ResolvedFilterConfigs>>,
    path: CompiledPath,
    case_sensitive: bool,
    headers: Vec<CompiledHeader>,
    /// `query_parameters`: (name, what its first value must be).
    query: Vec<(String, CompiledHeaderKind)>,
    /// The rarer matchers (pseudo-headers, `grpc`, `runtime_fraction`); `None` for most
    /// routes, which then pay one check for them all.
    extra: Option<Box<ExtraMatch>>,
    pub action: Action,
}

#[derive(Debug)]
struct ExtraMatch {
    pseudo: Vec<(PseudoHeader, CompiledHeaderKind, bool)>,
    grpc: bool,
    fraction: Option<FractionalPercent>,
    tls: Option<TlsContextMatch>,
}

/// What a route may match besides the authority, path and header fields.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The TLS client presented a certificate (validated: Baton accepts no other).
    pub peer_cert: bool,
}

impl RequestFacts<'static> {
    /// A plain-text `GET`.
    pub const GET: Self = RequestFacts {
        method: &http::Method::GET,
        scheme: "http",
        peer_cert: false,
    };
}

#[derive(Debug)]
enum CompiledPath {
    Prefix(String),
    Exact(String),
    /// Anchored at both ends.
    Regex(Regex),
    /// The prefix, alone or followed by `/`.
    SeparatedPrefix(String),
}

#[derive(Debug)]
struct CompiledHeader {
    name: http::HeaderName,
    kind: CompiledHeaderKind,
    invert: bool,
}

#[derive(Debug)]
enum CompiledHeaderKind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
    Present(bool),
}

/// What to do with a matched request.
// Forwarding is what nearly every request does: boxing it would put a pointer chase on the
// request path to save memory on routes (a few hundred bytes each).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Direct(DirectResponse),
    Redirect(Redirect),
}

/// A `route` action with its cluster resolved to an index of the cluster manager.
#[derive(Debug)]
pub struct Forward {
    pub targets: Targets,
    pub config: ForwardAction,
    /// `x-envoy-expected-rq-timeout-ms`: the per-try timeout, else the route timeout (built
    /// once here rather than formatted per request).
    pub expected_timeout_ms: Option<http::HeaderValue>,
    /// `request_mirror_policies[]`, their clusters resolved.
    pub mirrors: Box<[Mirror]>,
}

/// A `request_mirror_policies[]` entry with its cluster's index.
#[derive(Debug)]
pub struct Mirror {
    pub index: usize,
    pub fraction: Option<crate::config::FractionalPercent>,
    pub host_suffix: bool,
}

/// The clusters a route sends to, resolved: one, or several picked by weight per request, or
/// the one a request field names.
#[derive(Debug)]
pub enum Targets {
    One(RouteCluster),
    /// With each its running total of weights (the last one's is the sum).
    Weighted(Vec<(RouteCluster, u64)>),
    /// `cluster_header`: the field, and every cluster by name (shared by the router's routes).
    Header(http::HeaderName, Arc<HashMap<String, RouteCluster>>),
}

/// A cluster a route sends to: its index among the worker's clusters, and its name.
#[derive(Debug, Clone)]
pub struct RouteCluster {
    pub index: usize,
    pub name: String,
    /// A weighted cluster's `typed_per_filter_config` over its route's levels (most specific
    /// first); `None`: the route's.
    pub filter_configs: Option<Box<ResolvedFilterConfigs>>,
}

// === impl Targets ===

impl Targets {
    fn new(
        spec: &ClusterSpecifier,
        cluster_index: &impl Fn(&str) -> Option<usize>,
        by_name: &Arc<HashMap<String, RouteCluster>>,
    ) -> Result<Self, BuildError> {
        let resolve = |name: &str| {
            let index = cluster_index(name).ok_or_else(|| BuildError::UnknownCluster {
                cluster: name.to_owned(),
            })?;
            Ok(RouteCluster {
                index,
                name: name.to_owned(),
                filter_configs: None,
            })
        };
        Ok(match spec {
            ClusterSpecifier::Cluster(c) => Targets::One(resolve(c)?),
            ClusterSpecifier::Weighted(w) => {
                let mut total = 0u64;
                let mut picks = Vec::with_capacity(w.len());
                for (name, weight) in w {
                    total += u64::from(*weight);
                    picks.push((resolve(name)?, total));
                }
                Targets::Weighted(picks)
            }
            ClusterSpecifier::Header(h) => Targets::Header(h.clone(), by_name.clone()),
        })
    }

    /// The cluster for one request with `headers`; `None`: its `cluster_header` names no
    /// cluster (or is absent, or not text).
    #[inline]
    pub fn pick(&self, headers: &HeaderMap) -> Option<&RouteCluster> {
        match self {
            Targets::One(t) => Some(t),
            Targets::Header(name, by_name) => Self::by_header(name, by_name, headers),
            Targets::Weighted(picks) => Some(Self::pick_weighted(picks)),
        }
    }

    #[cold]
    #[inline(never)]
    fn by_header<'a>(
        name: &http::HeaderName,
        by_name: &'a HashMap<String, RouteCluster>,
        headers: &HeaderMap,
    ) -> Option<&'a RouteCluster> {
        let value = headers.get(name)?.to_str().ok()?;
        by_name.get(value)
    }

    fn pick_weighted(picks: &[(RouteCluster, u64)]) -> &RouteCluster {
        let total = picks.last().map_or(1, |(_, t)| *t);
        let at = fastrand::u64(0..total.max(1));
        let i = picks.partition_point(|(_, upto)| *upto <= at);
        &picks[i.min(picks.len() - 1)].0
    }
}

// === impl Router ===

impl Router {
    /// Compile `cfg`; `cluster_index` resolves a cluster name. A `cluster_header` route finds
    /// no cluster (see [`Router::with_clusters`]).
    pub fn new(
        cfg: &RouteConfig,
        cluster_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Self, BuildError> {
        Self::with_clusters(cfg, std::iter::empty(), cluster_index)
    }

    /// Compile `cfg`; `names` are every cluster's (what a `cluster_header` may name),
    /// `cluster_index` resolves a name.
    pub fn with_clusters<'n>(
        cfg: &RouteConfig,
        names: impl Iterator<Item = &'n str>,
        cluster_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Self, BuildError> {
        let uses_header = cfg.virtual_hosts.iter().any(|vh| {
            vh.routes.iter().any(|r| {
                matches!(&r.action, RouteAction::Forward(f)
                    if matches!(f.cluster, ClusterSpecifier::Header(_)))
            })
        });
        let by_name: Arc<HashMap<String, RouteCluster>> = Arc::new(if uses_header {
            names
                .filter_map(|n| {
                    let index = cluster_index(n)?;
                    let c = RouteCluster {
                        index,
                        name: n.to_owned(),
                        filter_configs: None,
                    };
                    Some((n.to_owned(), c))
                })
                .collect()
        } else {
            HashMap::new()
        });
        let mut router = Router {
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
            vhosts: Vec::with_capacity(cfg.virtual_hosts.len()),
        };
        for (vi, vh) in cfg.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    router.any.get_or_insert(vi);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    router.suffixes.push((suffix.to_owned(), vi));
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    router.prefixes.push((prefix.to_owned(), vi));
                } else {
                    router.exact.entry(domain).or_insert(vi);
                }
            }
            let mut routes = Vec::with_capacity(vh.routes.len());
            for r in &vh.routes {
                let mut levels = [&r.headers, &vh.headers, &cfg.headers];
                if cfg.most_specific_header_mutations_wins {
                    levels.reverse();
                }
                let mut route = compile_route(r, &cluster_index, &by_name)?;
                route.mutations = Mutations::compile(&levels)?;
                route.filter_configs = ResolvedFilterConfigs::resolve(
                    &[&r.filter_configs, &vh.filter_configs, &cfg.filter_configs],
                    [r.cors.as_ref(), vh.cors.as_ref()],
                )
                .map(Box::new);
                weighted_filter_configs(&mut route, r, vh, cfg);
                routes.push(route);
            }
            router.vhosts.push(VirtualHost {
                name: vh.name.clone(),
                routes,
            });
        }
        router
            .suffixes
            .sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        router
            .prefixes
            .sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Ok(router)
    }

    /// The virtual host serving `authority` (compared case-insensitively, port included, as
    /// Envoy does by default).
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let idx = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            self.lookup(&authority.to_ascii_lowercase())
        } else {
            self.lookup(authority)
        }?;
        self.vhosts.get(idx)
    }

    fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        // A wildcard stands for at least one character.
        for (suffix, i) in &self.suffixes {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return Some(*i);
            }
        }
        for (prefix, i) in &self.prefixes {
            if host.len() > prefix.len() && host.starts_with(prefix.as_str()) {
                return Some(*i);
            }
        }
        self.any
    }

    /// The first matching route for a plain-text `GET` with `authority`, `path` (may carry a
    /// query) and `headers`.
    pub fn route(&self, authority: &str, path: &str, headers: &HeaderMap) -> Option<&Route> {
        self.route_for(authority, path, headers, RequestFacts::GET)
    }

    /// The first matching route for a request with `authority`, `path` (may carry a query),
    /// `headers` and `facts`.
    #[inline]
    pub fn route_for(
        &self,
        authority: &str,
        path: &str,
        headers: &HeaderMap,
        facts: RequestFacts<'_>,
    ) -> Option<&Route> {
        self.virtual_host(authority)?
            .route_for(authority, path, headers, facts)
    }
}

/// Each weighted cluster's `typed_per_filter_config`, resolved over its route's levels.
fn weighted_filter_configs(
    route: &mut Route,
    r: &crate::config::Route,
    vh: &crate::config::VirtualHost,
    cfg: &RouteConfig,
) {
    let (Action::Forward(f), RouteAction::Forward(action)) = (&mut route.action, &r.action) else {
        return;
    };
    let Targets::Weighted(picks) = &mut f.targets else {
        return;
    };
    for ((target, _), own) in picks.iter_mut().zip(&action.weighted_filter_configs) {
        if own.is_empty() {
            continue;
        }
        target.filter_configs = ResolvedFilterConfigs::resolve(
            &[
                own,
                &r.filter_configs,
                &vh.filter_configs,
                &cfg.filter_configs,
            ],
            [r.cors.as_ref(), vh.cors.as_ref()],
        )
        .map(Box::new);
    }
}

// === impl VirtualHost ===

impl VirtualHost {
    pub fn route(&self, path_and_query: &str, headers: &HeaderMap) -> Option<&Route> {
        self.route_for("", path_and_query, headers, RequestFacts::GET)
    }

    /// The first route matching a request for `authority` and `path_and_query`.
    pub fn route_for(
        &self,
        authority: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        facts: RequestFacts<'_>,
    ) -> Option<&Route> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        self.routes.iter().find(|r| {
            r.matches(path, headers)
                && r.query_matches(query)
                && r.extra.as_deref().is_none_or(|x| {
                    x.matches(
                        headers,
                        [
                            facts.method.as_str(),
                            path_and_query,
                            authority,
                            facts.scheme,
                        ],
                        facts.peer_cert,
                    )
                })
        })
    }
}

// === impl Route ===

impl Route {
    /// The matched prefix, for `prefix_rewrite`; `None` for path and regex matches.
    pub fn prefix(&self) -> Option<&str> {
        match &self.path {
            CompiledPath::Prefix(p) | CompiledPath::SeparatedPrefix(p) => Some(p),
            _ => None,
        }
    }

    fn matches(&self, path: &str, headers: &HeaderMap) -> bool {
        let path_ok = match &self.path {
            CompiledPath::Prefix(p) => self.starts_with(path, p),
            CompiledPath::SeparatedPrefix(p) => {
                self.starts_with(path, p)
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            CompiledPath::Exact(p) => {
                if self.case_sensitive {
                    path == p
                } else {
                    path.eq_ignore_ascii_case(p)
                }
            }
            CompiledPath::Regex(re) => re.is_match(path),
        };
        path_ok && self.headers.iter().all(|h| h.matches(headers))
    }

    /// `path` starts with `p` (in this route's case sensitivity).
    fn starts_with(&self, path: &str, p: &str) -> bool {
        path.len() >= p.len()
            && if self.case_sensitive {
                path.as_bytes().starts_with(p.as_bytes())
            } else {
                path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
    }

    /// Every `query_parameters` matcher against `query` (the text after `?`).
    fn query_matches(&self, query: &str) -> bool {
        self.query.iter().all(|(name, kind)| {
            let first = query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then_some(v)
            });
            match (kind, first) {
                (CompiledHeaderKind::Present(want), v) => v.is_some() == *want,
                (_, None) => false,
                (kind, Some(v)) => kind.matches_value(v),
            }
        })
    }
}

impl ExtraMatch {
    /// `pseudo`: the values of `:method`, `:path`, `:authority`, `:scheme`.
    #[cold]
    #[inline(never)]
    fn matches(&self, headers: &HeaderMap, pseudo: [&str; 4], peer_cert: bool) -> bool {
        if self.grpc && !is_grpc(headers) {
            return false;
        }
        if let Some(t) = self.tls {
            // A certificate Baton accepted was validated: both are whether there is one.
            if t.presented.is_some_and(|p| p != peer_cert)
                || t.validated.is_some_and(|v| v != peer_cert)
            {
                return false;
            }
        }
        let pseudo_ok = self.pseudo.iter().all(|(which, kind, invert)| {
            let v = match which {
                PseudoHeader::Method => pseudo[0],
                PseudoHeader::Path => pseudo[1],
                PseudoHeader::Authority => pseudo[2],
                PseudoHeader::Scheme => pseudo[3],
            };
            let hit = match kind {
                CompiledHeaderKind::Present(want) => *want,
                kind => kind.matches_value(v),
            };
            hit != *invert
        });
        // Rolled last, only for a request that matches otherwise.
        pseudo_ok && self.fraction.is_none_or(|f| f.hit(fastrand::u64(..)))
    }
}

/// Envoy's gRPC test: `content-type` is `application/grpc` or `application/grpc+…`
/// (`application/grpc-web` is not).
fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    ct.starts_with(b"application/grpc") && matches!(ct.get(16), None | Some(b'+'))
}

impl CompiledHeaderKind {
    /// Whether a present value matches (`Present` is decided by the caller).
    fn matches_value(&self, v: &str) -> bool {
        match self {
            CompiledHeaderKind::Present(_) => true,
            CompiledHeaderKind::Exact(s) => v == s,
            CompiledHeaderKind::Prefix(s) => v.starts_with(s.as_str()),
            CompiledHeaderKind::Suffix(s) => v.ends_with(s.as_str()),
            CompiledHeaderKind::Contains(s) => v.contains(s.as_str()),
            CompiledHeaderKind::Regex(re) => re.is_match(v),
        }
    }
}

impl CompiledHeader {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let value = headers.get(&self.name).map(|v| v.to_str().unwrap_or(""));
        match (&self.kind, value) {
            (CompiledHeaderKind::Present(want), v) => (v.is_some() == *want) != self.invert,
            // A missing field matches no value, inverted or not (Envoy 1.40: an inverted
            // `exact` does not match a request without the field).
            (_, None) => false,
            (kind, Some(v)) => kind.matches_value(v) != self.invert,
        }
    }
}

fn anchored(re: &Regex) -> Result<Regex, BuildError> {
    Regex::new(&format!("^(?:{})$", re.as_str())).map_err(|e| BuildError::Regex {
        regex: re.as_str().to_owned(),
        source: e,
    })
}

fn compile_kind(kind: &HeaderMatchKind) -> Result<CompiledHeaderKind, BuildError> {
    Ok(match kind {
        HeaderMatchKind::Exact(s) => CompiledHeaderKind::Exact(s.clone()),
        HeaderMatchKind::Prefix(s) => CompiledHeaderKind::Prefix(s.clone()),
        HeaderMatchKind::Suffix(s) => CompiledHeaderKind::Suffix(s.clone()),
        HeaderMatchKind::Contains(s) => CompiledHeaderKind::Contains(s.clone()),
        HeaderMatchKind::Regex(re) => CompiledHeaderKind::Regex(anchored(re)?),
        HeaderMatchKind::Present(p) => CompiledHeaderKind::Present(*p),
    })
}

fn compile_route(
    r: &crate::config::Route,
    cluster_index: &impl Fn(&str) -> Option<usize>,
    by_name: &Arc<HashMap<String, RouteCluster>>,
) -> Result<Route, BuildError> {
    let path = match &r.matcher.path {
        PathMatch::Prefix(p) => CompiledPath::Prefix(p.clone()),
        PathMatch::Exact(p) => CompiledPath::Exact(p.clone()),
        PathMatch::Regex(re) => CompiledPath::Regex(anchored(re)?),
        PathMatch::SeparatedPrefix(p) => CompiledPath::SeparatedPrefix(p.clone()),
    };
    let headers = r
        .matcher
        .headers
        .iter()
        .map(|h: &HeaderMatcher| {
            Ok(CompiledHeader {
                name: h.name.clone(),
                kind: compile_kind(&h.kind)?,
                invert: h.invert,
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let query = r
        .matcher
        .query_parameters
        .iter()
        .map(|q| Ok((q.name.clone(), compile_kind(&q.kind)?)))
        .collect::<Result<Vec<_>, BuildError>>()?;
    let m = &r.matcher;
    let extra = if m.pseudo_headers.is_empty()
        && !m.grpc
        && m.runtime_fraction.is_none()
        && m.tls_context.is_none()
    {
        None
    } else {
        Some(Box::new(ExtraMatch {
            pseudo: m
                .pseudo_headers
                .iter()
                .map(|(p, h)| Ok((*p, compile_kind(&h.kind)?, h.invert)))
                .collect::<Result<_, BuildError>>()?,
            grpc: m.grpc,
            fraction: m.runtime_fraction,
            tls: m.tls_context,
        }))
    };
    let action = match &r.action {
        RouteAction::Forward(f) => Action::Forward(Forward {
            targets: Targets::new(&f.cluster, &cluster_index, by_name)?,
            expected_timeout_ms: f
                .retry_policy
                .as_ref()
                .and_then(|p| p.per_try_timeout)
                .or(f.timeout)
                .map(|t| http::HeaderValue::from(t.as_millis() as u64)),
            mirrors: f
                .mirrors
                .iter()
                .map(|m| {
                    Ok(Mirror {
                        index: cluster_index(&m.cluster).ok_or_else(|| {
                            BuildError::UnknownCluster {
                                cluster: m.cluster.clone(),
                            }
                        })?,
                        fraction: m.fraction,
                        host_suffix: m.host_suffix,
                    })
                })
                .collect::<Result<_, BuildError>>()?,
            config: f.clone(),
        }),
        RouteAction::Direct(d) => Action::Direct(d.clone()),
        RouteAction::Redirect(rd) => Action::Redirect(rd.clone()),
    };
    Ok(Route {
        name: r.name.clone(),
        mutations: None,
        filter_configs: None,
        path,
        case_sensitive: r.matcher.case_sensitive,
        headers,
        query,
        extra,
        action,
    })
}

pub mod mutate;
#[cfg(test)]
mod tests;

pub use mutate::Mutations;
