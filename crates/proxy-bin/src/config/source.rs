//! Turns configuration text (YAML or JSON) into a `serde_json::Value`, and merges an overlay over
//! a base the way protobuf's `MergeFrom` does for Envoy's `--config-yaml`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Tagged;

use super::ConfigError;

/// The YAML tag Envoy drops a mapping entry for (`!ignore defs: &anchor {...}` holds anchors
/// the rest of the file refers to).
const IGNORE_TAG: &str = "!ignore";

/// Parses one YAML document (JSON is YAML too). `origin` names the source in messages. A
/// document with no node at all (empty, or only comments) is an error, as in Envoy ("unable to
/// convert YAML as JSON"); `{}` is an empty bootstrap.
pub(crate) fn parse_yaml(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let mut options = serde_saphyr::options::Options::default();
    // One-line messages: ConfigErrors prints one error per line.
    options.with_snippet = false;
    let node = serde_saphyr::from_str_with_options::<Option<Node>>(text, options).map_err(|e| {
        let e = e.without_snippet();
        let mut message = first_line(&e.to_string());
        // The parser's hint names its own API, which means nothing to a user.
        if let Some(i) = message.find("; use from_") {
            let tail = message[i..]
                .find(" at line")
                .map(|j| message[i + j..].to_owned());
            message.truncate(i);
            message.push_str(&tail.unwrap_or_default());
        }
        match e.location() {
            Some(loc) if !message.contains("line") => ConfigError::new(
                "",
                format!(
                    "could not parse {origin} as YAML at line {}, column {}: {message}",
                    loc.line(),
                    loc.column()
                ),
            ),
            _ => ConfigError::new("", format!("could not parse {origin} as YAML: {message}")),
        }
    })?;
    match node {
        Some(Node(v)) => Ok(v),
        None => Err(ConfigError::new(
            "",
            format!("{origin} holds no configuration (the YAML document is empty); write `{{}}` for an empty bootstrap"),
        )),
    }
}

