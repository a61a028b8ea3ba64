//! Parsing Envoy text access-log formats into pieces and rendering one line per [`Record`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HOST};
use http::{Method, Version};

use super::strftime::{self, TimePiece};

/// Envoy's default access-log format (used when `log_format` is not given).
pub const ENVOY_DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// What one finished (or abandoned) request, or one closed connection (a listener's or
/// `tcp_proxy`'s line: no request, so its HTTP operators print `-`), contributes to its
/// access-log line.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub start_time: SystemTime,
    /// `None`: a connection's line.
    pub method: Option<&'a Method>,
    /// The original path and query, as the client sent it.
    pub path: &'a str,
    /// `:authority` (HTTP/2) or `Host` (HTTP/1); when `None` the `Host` header is consulted.
    pub authority: Option<&'a str>,
    /// `None`: a connection with no HTTP protocol (`%PROTOCOL%` is `-`).
    pub version: Option<Version>,
    pub request_headers: &'a HeaderMap,
    pub response_headers: Option<&'a HeaderMap>,
    /// 0 when no response was sent.
    pub response_code: u16,
    /// Envoy's short flags (`UF`, `UH`, `NR`, `UT`, `UC`, `DC`, `URX`, `UO`, comma-joined), or
    /// `-`/empty for none.
    pub response_flags: &'a str,
    pub response_code_details: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub route_name: Option<&'a str>,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    /// Why the upstream connection failed at the transport level (e.g. a TLS error), if it did.
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// `%LOCAL_REPLY_BODY%`: the body of Baton's own reply, when a local reply's body is being
    /// formatted (`local_reply_config`); `None` elsewhere.
    pub local_reply_body: Option<&'a str>,
    /// The request's dynamic metadata, if a filter set any.
    pub dynamic_metadata: Option<&'a crate::metadata::DynamicMetadata>,
}

/// A format string that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("could not parse access log format: unknown command operator '%{0}%'")]
    UnknownOperator(String),
    #[error("could not parse access log format: '%' at byte {0} starts no command operator (write %% for a literal '%')")]
    StrayPercent(usize),
    #[error("could not parse access log format: command operator '%{0}' is not closed with '%'")]
    Unterminated(String),
    #[error("could not parse access log format: %{op}%: {reason}")]
    BadArgument { op: String, reason: String },
}

/// Where a `%REQ(...)%` value comes from.
#[derive(Clone, Debug)]
enum ReqKey {
    Method,
    Path,
    Authority,
    /// Another pseudo-header (`:scheme`, ...): Baton records none of them, so it prints `-`.
    OtherPseudo,
    Header(HeaderName),
}

#[derive(Clone, Debug)]
enum Op {
    Literal(String),
    StartTime(Vec<TimePiece>),
    Req(ReqKey, Option<ReqKey>),
    Resp(ReqKey, Option<ReqKey>),
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    Protocol,
    UpstreamHost,
    UpstreamCluster,
    UpstreamTransportFailureReason,
    RouteName,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    LocalReplyBody,
    /// `%DYNAMIC_METADATA(NAMESPACE:KEY:...)%`.
    DynamicMetadata(String, Vec<String>),
}

#[derive(Clone, Debug)]
struct Piece {
    op: Op,
    /// `%OP(...):N%`: at most N bytes of the value (cut on a character boundary).
    max_len: Option<usize>,
}

/// A parsed access-log format.
#[derive(Clone, Debug)]
pub struct Format {
    pieces: Vec<Piece>,
}

fn bad(op: &str, reason: impl Into<String>) -> FormatError {
    FormatError::BadArgument {
        op: op.to_owned(),
        reason: reason.into(),
    }
}

fn req_key(op: &str, name: &str) -> Result<ReqKey, FormatError> {
    if name.is_empty() {
        return Err(bad(op, "empty header name"));
    }
    if let Some(pseudo) = name.strip_prefix(':') {
        return Ok(match pseudo.to_ascii_lowercase().as_str() {
            "method" => ReqKey::Method,
            "path" => ReqKey::Path,
            "authority" => ReqKey::Authority,
            _ => ReqKey::OtherPseudo,
        });
    }
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map(ReqKey::Header)
        .map_err(|_| bad(op, format!("invalid header name '{name}'")))
}

fn header_args(op: &str, args: Option<&str>) -> Result<(ReqKey, Option<ReqKey>), FormatError> {
    let args = args.ok_or_else(|| bad(op, "expected a header name in parentheses"))?;
    match args.split_once('?') {
        Some((main, alt)) => Ok((req_key(op, main)?, Some(req_key(op, alt)?))),
        None => Ok((req_key(op, args)?, None)),
    }
}

