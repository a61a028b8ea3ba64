//! baton: the binary. Parses the command line and the Envoy bootstrap, binds (or inherits) listen
//! sockets, starts the data plane and the admin interface, maps signals, and runs the restart
//! sequence.
#![forbid(unsafe_code)]

mod config;

fn main() {
    println!("baton {}", env!("CARGO_PKG_VERSION"));
}
