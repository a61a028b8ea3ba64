//! `envoy.filters.http.set_metadata` and `envoy.filters.http.header_to_metadata`: they write
//! the request's dynamic metadata (kept in its extensions, read by `%DYNAMIC_METADATA(...)%`);
//! the response rules of `header_to_metadata` write what only the access log still reads.

use base64::Engine as _;
use http::{HeaderMap, Request};
use serde_json::{Map, Value};

use crate::body::RequestBody;
use crate::config::{HeaderRule, HeaderToMetadata, KeyValuePair, MetadataType, SetMetadata};
use crate::context::Ctx;
use crate::metadata::{number, DynamicMetadata};

/// Envoy skips a header value longer than this.
const MAX_VALUE_LEN: usize = 8 * 1024;

pub(super) fn set_metadata(cx: Ctx<'_>, cfg: &SetMetadata, req: &mut Request<RequestBody>) {
    let md = req
        .extensions_mut()
        .get_or_insert_default::<DynamicMetadata>();
    for e in &cfg.entries {
        if !e.allow_overwrite && md.has(&e.namespace) {
            if let Some(c) = &cx.l.set_metadata_overwrite_denied {
                c.inc();
            }
            continue;
        }
        md.merge(&e.namespace, e.value.clone());
    }
}

pub(super) fn decode(cfg: &HeaderToMetadata, req: &mut Request<RequestBody>) {
    if cfg.request_rules.is_empty() {
        return;
    }
    let mut md = req
        .extensions_mut()
        .remove::<DynamicMetadata>()
        .unwrap_or_default();
    apply(&cfg.request_rules, req.headers_mut(), &mut md);
    req.extensions_mut().insert(md);
}

/// The response rules, into `md` (the access log's).
pub(super) fn encode(cfg: &HeaderToMetadata, headers: &mut HeaderMap, md: &mut DynamicMetadata) {
    apply(&cfg.response_rules, headers, md);
}

fn apply(rules: &[HeaderRule], headers: &mut HeaderMap, md: &mut DynamicMetadata) {
    let mut by_ns: Vec<(&str, Map<String, Value>)> = Vec::new();
    for rule in rules {
        match headers.get(&rule.header) {
            Some(v) => {
                if let Some(kv) = &rule.on_present {
                    let value = match &kv.value {
                        Some(fixed) => Some(fixed.as_str().to_owned()),
                        None => Some(String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .filter(|s| s.len() <= MAX_VALUE_LEN),
                    };
                    if let Some(value) = value {
                        add(&mut by_ns, kv, value);
                    }
                }
                if rule.remove {
                    headers.remove(&rule.header);
                }
            }
            None => {
                if let Some(kv) = &rule.on_missing {
                    if let Some(value) = &kv.value {
                        add(&mut by_ns, kv, value.clone());
                    }
                }
            }
        }
    }
    for (ns, fields) in by_ns {
        md.merge(ns, fields);
    }
}

/// `value` as `kv` says (decoded, typed); nothing when empty or not of its type, as Envoy.
fn add<'a>(by_ns: &mut Vec<(&'a str, Map<String, Value>)>, kv: &'a KeyValuePair, value: String) {
    let value = if kv.base64 {
        match base64::engine::general_purpose::STANDARD.decode(value.as_bytes()) {
            Ok(d) => String::from_utf8_lossy(&d).into_owned(),
            Err(_) => return,
        }
    } else {
        value
    };
    if value.is_empty() {
        return;
    }
    let v = match kv.kind {
        MetadataType::String => Value::String(value),
        MetadataType::Number => match value.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => number(f),
            _ => return,
        },
    };
    let fields = match by_ns.iter().position(|(n, _)| *n == kv.namespace) {
        Some(i) => &mut by_ns[i].1,
        None => {
            by_ns.push((&kv.namespace, Map::new()));
            &mut by_ns.last_mut().expect("just pushed").1
        }
    };
    fields.insert(kv.key.clone(), v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn kv(key: &str, value: Option<&str>, kind: MetadataType, base64: bool) -> KeyValuePair {
        KeyValuePair {
            namespace: "ns".into(),
            key: key.into(),
            value: value.map(str::to_owned),
            kind,
            base64,
        }
    }

    /// As Envoy 1.40 wrote them (tests/e2e/metadata.rs).
    #[test]
    fn rules_write_as_envoy() {
        let rule = |h: &'static str, on_present, on_missing, remove| HeaderRule {
            header: http::HeaderName::from_static(h),
            on_present,
            on_missing,
            remove,
        };
        let rules = vec![
            rule(
                "x-a",
                Some(kv("a", None, MetadataType::String, false)),
                Some(kv("a_missing", Some("none"), MetadataType::String, false)),
                true,
            ),
            rule(
                "x-n",
                Some(kv("n", None, MetadataType::Number, false)),
                None,
                false,
            ),
            rule(
                "x-b64",
                Some(kv("b64", None, MetadataType::String, true)),
                None,
                false,
            ),
            rule(
                "x-fixed",
                Some(kv("fixed", Some("const"), MetadataType::String, false)),
                None,
                false,
            ),
        ];
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("hello"));
        h.insert("x-n", HeaderValue::from_static("42"));
        h.insert("x-b64", HeaderValue::from_static("aGk="));
        h.insert("x-fixed", HeaderValue::from_static("whatever"));
        let mut md = DynamicMetadata::default();
        apply(&rules, &mut h, &mut md);
        assert_eq!(
            md.render("ns", &[]).as_deref(),
            Some(r#"{"a":"hello","b64":"hi","fixed":"const","n":42}"#)
        );
        assert!(!h.contains_key("x-a"));
        let mut h = HeaderMap::new();
        h.insert("x-n", HeaderValue::from_static("notnum"));
        let mut md = DynamicMetadata::default();
        apply(&rules, &mut h, &mut md);
        assert_eq!(
            md.render("ns", &[]).as_deref(),
            Some(r#"{"a_missing":"none"}"#)
        );
    }
}