fn build_op(name: &str, args: Option<&str>) -> Result<Op, FormatError> {
    let op = match name {
        "START_TIME" => {
            return Ok(Op::StartTime(match args {
                None | Some("") => strftime::default_pieces(),
                Some(f) => strftime::parse(f).map_err(|e| bad(name, e))?,
            }))
        }
        "REQ" => {
            let (k, alt) = header_args(name, args)?;
            return Ok(Op::Req(k, alt));
        }
        "RESP" => {
            let (k, alt) = header_args(name, args)?;
            return Ok(Op::Resp(k, alt));
        }
        "DYNAMIC_METADATA" => {
            let args = args.filter(|a| !a.is_empty()).ok_or_else(|| {
                bad(
                    name,
                    "expected a namespace (and keys) in parentheses, NAMESPACE:KEY:...",
                )
            })?;
            let mut parts = args.split(':').map(str::to_owned);
            let ns = parts.next().unwrap_or_default();
            return Ok(Op::DynamicMetadata(ns, parts.collect()));
        }
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "PROTOCOL" => Op::Protocol,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "ROUTE_NAME" => Op::RouteName,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocalAddressWithoutPort,
        "LOCAL_REPLY_BODY" => Op::LocalReplyBody,
        _ => return Err(FormatError::UnknownOperator(name.to_owned())),
    };
    if args.is_some() {
        return Err(bad(name, "takes no argument"));
    }
    Ok(op)
}

impl Format {
    /// Parses an Envoy format string. Text outside `%...%` is copied as is; `%%` is a literal
    /// `%`; an unknown operator, a stray `%` or an unclosed operator is an error.
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(pos) = rest.find('%') {
            lit.push_str(&rest[..pos]);
            let offset = s.len() - rest.len() + pos;
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                lit.push('%');
                rest = tail;
                continue;
            }
            let name_len = after
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                return Err(FormatError::StrayPercent(offset));
            }
            let name = &after[..name_len];
            let mut tail = &after[name_len..];
            let mut args = None;
            if let Some(inner) = tail.strip_prefix('(') {
                let close = inner
                    .find(')')
                    .ok_or_else(|| FormatError::Unterminated(format!("{name}({inner}")))?;
                args = Some(&inner[..close]);
                tail = &inner[close + 1..];
            }
            let mut max_len = None;
            if let Some(digits_on) = tail.strip_prefix(':') {
                let n = digits_on
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(digits_on.len());
                let value = digits_on[..n]
                    .parse::<usize>()
                    .map_err(|_| bad(name, "':' must be followed by a maximum length"))?;
                max_len = Some(value);
                tail = &digits_on[n..];
            }
            tail = tail
                .strip_prefix('%')
                .ok_or_else(|| FormatError::Unterminated(name.to_owned()))?;
            let op = build_op(name, args)?;
            if !lit.is_empty() {
                pieces.push(Piece {
                    op: Op::Literal(std::mem::take(&mut lit)),
                    max_len: None,
                });
            }
            pieces.push(Piece { op, max_len });
            rest = tail;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece {
                op: Op::Literal(lit),
                max_len: None,
            });
        }
        Ok(Format { pieces })
    }

    /// Envoy's default format, [`ENVOY_DEFAULT_FORMAT`].
    pub fn envoy_default() -> Format {
        // The constant is known to parse (a unit test checks it); fall back to an empty format
        // rather than panic should it ever not.
        Format::parse(ENVOY_DEFAULT_FORMAT).unwrap_or(Format { pieces: Vec::new() })
    }

    /// Appends the line for `rec` to `out` (the format supplies any trailing newline).
    pub fn write(&self, rec: &Record<'_>, out: &mut String) {
        for piece in &self.pieces {
            match piece.max_len {
                None => write_op(&piece.op, rec, out),
                Some(max) => {
                    let mut value = String::new();
                    write_op(&piece.op, rec, &mut value);
                    if value != "-" && value.len() > max {
                        let mut cut = max;
                        while !value.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        value.truncate(cut);
                    }
                    out.push_str(&value);
                }
            }
        }
    }
}

impl Format {
    /// How a `json_format` value made of this format alone is typed: `None` when the format is
    /// not exactly one command operator (it renders as a string).
    pub fn single_operator(&self) -> Option<JsonKind> {
        match self.pieces.as_slice() {
            [Piece { op, max_len: None }] => match op {
                Op::Literal(_) => None,
                Op::ResponseCode | Op::Duration | Op::BytesReceived | Op::BytesSent => {
                    Some(JsonKind::Number)
                }
                // `-` is the value of no flags, not a missing value.
                Op::ResponseFlags => Some(JsonKind::Text),
                _ => Some(JsonKind::Optional),
            },
            _ => None,
        }
    }
}

/// How one command operator alone is written as a JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonKind {
    /// A number.
    Number,
    /// A string, always.
    Text,
    /// A string, or `null` when the operator has no value (`-`).
    Optional,
}

