//! The Envoy v3 bootstrap parser: reads `--config-path` and/or `--config-yaml`, merges them as
//! Envoy does, checks every field against the subset Baton implements (anything else is an error
//! naming its full path) and produces the validated [`proxy_core::config::Bootstrap`].
//!
//! The pipeline is: text → `serde_json::Value` ([`source`]) → raw serde structs with
//! `deny_unknown_fields` ([`raw`], decoded piecewise by [`de`] so errors carry full paths) →
//! semantic checks and conversion ([`listener`], [`route`], [`cluster`], [`tls`]).

mod chains;
mod cluster;
mod de;
mod filters;
mod headers;
mod health;
mod lb;
mod listener;
mod local_reply;
mod raw;
mod route;
mod source;
mod tls;
mod upstream_options;

use std::fmt;
use std::path::Path;

use proxy_core::config::{Admin, Bootstrap, Locality, Node};

/// A parsed and validated bootstrap.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub bootstrap: Bootstrap,
    /// The merged bootstrap as JSON, for `/config_dump`.
    pub effective: serde_json::Value,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path such as `static_resources.clusters[0].connect_timeout`; empty for problems with
    /// the whole document (then the message carries line and column where known).
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// Collects errors while validation continues past the first one.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// Keeps `Ok` values, records `Err`s.
    pub(crate) fn take<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Loads the bootstrap from a file (YAML, or JSON when the name ends in `.json`) and/or inline
/// YAML; the inline YAML is merged over the file (objects merge, scalars overwrite, lists append).
pub fn load(config_path: Option<&Path>, config_yaml: Option<&str>) -> Result<Loaded, ConfigErrors> {
    let base = match config_path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("", format!("could not read {}: {e}", p.display()))
            })?;
            let is_json = p
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("json"));
            let origin = p.display().to_string();
            let mut v = if is_json {
                source::parse_json(&text, &origin)?
            } else {
                source::parse_yaml(&text, &origin)?
            };
            // Before merging, so `portValue` in one and `port_value` in the other meet.
            source::snake_case_keys(&mut v, "")?;
            Some(v)
        }
        None => None,
    };
    let overlay = match config_yaml {
        Some(text) => {
            let mut v = source::parse_yaml(text, "--config-yaml")?;
            source::snake_case_keys(&mut v, "")?;
            Some(v)
        }
        None => None,
    };
    let merged = match (base, overlay) {
        (Some(mut b), Some(o)) => {
            source::merge(&mut b, o);
            b
        }
        (Some(b), None) => b,
        (None, Some(o)) => o,
        (None, None) => {
            return Err(ConfigError::new(
                "",
                "no configuration given: pass --config-path (-c) and/or --config-yaml",
            )
            .into())
        }
    };
    from_value(merged)
}

/// Parses and validates one YAML (or JSON) document.
#[cfg(test)]
pub fn parse_str(text: &str) -> Result<Loaded, ConfigErrors> {
    from_value(source::parse_yaml(text, "config")?)
}

fn from_value(value: serde_json::Value) -> Result<Loaded, ConfigErrors> {
    let mut value = match value {
        // A JSON `null` document is an empty bootstrap, as an empty proto message.
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    };
    source::snake_case_keys(&mut value, "")?;
    source::strip_nulls(&mut value, "");
    let bootstrap = convert(value.clone())?;
    Ok(Loaded {
        bootstrap,
        effective: value,
    })
}

