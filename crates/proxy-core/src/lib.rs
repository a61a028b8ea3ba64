//! proxy-core: Baton's data plane — listeners' connections, HTTP/1.1 and HTTP/2 proxying with
//! hyper (and, for the common bodiless HTTP/1.1 request, Baton's own server loop and client),
//! routing, clusters and load balancing, upstream connection pools, access logs, and the admin
//! interface.
//!
//! It is handed listen sockets that are already bound (fresh or inherited from a previous
//! generation), a validated [`config::Bootstrap`], a stats [`shm_stats::Store`] and a
//! [`drain::Watch`]; it never binds a listen socket of its own choosing, never reads signals and
//! never decides when a generation starts or stops — that is `proxy-bin`'s.
//!
//! Modules form layers; each imports only from layers below it (no cycle):
//!
//! - leaves: [`config`] (the validated configuration), [`chain`] (choosing a listener's filter
//!   chain), [`tls_inspector`] (peeking a ClientHello), [`proxy_protocol`] (reading a PROXY header), [`http_inspector`], [`error`], [`flags`] (Envoy's response
//!   flags), [`host_health`] (a host's health flags), [`stats`], [`deadline`], [`headers`] (forwarding fields, hop-by-hop),
//!   [`http1`] (the HTTP/1.1 codec, pure over bytes), [`io`] (a downstream socket and its
//!   sniffing), [`tls`], [`router`], [`cluster`], [`handover`], [`h2_drain`], [`tunnel`],
//!   [`access_log`] and [`access`] (formats and sinks), [`admin`];
//! - upstream: [`client`] (Baton's own HTTP/1.1 client: a connection and its response body),
//!   [`body`] (the bodies a request and a response travel in), [`health`] (active health
//!   checking, once per process), [`outlier`] (outlier detection's ejections), [`upstream`] (per-worker pools, connects, hyper's clients);
//! - [`context`]: the shared types of a listener, a worker and a connection;
//! - [`request`]: one request — routing, local replies, rewrites, forwarding with retries, the
//!   upgrade to a tunnel, and its accounting;
//! - [`downstream`]: one connection from accept or hand-over arrival to close — TLS, sniffing,
//!   Baton's own HTTP/1.1 loop, hyper's HTTP/1.1 and HTTP/2 sessions, lingering close;
//! - [`tcp_proxy`]: the `tcp_proxy` network filter, a connection joined to an upstream one;
//! - [`worker`]: the data plane of a generation, its worker threads, accept and adopt loops.
#![forbid(unsafe_code)]

// The leaves: configuration, stats, errors, pure helpers; they import nothing below.
pub mod access;
pub mod access_log;
pub mod admin;
pub mod chain;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod error;
pub mod flags;
pub mod h2_drain;
pub mod handover;
mod header_pool;
pub mod headers;
pub mod host_health;
pub mod http1;
pub mod http_inspector;
pub mod io;
pub mod lifecycle;
pub mod metadata;
pub mod original_dst;
pub mod proxy_protocol;
pub mod rbac;
pub mod router;
mod slot_pool;
pub mod stats;
pub mod tally;
pub mod tls;
pub mod tls_inspector;
pub mod tunnel;

// Upstream: Baton's own HTTP/1.1 client, proxied bodies, pools and connects.
pub mod body;
pub mod client;
pub mod compression;
pub mod health;
pub mod outlier;
pub mod upstream;

// One request, one connection, the workers.
pub mod context;
pub mod downstream;
pub mod request;
pub mod tcp_proxy;
pub mod worker;

#[cfg(test)]
mod future_sizes;

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