/// A YAML node as JSON, without the mapping entries whose key is tagged `!ignore`.
struct Node(Value);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node(Value::from(v)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        // Beyond 64 bits: kept as written, so the field's own check names the problem.
        Ok(Node(Value::String(v.to_string())))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node(Value::String(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node(Value::String(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(Node(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Node(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Map::new();
        while let Some(Tagged(key, tag)) = map.next_key::<Tagged<String>>()? {
            let Node(v) = map.next_value()?;
            if tag.as_deref() != Some(IGNORE_TAG) {
                out.insert(key, v);
            }
        }
        Ok(Node(Value::Object(out)))
    }
}

/// Parses a JSON document; serde_json reports line and column itself.
pub(crate) fn parse_json(text: &str, origin: &str) -> Result<Value, ConfigError> {
    serde_json::from_str::<Value>(text)
        .map_err(|e| ConfigError::new("", format!("could not parse {origin} as JSON: {e}")))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
}

/// Renames protobuf-JSON camelCase field names (`portValue`) to the proto names (`port_value`),
/// as Envoy accepts both. Keys that are not plain identifiers (`@type`, extension names with
/// dots) are left alone. `path` is where `v` sits, for the error on a field given both ways.
pub(crate) fn snake_case_keys(v: &mut Value, path: &str) -> Result<(), ConfigError> {
    match v {
        // A map of namespaces to Structs: every key is the user's own.
        Value::Object(_) if path.ends_with("filter_metadata") => {}
        Value::Object(map) => {
            let renames: Vec<(String, String)> = map
                .keys()
                .filter_map(|k| camel_to_snake(k).map(|s| (k.clone(), s)))
                .collect();
            for (from, to) in renames {
                if map.contains_key(&to) {
                    return Err(ConfigError::new(
                        super::de::join(path, &to),
                        format!("field given twice, as `{from}` and as `{to}`"),
                    ));
                }
                if let Some(x) = map.remove(&from) {
                    map.insert(to, x);
                }
            }
            for (k, x) in map.iter_mut() {
                if !holds_struct(path, k) {
                    snake_case_keys(x, &super::de::join(path, k))?;
                }
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                snake_case_keys(x, &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether field `key` of the object at `path` is a `google.protobuf.Struct`, whose keys are
/// the user's own (kept verbatim, never renamed) and whose nulls are values: `node.metadata`
/// and each namespace of a `metadata.filter_metadata` map.
fn holds_struct(path: &str, key: &str) -> bool {
    (path == "node" && key == "metadata") || path.ends_with("filter_metadata")
}

/// Removes every object entry whose value is `null`: protobuf JSON reads `null` as the field's
/// default, which for Baton's optional fields and lists is "absent" (as Envoy). Structs keep
/// their nulls; a `null` list element stays, for the field's own check to reject.
pub(crate) fn strip_nulls(v: &mut Value, path: &str) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            for (k, x) in map.iter_mut() {
                if !holds_struct(path, k) {
                    strip_nulls(x, &super::de::join(path, k));
                }
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                strip_nulls(x, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

/// `portValue` → `port_value`; `None` if `k` is not a camelCase identifier.
fn camel_to_snake(k: &str) -> Option<String> {
    let plain = k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars().all(|c| c.is_ascii_alphanumeric());
    if !plain || !k.chars().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let mut out = String::with_capacity(k.len() + 4);
    for c in k.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Merges `overlay` into `base` as protobuf `MergeFrom` does: objects merge key by key, arrays
/// are appended, scalars overwrite, and a null in the overlay (an unset field) changes nothing.
pub(crate) fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) => b.extend(o),
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_overwrites_scalars_merges_objects_appends_arrays() {
        let mut base = json!({"a": 1, "o": {"x": 1, "y": 2}, "l": [1, 2], "keep": true});
        merge(
            &mut base,
            json!({"a": 2, "o": {"y": 3, "z": 4}, "l": [3], "keep": null, "new": "n"}),
        );
        assert_eq!(
            base,
            json!({"a": 2, "o": {"x": 1, "y": 3, "z": 4}, "l": [1, 2, 3], "keep": true, "new": "n"})
        );
    }

    #[test]
    fn yaml_errors_are_one_line_with_position() {
        let e = parse_yaml("a: [1, 2\nb: 3\n", "config").unwrap_err();
        assert!(e.path.is_empty());
        assert!(!e.message.contains('\n'), "{}", e.message);
        assert!(e.message.contains("line"), "{}", e.message);
    }

    #[test]
    fn yaml_scalars_map_to_json_types() {
        let v = parse_yaml(
            "n: 10000\ns: 0.25s\nb: true\nq: '5'\nf: 1.5\nz: null\n",
            "x",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"n": 10000, "s": "0.25s", "b": true, "q": "5", "f": 1.5, "z": null})
        );
    }

    #[test]
    fn multiple_documents_are_rejected_without_api_hints() {
        let e = parse_yaml("a: 1\n---\nb: 2\n", "config").unwrap_err();
        assert!(e.message.contains("multiple"), "{}", e.message);
        assert!(!e.message.contains("from_"), "{}", e.message);
        assert!(e.message.contains("line 3"), "{}", e.message);
    }

    #[test]
    fn camel_case_keys_become_proto_names() {
        let mut v = json!({"staticResources": {"clusters": [{"connectTimeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
                {"@type": "t", "explicitHttpConfig": {"http2ProtocolOptions": {}}}}}]}});
        snake_case_keys(&mut v, "").unwrap();
        assert_eq!(
            v,
            json!({"static_resources": {"clusters": [{"connect_timeout": "1s",
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions":
                    {"@type": "t", "explicit_http_config": {"http2_protocol_options": {}}}}}]}})
        );
        let mut v = json!({"a": [{"portValue": 1, "port_value": 2}]});
        let e = snake_case_keys(&mut v, "").unwrap_err();
        assert_eq!(e.path, "a[0].port_value");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert!(parse_yaml("a: 1\na: 2\n", "x").is_err());
    }

    #[test]
    fn json_errors_carry_position() {
        let e = parse_json("{\"a\": }", "f.json").unwrap_err();
        assert!(e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn ignore_tagged_keys_are_dropped_and_their_anchors_kept() {
        let v = parse_yaml(
            "!ignore defs:\n  port: &port 7\na:\n  !ignore b: 1\n  c: *port\nd: !ignore 2\n",
            "x",
        )
        .unwrap();
        // As Envoy: only a tagged key drops its entry; a tagged value stays.
        assert_eq!(v, json!({"a": {"c": 7}, "d": 2}));
    }

    #[test]
    fn an_empty_document_is_an_error() {
        for text in ["", "# only a comment\n", "\n\n"] {
            let e = parse_yaml(text, "config").unwrap_err();
            assert!(
                e.message.contains("holds no configuration"),
                "{}",
                e.message
            );
        }
        assert_eq!(parse_yaml("{}", "config").unwrap(), json!({}));
    }

    #[test]
    fn nulls_are_absent_fields_except_inside_structs() {
        let mut v = json!({"a": null, "l": [{"x": null, "y": 1}, null],
            "node": {"metadata": {"k": null, "camelKey": 1}, "id": null},
            "c": {"metadata": {"filter_metadata": {"ns": {"k": null}}}}});
        strip_nulls(&mut v, "");
        assert_eq!(
            v,
            json!({"l": [{"y": 1}, null], "node": {"metadata": {"k": null, "camelKey": 1}},
                "c": {"metadata": {"filter_metadata": {"ns": {"k": null}}}}})
        );
        let mut v = json!({"node": {"metadata": {"camelKey": 1}},
            "c": {"metadata": {"filterMetadata": {"myNs": {"someKey": 1}}}}});
        snake_case_keys(&mut v, "").unwrap();
        assert_eq!(
            v,
            json!({"node": {"metadata": {"camelKey": 1}},
                "c": {"metadata": {"filter_metadata": {"myNs": {"someKey": 1}}}}})
        );
    }
}