impl Format {
    /// Appends a header value for `rec` to `out`: as [`Format::write`], except that a command
    /// operator with no value gives nothing instead of `-` (Envoy's header formatter).
    pub fn write_value(&self, rec: &Record<'_>, out: &mut String) {
        let mut value = String::new();
        for piece in &self.pieces {
            if let Op::Literal(s) = &piece.op {
                out.push_str(s);
                continue;
            }
            value.clear();
            write_op(&piece.op, rec, &mut value);
            if value == "-" {
                continue;
            }
            if let Some(max) = piece.max_len.filter(|&m| value.len() > m) {
                let mut cut = max;
                while !value.is_char_boundary(cut) {
                    cut -= 1;
                }
                value.truncate(cut);
            }
            out.push_str(&value);
        }
    }
}

fn push_or_dash(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) if !v.is_empty() => out.push_str(v),
        _ => out.push('-'),
    }
}

fn header_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|v| !v.is_empty())
}

fn req_value(key: &ReqKey, rec: &Record<'_>) -> Option<String> {
    match key {
        ReqKey::Method => rec.method.map(|m| m.as_str().to_owned()),
        ReqKey::Path => Some(rec.path.to_owned()).filter(|p| !p.is_empty()),
        ReqKey::Authority => match rec.authority {
            Some(a) if !a.is_empty() => Some(a.to_owned()),
            _ => header_value(rec.request_headers, &HOST),
        },
        ReqKey::OtherPseudo => None,
        ReqKey::Header(name) => header_value(rec.request_headers, name),
    }
}

fn resp_value(key: &ReqKey, rec: &Record<'_>) -> Option<String> {
    match key {
        ReqKey::Header(name) => rec.response_headers.and_then(|h| header_value(h, name)),
        _ => None,
    }
}

fn write_op(op: &Op, rec: &Record<'_>, out: &mut String) {
    // Writing to a String cannot fail, so the fmt::Results below are ignored.
    match op {
        Op::Literal(s) => out.push_str(s),
        Op::StartTime(pieces) => strftime::render(pieces, rec.start_time, out),
        Op::Req(key, alt) => {
            let v = req_value(key, rec).or_else(|| alt.as_ref().and_then(|a| req_value(a, rec)));
            push_or_dash(out, v.as_deref());
        }
        Op::Resp(key, alt) => {
            let v = resp_value(key, rec).or_else(|| alt.as_ref().and_then(|a| resp_value(a, rec)));
            push_or_dash(out, v.as_deref());
        }
        Op::ResponseCode => {
            let _ = write!(out, "{}", rec.response_code);
        }
        Op::ResponseFlags => push_or_dash(out, Some(rec.response_flags)),
        Op::ResponseCodeDetails => push_or_dash(out, Some(rec.response_code_details)),
        Op::BytesReceived => {
            let _ = write!(out, "{}", rec.bytes_received);
        }
        Op::BytesSent => {
            let _ = write!(out, "{}", rec.bytes_sent);
        }
        Op::Duration => {
            let _ = write!(out, "{}", rec.duration.as_millis());
        }
        Op::Protocol => out.push_str(match rec.version {
            Some(Version::HTTP_09) => "HTTP/0.9",
            Some(Version::HTTP_10) => "HTTP/1.0",
            Some(Version::HTTP_11) => "HTTP/1.1",
            Some(Version::HTTP_2) => "HTTP/2",
            Some(Version::HTTP_3) => "HTTP/3",
            _ => "-",
        }),
        Op::UpstreamHost => match rec.upstream_host {
            Some(a) => {
                let _ = write!(out, "{a}");
            }
            None => out.push('-'),
        },
        Op::UpstreamCluster => push_or_dash(out, rec.upstream_cluster),
        Op::UpstreamTransportFailureReason => {
            push_or_dash(out, rec.upstream_transport_failure_reason)
        }
        Op::RouteName => push_or_dash(out, rec.route_name),
        Op::DownstreamRemoteAddress => {
            let _ = write!(out, "{}", rec.downstream_remote);
        }
        Op::DownstreamRemoteAddressWithoutPort => {
            let _ = write!(out, "{}", rec.downstream_remote.ip());
        }
        Op::DownstreamLocalAddress => {
            let _ = write!(out, "{}", rec.downstream_local);
        }
        Op::DownstreamLocalAddressWithoutPort => {
            let _ = write!(out, "{}", rec.downstream_local.ip());
        }
        // Empty is a value here: a local reply without a body renders as nothing (Envoy).
        Op::LocalReplyBody => match rec.local_reply_body {
            Some(b) => out.push_str(b),
            None => out.push('-'),
        },
        Op::DynamicMetadata(ns, path) => {
            let v = rec.dynamic_metadata.and_then(|m| m.render(ns, path));
            push_or_dash(out, v.as_deref());
        }
    }
}
