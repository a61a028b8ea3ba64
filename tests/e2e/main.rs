//! End-to-end tests: run the real `baton` binary against real upstreams on 127.0.0.1.
//!
//! Each test starts its own Baton (fresh ports, temp dir, unique base ID) and its own in-process
//! upstreams, bounds every wait, and kills what it started by pid.

mod support;

mod admin;
mod basics;
mod cli;
mod cluster_header;
mod compressor;
mod connection_logs;
mod cors;
mod csrf;
mod downstream_h1;
mod drain;
mod errors;
mod fault;
mod filter_config;
mod filters;
mod h2;
mod h2_downstream_options;
mod handover;
mod hash_lb;
mod hcm_options;
mod headers_mutation;
mod health;
mod health_grpc;
mod hygiene;
mod keepalive;
mod lb;
mod lenient;
mod local_ratelimit;
mod local_reply;
mod metadata;
mod mirror;
mod original_dst;
mod outlier;
mod outlier_local;
mod outlier_rates;
mod path_normalization;
mod priority;
mod proxy_protocol;
mod query_params;
mod rbac;
mod restart;
mod restart_safety;
mod restarter;
mod retries;
mod retry_policies;
mod rollback;
mod route_matchers;
mod route_options;
mod route_rewrites;
mod slowloris;
mod stats;
mod stats_cmd;
mod streaming;
mod tcp_handover;
mod tcp_proxy;
mod timeouts;
mod tls;
mod tls_san;
mod upstream_h1;
mod upstream_options;
mod websocket;
mod xff_trusted_hops;
