//! `local_reply_config` applied: the first mapper whose filter matches Baton's own reply
//! rewrites its status, body and fields, then the body is rendered in the configured format
//! (Envoy's `LocalReply`). Upstream responses never come here.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

use crate::access::LogCapture;
use crate::access_log::{JsonKind, Record};
use crate::body::ProxyBody;
use crate::config::{
    AppendAction, BodyFormat, BodyKind, JsonValue, LocalReplyConfig, ReplyFilter, ReplyHeader,
};
use crate::context::Ctx;
use crate::flags::ResponseFlags;

use super::tracker::Tracker;

/// What a mapper's filter reads of the reply and its request.
pub(super) struct Subject<'a> {
    pub status: u16,
    pub flags: ResponseFlags,
    pub elapsed: Duration,
    pub request_headers: &'a HeaderMap,
    pub health_check: bool,
}

/// Whether `f` matches (Envoy's access-log filter semantics).
pub(super) fn matches(f: &ReplyFilter, s: &Subject<'_>) -> bool {
    match f {
        ReplyFilter::StatusCode(c) => c.holds(u64::from(s.status)),
        ReplyFilter::Duration(c) => c.holds(s.elapsed.as_millis() as u64),
        ReplyFilter::Header(m) => m.matches(s.request_headers),
        ReplyFilter::ResponseFlags(want) if want.is_empty() => !s.flags.is_empty(),
        ReplyFilter::ResponseFlags(want) => want.iter().any(|&f| s.flags.intersects(f)),
        ReplyFilter::NotHealthCheck => !s.health_check,
        ReplyFilter::And(all) => all.iter().all(|f| matches(f, s)),
        ReplyFilter::Or(any) => any.iter().any(|f| matches(f, s)),
    }
}

/// Rewrite `resp`, a reply Baton made, as `lr` says.
#[cold]
#[inline(never)]
pub(super) fn rewrite(
    cx: Ctx<'_>,
    lr: &LocalReplyConfig,
    resp: &mut Response<ProxyBody>,
    tracker: &Tracker,
) {
    static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
    let cap = tracker.log();
    let request_headers =
        cap.map_or_else(|| EMPTY.get_or_init(HeaderMap::new), |c| &c.request_headers);
    let elapsed = tracker.start().elapsed();
    let subject = Subject {
        status: resp.status().as_u16(),
        flags: tracker.flags(),
        elapsed,
        request_headers,
        health_check: tracker.health_check(),
    };
    let mapper = lr.mappers.iter().find(|m| matches(&m.filter, &subject));
    let original = resp.body().buffered().unwrap_or_default();
    let mut body = original.clone();
    let flags = subject.flags.to_string();
    let mut format = lr.body_format.as_ref();
    if let Some(m) = mapper {
        if let Some(b) = &m.body {
            body = b.clone();
        }
        if !m.headers_to_add.is_empty() {
            let text = String::from_utf8_lossy(&body).into_owned();
            let status = resp.status().as_u16();
            let rec = record(cx, cap, request_headers, status, &flags, elapsed, &text);
            add_headers(&m.headers_to_add, &rec, resp.headers_mut());
        }
        if let Some(s) = m.status {
            *resp.status_mut() = s;
        }
        if let Some(f) = &m.body_format_override {
            format = Some(f);
        }
    }
    let content_type = match format {
        Some(f) => {
            let text = String::from_utf8_lossy(&body).into_owned();
            let status = resp.status().as_u16();
            let rec = record(cx, cap, request_headers, status, &flags, elapsed, &text);
            body = Bytes::from(render(f, &rec));
            f.content_type.clone()
        }
        None if body == original => return,
        None => HeaderValue::from_static("text/plain"),
    };
    let h = resp.headers_mut();
    if body.is_empty() {
        h.remove(header::CONTENT_TYPE);
        if h.contains_key(header::CONTENT_LENGTH) {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
    } else {
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    *resp.body_mut() = ProxyBody::full(body);
}

/// The record a local reply's body and fields render from.
fn record<'a>(
    cx: Ctx<'_>,
    cap: Option<&'a LogCapture>,
    request_headers: &'a HeaderMap,
    status: u16,
    flags: &'a str,
    elapsed: Duration,
    body: &'a str,
) -> Record<'a> {
    Record {
        start_time: cap.map_or_else(
            || {
                SystemTime::now()
                    .checked_sub(elapsed)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            },
            |c| c.start_time,
        ),
        method: cap.map(|c| &c.method),
        path: cap.map_or("", |c| c.path.as_str()),
        authority: cap.and_then(|c| c.authority.as_deref()),
        version: cap.map(|c| c.version),
        request_headers,
        response_headers: None,
        response_code: status,
        response_flags: flags,
        response_code_details: "",
        bytes_received: 0,
        bytes_sent: 0,
        duration: Duration::from_millis(elapsed.as_millis() as u64),
        upstream_host: cap.and_then(|c| c.upstream_host),
        upstream_cluster: cap.and_then(|c| c.upstream_cluster.as_deref()),
        route_name: cap.and_then(|c| c.route_name.as_deref()),
        downstream_remote: cap.and_then(|c| c.downstream_remote).unwrap_or(cx.c.remote),
        downstream_local: cx.c.local,
        upstream_transport_failure_reason: None,
        local_reply_body: Some(body),
        dynamic_metadata: cap.and_then(|c| c.dynamic_metadata.as_ref()),
    }
}

/// A mapper's `headers_to_add`.
fn add_headers(adds: &[ReplyHeader], rec: &Record<'_>, h: &mut HeaderMap) {
    let mut text = String::new();
    for a in adds {
        text.clear();
        a.value.write_value(rec, &mut text);
        let Ok(v) = HeaderValue::from_str(&text) else {
            continue;
        };
        if v.is_empty() && !a.keep_empty_value {
            continue;
        }
        match a.action {
            AppendAction::AppendIfExistsOrAdd => {
                h.append(&a.name, v);
            }
            AppendAction::AddIfAbsent => {
                if !h.contains_key(&a.name) {
                    h.insert(&a.name, v);
                }
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                h.insert(&a.name, v);
            }
            AppendAction::OverwriteIfExists => {
                if h.contains_key(&a.name) {
                    h.insert(&a.name, v);
                }
            }
        }
    }
}

/// The body `f` renders for `rec`.
pub(super) fn render(f: &BodyFormat, rec: &Record<'_>) -> String {
    let mut out = String::with_capacity(128);
    match &f.kind {
        BodyKind::Text(t) => t.write(rec, &mut out),
        BodyKind::Json(obj) => {
            write_object(obj, rec, &mut out);
            out.push('\n');
        }
    }
    out
}

fn write_object(obj: &[(String, JsonValue)], rec: &Record<'_>, out: &mut String) {
    out.push('{');
    let mut value = String::new();
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(k, out);
        out.push(':');
        match v {
            JsonValue::Literal(l) => out.push_str(l),
            JsonValue::Object(o) => write_object(o, rec, out),
            JsonValue::Format(f) => {
                value.clear();
                f.write(rec, &mut value);
                match f.single_operator() {
                    Some(JsonKind::Number) if value.parse::<u64>().is_ok() => out.push_str(&value),
                    Some(JsonKind::Optional) if value == "-" => out.push_str("null"),
                    _ => write_json_string(&value, out),
                }
            }
        }
    }
    out.push('}');
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
