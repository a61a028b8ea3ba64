//! Header mutations (`request_headers_to_add`, `request_headers_to_remove`,
//! `response_headers_to_add`, `response_headers_to_remove`) of a route configuration, a
//! virtual host or a route, checked as Envoy checks them.

use http::HeaderName;
use proxy_core::access_log::Format;
use proxy_core::config::{AppendAction, HeaderAdd, HeaderMutations};

use super::de::join;
use super::raw;
use super::Errors;

/// The four fields of one level, as written.
pub(crate) struct Raw {
    pub request_add: Vec<raw::HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<raw::HeaderValueOption>,
    pub response_remove: Vec<String>,
}

/// Check one level's mutations; errors name `path.<field>[i]`.
pub(crate) fn mutations(r: Raw, path: &str, errs: &mut Errors) -> HeaderMutations {
    HeaderMutations {
        request_add: adds(
            r.request_add,
            &join(path, "request_headers_to_add"),
            true,
            errs,
        ),
        request_remove: removes(
            r.request_remove,
            &join(path, "request_headers_to_remove"),
            true,
            errs,
        ),
        response_add: adds(
            r.response_add,
            &join(path, "response_headers_to_add"),
            false,
            errs,
        ),
        response_remove: removes(
            r.response_remove,
            &join(path, "response_headers_to_remove"),
            false,
            errs,
        ),
    }
}

/// A name a mutation may touch: a valid field name, no pseudo-header, and on requests not
/// `host` (Envoy refuses both).
fn name(key: &str, request: bool) -> Result<HeaderName, String> {
    if key.starts_with(':') {
        return Err(format!("`{key}`: pseudo-headers may not be modified"));
    }
    if request && key.eq_ignore_ascii_case("host") {
        return Err("`host` may not be modified here (use a host rewrite)".into());
    }
    HeaderName::from_bytes(key.as_bytes()).map_err(|_| format!("`{key}` is not a header name"))
}

fn removes(raw: Vec<String>, path: &str, request: bool, errs: &mut Errors) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (i, key) in raw.into_iter().enumerate() {
        match name(&key, request) {
            Ok(n) => out.push(n),
            Err(m) => errs.push(format!("{path}[{i}]"), m),
        }
    }
    out
}

pub(crate) fn adds(
    raw: Vec<raw::HeaderValueOption>,
    path: &str,
    request: bool,
    errs: &mut Errors,
) -> Vec<HeaderAdd> {
    let mut out = Vec::new();
    for (i, o) in raw.into_iter().enumerate() {
        let p = format!("{path}[{i}]");
        let n = match name(&o.header.key, request) {
            Ok(n) => n,
            Err(m) => {
                errs.push(join(&p, "header.key"), m);
                continue;
            }
        };
        let action = match (o.append, o.append_action) {
            (Some(_), Some(_)) => {
                errs.push(&p, "`append` and `append_action` are exclusive");
                continue;
            }
            (Some(false), None) => AppendAction::OverwriteIfExistsOrAdd,
            (_, Some(a)) => match a {
                raw::AppendAction::AppendIfExistsOrAdd => AppendAction::AppendIfExistsOrAdd,
                raw::AppendAction::AddIfAbsent => AppendAction::AddIfAbsent,
                raw::AppendAction::OverwriteIfExistsOrAdd => AppendAction::OverwriteIfExistsOrAdd,
                raw::AppendAction::OverwriteIfExists => AppendAction::OverwriteIfExists,
            },
            _ => AppendAction::AppendIfExistsOrAdd,
        };
        let value = o.header.value;
        let bad = if value.contains('%') {
            Format::parse(&value).err().map(|e| e.to_string())
        } else {
            http::HeaderValue::from_str(&value)
                .err()
                .map(|_| "not a valid field value".to_owned())
        };
        if let Some(m) = bad {
            errs.push(join(&p, "header.value"), m);
            continue;
        }
        out.push(HeaderAdd {
            name: n,
            value,
            action,
            keep_empty_value: o.keep_empty_value.unwrap_or(false),
        });
    }
    out
}
