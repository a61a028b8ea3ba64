//! baton: the binary. Parses the command line and the Envoy bootstrap, binds (or inherits) listen
//! sockets, starts the data plane and the admin interface, maps signals, and runs the restart
//! sequence. `baton stats ...` (see `stats_cmd`) inspects a running chain instead; `baton
//! restarter ...` (see `restarter`) supervises a chain, and `baton reload`/`baton status` (see
//! `ctl`) talk to that restarter.
//!
//! No `unsafe` code but in `restart::successor` (registering a pidfd with tokio's reactor).
#![deny(unsafe_code)]

mod cli;
mod config;
mod ctl;
mod listen;
mod logging;
mod restart;
mod restarter;
mod serve;
mod signals;
mod stats_cmd;

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "stats") {
        return stats_cmd::main(&args[2..]);
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some("restarter") => return restarter::main(&args[2..], args.first()),
        Some("reload") => return ctl::reload_main(&args[2..]),
        Some("status") => return ctl::status_main(&args[2..]),
        Some("rollback") => return ctl::rollback::main(&args[2..]),
        _ => {}
    }
    let opts = match cli::parse(args) {
        cli::Parsed::Run(opts) => opts,
        cli::Parsed::Exit {
            code,
            stdout,
            stderr,
        } => {
            let _ = std::io::stdout().write_all(stdout.as_bytes());
            let _ = std::io::stderr().write_all(stderr.as_bytes());
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    let mut loaded = match config::load(opts.config_path.as_deref(), opts.config_yaml.as_deref()) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("baton: error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    config::apply_service_cluster(&mut loaded.bootstrap, opts.service_cluster.as_deref());
    if opts.mode == cli::Mode::Validate {
        let what = opts
            .config_path
            .as_ref()
            .map_or_else(|| "--config-yaml".to_owned(), |p| p.display().to_string());
        println!("configuration '{what}' OK");
        return ExitCode::SUCCESS;
    }
    let log = match logging::init(opts.log_level, opts.log_path.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("baton: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match serve::run(opts, loaded, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("baton: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
