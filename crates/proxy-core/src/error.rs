//! proxy-core's errors: building the data plane from a validated config, and the faults of a
//! proxied request (whose side is at fault decides the status code, the response flag and the
//! stat).

use std::io;

use crate::flags::ResponseFlags;

/// The data plane could not be built from a configuration. Config validation in `proxy-bin`
/// rules most of these out; they remain for callers that build a [`crate::config::Bootstrap`]
/// by hand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("could not compile regex {regex:?}: {source}")]
    Regex {
        regex: String,
        #[source]
        source: regex::Error,
    },
    #[error("could not find cluster {cluster:?} referenced by a route")]
    UnknownCluster { cluster: String },
    #[error("header value {value:?}: {source}")]
    HeaderFormat {
        value: String,
        #[source]
        source: crate::access_log::FormatError,
    },
    #[error("header value {value:?} is not a valid field value")]
    HeaderValue { value: String },
    #[error("could not start worker thread {index}: {source}")]
    Worker {
        index: usize,
        #[source]
        source: io::Error,
    },
    #[error("could not use listen socket for listener {listener:?}: {source}")]
    Listener {
        listener: String,
        #[source]
        source: io::Error,
    },
    #[error("could not open access log: {0}")]
    AccessLog(String),
}

/// Why a request could not be proxied. Each maps to Envoy's local reply, response flag and stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamFailure {
    /// No host to send to (UH, 503).
    NoHealthyUpstream,
    /// A circuit breaker is full (UO, 503).
    Overflow,
    /// The TCP connect failed or timed out (UF, 503).
    ConnectFailure,
    /// The upstream reset or closed before response headers (UC, 503).
    Reset,
    /// The upstream answered with something that is not HTTP (UPE, 502).
    ProtocolError,
    /// No response headers within the route timeout (UT, 504).
    Timeout,
}

// === impl UpstreamFailure ===

impl UpstreamFailure {
    /// The host failed (rather than Baton declining to try it): for outlier detection.
    pub fn is_host_failure(self) -> bool {
        matches!(
            self,
            Self::ConnectFailure | Self::Reset | Self::ProtocolError | Self::Timeout
        )
    }

    pub fn status(self) -> http::StatusCode {
        match self {
            Self::NoHealthyUpstream | Self::Overflow | Self::ConnectFailure | Self::Reset => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ProtocolError => http::StatusCode::BAD_GATEWAY,
            Self::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Envoy's response flag for access logs.
    pub fn flag(self) -> ResponseFlags {
        match self {
            Self::NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
            Self::Overflow => ResponseFlags::UPSTREAM_OVERFLOW,
            Self::ConnectFailure => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            Self::Reset => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            Self::ProtocolError => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            Self::Timeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
        }
    }

    /// The local reply's body, worded as Envoy's.
    pub fn body(self) -> &'static str {
        match self {
            Self::NoHealthyUpstream => "no healthy upstream",
            Self::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            Self::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
            }
            Self::Reset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            Self::ProtocolError => {
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            }
            Self::Timeout => "upstream request timeout",
        }
    }
}
