//! baton: the binary. Parses the command line and the Envoy bootstrap, binds (or inherits) listen
//! sockets, starts the data plane and the admin interface, maps signals, and runs the restart
//! sequence.
#![forbid(unsafe_code)]

mod cli;
mod config;
mod listen;
mod logging;
mod serve;

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args_os()) {
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
    let loaded = match config::load(opts.config_path.as_deref(), opts.config_yaml.as_deref()) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("baton: error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
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
