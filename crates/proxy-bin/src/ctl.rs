//! `baton reload` and `baton status` (and `baton rollback`, see [`rollback`]): clients of a running `baton restarter` (its control
//! socket; see `restarter::control`), with `status` falling back to the chain's stats region
//! when no restarter runs (a chain started by hand or by another supervisor).
//!
//! ```text
//! baton reload --base-id N [--socket-path P] [--timeout S]
//! baton status --base-id N [--socket-path P] [--hot-restart-file PATH] [--format text|json]
//! ```
//!
//! `reload` exit codes: 0 the new generation serves; 1 it failed (the reason on stderr), no
//! answer in time, or no restarter; 2 bad command line.
//! `status` exit codes: 0 the chain serves; 1 generations run but none serves (or an error);
//! 2 bad command line; 3 nothing runs with this base id.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use serde_json::{json, Value};

use crate::restarter::{control_address, control_call, Request};

pub mod rollback;

const EXIT_NOT_SERVING: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOTHING_RUNS: u8 = 3;
/// How long `status` waits for the restarter's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "baton reload",
    about = "Ask the chain's restarter for a hot restart and wait until the new generation serves",
    disable_version_flag = true
)]
struct ReloadArgs {
    /// Base ID of the chain (as given to `baton restarter -- --base-id`)
    #[arg(long, value_name = "ID", default_value_t = 0)]
    base_id: u32,
    /// The restarter's control socket, when it was started with --socket-path
    #[arg(long, value_name = "PATH")]
    socket_path: Option<String>,
    /// Seconds to wait for the new generation to serve or fail
    #[arg(long, value_name = "SECONDS", default_value_t = 75)]
    timeout: u64,
}

#[derive(Debug, Parser)]
#[command(
    name = "baton status",
    about = "Print the generations of a running Baton chain",
    disable_version_flag = true
)]
struct StatusArgs {
    /// Base ID of the chain
    #[arg(long, value_name = "ID", default_value_t = 0)]
    base_id: u32,
    /// The restarter's control socket, when it was started with --socket-path
    #[arg(long, value_name = "PATH")]
    socket_path: Option<String>,
    /// The chain's --hot-restart-file (to find its stats region without a restarter)
    #[arg(long, value_name = "PATH")]
    hot_restart_file: Option<std::path::PathBuf>,
    /// text or json
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    format: String,
}

fn parse<T: Parser>(name: &str, args: &[OsString]) -> Result<T, ExitCode> {
    let argv = std::iter::once(OsString::from(name)).chain(args.iter().cloned());
    T::try_parse_from(argv).map_err(|e| {
        let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
        let _ = e.print();
        ExitCode::from(code)
    })
}

