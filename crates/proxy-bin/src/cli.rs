//! The `baton` command line: Envoy's flags, their defaults and the rules that tie them together,
//! parsed into a typed [`Options`] without printing anything (the caller prints [`Parsed::Exit`]).
//!
//! Flag names, defaults and meanings follow Envoy's `--help` and `operations/cli` docs. Where
//! Baton deliberately differs from Envoy it says so next to the flag. Errors are one line
//! (`baton: error: ... (see --help)`) with exit code 1; `--help`, `--version` and
//! `--hot-restart-version` print to stdout and exit 0.
// Wired up by main in the integration commit.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;
use serde_json::{json, Value};

/// Envoy's default hot restart socket is the abstract name `@envoy_domain_socket`; Baton uses its
/// own abstract name so a Baton and an Envoy on one host never meet.
pub const DEFAULT_SOCKET_PATH: &str = "@baton_domain_socket";
/// Envoy's old `--max-stats` default.
pub const DEFAULT_MAX_STATS: u64 = 16_384;
/// Envoy's old `--max-obj-name-len` default, which was also its minimum.
pub const DEFAULT_MAX_OBJ_NAME_LEN: u64 = 60;
/// `--rollback-window-s` when not given.
pub const DEFAULT_ROLLBACK_WINDOW_S: u64 = 10;
/// `--rollback-gate-failure-percent` when not given.
pub const DEFAULT_GATE_FAILURE_PERCENT: u8 = 20;
/// `--rollback-gate-min-requests` when not given.
pub const DEFAULT_GATE_MIN_REQUESTS: u64 = 20;
/// Envoy's old upper bound for `--max-stats` (100M).
pub const MAX_MAX_STATS: u64 = 100_000_000;
/// Baton's upper bound for `--max-obj-name-len` (Envoy had none; this keeps the shared region's
/// size, `max_stats * max_obj_name_len`, within reason).
pub const MAX_MAX_OBJ_NAME_LEN: u64 = 4_096;

/// What the process should do after parsing.
// Built once per process, so the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// Run with these options.
    Run(Options),
    /// Print `stdout` and `stderr` (as they are, no newline added) and exit with `code`.
    Exit {
        code: i32,
        stdout: String,
        stderr: String,
    },
}

/// `--mode`. Envoy also has `init_only`, which Baton refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Validate,
}

impl Mode {
    /// The name `/server_info` uses (Envoy's proto enum name).
    pub fn as_proto_name(self) -> &'static str {
        match self {
            Mode::Serve => "Serve",
            Mode::Validate => "Validate",
        }
    }
}

/// `-l/--log-level`: spdlog's level names as Envoy accepts them (`warn` is an alias of
/// `warning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

impl LogLevel {
    /// The canonical spdlog name, as `/server_info` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Off => "off",
        }
    }
}

/// `--drain-strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainStrategy {
    Gradual,
    Immediate,
}

impl DrainStrategy {
    /// The name `/server_info` uses (Envoy's proto enum name).
    pub fn as_proto_name(self) -> &'static str {
        match self {
            DrainStrategy::Gradual => "Gradual",
            DrainStrategy::Immediate => "Immediate",
        }
    }
}

/// The validated command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub config_path: Option<PathBuf>,
    pub config_yaml: Option<String>,
    pub mode: Mode,
    pub log_level: LogLevel,
    pub log_path: Option<PathBuf>,
    /// Worker threads; at least 1 (Envoy runs one worker when given 0, and so does Baton).
    pub concurrency: usize,
    pub base_id: u32,
    pub use_dynamic_base_id: bool,
    /// Where the chosen base ID is written (with or without `--use-dynamic-base-id`, as Envoy).
    pub base_id_path: Option<PathBuf>,
    pub restart_epoch: u32,
    pub drain_time: Duration,
    pub parent_shutdown_time: Duration,
    pub drain_strategy: DrainStrategy,
    pub disable_hot_restart: bool,
    pub skip_hot_restart_on_no_parent: bool,
    pub skip_hot_restart_parent_stats: bool,
    /// Baton only: drain every connection on a hot restart instead of handing idle HTTP/1.1
    /// keep-alive connections and idle upgrade tunnels to the next generation (Envoy's
    /// behaviour).
    pub disable_connection_handover: bool,
    /// Baton only: after a hot restart the old generation keeps its listen sockets, its
    /// configuration and its stats this long from cutover, and serves again if the new
    /// generation dies meanwhile (a rollback); zero exits as soon as it has drained.
    pub rollback_window: Duration,
    /// Baton only: the new generation's health gate through its parent's rollback window.
    pub rollback_gate: GateOptions,
    /// Hot restart RPC socket; a leading `@` means the Linux abstract namespace.
    pub socket_path: String,
    /// Permission bits for a filesystem `socket_path`; 0 for an abstract one (as Envoy).
    pub socket_mode: u32,
    /// Baton only: the file backing the region shared between generations (stats and restart
    /// state). `None` lets the hot restart code derive it from the base ID. Independent of
    /// `--socket-path` (one is the rendezvous socket, the other the shared memory), so the two
    /// may be given together.
    pub hot_restart_file: Option<PathBuf>,
    pub service_cluster: Option<String>,
    pub service_node: Option<String>,
    pub service_zone: Option<String>,
    pub max_stats: u64,
    pub max_obj_name_len: u64,
}

