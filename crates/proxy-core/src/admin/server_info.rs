//! `/server_info` and Envoy's `server.*` gauges that describe the process (uptime, state,
//! concurrency, hot restart epoch, version). `server.total_connections` and the other traffic
//! stats are the data plane's, not these.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value as Json};
use shm_stats::{Gauge, Store};

use super::clusters::pretty;
use super::{ServerInfo, ServerState};
use crate::config::Node;

/// Envoy's `server.*` gauges about the process, registered in a store.
#[derive(Debug)]
pub struct ServerStats {
    epoch_started: Instant,
    uptime: Gauge,
    live: Gauge,
    state: Gauge,
    concurrency: Gauge,
    hot_restart_epoch: Gauge,
    hot_restart_generation: Gauge,
    version: Gauge,
    /// Each generation's share is its own open connections (the data plane keeps it); the
    /// region sums the shares of every live generation.
    total_connections: Gauge,
    parent_connections: Gauge,
    store: Store,
}

/// `major*10000 + minor*100 + patch` of this crate's version: Envoy's `server.version` is a
/// number, and this one grows with every release.
fn version_number() -> i64 {
    let part = |s: &str| s.parse::<i64>().unwrap_or(0);
    part(env!("CARGO_PKG_VERSION_MAJOR")) * 10_000
        + part(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + part(env!("CARGO_PKG_VERSION_PATCH"))
}

impl ServerStats {
    /// Register the gauges in `store` and set the ones that never change.
    pub fn new(store: &Store, info: &ServerInfo) -> Self {
        let stats = ServerStats {
            epoch_started: info.epoch_started,
            uptime: store.gauge("server.uptime"),
            live: store.gauge("server.live"),
            state: store.gauge("server.state"),
            concurrency: store.gauge("server.concurrency"),
            hot_restart_epoch: store.gauge("server.hot_restart_epoch"),
            hot_restart_generation: store.gauge("server.hot_restart_generation"),
            version: store.gauge("server.version"),
            total_connections: store.gauge("server.total_connections"),
            parent_connections: store.gauge("server.parent_connections"),
            store: store.clone(),
        };
        stats.concurrency.set(i64::from(info.concurrency));
        stats.hot_restart_epoch.set(i64::from(info.epoch));
        // Baton's epochs are already counted from the chain's start.
        stats.hot_restart_generation.set(i64::from(info.epoch));
        stats.version.set(version_number());
        stats
    }

    /// Bring the changing gauges (uptime, live, state) up to date.
    pub fn refresh(&self, state: ServerState) {
        let uptime = self.epoch_started.elapsed().as_secs();
        self.uptime.set(i64::try_from(uptime).unwrap_or(i64::MAX));
        self.live.set(i64::from(state == ServerState::Live));
        self.state.set(state.gauge_value());
        // Connections of the older generations still draining: every generation's share of
        // `server.total_connections` but this one's.
        let total = self
            .store
            .snapshot()
            .stats
            .iter()
            .find(|(name, _)| name == "server.total_connections")
            .and_then(|(_, v)| match v {
                shm_stats::Value::Gauge(g) => Some(*g),
                _ => None,
            })
            .unwrap_or(0);
        self.parent_connections
            .set((total - self.total_connections.value()).max(0));
    }
}

/// `/server_info` (`admin.v3.ServerInfo`), pretty-printed. Durations use protobuf's JSON form
/// (`"123s"`).
pub(super) fn server_info_json(
    info: &ServerInfo,
    state: ServerState,
    hot_restart: &Json,
) -> String {
    let current = info.epoch_started.elapsed().as_secs();
    // The chain cannot have started after this epoch; a clock stepped backwards must not make
    // it look so.
    let all = SystemTime::now()
        .duration_since(info.chain_started)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .max(current);
    pretty(&json!({
        "version": info.version,
        "state": state.as_str(),
        "hot_restart_version": info.hot_restart_version,
        "command_line_options": info.command_line_options,
        "uptime_current_epoch": format!("{current}s"),
        "uptime_all_epochs": format!("{all}s"),
        "node": node_json(&info.node),
        "hot_restart": hot_restart,
    }))
}

/// `node` as Envoy's `/server_info` shows it: `id` and `cluster` always, `metadata` and
/// `locality` only when set (proto3 JSON leaves out empty messages).
fn node_json(node: &Node) -> Json {
    let mut out = json!({"id": node.id, "cluster": node.cluster});
    if !node.metadata.is_empty() {
        out["metadata"] = Json::Object(node.metadata.clone());
    }
    if let Some(l) = &node.locality {
        let mut loc = serde_json::Map::new();
        for (k, v) in [
            ("region", &l.region),
            ("zone", &l.zone),
            ("sub_zone", &l.sub_zone),
        ] {
            if !v.is_empty() {
                loc.insert(k.to_owned(), Json::String(v.clone()));
            }
        }
        out["locality"] = Json::Object(loc);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shm_stats::Value;

    use super::*;

    fn info() -> Option<ServerInfo> {
        Some(ServerInfo {
            version: "abc/0.1.0/Clean/RELEASE/rustls".to_owned(),
            hot_restart_version: "baton.1".to_owned(),
            command_line_options: json!({"service_node": "n1", "service_cluster": "c1", "concurrency": 2}),
            node: Node {
                id: "n1".to_owned(),
                cluster: "c1".to_owned(),
                ..Node::default()
            },
            epoch: 3,
            concurrency: 2,
            epoch_started: Instant::now().checked_sub(Duration::from_secs(12))?,
            chain_started: SystemTime::now().checked_sub(Duration::from_secs(100))?,
        })
    }

    fn gauge(store: &Store, name: &str) -> Option<i64> {
        store
            .snapshot()
            .stats
            .into_iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| match v {
                Value::Gauge(g) => Some(g),
                _ => None,
            })
    }

    #[test]
    fn server_stats_follow_state() -> Result<(), &'static str> {
        let store = Store::new();
        let info = info().ok_or("clock too close to its origin")?;
        let stats = ServerStats::new(&store, &info);
        stats.refresh(ServerState::Initializing);
        assert_eq!(gauge(&store, "server.state"), Some(3));
        assert_eq!(gauge(&store, "server.live"), Some(0));
        assert!(gauge(&store, "server.uptime").is_some_and(|u| u >= 12));
        stats.refresh(ServerState::Live);
        assert_eq!(gauge(&store, "server.state"), Some(0));
        assert_eq!(gauge(&store, "server.live"), Some(1));
        stats.refresh(ServerState::Draining);
        assert_eq!(gauge(&store, "server.state"), Some(1));
        assert_eq!(gauge(&store, "server.live"), Some(0));
        stats.refresh(ServerState::PreInitializing);
        assert_eq!(gauge(&store, "server.state"), Some(2));
        assert_eq!(gauge(&store, "server.concurrency"), Some(2));
        assert_eq!(gauge(&store, "server.hot_restart_epoch"), Some(3));
        // 0.1.0 → 100.
        assert_eq!(gauge(&store, "server.version"), Some(version_number()));
        assert!(version_number() > 0);
        Ok(())
    }

    #[test]
    fn server_info_shape() -> Result<(), Box<dyn std::error::Error>> {
        let info = info().ok_or("clock too close to its origin")?;
        let v: Json =
            serde_json::from_str(&server_info_json(&info, ServerState::Live, &Json::Null))?;
        assert_eq!(v["version"], "abc/0.1.0/Clean/RELEASE/rustls");
        assert_eq!(v["state"], "LIVE");
        assert_eq!(v["hot_restart_version"], "baton.1");
        assert_eq!(v["command_line_options"]["concurrency"], 2);
        assert_eq!(v["node"], json!({"id": "n1", "cluster": "c1"}));
        let secs = |key: &str| {
            v[key]
                .as_str()
                .and_then(|s| s.strip_suffix('s'))
                .and_then(|s| s.parse::<u64>().ok())
        };
        assert!(secs("uptime_current_epoch").is_some_and(|s| (12..100).contains(&s)));
        assert!(secs("uptime_all_epochs").is_some_and(|s| s >= 100));
        Ok(())
    }

    #[test]
    fn node_shows_metadata_and_locality_only_when_set() {
        let mut node = Node {
            id: "n".to_owned(),
            ..Node::default()
        };
        assert_eq!(node_json(&node), json!({"id": "n", "cluster": ""}));
        node.metadata.insert("k".to_owned(), json!([1, null]));
        node.locality = Some(crate::config::Locality {
            region: "r".to_owned(),
            zone: String::new(),
            sub_zone: "s".to_owned(),
        });
        assert_eq!(
            node_json(&node),
            json!({"id": "n", "cluster": "", "metadata": {"k": [1, null]},
                "locality": {"region": "r", "sub_zone": "s"}})
        );
    }
}
