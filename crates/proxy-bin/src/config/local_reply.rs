//! Validation of an HTTP connection manager's `local_reply_config`: mappers (an access-log
//! filter, a new status, body and fields, a body format of their own) and `body_format`.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use proxy_core::access_log::Format;
use proxy_core::config::{
    BodyFormat, BodyKind, CompareOp, Comparison, JsonValue, LocalReplyConfig, Mapper, ReplyFilter,
    ReplyHeader,
};
use proxy_core::flags::ResponseFlags;

use super::de::join;
use super::raw;
use super::{ConfigError, Errors};

/// Every response flag Envoy 1.40 knows by its short name; Baton sets the ones
/// [`ResponseFlags::from_short`] knows.
const ENVOY_FLAGS: &[&str] = &[
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
];

pub(crate) fn local_reply_config(
    raw: raw::LocalReplyConfig,
    path: &str,
    errs: &mut Errors,
) -> LocalReplyConfig {
    let mut out = LocalReplyConfig::default();
    for (i, m) in raw.mappers.into_iter().enumerate() {
        let p = format!("{path}.mappers[{i}]");
        if let Some(m) = mapper(m, &p, errs) {
            out.mappers.push(m);
        }
    }
    if let Some(f) = raw.body_format {
        out.body_format = errs.take(body_format(f, &join(path, "body_format")));
    }
    out
}

fn mapper(raw: raw::ResponseMapper, path: &str, errs: &mut Errors) -> Option<Mapper> {
    let filter = match raw.filter {
        Some(f) => errs.take(filter(f, &join(path, "filter"))),
        None => {
            errs.push(join(path, "filter"), "required field is missing");
            None
        }
    };
    let status = raw.status_code.and_then(|code| {
        let c = code.0;
        let s = u16::try_from(c)
            .ok()
            .filter(|c| (200..600).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok());
        if s.is_none() {
            errs.push(
                join(path, "status_code"),
                format!("{c} is not a status in [200, 600)"),
            );
        }
        s
    });
    let body = raw.body.map(|b| Bytes::from(b.inline_string));
    let headers_to_add = super::headers::adds(
        raw.headers_to_add,
        &join(path, "headers_to_add"),
        false,
        errs,
    )
    .into_iter()
    .filter_map(|a| {
        let value = Format::parse(&a.value).ok()?;
        Some(ReplyHeader {
            name: a.name,
            value,
            action: a.action,
            keep_empty_value: a.keep_empty_value,
        })
    })
    .collect();
    let body_format_override = raw
        .body_format_override
        .and_then(|f| errs.take(body_format(f, &join(path, "body_format_override"))));
    Some(Mapper {
        filter: filter?,
        status,
        body,
        headers_to_add,
        body_format_override,
    })
}