/// When a new generation fails its health gate inside the rollback window (and gives way to
/// the previous one): when the share of the requests it answered with its own 502/503/504 for
/// an upstream failure exceeds the previous generation's share over its last minute by more
/// than `failure_percent` points, once it has answered at least `min_requests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateOptions {
    /// 0–100; 100 turns the share rule off.
    pub failure_percent: u8,
    pub min_requests: u64,
}

impl Options {
    /// Envoy's `command_line_options` object of `/server_info` (proto3 JSON: uint64 fields are
    /// strings, durations are `"<n>s"`, enums are their proto names, absent strings are `""`).
    pub fn to_json(&self) -> Value {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        json!({
            "base_id": self.base_id.to_string(),
            "use_dynamic_base_id": self.use_dynamic_base_id,
            "base_id_path": path(&self.base_id_path),
            "concurrency": self.concurrency,
            "config_path": path(&self.config_path),
            "config_yaml": self.config_yaml.clone().unwrap_or_default(),
            "log_level": self.log_level.as_str(),
            "log_path": path(&self.log_path),
            "service_cluster": self.service_cluster.clone().unwrap_or_default(),
            "service_node": self.service_node.clone().unwrap_or_default(),
            "service_zone": self.service_zone.clone().unwrap_or_default(),
            "mode": self.mode.as_proto_name(),
            "disable_hot_restart": self.disable_hot_restart,
            "restart_epoch": self.restart_epoch,
            "drain_time": format!("{}s", self.drain_time.as_secs()),
            "parent_shutdown_time": format!("{}s", self.parent_shutdown_time.as_secs()),
            "drain_strategy": self.drain_strategy.as_proto_name(),
            "socket_path": self.socket_path,
            "socket_mode": self.socket_mode,
            "skip_hot_restart_on_no_parent": self.skip_hot_restart_on_no_parent,
            "skip_hot_restart_parent_stats": self.skip_hot_restart_parent_stats,
            "disable_connection_handover": self.disable_connection_handover,
            "rollback_window": format!("{}s", self.rollback_window.as_secs()),
            "rollback_gate_failure_percent": self.rollback_gate.failure_percent,
            "rollback_gate_min_requests": self.rollback_gate.min_requests.to_string(),
            "hot_restart_file": path(&self.hot_restart_file),
            "max_stats": self.max_stats.to_string(),
            "max_obj_name_len": self.max_obj_name_len.to_string(),
        })
    }

    /// This binary's hot restart compatibility string, or `"disabled"` (as Envoy) when hot
    /// restart is off.
    pub fn hot_restart_version(&self) -> String {
        if self.disable_hot_restart {
            "disabled".to_owned()
        } else {
            hot_restart_version(self.max_stats, self.max_obj_name_len)
        }
    }
}

/// The opaque hot restart compatibility string: two binaries can hot restart into each other only
/// if theirs are equal. It covers the generation-to-generation protocol and the shared region's
/// layout, which the two stats capacities determine.
pub fn hot_restart_version(max_stats: u64, max_obj_name_len: u64) -> String {
    // Restart protocol, stats region layout, then the region's capacities: two binaries can
    // hand over to each other exactly when these agree.
    format!(
        "baton.{}.{}.{max_stats}.{max_obj_name_len}",
        hotrestart_rpc::PROTOCOL_VERSION,
        shm_stats::LAYOUT_VERSION
    )
}

