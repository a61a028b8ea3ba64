//! `local_reply_config` of an HTTP connection manager, validated: mappers that rewrite Baton's
//! own replies (never an upstream's response) and the format their bodies are rendered in.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::{AppendAction, HeaderMatcher};
use crate::access_log::Format;
use crate::flags::ResponseFlags;

/// `local_reply_config`.
#[derive(Clone, Debug, Default)]
pub struct LocalReplyConfig {
    /// Tried in order; the first whose filter matches rewrites the reply.
    pub mappers: Vec<Mapper>,
    /// `body_format`; `None`: the body is sent as it is (`%LOCAL_REPLY_BODY%`, `text/plain`).
    pub body_format: Option<BodyFormat>,
}

/// One `mappers[]` entry.
#[derive(Clone, Debug)]
pub struct Mapper {
    pub filter: ReplyFilter,
    /// `status_code`: the reply's new status.
    pub status: Option<StatusCode>,
    /// `body.inline_string`: the reply's new body (before `body_format`).
    pub body: Option<Bytes>,
    /// `headers_to_add`, rendered with the access-log formatter.
    pub headers_to_add: Vec<ReplyHeader>,
    /// `body_format_override`.
    pub body_format_override: Option<BodyFormat>,
}

/// One of a mapper's `headers_to_add`.
#[derive(Clone, Debug)]
pub struct ReplyHeader {
    pub name: http::HeaderName,
    pub value: Format,
    pub action: AppendAction,
    pub keep_empty_value: bool,
}

/// The `AccessLogFilter`s a mapper may use.
#[derive(Clone, Debug)]
pub enum ReplyFilter {
    /// `status_code_filter`: the reply's status (before mapping).
    StatusCode(Comparison),
    /// `duration_filter`: milliseconds since the request arrived.
    Duration(Comparison),
    /// `header_filter`: a request header matcher.
    Header(HeaderMatcher),
    /// `response_flag_filter`: any of these flags; empty: any flag at all.
    ResponseFlags(Vec<ResponseFlags>),
    /// `not_health_check_filter`: the request is not a health check.
    NotHealthCheck,
    And(Vec<ReplyFilter>),
    Or(Vec<ReplyFilter>),
}

/// `ComparisonFilter`: `op` against `value.default_value` (Baton has no runtime, so a
/// `runtime_key` always falls back to the default, as in Envoy without a runtime layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub op: CompareOp,
    pub value: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Ge,
    Eq,
    Le,
    Ne,
}

/// `body_format` (`SubstitutionFormatString`).
#[derive(Clone, Debug)]
pub struct BodyFormat {
    pub kind: BodyKind,
    /// `content_type`, else `text/plain` for text and `application/json` for JSON.
    pub content_type: HeaderValue,
}

#[derive(Clone, Debug)]
pub enum BodyKind {
    /// `text_format` or `text_format_source.inline_string`.
    Text(Format),
    /// `json_format`: an object rendered with its keys sorted, then a newline (as Envoy).
    Json(Vec<(String, JsonValue)>),
}

/// A value of a `json_format` object.
#[derive(Clone, Debug)]
pub enum JsonValue {
    /// A string with command operators; one operator alone keeps its type (a number for
    /// `%RESPONSE_CODE%`, `null` when it has no value).
    Format(Format),
    /// A number, boolean or null, serialized once.
    Literal(String),
    Object(Vec<(String, JsonValue)>),
}

// === impl Comparison ===

impl Comparison {
    pub fn holds(self, actual: u64) -> bool {
        match self.op {
            CompareOp::Ge => actual >= self.value,
            CompareOp::Eq => actual == self.value,
            CompareOp::Le => actual <= self.value,
            CompareOp::Ne => actual != self.value,
        }
    }
}