/// `baton reload` with the arguments after `reload`.
pub fn reload_main(args: &[OsString]) -> ExitCode {
    let args: ReloadArgs = match parse("baton reload", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let address = control_address(args.socket_path.as_deref(), args.base_id);
    let timeout = Duration::from_secs(args.timeout);
    let reply = match control_call(&address, &Request::Reload, timeout) {
        Ok(r) => r,
        Err(crate::restarter::ControlError::Exchange { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            eprintln!(
                "baton reload: error: the new generation did not serve within {} s (the \
                 restart may still be in progress; see `baton status --base-id {}`)",
                args.timeout, args.base_id
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("baton reload: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if reply["ok"] == true {
        println!(
            "baton reload: epoch {} (pid {}) is serving",
            reply["epoch"], reply["pid"]
        );
        ExitCode::SUCCESS
    } else {
        let reason = reply["error"].as_str().unwrap_or("unknown reason");
        eprintln!("baton reload: error: {reason}");
        ExitCode::FAILURE
    }
}

/// `baton status` with the arguments after `status`.
pub fn status_main(args: &[OsString]) -> ExitCode {
    let args: StatusArgs = match parse("baton status", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let json_out = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            eprintln!("baton status: error: unknown --format {other:?}; expected text or json");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let address = control_address(args.socket_path.as_deref(), args.base_id);
    let doc = match control_call(&address, &Request::Status, STATUS_TIMEOUT) {
        Ok(doc) => doc,
        Err(e) if e.is_no_peer() => match from_region(&args) {
            Ok(Some(doc)) => doc,
            Ok(None) => {
                eprintln!(
                    "baton status: nothing runs with base id {} (no restarter at {address}, no \
                     stats region)",
                    args.base_id
                );
                return ExitCode::from(EXIT_NOTHING_RUNS);
            }
            Err(e) => {
                eprintln!("baton status: error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("baton status: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json_out {
        println!("{doc}");
    } else {
        print!("{}", render_text(&doc, SystemTime::now()));
    }
    if doc["serving"] == true {
        ExitCode::SUCCESS
    } else if doc["generations"].as_array().is_some_and(Vec::is_empty) {
        ExitCode::from(EXIT_NOTHING_RUNS)
    } else {
        ExitCode::from(EXIT_NOT_SERVING)
    }
}

/// Without a restarter: the live generations of the chain's stats region (pid, epoch, when it
/// attached, connections). `None` when there is no region.
fn from_region(args: &StatusArgs) -> Result<Option<Value>, shm_stats::Error> {
    let backing = stats_backing(args.base_id, args.hot_restart_file.as_ref());
    let report = match shm_stats::RegionView::open(&backing) {
        Ok(v) => v.read(),
        Err(shm_stats::Error::NoRegion { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut conns = std::collections::HashMap::<u32, i64>::new();
    for stat in &report.stats {
        if stat.name.starts_with("listener.") && stat.name.ends_with(".downstream_cx_active") {
            for (epoch, v) in &stat.shares {
                *conns.entry(*epoch).or_insert(0) += v;
            }
        }
    }
    let live: Vec<_> = report.generations.iter().filter(|g| g.live).collect();
    let newest = live.iter().map(|g| g.seq).max();
    let generations: Vec<Value> = live
        .iter()
        .map(|g| {
            let at = g
                .attached
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
            // Without the restarter the phase is inferred: the newest attached generation
            // serves, older ones drain.
            let phase = if Some(g.seq) == newest {
                "serving"
            } else {
                "draining"
            };
            json!({
                "epoch": g.epoch,
                "pid": g.pid,
                "phase": phase,
                "phases": [{"phase": "attached", "at_unix_ms": at}],
                "connections_left": conns.get(&g.epoch),
                "drain": null,
                "last_failure": null,
            })
        })
        .collect();
    Ok(Some(json!({
        "source": "stats_region",
        "serving": !generations.is_empty(),
        "restarter": null,
        "generations": generations,
    })))
}

/// Where a chain's stats region lives: beside its `--hot-restart-file`, or named by its base id.
fn stats_backing(
    base_id: u32,
    hot_restart_file: Option<&std::path::PathBuf>,
) -> shm_stats::Backing {
    match hot_restart_file {
        Some(file) => {
            let mut p = file.clone().into_os_string();
            p.push(".stats");
            shm_stats::Backing::File(p.into())
        }
        None => shm_stats::Backing::for_base_id(base_id),
    }
}

fn ago(now_ms: u64, at: &Value) -> String {
    match at.as_u64() {
        Some(at) if at <= now_ms => format!("{:.1}s ago", (now_ms - at) as f64 / 1000.0),
        Some(at) => format!("in {:.1}s", (at - now_ms) as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

/// The status document as a table, times relative to `now`.
pub fn render_text(doc: &Value, now: SystemTime) -> String {
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let mut out = String::new();
    let r = &doc["restarter"];
    if r.is_object() {
        let _ = writeln!(
            out,
            "restarter pid {}, base id {}: {}; restarts succeeded {}, failed {}{}",
            r["pid"],
            r["base_id"],
            r["state"].as_str().unwrap_or("?"),
            r["restarts"]["succeeded"],
            r["restarts"]["failed"],
            if r["restart_queued"] == true {
                "; a restart is queued"
            } else {
                ""
            }
        );
        let f = &r["last_failure"];
        if f.is_object() {
            let _ = writeln!(
                out,
                "last failure (epoch {}, {}): {}",
                f["epoch"],
                ago(now_ms, &f["at_unix_ms"]),
                f["reason"].as_str().unwrap_or("?")
            );
        }
    } else {
        let _ = writeln!(
            out,
            "no restarter; generations from the stats region ({})",
            if doc["serving"] == true {
                "serving"
            } else {
                "not serving"
            }
        );
    }
    let _ = writeln!(
        out,
        "{:<6} {:<8} {:<10} {:<14} {:<12} DRAIN DEADLINE",
        "EPOCH", "PID", "PHASE", "SINCE", "CONNECTIONS"
    );
    for g in doc["generations"].as_array().into_iter().flatten() {
        let since = g["phases"]
            .as_array()
            .and_then(|p| p.last())
            .map_or_else(|| "-".to_owned(), |p| ago(now_ms, &p["at_unix_ms"]));
        let conns = g["connections_left"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let deadline = ago(now_ms, &g["drain"]["deadline_unix_ms"]);
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<10} {:<14} {:<12} {}",
            g["epoch"].to_string(),
            g["pid"].to_string(),
            g["phase"].as_str().unwrap_or("?"),
            since,
            conns,
            deadline
        );
        let history: Vec<String> = g["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} {}",
                    p["phase"].as_str().unwrap_or("?"),
                    ago(now_ms, &p["at_unix_ms"])
                )
            })
            .collect();
        if history.len() > 1 {
            let _ = writeln!(out, "       phases: {}", history.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let doc = json!({
            "serving": true,
            "restarter": {"pid": 10, "base_id": 7, "state": "serving", "restart_queued": false,
                "restarts": {"succeeded": 2, "failed": 1},
                "last_failure": {"epoch": 3, "reason": "bad config", "at_unix_ms": 990_000}},
            "generations": [
                {"epoch": 2, "pid": 22, "phase": "draining",
                 "phases": [{"phase": "starting", "at_unix_ms": 900_000},
                            {"phase": "serving", "at_unix_ms": 901_000},
                            {"phase": "draining", "at_unix_ms": 995_000}],
                 "connections_left": 4,
                 "drain": {"started_unix_ms": 995_000, "deadline_unix_ms": 1_005_000}},
                {"epoch": 3, "pid": 33, "phase": "serving",
                 "phases": [{"phase": "serving", "at_unix_ms": 995_000}],
                 "connections_left": null, "drain": null},
            ]
        });
        let text = render_text(&doc, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "restarter pid 10, base id 7: serving; restarts succeeded 2, failed 1"
        );
        assert_eq!(lines[1], "last failure (epoch 3, 10.0s ago): bad config");
        assert!(
            lines[3].starts_with("2      22       draining   5.0s ago"),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("4            in 5.0s"), "{}", lines[3]);
        assert!(lines[4].contains("serving 99.0s ago"), "{}", lines[4]);
        assert!(
            lines[5].starts_with("3      33       serving"),
            "{}",
            lines[5]
        );
    }
}