/// The `--version` line: `baton version: <version>/<build type>/<TLS library>`.
pub fn version_line() -> String {
    let build = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    format!(
        "baton version: {}/{build}/rustls\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[derive(Parser, Debug)]
#[command(
    name = "baton",
    about = "Baton: an Envoy-compatible, hot-restartable reverse proxy",
    disable_version_flag = true
)]
struct Args {
    /// Path to the bootstrap configuration file (YAML or JSON)
    #[arg(short = 'c', long = "config-path", value_name = "PATH")]
    config_path: Option<PathBuf>,
    /// Inline YAML bootstrap; merged over --config-path
    #[arg(long, value_name = "YAML")]
    config_yaml: Option<String>,
    /// serve, or validate (check the configuration and exit)
    #[arg(long, value_name = "MODE", default_value = "serve", value_parser = parse_mode)]
    mode: Mode,
    /// trace, debug, info, warning (or warn), error, critical or off
    #[arg(short = 'l', long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
    log_level: LogLevel,
    /// Write logs to this file (reopened on SIGUSR1) instead of stderr
    #[arg(long, value_name = "PATH")]
    log_path: Option<PathBuf>,
    /// Number of worker threads (default: the number of CPUs; 0 runs one)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    concurrency: Option<u32>,
    /// Base ID, so that several Batons can run on one host
    #[arg(
        long,
        value_name = "ID",
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    base_id: u32,
    /// Choose an unused base ID; not with a non-zero --restart-epoch
    #[arg(long)]
    use_dynamic_base_id: bool,
    /// Write the base ID to this file
    #[arg(long, value_name = "PATH")]
    base_id_path: Option<PathBuf>,
    /// Hot restart epoch: 0 for a fresh start, +1 for each hot restart
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    restart_epoch: u32,
    /// Seconds to drain connections during a hot restart
    #[arg(
        long,
        value_name = "SECONDS",
        allow_negative_numbers = true,
        default_value_t = 600
    )]
    drain_time_s: u64,
    /// Seconds before the parent is shut down during a hot restart
    #[arg(
        long,
        value_name = "SECONDS",
        allow_negative_numbers = true,
        default_value_t = 900
    )]
    parent_shutdown_time_s: u64,
    /// How listeners drain during a hot restart: gradual or immediate
    #[arg(long, value_name = "STRATEGY", default_value = "gradual", value_parser = parse_drain_strategy)]
    drain_strategy: DrainStrategy,
    /// Disable hot restart
    #[arg(long)]
    disable_hot_restart: bool,
    /// Print the hot restart compatibility version and exit
    #[arg(long)]
    hot_restart_version: bool,
    /// On a hot restart with no parent running, start fresh instead of failing
    #[arg(long)]
    skip_hot_restart_on_no_parent: bool,
    /// On a hot restart, do not copy the parent's stats
    #[arg(long)]
    skip_hot_restart_parent_stats: bool,
    /// On a hot restart, drain every connection instead of handing idle HTTP/1.1 keep-alive
    /// connections and idle WebSocket tunnels to the next generation
    #[arg(long)]
    disable_connection_handover: bool,
    /// After a hot restart, seconds the old generation stands by, ready to serve again if the
    /// new one dies (Baton only; 0 exits once drained)
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_ROLLBACK_WINDOW_S)]
    rollback_window_s: u64,
    /// Inside the rollback window, the new generation gives way when the share of requests it
    /// answers 502/503/504 itself for an upstream failure exceeds the old generation's recent
    /// share by more than this many percentage points (Baton only; 100 turns it off)
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_GATE_FAILURE_PERCENT,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    rollback_gate_failure_percent: u8,
    /// Requests the new generation answers before its health gate judges the failure share
    /// (Baton only)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_GATE_MIN_REQUESTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    rollback_gate_min_requests: u64,
    /// Hot restart socket (a leading @ is the abstract namespace)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
    socket_path: String,
    /// Octal permission bits of a filesystem hot restart socket
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_socket_mode)]
    socket_mode: u32,
    /// File backing the region shared between generations (Baton only)
    #[arg(long, value_name = "PATH")]
    hot_restart_file: Option<PathBuf>,
    /// Print the version and exit
    #[arg(long)]
    version: bool,
    /// Local service cluster name (overrides node.cluster)
    #[arg(long, value_name = "NAME")]
    service_cluster: Option<String>,
    /// Local service node name (overrides node.id)
    #[arg(long, value_name = "NAME")]
    service_node: Option<String>,
    /// Local service zone (overrides node.locality.zone)
    #[arg(long, value_name = "ZONE")]
    service_zone: Option<String>,
    /// Capacity of the shared stats region, in stats
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = DEFAULT_MAX_STATS, value_parser = parse_max_stats)]
    max_stats: u64,
    /// Longest stat/object name the shared stats region holds
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = DEFAULT_MAX_OBJ_NAME_LEN, value_parser = parse_max_obj_name_len)]
    max_obj_name_len: u64,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "serve" => Ok(Mode::Serve),
        "validate" => Ok(Mode::Validate),
        "init_only" => {
            Err("init_only is not supported by baton; expected serve or validate".into())
        }
        _ => Err("expected serve or validate".into()),
    }
}

fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    Ok(match s {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warning" | "warn" => LogLevel::Warning,
        "error" => LogLevel::Error,
        "critical" => LogLevel::Critical,
        "off" => LogLevel::Off,
        _ => {
            return Err(
                "expected one of trace, debug, info, warning, warn, error, critical, off".into(),
            )
        }
    })
}

