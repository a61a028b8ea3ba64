//! `baton restarter`: the service's main process for runit, monit, systemd and friends. It runs
//! the chain's generations as its children and owns when a restart happens.
//!
//! ```text
//! baton restarter [--term-timeout S] [--start-timeout S] [--socket-path P] [--binary PATH]
//!                 -- <baton arguments>
//! ```
//!
//! * Starts epoch 0 (`--restart-epoch 0`, `RESTART_EPOCH=0`); SIGHUP or `baton reload` starts
//!   the next epoch. A generation *serves* once it reports `READY=1` on the datagram socket the
//!   restarter names in its environment (sent when its phase becomes `serving`); its stderr is
//!   forwarded to the restarter's own stderr through a pipe, and kept for failure reports.
//! * A new epoch that fails (exits before serving, or does not serve within `--start-timeout`)
//!   leaves the serving one alone: the failure is logged with the child's error lines, counted,
//!   and the next attempt reuses its epoch number. Restart requests that arrive while one is in
//!   progress are queued and coalesced into one more restart, never raced.
//! * SIGTERM/SIGINT: SIGTERM to every generation, SIGKILL by pid to those left after
//!   `--term-timeout`. SIGUSR1 is forwarded to every generation (log reopening).
//! * `--use-dynamic-base-id` (with `--base-id-path`): later epochs get `--base-id <chosen id>`.
//! * Under systemd (`$NOTIFY_SOCKET`): `READY=1`, `RELOADING=1` + `MONOTONIC_USEC`, `STATUS=`,
//!   `STOPPING=1`, `MAINPID=` (the restarter's pid, stable over restarts).
//! * Exits once no generation is left: 0 if the chain ended cleanly (every serving generation
//!   exited with status 0), 1 otherwise, 2 for a bad command line.

mod control;
mod generation;
mod notify;
mod supervisor;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub use control::{address as control_address, call as control_call, ControlError, Request};

use crate::cli;

pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "baton restarter",
    about = "Run a hot-restartable Baton chain in the foreground: SIGHUP or `baton reload` \
             starts the next generation, SIGTERM ends them all",
    disable_version_flag = true
)]
struct Args {
    /// On SIGTERM/SIGINT, seconds the generations get to drain before SIGKILL
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    term_timeout: u64,
    /// Seconds a new generation gets to serve before it is killed and the restart fails
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    start_timeout: u64,
    /// Control socket for `baton reload`/`baton status` (a leading @ is the abstract
    /// namespace); default @baton_restarter_<base-id>
    #[arg(long, value_name = "PATH")]
    socket_path: Option<String>,
    /// The baton binary to run for each generation (default: the path this one was started by,
    /// looked up again at each restart, so replacing the file upgrades the next generation)
    #[arg(long, value_name = "PATH")]
    binary: Option<OsString>,
    /// The arguments of every generation (`--restart-epoch` is added by the restarter)
    #[arg(last = true, required = true, value_name = "BATON ARGS")]
    baton_args: Vec<OsString>,
}

/// What the supervisor needs to know about the chain, from the restarter's and the
/// generations' command lines.
#[derive(Debug, Clone)]
pub struct Settings {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub term_timeout: Duration,
    pub start_timeout: Duration,
    pub socket_path: Option<String>,
    /// `None` until epoch 0 has chosen one with `--use-dynamic-base-id`.
    pub base_id: Option<u32>,
    /// `--base-id-path` when `--use-dynamic-base-id` is on.
    pub dynamic_base_id_path: Option<PathBuf>,
    pub hot_restart_file: Option<PathBuf>,
    /// How long a draining generation may live (`--parent-shutdown-time-s`).
    pub parent_shutdown_time: Duration,
}

/// Run `baton restarter` with the arguments after `restarter`.
pub fn main(args: &[OsString], argv0: Option<&OsString>) -> ExitCode {
    let argv = std::iter::once(OsString::from("baton restarter")).chain(args.iter().cloned());
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let settings = match settings(args, argv0) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("baton restarter: error: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = crate::logging::init(cli::LogLevel::Info, None) {
        eprintln!("baton restarter: error: {e:#}");
        return ExitCode::FAILURE;
    }
    supervisor::run(settings)
}

