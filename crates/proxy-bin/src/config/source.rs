//! Turns configuration text (YAML or JSON) into a `serde_json::Value`, and merges an overlay over
//! a base the way protobuf's `MergeFrom` does for Envoy's `--config-yaml`.

use serde_json::Value;

use super::ConfigError;

/// Parses one YAML document (JSON is YAML too). `origin` names the source in messages.
pub(crate) fn parse_yaml(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let mut options = serde_saphyr::options::Options::default();
    // One-line messages: ConfigErrors prints one error per line.
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
        let e = e.without_snippet();
        let message = first_line(&e.to_string());
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
    })
}

/// Parses a JSON document; serde_json reports line and column itself.
pub(crate) fn parse_json(text: &str, origin: &str) -> Result<Value, ConfigError> {
    serde_json::from_str::<Value>(text)
        .map_err(|e| ConfigError::new("", format!("could not parse {origin} as JSON: {e}")))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_owned()
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
    fn duplicate_keys_are_rejected() {
        assert!(parse_yaml("a: 1\na: 2\n", "x").is_err());
    }

    #[test]
    fn json_errors_carry_position() {
        let e = parse_json("{\"a\": }", "f.json").unwrap_err();
        assert!(e.message.contains("line 1"), "{}", e.message);
    }
}
