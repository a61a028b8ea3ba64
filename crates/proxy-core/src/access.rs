//! A listener's access logs: what a request's log line needs is captured when the request
//! arrives, and the line is formatted and handed to the sink's writer thread once the response
//! has ended.

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
    /// Set by the filters (`set_metadata`, `header_to_metadata`).
    pub dynamic_metadata: Option<crate::metadata::DynamicMetadata>,
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
            dynamic_metadata: None,
        })
    }

    /// `downstream`: the connection's remote and local addresses.
    pub fn write(&self, cap: &LogCapture, downstream: (SocketAddr, SocketAddr), o: &Outcome) {
        let flags = o.flags.to_string();
        let rec = Record {
            start_time: cap.start_time,
            method: &cap.method,
            path: &cap.path,
            authority: cap.authority.as_deref(),
            version: cap.version,
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
            downstream_remote: downstream.0,
            downstream_local: downstream.1,
            upstream_transport_failure_reason: None,
            dynamic_metadata: cap.dynamic_metadata.as_ref(),
        };
        for (format, writer) in &self.sinks {
            let mut line = String::with_capacity(256);
            format.write(&rec, &mut line);
            writer.write_line(line);
        }
    }
}