fn settings(args: Args, argv0: Option<&OsString>) -> Result<Settings, String> {
    let given_epoch = args.baton_args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--restart-epoch" || a.starts_with("--restart-epoch=")
    });
    if given_epoch {
        return Err(
            "do not pass --restart-epoch: the restarter sets it for each generation".into(),
        );
    }
    let full = std::iter::once(OsString::from("baton"))
        .chain(args.baton_args.iter().cloned())
        .chain([OsString::from("--restart-epoch"), OsString::from("0")]);
    let opts = match cli::parse(full) {
        cli::Parsed::Run(o) => o,
        cli::Parsed::Exit { code: 0, .. } => {
            return Err("the baton arguments must start a server (not --help or --version)".into())
        }
        cli::Parsed::Exit { stderr, .. } => {
            return Err(format!(
                "bad baton arguments: {}",
                stderr.trim().trim_start_matches("baton: error: ")
            ))
        }
    };
    if opts.disable_hot_restart {
        return Err("--disable-hot-restart cannot be used with the restarter".into());
    }
    if opts.mode != cli::Mode::Serve {
        return Err("the baton arguments must use --mode serve".into());
    }
    let dynamic_base_id_path =
        if opts.use_dynamic_base_id {
            match &opts.base_id_path {
                Some(p) => Some(p.clone()),
                None => return Err(
                    "--use-dynamic-base-id needs --base-id-path: the restarter reads the chosen \
                     id there to pass --base-id to later epochs"
                        .into(),
                ),
            }
        } else {
            None
        };
    let program = match (args.binary, argv0) {
        (Some(b), _) => b,
        (None, Some(a)) if !a.is_empty() => a.clone(),
        _ => std::env::current_exe()
            .map_err(|e| format!("could not find the baton binary: {e}"))?
            .into_os_string(),
    };
    Ok(Settings {
        program,
        args: args.baton_args,
        term_timeout: Duration::from_secs(args.term_timeout),
        start_timeout: Duration::from_secs(args.start_timeout.max(1)),
        socket_path: args.socket_path,
        base_id: (!opts.use_dynamic_base_id).then_some(opts.base_id),
        dynamic_base_id_path,
        hot_restart_file: opts.hot_restart_file,
        parent_shutdown_time: opts.parent_shutdown_time,
    })
}

impl Settings {
    /// The arguments of generation `epoch`: with a dynamic base id, later epochs name the id
    /// epoch 0 chose instead of asking for a new one.
    pub fn args_for(&self, epoch: u32) -> Result<Vec<OsString>, String> {
        if epoch == 0 || self.dynamic_base_id_path.is_none() {
            return Ok(self.args.clone());
        }
        let Some(id) = self.base_id else {
            return Err(
                "the base id epoch 0 chose is not known (could not read --base-id-path)".into(),
            );
        };
        let mut out = Vec::with_capacity(self.args.len() + 2);
        let mut skip_value = false;
        for a in &self.args {
            if skip_value {
                skip_value = false;
                continue;
            }
            let s = a.to_string_lossy();
            if s == "--use-dynamic-base-id" || s.starts_with("--base-id=") {
                continue;
            }
            if s == "--base-id" {
                skip_value = true;
                continue;
            }
            out.push(a.clone());
        }
        out.push("--base-id".into());
        out.push(id.to_string().into());
        Ok(out)
    }

    /// The chain's stats region.
    pub fn backing(&self) -> Option<shm_stats::Backing> {
        match &self.hot_restart_file {
            Some(file) => {
                let mut path = file.clone().into_os_string();
                path.push(".stats");
                Some(shm_stats::Backing::File(path.into()))
            }
            None => self.base_id.map(shm_stats::Backing::for_base_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let argv = std::iter::once("baton restarter").chain(args.iter().copied());
        let a = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        settings(a, Some(&OsString::from("/usr/bin/baton")))
    }

    #[test]
    fn command_lines() {
        let s = parse(&[
            "--term-timeout",
            "5",
            "--",
            "-c",
            "x.yaml",
            "--base-id",
            "7",
        ])
        .expect("valid");
        assert_eq!(s.program, "/usr/bin/baton");
        assert_eq!(s.base_id, Some(7));
        assert_eq!(s.term_timeout, Duration::from_secs(5));
        assert_eq!(s.args_for(3).expect("args"), s.args);
        assert!(parse(&["--", "-c", "x.yaml", "--restart-epoch", "1"]).is_err());
        assert!(parse(&["--", "-c", "x.yaml", "--disable-hot-restart"]).is_err());
        assert!(parse(&["--", "-c", "x.yaml", "--use-dynamic-base-id"]).is_err());
        assert!(parse(&["-c", "x.yaml"]).is_err());
        assert!(parse(&["--", "--no-such-flag"]).is_err());
    }

    #[test]
    fn dynamic_base_id_is_pinned_for_later_epochs() {
        let mut s = parse(&[
            "--",
            "-c",
            "x.yaml",
            "--use-dynamic-base-id",
            "--base-id",
            "100",
            "--base-id-path",
            "/tmp/id",
        ])
        .expect("valid");
        assert_eq!(s.base_id, None);
        assert!(s.args_for(1).is_err());
        assert_eq!(s.args_for(0).expect("epoch 0"), s.args);
        s.base_id = Some(123);
        let later: Vec<String> = s
            .args_for(1)
            .expect("epoch 1")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            later,
            [
                "-c",
                "x.yaml",
                "--base-id-path",
                "/tmp/id",
                "--base-id",
                "123"
            ]
        );
    }
}
