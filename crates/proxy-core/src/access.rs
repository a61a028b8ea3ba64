//! Access logs of an HTTP connection manager, a listener or a `tcp_proxy`: what a request's
//! log line needs is captured when the request arrives, and the line is formatted and handed to
//! the sink's writer thread once the response has ended; a connection's line (a listener's,
//! `tcp_proxy`'s) once it has closed.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, Request, Version};

use crate::access_log::{AccessLogWriter, Format, Record};
use crate::config::AccessLog;
use crate::error::BuildError;
use crate::flags::ResponseFlags;

/// Every access log of one listener.
#[derive(Debug)]
pub struct AccessLogs {
    sinks: Vec<(Format, AccessLogWriter)>,
}

/// What an access log needs of a request, captured before the request is forwarded.
#[derive(Debug)]
pub struct LogCapture {
    pub start_time: SystemTime,
    pub method: Method,
    pub path: String,
    pub authority: Option<String>,
    pub version: Version,
    pub request_headers: HeaderMap,
    pub response_headers: Option<HeaderMap>,
    pub route_name: Option<String>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    /// The client `xff_num_trusted_hops` found in `x-forwarded-for`, for
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (`None`: the peer).
    pub downstream_remote: Option<SocketAddr>,
    /// Set by the filters (`set_metadata`, `header_to_metadata`).
    pub dynamic_metadata: Option<crate::metadata::DynamicMetadata>,
}

/// What a connection's line says (a listener's `access_log`, `tcp_proxy`'s), written when it
/// closes: no request, so the HTTP operators print `-` and `%RESPONSE_CODE%` 0, as Envoy's.
#[derive(Clone, Copy, Debug)]
pub struct ConnOutcome<'a> {
    pub start_time: SystemTime,
    pub remote: SocketAddr,
    /// After the listener filters (the original destination, the PROXY protocol's).
    pub local: SocketAddr,
    /// The HTTP protocol of a connection an HTTP chain served, if it got that far.
    pub protocol: Option<Version>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%` (`filter_chain_not_found`), or empty.
    pub details: &'a str,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
}

/// The parts of a finished request that are not in its [`LogCapture`].
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub flags: ResponseFlags,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
}

// === impl LogCapture ===

impl LogCapture {
    /// What `req` says as it arrives.
    pub fn of<B>(req: &Request<B>) -> Box<LogCapture> {
        Box::new(LogCapture {
            start_time: SystemTime::now(),
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            authority: req
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                }),
            version: req.version(),
            request_headers: req.headers().clone(),
            response_headers: None,
            route_name: None,
            upstream_host: None,
            upstream_cluster: None,
            downstream_remote: None,
            dynamic_metadata: None,
        })
    }
}

// === impl AccessLogs ===

impl AccessLogs {
    /// Open every configured log; `None` when there is none, so requests capture nothing.
    pub fn open(configs: &[AccessLog]) -> Result<Option<Self>, BuildError> {
        if configs.is_empty() {
            return Ok(None);
        }
        let sinks = configs
            .iter()
            .map(|c| {
                let format = match &c.format {
                    Some(f) => {
                        Format::parse(f).map_err(|e| BuildError::AccessLog(e.to_string()))?
                    }
                    None => Format::envoy_default(),
                };
                let writer = AccessLogWriter::open(&c.sink)
                    .map_err(|e| BuildError::AccessLog(e.to_string()))?;
                Ok((format, writer))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Some(Self { sinks }))
    }

    /// Reopen every file sink (log rotation).
    pub fn reopen(&self) {
        for (_, w) in &self.sinks {
            w.reopen();
        }
    }

    pub fn capture<B>(&self, req: &Request<B>) -> Box<LogCapture> {
        LogCapture::of(req)
    }

    /// `downstream`: the connection's remote and local addresses.
    pub fn write(&self, cap: &LogCapture, downstream: (SocketAddr, SocketAddr), o: &Outcome) {
        let flags = o.flags.to_string();
        let rec = Record {
            start_time: cap.start_time,
            method: Some(&cap.method),
            path: &cap.path,
            authority: cap.authority.as_deref(),
            version: Some(cap.version),
            request_headers: &cap.request_headers,
            response_headers: cap.response_headers.as_ref(),
            response_code: o.status,
            response_flags: &flags,
            response_code_details: "-",
            bytes_received: o.bytes_received,
            bytes_sent: o.bytes_sent,
            duration: o.duration,
            upstream_host: cap.upstream_host,
            upstream_cluster: cap.upstream_cluster.as_deref(),
            route_name: cap.route_name.as_deref(),
            downstream_remote: cap.downstream_remote.unwrap_or(downstream.0),
            downstream_local: downstream.1,
            upstream_transport_failure_reason: None,
            local_reply_body: None,
            dynamic_metadata: cap.dynamic_metadata.as_ref(),
        };
        self.write_record(&rec);
    }

    /// Write a connection's line.
    pub fn write_connection(&self, c: &ConnOutcome<'_>) {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        let flags = c.flags.to_string();
        let rec = Record {
            start_time: c.start_time,
            method: None,
            path: "",
            authority: None,
            version: c.protocol,
            request_headers: EMPTY.get_or_init(HeaderMap::new),
            response_headers: None,
            response_code: 0,
            response_flags: &flags,
            response_code_details: c.details,
            bytes_received: c.bytes_received,
            bytes_sent: c.bytes_sent,
            duration: c.duration,
            upstream_host: c.upstream_host,
            upstream_cluster: c.upstream_cluster,
            route_name: None,
            downstream_remote: c.remote,
            downstream_local: c.local,
            upstream_transport_failure_reason: None,
            local_reply_body: None,
            dynamic_metadata: None,
        };
        self.write_record(&rec);
    }

    fn write_record(&self, rec: &Record<'_>) {
        for (format, writer) in &self.sinks {
            let mut line = String::with_capacity(256);
            format.write(rec, &mut line);
            writer.write_line(line);
        }
    }
}
