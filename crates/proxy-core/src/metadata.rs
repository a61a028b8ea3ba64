//! A request's dynamic metadata, as Envoy keeps it: namespaces of structs (`filter_metadata`),
//! set by the `set_metadata` and `header_to_metadata` filters and read by
//! `%DYNAMIC_METADATA(ns:key:...)%` in access logs and header values. It travels in the
//! request's extensions, so a request without such a filter carries none.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Namespace → struct. Keys are ordered, as Envoy prints a struct's fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DynamicMetadata {
    namespaces: BTreeMap<String, Map<String, Value>>,
}

impl DynamicMetadata {
    /// Whether `ns` has been set.
    pub fn has(&self, ns: &str) -> bool {
        self.namespaces.contains_key(ns)
    }

    /// Merge `fields` into `ns` (a field already there is replaced), as Envoy's
    /// `setDynamicMetadata`.
    pub fn merge(&mut self, ns: &str, fields: Map<String, Value>) {
        let to = self.namespaces.entry(ns.to_owned()).or_default();
        for (k, v) in fields {
            to.insert(k, v);
        }
    }

    /// The value at `path` in `ns` (the namespace's struct when `path` is empty).
    pub fn get(&self, ns: &str, path: &[String]) -> Option<Value> {
        let s = self.namespaces.get(ns)?;
        let Some((first, rest)) = path.split_first() else {
            return Some(Value::Object(s.clone()));
        };
        let mut v = s.get(first)?;
        for k in rest {
            v = v.as_object()?.get(k)?;
        }
        Some(v.clone())
    }

    /// Envoy's rendering of the value at `path` in `ns`: a string as is, a number, a bool, a
    /// struct or list as compact JSON; `None` when absent or null.
    pub fn render(&self, ns: &str, path: &[String]) -> Option<String> {
        let v = self.get(ns, path)?;
        let mut out = String::new();
        match &v {
            Value::Null => return None,
            Value::String(s) => out.push_str(s),
            other => write_json(other, &mut out),
        }
        Some(out)
    }
}

/// Compact JSON with keys in order and numbers as protobuf's doubles print (`42`, `1.5`).
pub fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n.as_f64().unwrap_or(0.0), out),
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

fn write_number(f: f64, out: &mut String) {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        let _ = write!(out, "{}", f as i64);
    } else {
        let _ = write!(out, "{f}");
    }
}

/// A number as metadata holds it (a protobuf double).
pub fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// As Envoy 1.40 rendered the same values (tests/e2e/metadata.rs).
    #[test]
    fn values_render_as_envoy() {
        let mut m = DynamicMetadata::default();
        let Value::Object(fields) = json!({"a": "x y", "n": 5, "f": 1.5, "b": true,
            "s": {"k": "v", "j": 2}, "l": [1, "two"], "z": null})
        else {
            unreachable!()
        };
        m.merge("ns1", fields);
        let r = |m: &DynamicMetadata, path: &[&str]| {
            let p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            m.render("ns1", &p)
        };
        assert_eq!(
            r(&m, &[]).as_deref(),
            Some(
                r#"{"a":"x y","b":true,"f":1.5,"l":[1,"two"],"n":5,"s":{"j":2,"k":"v"},"z":null}"#
            )
        );
        assert_eq!(r(&m, &["a"]).as_deref(), Some("x y"));
        assert_eq!(r(&m, &["n"]).as_deref(), Some("5"));
        assert_eq!(r(&m, &["f"]).as_deref(), Some("1.5"));
        assert_eq!(r(&m, &["b"]).as_deref(), Some("true"));
        assert_eq!(r(&m, &["s"]).as_deref(), Some(r#"{"j":2,"k":"v"}"#));
        assert_eq!(r(&m, &["s", "k"]).as_deref(), Some("v"));
        assert_eq!(r(&m, &["l"]).as_deref(), Some(r#"[1,"two"]"#));
        assert_eq!(r(&m, &["z"]), None);
        assert_eq!(r(&m, &["zz"]), None);
        assert_eq!(m.render("nope", &[]), None);
        let mut n = Map::new();
        n.insert("n".into(), number(42.0));
        m.merge("ns1", n);
        assert_eq!(r(&m, &["n"]).as_deref(), Some("42"));
    }
}