fn parse_drain_strategy(s: &str) -> Result<DrainStrategy, String> {
    match s {
        "gradual" => Ok(DrainStrategy::Gradual),
        "immediate" => Ok(DrainStrategy::Immediate),
        _ => Err("expected gradual or immediate".into()),
    }
}

fn parse_socket_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && !digits.starts_with('+') && mode <= 0o777 => Ok(mode),
        _ => Err("expected octal permission bits between 0 and 777".into()),
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|e| e.to_string())
}

fn parse_max_stats(s: &str) -> Result<u64, String> {
    let n = parse_u64(s)?;
    if n == 0 || n > MAX_MAX_STATS {
        return Err(format!("must be between 1 and {MAX_MAX_STATS}"));
    }
    Ok(n)
}

fn parse_max_obj_name_len(s: &str) -> Result<u64, String> {
    let n = parse_u64(s)?;
    if !(DEFAULT_MAX_OBJ_NAME_LEN..=MAX_MAX_OBJ_NAME_LEN).contains(&n) {
        return Err(format!(
            "must be between {DEFAULT_MAX_OBJ_NAME_LEN} and {MAX_MAX_OBJ_NAME_LEN}"
        ));
    }
    Ok(n)
}

fn error_exit(message: &str) -> Parsed {
    Parsed::Exit {
        code: 1,
        stdout: String::new(),
        stderr: format!("baton: error: {message} (see --help)\n"),
    }
}

fn ok_exit(stdout: String) -> Parsed {
    Parsed::Exit {
        code: 0,
        stdout,
        stderr: String::new(),
    }
}

/// Turns clap's multi-line report into its first line, without clap's `error: ` prefix.
fn one_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    first.strip_suffix(" found").unwrap_or(first).to_owned()
}

/// Parses a full argument vector, program name first (as [`std::env::args_os`] gives it).
/// Pure: it prints nothing and never exits.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Parsed {
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(err) => {
            return match err.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    ok_exit(err.render().to_string())
                }
                _ => error_exit(&one_line(&err)),
            };
        }
    };
    if args.version {
        return ok_exit(version_line());
    }
    if args.use_dynamic_base_id && args.restart_epoch > 0 {
        return error_exit(&format!(
            "cannot use --restart-epoch={} with --use-dynamic-base-id",
            args.restart_epoch
        ));
    }
    if args.disable_hot_restart && args.restart_epoch > 0 {
        return error_exit(&format!(
            "cannot use --restart-epoch={} with --disable-hot-restart",
            args.restart_epoch
        ));
    }
    if args.socket_path.is_empty() || args.socket_path == "@" {
        return error_exit("--socket-path must not be empty");
    }
    let options = Options {
        concurrency: match args.concurrency {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).max(1),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        },
        // Envoy reports 0 for an abstract socket; a `--hot-restart-file` is a filesystem
        // socket and keeps the mode.
        socket_mode: if args.socket_path.starts_with('@') && args.hot_restart_file.is_none() {
            0
        } else {
            args.socket_mode
        },
        config_path: args.config_path,
        config_yaml: args.config_yaml,
        mode: args.mode,
        log_level: args.log_level,
        log_path: args.log_path,
        base_id: args.base_id,
        use_dynamic_base_id: args.use_dynamic_base_id,
        base_id_path: args.base_id_path,
        restart_epoch: args.restart_epoch,
        drain_time: Duration::from_secs(args.drain_time_s),
        parent_shutdown_time: Duration::from_secs(args.parent_shutdown_time_s),
        drain_strategy: args.drain_strategy,
        disable_hot_restart: args.disable_hot_restart,
        skip_hot_restart_on_no_parent: args.skip_hot_restart_on_no_parent,
        skip_hot_restart_parent_stats: args.skip_hot_restart_parent_stats,
        disable_connection_handover: args.disable_connection_handover,
        rollback_window: Duration::from_secs(args.rollback_window_s),
        rollback_gate: GateOptions {
            failure_percent: args.rollback_gate_failure_percent,
            min_requests: args.rollback_gate_min_requests,
        },
        socket_path: args.socket_path,
        hot_restart_file: args.hot_restart_file,
        service_cluster: args.service_cluster,
        service_node: args.service_node,
        service_zone: args.service_zone,
        max_stats: args.max_stats,
        max_obj_name_len: args.max_obj_name_len,
    };
    if args.hot_restart_version {
        return ok_exit(format!("{}\n", options.hot_restart_version()));
    }
    if options.config_path.is_none() && options.config_yaml.is_none() {
        return error_exit(
            "no configuration: give -c/--config-path <path> or --config-yaml <yaml>",
        );
    }
    Parsed::Run(options)
}

#[cfg(test)]
mod tests;
