//! `baton stats`: print the live stats of a running chain from outside it, by mapping its shared
//! region read-only. It takes no lock and writes nothing, so it never disturbs the generations
//! (and works during a hot restart, when several generations are attached).
//!
//! ```text
//! baton stats --base-id N [--hot-restart-file PATH] [--format text|json] [--filter REGEX]
//!             [--watch SECONDS]
//! ```
//!
//! * `text` (default): Envoy's admin `/stats` text form — `name: value`, one per line, in name
//!   order, histograms last as `name: P0(v,v) P25(v,v) ...`. On a quiet chain it equals the
//!   admin's `GET /stats` body.
//! * `json`: Envoy's `/stats?format=json` object, plus `"generations"` (each attached
//!   generation: epoch, pid, liveness, phase) and, for gauges, `"shares"` (each live
//!   generation's part of the value).
//! * `prometheus`: Envoy's Prometheus text, as the admin's `/stats/prometheus` (one writer for
//!   both).
//! * `--watch SECONDS` prints again every SECONDS (a blank line between rounds) until
//!   interrupted.
//!
//! Exit codes (each with one line on stderr):
//!
//! | code | meaning                                                              |
//! |------|----------------------------------------------------------------------|
//! | 0    | printed                                                              |
//! | 1    | any other error (I/O)                                                |
//! | 2    | bad command line (unknown flag, bad regex, unsupported format)       |
//! | 3    | no region: no chain runs with this base id                           |
//! | 4    | the region has another layout version (a different Baton binary)     |
//! | 5    | permission denied (the region belongs to another user)               |
//! | 6    | corrupt region: the file is not a Baton stats region (or is damaged) |

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use regex::Regex;
use serde_json::{json, Value as Json};
use shm_stats::{Backing, Error, RegionReport, RegionView, Value};

pub const EXIT_OTHER: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NO_REGION: u8 = 3;
pub const EXIT_LAYOUT: u8 = 4;
pub const EXIT_PERMISSION: u8 = 5;
pub const EXIT_CORRUPT: u8 = 6;

/// The quantiles Envoy's admin prints for a histogram (as `proxy_core::admin`).
const QUANTILES: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

#[derive(Debug, Parser)]
#[command(
    name = "baton stats",
    about = "Print the stats of a running Baton chain from its shared memory region",
    disable_version_flag = true,
    after_help = "Exit codes: 0 printed, 1 other error (I/O), 2 bad command line, 3 no region \
                  (no chain runs with this base id), 4 another layout version (a different Baton \
                  binary), 5 permission denied, 6 corrupt region (not a Baton stats region)"
)]
struct Args {
    /// Base ID of the chain (as given to `baton --base-id`)
    #[arg(long, value_name = "ID")]
    base_id: u32,
    /// The chain's region file, when it was started with --hot-restart-file
    #[arg(long, value_name = "PATH")]
    hot_restart_file: Option<std::path::PathBuf>,
    /// Output format: text or json
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    format: String,
    /// Only stats whose name this regex matches
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,
    /// Print again every SECONDS until interrupted
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Prometheus,
}

