//! `baton rollback`: hand the service back to the generation standing by in its rollback
//! window. The chain's stats region names its live generations; the newest one is sent SIGUSR2
//! (what `POST /rollback` on its admin interface does, without knowing its address): it asks
//! its parent to serve again, then drains (5 s at most) and exits 1. Refused by the new
//! generation when its parent's window is over.
//!
//! ```text
//! baton rollback --base-id N [--hot-restart-file PATH] [--timeout S]
//! ```
//!
//! Exit codes: 0 the previous generation serves again and the new one has exited; 1 nothing to
//! roll back to, or the new generation did not give way in time; 2 bad command line; 3 nothing
//! runs with this base id.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shm_stats::GenerationInfo;

use super::{parse, stats_backing, EXIT_NOTHING_RUNS};

/// How often the command looks at the region while it waits.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Parser)]
#[command(
    name = "baton rollback",
    about = "Hand the service back to the previous generation while it stands by in its \
             rollback window; the newest generation drains and exits",
    disable_version_flag = true
)]
struct RollbackArgs {
    /// Base ID of the chain
    #[arg(long, value_name = "ID", default_value_t = 0)]
    base_id: u32,
    /// The chain's --hot-restart-file (to find its stats region)
    #[arg(long, value_name = "PATH")]
    hot_restart_file: Option<PathBuf>,
    /// Seconds to wait for the newest generation to give way and exit
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    timeout: u64,
}

/// `baton rollback` with the arguments after `rollback`.
pub fn main(args: &[OsString]) -> ExitCode {
    let args: RollbackArgs = match parse("baton rollback", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let backing = stats_backing(args.base_id, args.hot_restart_file.as_ref());
    let live = match live_generations(&backing) {
        Ok(Some(live)) => live,
        Ok(None) => {
            eprintln!(
                "baton rollback: nothing runs with base id {} (no stats region)",
                args.base_id
            );
            return ExitCode::from(EXIT_NOTHING_RUNS);
        }
        Err(e) => {
            eprintln!("baton rollback: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (newest, previous) = match live.as_slice() {
        [.., previous, newest] => (newest.clone(), previous.clone()),
        [only] => {
            eprintln!(
                "baton rollback: error: nothing to roll back to: epoch {} (pid {}) is the only \
                 generation running (its predecessor has exited: no rollback window is open)",
                only.epoch, only.pid
            );
            return ExitCode::FAILURE;
        }
        [] => {
            eprintln!("baton rollback: nothing runs with base id {}", args.base_id);
            return ExitCode::from(EXIT_NOTHING_RUNS);
        }
    };
    match give_way(
        &backing,
        &newest,
        &previous,
        Duration::from_secs(args.timeout),
    ) {
        Ok(()) => {
            println!(
                "baton rollback: rolled back: epoch {} (pid {}) serves again; epoch {} (pid {}) \
                 gave way and exited",
                previous.epoch, previous.pid, newest.epoch, newest.pid
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("baton rollback: error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The chain's live generations, oldest first; `None` without a region.
fn live_generations(
    backing: &shm_stats::Backing,
) -> Result<Option<Vec<GenerationInfo>>, shm_stats::Error> {
    let view = match shm_stats::RegionView::open(backing) {
        Ok(v) => v,
        Err(shm_stats::Error::NoRegion { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut live: Vec<GenerationInfo> = view
        .read()
        .generations
        .into_iter()
        .filter(|g| g.live)
        .collect();
    live.sort_by_key(|g| g.seq);
    Ok(Some(live))
}

/// Signal `newest` and wait until it has exited while `previous` still runs.
fn give_way(
    backing: &shm_stats::Backing,
    newest: &GenerationInfo,
    previous: &GenerationInfo,
    within: Duration,
) -> Result<(), String> {
    let pid = i32::try_from(newest.pid)
        .map(Pid::from_raw)
        .map_err(|_| format!("not a process id: {}", newest.pid))?;
    kill(pid, Signal::SIGUSR2).map_err(|e| {
        format!(
            "could not signal epoch {} (pid {}): {e}",
            newest.epoch, newest.pid
        )
    })?;
    let deadline = Instant::now() + within;
    loop {
        std::thread::sleep(POLL);
        let live = live_generations(backing)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let alive = |g: &GenerationInfo| live.iter().any(|l| l.seq == g.seq);
        if !alive(previous) {
            return Err(format!(
                "epoch {} (pid {}) exited meanwhile (its rollback window ended): epoch {} \
                 serves on",
                previous.epoch, previous.pid, newest.epoch
            ));
        }
        if !alive(newest) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "epoch {} (pid {}) did not give way within {} s: it refuses when its \
                 predecessor's rollback window is over (see its log)",
                newest.epoch,
                newest.pid,
                within.as_secs()
            ));
        }
    }
}