fn filter(raw: raw::AccessLogFilter, path: &str) -> Result<ReplyFilter, ConfigError> {
    let raw::AccessLogFilter {
        status_code_filter,
        duration_filter,
        not_health_check_filter,
        header_filter,
        response_flag_filter,
        and_filter,
        or_filter,
    } = raw;
    let set = [
        status_code_filter.is_some(),
        duration_filter.is_some(),
        not_health_check_filter.is_some(),
        header_filter.is_some(),
        response_flag_filter.is_some(),
        and_filter.is_some(),
        or_filter.is_some(),
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    if set != 1 {
        return Err(ConfigError::new(
            path,
            "exactly one filter must be set (status_code_filter, duration_filter, \
             not_health_check_filter, header_filter, response_flag_filter, and_filter, or_filter)",
        ));
    }
    if let Some(c) = status_code_filter {
        return comparison(c, &join(path, "status_code_filter")).map(ReplyFilter::StatusCode);
    }
    if let Some(c) = duration_filter {
        return comparison(c, &join(path, "duration_filter")).map(ReplyFilter::Duration);
    }
    if not_health_check_filter.is_some() {
        return Ok(ReplyFilter::NotHealthCheck);
    }
    if let Some(h) = header_filter {
        let p = join(path, "header_filter.header");
        let m = h
            .header
            .ok_or_else(|| ConfigError::new(&p, "required field is missing"))?;
        return super::route::header_matcher(m, &p).map(ReplyFilter::Header);
    }
    if let Some(r) = response_flag_filter {
        let mut flags = Vec::new();
        for (i, f) in r.flags.iter().enumerate() {
            let p = format!("{path}.response_flag_filter.flags[{i}]");
            match ResponseFlags::from_short(f) {
                Some(flag) => flags.push(flag),
                None if ENVOY_FLAGS.contains(&f.as_str()) => {
                    return Err(ConfigError::new(
                        p,
                        format!("Baton never sets the response flag `{f}`"),
                    ))
                }
                None => return Err(ConfigError::new(p, format!("`{f}` is not a response flag"))),
            }
        }
        return Ok(ReplyFilter::ResponseFlags(flags));
    }
    // Exactly one filter is set, so it is one of these two.
    let (list, and, name) = match (and_filter, or_filter) {
        (Some(l), _) => (l, true, "and_filter"),
        (None, l) => (
            l.unwrap_or(raw::FilterList { filters: vec![] }),
            false,
            "or_filter",
        ),
    };
    if list.filters.len() < 2 {
        return Err(ConfigError::new(
            join(path, &format!("{name}.filters")),
            "must have at least 2 filters",
        ));
    }
    let mut out = Vec::new();
    for (i, f) in list.filters.into_iter().enumerate() {
        out.push(filter(f, &format!("{path}.{name}.filters[{i}]"))?);
    }
    Ok(if and {
        ReplyFilter::And(out)
    } else {
        ReplyFilter::Or(out)
    })
}

fn comparison(raw: raw::ComparisonHolder, path: &str) -> Result<Comparison, ConfigError> {
    let c = raw
        .comparison
        .ok_or_else(|| ConfigError::new(join(path, "comparison"), "required field is missing"))?;
    let op = match c.op {
        None | Some(raw::ComparisonOp::Ge) => CompareOp::Ge,
        Some(raw::ComparisonOp::Eq) => CompareOp::Eq,
        Some(raw::ComparisonOp::Le) => CompareOp::Le,
        Some(raw::ComparisonOp::Ne) => CompareOp::Ne,
    };
    let value = c
        .value
        .and_then(|v| v.default_value)
        .map_or(0, |v| u64::from(v.0));
    Ok(Comparison { op, value })
}

fn body_format(raw: raw::BodyFormatString, path: &str) -> Result<BodyFormat, ConfigError> {
    let content_type = raw
        .content_type
        .as_deref()
        .map(|c| {
            HeaderValue::from_str(c)
                .ok()
                .filter(|_| !c.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(
                        join(path, "content_type"),
                        format!("`{c}` is not a header value"),
                    )
                })
        })
        .transpose()?;
    let text = |s: &str, p: &str| {
        Format::parse(s)
            .map(BodyKind::Text)
            .map_err(|e| ConfigError::new(join(path, p), e.to_string()))
    };
    let kind = match (raw.text_format, raw.text_format_source, raw.json_format) {
        (Some(s), None, None) => text(&s, "text_format")?,
        (None, Some(src), None) => text(&src.inline_string, "text_format_source.inline_string")?,
        (None, None, Some(j)) => BodyKind::Json(json_object(j, &join(path, "json_format"))?),
        (None, None, None) => {
            return Err(ConfigError::new(
                path,
                "one of text_format, text_format_source or json_format is required",
            ))
        }
        _ => {
            return Err(ConfigError::new(
                path,
                "give only one of text_format, text_format_source or json_format",
            ))
        }
    };
    let default_type = match kind {
        BodyKind::Text(_) => "text/plain",
        BodyKind::Json(_) => "application/json",
    };
    Ok(BodyFormat {
        kind,
        content_type: content_type.unwrap_or_else(|| HeaderValue::from_static(default_type)),
    })
}

/// A `json_format` object, its keys sorted (Envoy writes them in that order).
fn json_object(
    raw: serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Result<Vec<(String, JsonValue)>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        let p = join(path, &k);
        let v = match v {
            serde_json::Value::String(s) => JsonValue::Format(
                Format::parse(&s).map_err(|e| ConfigError::new(&p, e.to_string()))?,
            ),
            serde_json::Value::Object(o) => JsonValue::Object(json_object(o, &p)?),
            serde_json::Value::Array(_) => {
                return Err(ConfigError::new(
                    p,
                    "lists are not supported in json_format",
                ))
            }
            other => JsonValue::Literal(other.to_string()),
        };
        out.push((k, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
