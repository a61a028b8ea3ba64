//! How a cluster's upstream connections are opened and how long they live: the socket options
//! (`upstream_connection_options`), the HTTP/2 settings, the ALPN-chosen codec (`auto_config`)
//! and the connection limits of `common_http_protocol_options`, validated.

use std::time::Duration;

/// Envoy's default upstream `common_http_protocol_options.idle_timeout`.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a cluster asks of its upstream connections besides the codec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// `auto_config`: the codec is the one the TLS handshake's ALPN picks (`h2` or
    /// `http/1.1`); only on a TLS cluster.
    pub auto_http: bool,
    /// `common_http_protocol_options`.
    pub limits: ConnectionLimits,
    /// `http2_protocol_options` of an HTTP/2 (or `auto_config`) cluster.
    pub http2: Http2Settings,
    /// `upstream_connection_options.tcp_keepalive`; `None`: the system's (off).
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `upstream_http_protocol_options.auto_sni`: a TLS connection's server name is the
    /// request's host, and connections are pooled per name.
    pub auto_sni: bool,
}

/// When an upstream connection is closed although nothing went wrong with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Close a connection that has carried no request for this long (Envoy: 1 h); `None`:
    /// never (`0s`).
    pub idle_timeout: Option<Duration>,
    /// Close a connection once it has carried this many requests; `None`: no limit.
    pub max_requests_per_connection: Option<u32>,
    /// Close a connection this long after it was opened, once its requests are done.
    pub max_connection_duration: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT),
            max_requests_per_connection: None,
            max_connection_duration: None,
        }
    }
}

/// `http2_protocol_options` for the upstream; `None`: hyper's (h2's) default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Settings {
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    /// Streams Baton opens at most at once on one connection (and what it announces).
    pub max_concurrent_streams: Option<u32>,
    /// `connection_keepalive`: a PING every `interval`, the connection closed when one is not
    /// answered within `timeout`.
    pub keepalive: Option<H2Keepalive>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// `tcp_keepalive`: each `None` keeps the system's value (Linux: 9 probes, 7200 s, 75 s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}