fn convert(value: serde_json::Value) -> Result<Bootstrap, ConfigErrors> {
    let raw: raw::Bootstrap = de::decode(value, "")?;
    let mut errs = Errors::default();
    let node = raw.node.map(node).unwrap_or_default();
    let admin = raw.admin.and_then(|a| admin(a, &mut errs));
    let statics = raw.static_resources.unwrap_or_default();
    // Secrets first: TLS contexts refer to them by name.
    let secrets = tls::secrets(statics.secrets, &mut errs);

    // Clusters first: routes must name one of them.
    let mut clusters = Vec::new();
    // Names of every cluster entry whose name could be read, even if the entry has other errors,
    // so one bad cluster does not also produce "unknown cluster" errors on its routes.
    let mut cluster_names = std::collections::HashSet::new();
    for (i, v) in statics.clusters.into_iter().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        if let Some(name) = v.get("name").and_then(|n| n.as_str()) {
            if !cluster_names.insert(name.to_owned()) {
                errs.push(
                    format!("{path}.name"),
                    format!("duplicate cluster name `{name}`"),
                );
            }
        }
        if let Some(c) = cluster::cluster(v, &path, &secrets, &mut errs) {
            clusters.push(c);
        }
    }

    let mut listeners: Vec<proxy_core::config::Listener> = Vec::new();
    let mut listener_names = std::collections::HashSet::new();
    for (i, v) in statics.listeners.into_iter().enumerate() {
        let path = format!("static_resources.listeners[{i}]");
        let Some(l) = listener::listener(v, &path, &cluster_names, &secrets, &mut errs) else {
            continue;
        };
        if !listener_names.insert(l.name.clone()) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate listener name `{}`", l.name),
            );
        }
        // Port 0 asks for any free port, so two such sockets do not clash.
        for (j, a) in l.addresses().enumerate() {
            let taken = listeners
                .iter()
                .flat_map(|o| o.addresses())
                .chain(l.addresses().take(j));
            if a.port() != 0 && taken.into_iter().any(|o| o == a) {
                let at = match j {
                    0 => format!("{path}.address"),
                    _ => format!("{path}.additional_addresses[{}].address", j - 1),
                };
                errs.push(at, format!("address {a} is already used by a listener"));
            }
        }
        listeners.push(l);
    }

    if let Some(a) = admin.as_ref().filter(|a| a.address.port() != 0) {
        if let Some(l) = listeners
            .iter()
            .find(|l| l.addresses().any(|x| x == a.address))
        {
            errs.push(
                "admin.address",
                format!(
                    "address {} is also used by listener `{}`",
                    a.address, l.name
                ),
            );
        }
    }

    if errs.is_empty() {
        let mut b = Bootstrap {
            node,
            admin,
            listeners,
            clusters,
        };
        apply_service_cluster(&mut b, None);
        Ok(b)
    } else {
        Err(ConfigErrors(errs.0))
    }
}

/// The node's service cluster (`--service-cluster`, else `node.cluster`) where the
/// configuration uses it: the health-check filter's responses, `add_user_agent`'s request
/// fields (a name that is no field value: empty, as none).
pub fn apply_service_cluster(b: &mut Bootstrap, cli: Option<&str>) {
    let cluster = cli.unwrap_or(&b.node.cluster).to_owned();
    for l in &mut b.listeners {
        let chains = l
            .filter_chains
            .iter_mut()
            .chain(&mut l.default_filter_chain);
        for c in chains {
            let proxy_core::config::NetworkFilter::Http(h) = &mut c.filter else {
                continue;
            };
            if let Some(ua) = &mut h.add_user_agent {
                *ua = http::HeaderValue::from_str(&cluster)
                    .unwrap_or_else(|_| http::HeaderValue::from_static(""));
            }
            for f in &mut h.http_filters {
                if let proxy_core::config::HttpFilter::HealthCheck(hc) = &mut f.filter {
                    hc.service_cluster.clone_from(&cluster);
                }
            }
        }
    }
}

fn node(raw: raw::Node) -> Node {
    Node {
        id: raw.id.unwrap_or_default(),
        cluster: raw.cluster.unwrap_or_default(),
        metadata: raw.metadata.unwrap_or_default(),
        locality: raw.locality.map(locality),
    }
}

pub(crate) fn locality(raw: raw::Locality) -> Locality {
    Locality {
        region: raw.region.unwrap_or_default(),
        zone: raw.zone.unwrap_or_default(),
        sub_zone: raw.sub_zone.unwrap_or_default(),
    }
}

/// The command line flags that replace parts of `node`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeOverrides<'a> {
    /// `--service-node`: `node.id`.
    pub id: Option<&'a str>,
    /// `--service-cluster`: `node.cluster`.
    pub cluster: Option<&'a str>,
    /// `--service-zone`: `node.locality.zone`.
    pub zone: Option<&'a str>,
}

/// `node` as Envoy serves it: each flag given and not empty replaces its field.
pub fn node_with_overrides(node: &Node, flags: NodeOverrides<'_>) -> Node {
    let mut out = node.clone();
    let given = |f: Option<&str>| f.filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(id) = given(flags.id) {
        out.id = id;
    }
    if let Some(cluster) = given(flags.cluster) {
        out.cluster = cluster;
    }
    if let Some(zone) = given(flags.zone) {
        out.locality.get_or_insert_with(Locality::default).zone = zone;
    }
    out
}

fn admin(raw: raw::Admin, errs: &mut Errors) -> Option<Admin> {
    if let Some(p) = &raw.access_log_path {
        if p != "/dev/null" {
            errs.push(
                "admin.access_log_path",
                "unsupported value: Baton has no admin access log; only `/dev/null` is accepted",
            );
        }
    }
    let address = raw.address?;
    let address = errs.take(listener::socket_address(
        &address.socket_address,
        "admin.address.socket_address",
    ))?;
    Some(Admin { address })
}

#[cfg(test)]
mod tests;