/// Run `baton stats` with the arguments after `stats`.
pub fn main(args: &[OsString]) -> ExitCode {
    let argv = std::iter::once(OsString::from("baton stats")).chain(args.iter().cloned());
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let format = match args.format.as_str() {
        "text" => Format::Text,
        "json" => Format::Json,
        "prometheus" => Format::Prometheus,
        other => {
            eprintln!(
                "baton stats: error: unknown --format {other:?}; expected text, json or prometheus"
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let filter = match args.filter.as_deref().map(Regex::new).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("baton stats: error: could not compile --filter: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let backing = args
        .hot_restart_file
        .clone()
        .map_or_else(|| Backing::for_base_id(args.base_id), Backing::File);
    loop {
        let report = match RegionView::open(&backing) {
            Ok(view) => view.read(),
            Err(e) => {
                eprintln!("baton stats: error: {e}");
                return ExitCode::from(exit_code(&e));
            }
        };
        let out = match format {
            Format::Text => {
                proxy_core::admin::render_stats_text(&report.snapshot(), filter.clone())
            }
            Format::Json => render_json(&report, filter.as_ref()),
            Format::Prometheus => {
                proxy_core::admin::render_prometheus(&report.snapshot(), filter.clone())
            }
        };
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (a closed pipe): nothing more to do.
            return ExitCode::SUCCESS;
        }
        drop(stdout);
        match args.watch {
            Some(secs) => {
                std::thread::sleep(Duration::from_secs(secs.max(1)));
                println!();
            }
            None => return ExitCode::SUCCESS,
        }
    }
}

/// The documented exit code of a region error.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::NoRegion { .. } => EXIT_NO_REGION,
        Error::Version { .. } => EXIT_LAYOUT,
        Error::PermissionDenied { .. } => EXIT_PERMISSION,
        Error::Corrupt { .. } => EXIT_CORRUPT,
        _ => EXIT_OTHER,
    }
}

fn selected<'a>(
    report: &'a RegionReport,
    filter: Option<&'a Regex>,
) -> impl Iterator<Item = &'a shm_stats::StatRecord> + 'a {
    report
        .stats
        .iter()
        .filter(move |r| filter.is_none_or(|f| f.is_match(&r.name)))
}

/// Envoy's `/stats?format=json` object plus the generations and gauge shares.
fn render_json(report: &RegionReport, filter: Option<&Regex>) -> String {
    let mut stats = Vec::new();
    let mut computed = Vec::new();
    for r in selected(report, filter) {
        match &r.value {
            Value::Counter(v) => stats.push(json!({ "name": r.name, "value": v })),
            Value::Gauge(v) => {
                let shares: Vec<Json> = r
                    .shares
                    .iter()
                    .map(|(epoch, v)| json!({ "epoch": epoch, "value": v }))
                    .collect();
                stats.push(json!({ "name": r.name, "value": v, "shares": shares }));
            }
            Value::Histogram(h) => {
                let values: Vec<Json> = QUANTILES
                    .iter()
                    .map(|p| {
                        let v = h.quantile(p / 100.0);
                        json!({ "interval": v, "cumulative": v })
                    })
                    .collect();
                computed.push(json!({ "name": r.name, "values": values }));
            }
        }
    }
    if !computed.is_empty() {
        stats.push(json!({
            "histograms": { "supported_quantiles": QUANTILES, "computed_quantiles": computed }
        }));
    }
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let generations: Vec<Json> = report
        .generations
        .iter()
        .map(|g| {
            json!({
                "epoch": g.epoch,
                "pid": g.pid,
                "live": g.live,
                "phase": g.phase,
                "attached_unix_s": unix(g.attached),
                "seq": g.seq,
            })
        })
        .collect();
    let mut body = json!({
        "stats": stats,
        "generations": generations,
        "region": {
            "path": report.path,
            "chain_created_unix_s": unix(report.chain_created),
            "max_stats": report.max_stats,
            "max_obj_name_len": report.max_obj_name_len,
            "used": report.used,
        },
    })
    .to_string();
    body.push('\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_errors_map_to_documented_exit_codes() {
        let no = Error::NoRegion {
            path: "/dev/shm/baton_1".into(),
        };
        let version = Error::Version {
            path: "/dev/shm/baton_1".into(),
            found: 2,
            expected: 1,
        };
        let denied = Error::PermissionDenied {
            path: "/dev/shm/baton_1".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(exit_code(&no), EXIT_NO_REGION);
        assert_eq!(exit_code(&version), EXIT_LAYOUT);
        assert_eq!(exit_code(&denied), EXIT_PERMISSION);
        let corrupt = Error::Corrupt {
            path: "/dev/shm/baton_1".into(),
            what: "bad magic".into(),
        };
        assert_eq!(exit_code(&corrupt), EXIT_CORRUPT);
    }
}
