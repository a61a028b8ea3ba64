//! proxy-core: Baton's data plane — listeners' connections, HTTP/1.1 and HTTP/2 proxying with
//! hyper (and, for the common bodiless HTTP/1.1 request, Baton's own server loop and client:
//! `h1_server`, `h1_client`), routing, clusters and load balancing, upstream connection pools,
//! access logs, and the admin interface.
//!
//! It is handed listen sockets that are already bound (fresh or inherited from a previous
//! generation), a validated [`config::Bootstrap`], a stats [`shm_stats::Store`] and a
//! [`drain::Watch`]; it never binds a listen socket of its own choosing, never reads signals and
//! never decides when a generation starts or stops — that is `proxy-bin`'s.
#![forbid(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod admin;
pub mod body;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod error;
pub mod h1_client;
mod h1_server;
pub mod h2_drain;
pub mod handover;
mod header_pool;
pub mod headers;
pub mod io;
pub mod lifecycle;
pub mod proxy;
pub mod router;
pub mod server;
mod slot_pool;
pub mod stats;
pub mod tls;
pub mod tunnel;
pub mod upstream;

/// Runs hyper's background tasks (HTTP/2 streams, client connections) on the current worker
/// thread: nothing hyper spawns needs to be `Send`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
