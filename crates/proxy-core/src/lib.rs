//! proxy-core: Baton's data plane — listeners' connections, HTTP/1.1 and HTTP/2 proxying with
//! hyper, routing, clusters and load balancing, upstream connection pools, access logs, and the
//! admin interface.
//!
//! It is handed listen sockets that are already bound (fresh or inherited from a previous
//! generation), a validated [`config::Bootstrap`], a stats [`shm_stats::Store`] and a
//! [`drain::Watch`]; it never binds a listen socket of its own choosing, never reads signals and
//! never decides when a generation starts or stops — that is `proxy-bin`'s.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod config;
