//! `envoy.extensions.filters.http.set_metadata.v3.Config` and
//! `envoy.extensions.filters.http.header_to_metadata.v3.Config`. `typed_value`, cookie rules,
//! `regex_value_rewrite` and `PROTOBUF_VALUE` are refused by name.

use http::HeaderName;
use proxy_core::config::{
    HeaderRule, HeaderToMetadata, KeyValuePair, MetadataEntry, MetadataType, SetMetadata,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::de::join;
use super::super::ConfigError;

pub(super) const SET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config";
pub(super) const HEADER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config";

/// The namespace of a `KeyValuePair` without one.
const DEFAULT_NAMESPACE: &str = "envoy.filters.http.header_to_metadata";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    metadata_namespace: Option<String>,
    value: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Vec<RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    metadata_namespace: Option<String>,
    allow_overwrite: Option<bool>,
    value: Option<Map<String, Value>>,
    typed_value: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    #[serde(default)]
    request_rules: Vec<RawRule>,
    #[serde(default)]
    response_rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    header: Option<String>,
    cookie: Option<String>,
    on_header_present: Option<RawPair>,
    on_header_missing: Option<RawPair>,
    remove: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    metadata_namespace: Option<String>,
    key: Option<String>,
    value: Option<String>,
    regex_value_rewrite: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    encode: Option<Value>,
}

pub(super) fn parse_set(rest: Value, path: &str) -> Result<SetMetadata, ConfigError> {
    let raw: RawSet = super::decode(rest, path)?;
    let mut entries = Vec::new();
    // The deprecated single entry: merged into whatever is there.
    if let Some(ns) = raw.metadata_namespace.filter(|n| !n.is_empty()) {
        entries.push(MetadataEntry {
            namespace: ns,
            value: raw.value.unwrap_or_default(),
            allow_overwrite: true,
        });
    } else if raw.value.is_some() {
        return Err(ConfigError::new(
            join(path, "metadata_namespace"),
            "is required with `value`",
        ));
    }
    for (i, e) in raw.metadata.into_iter().enumerate() {
        let p = format!("{path}.metadata[{i}]");
        if e.typed_value.is_some() {
            return Err(ConfigError::new(
                join(&p, "typed_value"),
                "typed metadata is not supported by Baton (use `value`)",
            ));
        }
        let namespace = e
            .metadata_namespace
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ConfigError::new(join(&p, "metadata_namespace"), "is required (as in Envoy)")
            })?;
        entries.push(MetadataEntry {
            namespace,
            value: e.value.unwrap_or_default(),
            allow_overwrite: e.allow_overwrite.unwrap_or(false),
        });
    }
    Ok(SetMetadata { entries })
}

pub(super) fn parse_header(rest: Value, path: &str) -> Result<HeaderToMetadata, ConfigError> {
    let raw: RawHeader = super::decode(rest, path)?;
    let rules = |raw: Vec<RawRule>, field: &str| -> Result<Vec<HeaderRule>, ConfigError> {
        raw.into_iter()
            .enumerate()
            .map(|(i, r)| rule(r, &format!("{path}.{field}[{i}]")))
            .collect()
    };
    Ok(HeaderToMetadata {
        request_rules: rules(raw.request_rules, "request_rules")?,
        response_rules: rules(raw.response_rules, "response_rules")?,
    })
}

fn rule(r: RawRule, path: &str) -> Result<HeaderRule, ConfigError> {
    if r.cookie.is_some() {
        return Err(ConfigError::new(
            join(path, "cookie"),
            "cookie rules are not supported by Baton (only `header`)",
        ));
    }
    let header = r.header.filter(|h| !h.is_empty()).ok_or_else(|| {
        ConfigError::new(
            join(path, "header"),
            "is required (as in Envoy: one of header, cookie)",
        )
    })?;
    let header = HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
        .map_err(|_| ConfigError::new(join(path, "header"), "is not a valid header name"))?;
    if r.on_header_present.is_none() && r.on_header_missing.is_none() {
        return Err(ConfigError::new(
            path,
            "needs on_header_present or on_header_missing (as in Envoy)",
        ));
    }
    let on_missing = r
        .on_header_missing
        .map(|p| pair(p, &join(path, "on_header_missing")))
        .transpose()?;
    if on_missing.as_ref().is_some_and(|m| m.value.is_none()) {
        return Err(ConfigError::new(
            join(&join(path, "on_header_missing"), "value"),
            "is required: a missing header has no value of its own (as in Envoy)",
        ));
    }
    Ok(HeaderRule {
        header,
        on_present: r
            .on_header_present
            .map(|p| pair(p, &join(path, "on_header_present")))
            .transpose()?,
        on_missing,
        remove: r.remove.unwrap_or(false),
    })
}

fn pair(p: RawPair, path: &str) -> Result<KeyValuePair, ConfigError> {
    if p.regex_value_rewrite.is_some() {
        return Err(ConfigError::new(
            join(path, "regex_value_rewrite"),
            "is not supported by Baton",
        ));
    }
    let key = p
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ConfigError::new(join(path, "key"), "is required (as in Envoy)"))?;
    let kind = match p.kind.as_ref() {
        None => MetadataType::String,
        Some(Value::String(s)) if s == "STRING" => MetadataType::String,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => MetadataType::String,
        Some(Value::String(s)) if s == "NUMBER" => MetadataType::Number,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => MetadataType::Number,
        Some(Value::String(s)) if s == "PROTOBUF_VALUE" => {
            return Err(ConfigError::new(
                join(path, "type"),
                "PROTOBUF_VALUE is not supported by Baton (STRING or NUMBER)",
            ))
        }
        Some(_) => {
            return Err(ConfigError::new(
                join(path, "type"),
                "must be STRING or NUMBER",
            ))
        }
    };
    let base64 = match p.encode.as_ref() {
        None => false,
        Some(Value::String(s)) if s == "NONE" => false,
        Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
        Some(Value::String(s)) if s == "BASE64" => true,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
        Some(_) => {
            return Err(ConfigError::new(
                join(path, "encode"),
                "must be NONE or BASE64",
            ))
        }
    };
    Ok(KeyValuePair {
        namespace: p
            .metadata_namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        key,
        value: p.value.filter(|v| !v.is_empty()),
        kind,
        base64,
    })
}
