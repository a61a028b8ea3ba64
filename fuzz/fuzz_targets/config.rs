//! The configuration parser: proxy-bin's `config` module (a binary crate's module, so compiled
//! in here by path), fed a bootstrap as YAML text the way `--config-yaml` is. Every input is
//! either a configuration or errors that name a field path; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/proxy-bin/src/config/mod.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::load(None, Some(text));
});
