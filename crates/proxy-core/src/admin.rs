//! The admin interface: Baton's Envoy-compatible admin HTTP server (`/stats`,
//! `/stats/prometheus`, `/server_info`, `/ready`, `/clusters`, `/listeners`, `/config_dump`,
//! `/hot_restart_version`, `/quitquitquit`) and the `server.*` stats it keeps current.
//!
//! This module owns the admin's view of the process ([`AdminState`]), the formatting of every
//! admin response and the admin's accept loop ([`serve`]). It reads the stats store and the
//! cluster status the data plane exposes through [`ClusterStatusSource`]; it never changes the
//! data plane. A quit request only reaches the owner of the process through
//! [`AdminState::quit`]: deciding to shut down is not the admin's.

mod clusters;
mod handlers;
mod prometheus;
mod server;
mod server_info;
mod stats_format;
mod tags;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::Thresholds;
use crate::lifecycle::{GenerationStatus, Phase};

pub use server::serve;
pub use server_info::ServerStats;
pub use tags::{extract_tags, TaggedName};

/// Envoy's `/stats` text for `snapshot` (`name: value` lines, histograms last), limited to
/// names `filter` matches; for readers outside the admin interface (`baton stats`).
pub fn render_stats_text(snapshot: &shm_stats::Snapshot, filter: Option<regex::Regex>) -> String {
    let params = stats_format::StatsParams {
        filter,
        used_only: false,
    };
    stats_format::render_text(snapshot, &params)
}

/// Envoy's Prometheus text for `snapshot` (as `/stats/prometheus`), limited to names `filter`
/// matches; for readers outside the admin interface (`baton stats`).
pub fn render_prometheus(snapshot: &shm_stats::Snapshot, filter: Option<regex::Regex>) -> String {
    let params = stats_format::StatsParams {
        filter,
        used_only: false,
    };
    prometheus::render(snapshot, &params)
}

/// Where the server is in its life, with Envoy's names (`/ready`, `/server_info`) and Envoy's
/// `server.state` gauge values: Envoy's view of the generation's [`Phase`] (see its `From`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerState {
    PreInitializing,
    Initializing,
    Live,
    Draining,
}

impl ServerState {
    /// Envoy's name of the state (`admin.v3.ServerInfo.State`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Initializing => "INITIALIZING",
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
        }
    }

    /// The value of Envoy's `server.state` gauge for this state.
    pub fn gauge_value(self) -> i64 {
        match self {
            ServerState::Live => 0,
            ServerState::Draining => 1,
            ServerState::PreInitializing => 2,
            ServerState::Initializing => 3,
        }
    }
}

/// Envoy has no phase for a generation that is done or failed: neither is live, so both read as
/// draining.
impl From<&Phase> for ServerState {
    fn from(phase: &Phase) -> Self {
        match phase {
            Phase::Starting => ServerState::PreInitializing,
            Phase::Validating | Phase::TakingSockets => ServerState::Initializing,
            Phase::Serving => ServerState::Live,
            _ => ServerState::Draining,
        }
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `/server_info` reports about this process and its restart chain.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// The build's version string (Envoy: `<sha>/<version>/<status>/<build type>/<ssl>`).
    pub version: String,
    /// The hot restart compatibility version (`/hot_restart_version`).
    pub hot_restart_version: String,
    /// The command line options as JSON, with Envoy's snake_case field names.
    pub command_line_options: serde_json::Value,
    /// The bootstrap's `node`, command line overrides applied.
    pub node: crate::config::Node,
    /// This process's hot restart epoch.
    pub epoch: u32,
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// When this epoch started (`uptime_current_epoch`, `server.uptime`).
    pub epoch_started: Instant,
    /// When the first epoch of the restart chain started (`uptime_all_epochs`).
    pub chain_started: SystemTime,
}

/// One listener as `/listeners` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    pub address: SocketAddr,
    pub additional_addresses: Vec<SocketAddr>,
}

/// One upstream host as `/clusters` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct HostStatus {
    pub address: SocketAddr,
    pub hostname: String,
    pub weight: u32,
    /// Its priority level.
    pub priority: u32,
    /// Why the host is out of load balancing, if it is.
    pub health: crate::host_health::HealthFlags,
    pub cx_active: u64,
    pub cx_connect_fail: u64,
    pub rq_active: u64,
    pub rq_total: u64,
    pub rq_error: u64,
    pub rq_success: u64,
    /// Its success rate in the outlier detector's last interval, if it had one.
    pub success_rate: Option<f64>,
    pub local_origin_success_rate: Option<f64>,
}

/// One cluster as `/clusters` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterStatus {
    pub name: String,
    /// The default-priority circuit breaker thresholds.
    pub thresholds: Thresholds,
    pub hosts: Vec<HostStatus>,
    pub added_via_api: bool,
    /// The cluster has outlier detection (Envoy then prints its success-rate lines).
    pub outlier_detection: bool,
    /// The last success-rate detection's mean and ejection threshold, when it ran.
    pub success_rate_average: Option<f64>,
    pub success_rate_threshold: Option<f64>,
    pub local_origin_success_rate_average: Option<f64>,
    pub local_origin_success_rate_threshold: Option<f64>,
}

/// Gives the admin the current state of every cluster; implemented by the data plane.
pub trait ClusterStatusSource: Send + Sync + 'static {
    fn clusters(&self) -> Vec<ClusterStatus>;
}

/// A fixed list of clusters, for a process without a live data plane (and for tests).
impl ClusterStatusSource for Vec<ClusterStatus> {
    fn clusters(&self) -> Vec<ClusterStatus> {
        self.clone()
    }
}

/// Sent on [`AdminState::quit`] when `POST /quitquitquit` is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuitRequest;

/// Sent on [`AdminState::rollback`] by `POST /rollback`: the owner asks the previous generation
/// (still inside its rollback window) to serve again, and answers here with what to tell the
/// operator (`Ok`: it serves again, and this generation exits non-zero; `Err`: nothing changed).
#[derive(Debug)]
pub struct RollbackRequest {
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// Everything the admin server reads to answer requests.
pub struct AdminState {
    pub stats: shm_stats::Store,
    pub server: ServerInfo,
    /// This generation's status, published by its owner on every transition: the phase gives
    /// the [`ServerState`]; the whole is `/hot_restart_status` and `/server_info`'s
    /// `hot_restart`.
    pub generation: tokio::sync::watch::Receiver<GenerationStatus>,
    /// The bootstrap as JSON (`/config_dump`).
    pub config_dump: serde_json::Value,
    pub listeners: Vec<ListenerStatus>,
    pub clusters: Arc<dyn ClusterStatusSource>,
    /// `POST /quitquitquit` sends one [`QuitRequest`] here after answering.
    pub quit: tokio::sync::mpsc::Sender<QuitRequest>,
    /// `POST /rollback` sends a [`RollbackRequest`] here and answers with its reply; `None`
    /// where nothing can roll back (tests).
    pub rollback: Option<tokio::sync::mpsc::Sender<RollbackRequest>>,
    /// The generation's drain control, for `/drain_listeners` and `/healthcheck/{fail,ok}`;
    /// `None` where nothing drains (tests).
    pub drain: Option<drain::Control>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("stats", &self.stats)
            .field("server", &self.server)
            .field("phase", &self.generation.borrow().phase)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

// === impl AdminState ===

impl AdminState {
    /// The Envoy state of the generation's current phase.
    pub fn server_state(&self) -> ServerState {
        ServerState::from(&self.generation.borrow().phase)
    }
}

#[cfg(test)]
mod tests;
