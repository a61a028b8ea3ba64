//! Decoding helpers: deserializing a `serde_json::Value` into a raw struct with the full field
//! path in errors, `google.protobuf.Any` (`typed_config`) unpacking, and the protobuf-JSON scalar
//! forms Envoy accepts (numbers as strings, durations as `"1.5s"` or `{seconds, nanos}`).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::ConfigError;

/// Joins a path prefix and a relative path (`[0].x` or `x`).
pub(crate) fn join(prefix: &str, rel: &str) -> String {
    if rel.is_empty() {
        prefix.to_owned()
    } else if prefix.is_empty() {
        rel.trim_start_matches('.').to_owned()
    } else if rel.starts_with('[') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}.{}", rel.trim_start_matches('.'))
    }
}

/// Deserializes `value` into `T`; on error the path is `prefix` joined with the failing field.
pub(crate) fn decode<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let mut rel = String::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => rel.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } => {
                    rel.push('.');
                    rel.push_str(key);
                }
                serde_path_to_error::Segment::Enum { variant } => {
                    rel.push('.');
                    rel.push_str(variant);
                }
                serde_path_to_error::Segment::Unknown => rel.push_str(".?"),
            }
        }
        let path = join(prefix, &rel);
        rewrite(path, &e.into_inner().to_string())
    })
}

/// Rewrites serde's messages for unknown and missing fields so the path ends with the field.
fn rewrite(path: String, msg: &str) -> ConfigError {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((field, tail)) = rest.split_once('`') {
            let path = if path.ends_with(&format!(".{field}")) || path == field {
                path
            } else {
                join(&path, field)
            };
            let tail = tail.trim_start_matches(", ");
            let supported = if tail == "there are no fields" {
                "this object takes no fields".to_owned()
            } else {
                format!("supported here: {}", tail.trim_start_matches("expected "))
            };
            return ConfigError::new(
                path,
                format!("unsupported field (Baton does not implement it); {supported}"),
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some((field, _)) = rest.split_once('`') {
            return ConfigError::new(join(&path, field), "required field is missing");
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        return ConfigError::new(path, format!("unsupported value {rest}"));
    }
    ConfigError::new(path, msg.to_owned())
}

/// Unpacks a `google.protobuf.Any`: checks `@type` against `expected` and decodes the rest.
pub(crate) fn any<T: DeserializeOwned>(
    value: Value,
    path: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    let (url, rest) = split_any(value, path)?;
    if url != expected {
        return Err(ConfigError::new(
            join(path, "@type"),
            format!("unsupported type `{url}`; expected `{expected}`"),
        ));
    }
    decode(rest, path)
}

/// Splits an `Any` into its `@type` and the remaining fields.
pub(crate) fn split_any(value: Value, path: &str) -> Result<(String, Value), ConfigError> {
    let Value::Object(mut map) = value else {
        return Err(ConfigError::new(
            path,
            "expected an object with an `@type` field",
        ));
    };
    match map.remove("@type") {
        Some(Value::String(url)) => Ok((url, Value::Object(map))),
        Some(_) => Err(ConfigError::new(
            join(path, "@type"),
            "expected a string type URL",
        )),
        None => Err(ConfigError::new(
            join(path, "@type"),
            "required field is missing",
        )),
    }
}

/// An integer as protobuf JSON writes it: a number or a numeric string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int<T>(pub T);

impl<'de, T> Deserialize<'de> for Int<T>
where
    T: TryFrom<i128>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<i128>> V<T> {
            fn fit<E: de::Error>(v: i128) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("integer {v} is out of range")))
            }
        }
        impl<T: TryFrom<i128>> Visitor<'_> for V<T> {
            type Value = Int<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer (number or numeric string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int<T>, E> {
                Self::fit(i128::from(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int<T>, E> {
                Self::fit(i128::from(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int<T>, E> {
                if v.fract() == 0.0 && v.abs() < 1e30 {
                    // Integral and far inside i128: the cast is exact.
                    Self::fit(v as i128)
                } else {
                    Err(E::custom(format!("expected an integer, got {v}")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int<T>, E> {
                match v.trim().parse::<i128>() {
                    Ok(n) => Self::fit(n),
                    Err(_) => Err(E::custom(format!("expected an integer, got \"{v}\""))),
                }
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `google.protobuf.Duration`: `"5s"`, `"0.25s"`, or `{seconds, nanos}`. Never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dur(pub Duration);

impl Dur {
    /// Zero means "disabled" for Envoy's timeouts.
    pub(crate) fn nonzero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

/// Protobuf's largest Duration (about 10 000 years).
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;

/// Parses `"1.5s"` (digits, optional fraction up to nanoseconds, then `s`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration \"{s}\": expected seconds with an `s` suffix such as \"5s\" or \"0.25s\"")
    };
    if s.starts_with('-') {
        return Err(format!("invalid duration \"{s}\": must not be negative"));
    }
    let body = s.strip_suffix('s').ok_or_else(bad)?;
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
        return Err(bad());
    }
    if body.ends_with('.') {
        return Err(bad());
    }
    let secs: u64 = whole.parse().map_err(|_| bad())?;
    if secs > MAX_DURATION_SECONDS {
        return Err(format!("invalid duration \"{s}\": too large"));
    }
    let mut nanos: u32 = 0;
    if !frac.is_empty() {
        let padded = format!("{frac:0<9}");
        nanos = padded.parse().map_err(|_| bad())?;
    }
    Ok(Duration::new(secs, nanos))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"5s\" or {seconds, nanos}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dur, A::Error> {
                let mut seconds: Option<i64> = None;
                let mut nanos: Option<i32> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "seconds" => seconds = Some(map.next_value::<Int<i64>>()?.0),
                        "nanos" => nanos = Some(map.next_value::<Int<i32>>()?.0),
                        other => {
                            return Err(de::Error::unknown_field(other, &["seconds", "nanos"]))
                        }
                    }
                }
                let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
                if s < 0 || n < 0 {
                    return Err(de::Error::custom("invalid duration: must not be negative"));
                }
                if n > 999_999_999 {
                    return Err(de::Error::custom(
                        "invalid duration: nanos must be below 1000000000",
                    ));
                }
                let (s, n) = (s.unsigned_abs(), n.unsigned_abs());
                if s > MAX_DURATION_SECONDS {
                    return Err(de::Error::custom("invalid duration: too large"));
                }
                Ok(Dur(Duration::new(s, n)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A protobuf enum as Envoy reads it from JSON: a value name in any ASCII case (`round_robin`,
/// `Strict_Dns`, `tlsv1_2` — Envoy parses enums case-insensitively) or the value's number.
pub(crate) trait ProtoEnum: Sized + 'static {
    /// The value names Baton implements, as the proto spells them.
    const NAMES: &'static [&'static str];
    fn from_name(name: &str) -> Option<Self>;
    fn from_number(n: i64) -> Option<Self>;
}

/// Deserializes a [`ProtoEnum`] from a string or an integer.
pub(crate) fn deserialize_enum<'de, T: ProtoEnum, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    struct V<T>(PhantomData<T>);
    impl<T: ProtoEnum> V<T> {
        fn unsupported<E: de::Error>(what: &str) -> E {
            E::custom(format!(
                "unsupported value {what}; Baton supports {}",
                T::NAMES.join(", ")
            ))
        }
        fn number<E: de::Error>(n: i64) -> Result<T, E> {
            T::from_number(n).ok_or_else(|| Self::unsupported(&n.to_string()))
        }
    }
    impl<T: ProtoEnum> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "one of {}", T::NAMES.join(", "))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            T::from_name(v).ok_or_else(|| Self::unsupported(&format!("`{v}`")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            Self::number(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            Self::number(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }
    d.deserialize_any(V(PhantomData))
}

/// Declares a [`ProtoEnum`]: each variant with its proto name and number.
macro_rules! proto_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($variant:ident = ($text:literal, $num:literal)),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($variant),+
        }

        impl $crate::config::de::ProtoEnum for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn from_name(name: &str) -> Option<Self> {
                $(if name.eq_ignore_ascii_case($text) {
                    return Some(Self::$variant);
                })+
                None
            }
            fn from_number(n: i64) -> Option<Self> {
                match n {
                    $($num => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::config::de::deserialize_enum(d)
            }
        }
    };
}
pub(crate) use proto_enum;

/// An object that must be empty (`google_re2: {}`, `http2_protocol_options: {}`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
        for bad in [
            "5",
            "-1s",
            "s",
            ".5s",
            "5.s",
            "1.0000000001s",
            "5ms",
            "1e3s",
            "",
            " 5s",
            "9999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let d: Dur = decode(json!({"seconds": 2, "nanos": 500000000}), "x").unwrap();
        assert_eq!(d.0, Duration::from_millis(2500));
        let d: Dur = decode(json!({"seconds": "3"}), "x").unwrap();
        assert_eq!(d.0, Duration::from_secs(3));
        assert!(decode::<Dur>(json!({"seconds": -1}), "x").is_err());
        assert!(decode::<Dur>(json!({"minutes": 1}), "x").is_err());
        assert!(decode::<Dur>(json!(5), "x").is_err());
    }

    #[test]
    fn integers_accept_numbers_and_numeric_strings() {
        assert_eq!(decode::<Int<u32>>(json!(7), "x").unwrap().0, 7);
        assert_eq!(decode::<Int<u32>>(json!("7"), "x").unwrap().0, 7);
        assert_eq!(decode::<Int<u32>>(json!(7.0), "x").unwrap().0, 7);
        assert!(decode::<Int<u32>>(json!(-1), "x").is_err());
        assert!(decode::<Int<u32>>(json!(4294967296u64), "x").is_err());
        assert!(decode::<Int<u32>>(json!(1.5), "x").is_err());
        assert!(decode::<Int<u32>>(json!("seven"), "x").is_err());
        assert!(decode::<Int<u32>>(json!(true), "x").is_err());
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Vec<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
    }

    #[test]
    fn paths_end_with_the_offending_field() {
        let e =
            decode::<Outer>(json!({"inner": [{"a": 1}, {"a": 1, "b": 2}]}), "root").unwrap_err();
        assert_eq!(e.path, "root.inner[1].b");
        assert!(e.message.starts_with("unsupported field"), "{}", e.message);
        let e = decode::<Outer>(json!({"inner": [{}]}), "").unwrap_err();
        assert_eq!(e.path, "inner[0].a");
        assert_eq!(e.message, "required field is missing");
        let e = decode::<Outer>(json!({"inner": [{"a": "x"}]}), "p").unwrap_err();
        assert_eq!(e.path, "p.inner[0].a");
    }

    #[test]
    fn any_checks_type_url() {
        let v = json!({"@type": "t/x", "a": 1});
        let i: Inner = any(v.clone(), "tc", "t/x").unwrap();
        assert_eq!(i.a, 1);
        let e = any::<Inner>(v, "tc", "t/y").unwrap_err();
        assert_eq!(e.path, "tc.@type");
        let e = any::<Inner>(json!({"a": 1}), "tc", "t/x").unwrap_err();
        assert_eq!(e.path, "tc.@type");
        let e = any::<Inner>(json!("str"), "tc", "t/x").unwrap_err();
        assert_eq!(e.path, "tc");
    }

    proto_enum! {
        enum Policy {
            RoundRobin = ("ROUND_ROBIN", 0),
            Random = ("RANDOM", 3),
        }
    }

    #[test]
    fn enums_read_any_case_and_numbers_as_envoy() {
        for (v, want) in [
            (json!("ROUND_ROBIN"), Policy::RoundRobin),
            (json!("round_robin"), Policy::RoundRobin),
            (json!("Round_Robin"), Policy::RoundRobin),
            (json!(3), Policy::Random),
        ] {
            assert_eq!(decode::<Policy>(v, "p").unwrap(), want);
        }
        let e = decode::<Policy>(json!("MAGLEV"), "p").unwrap_err();
        assert_eq!(e.path, "p");
        assert_eq!(
            e.message,
            "unsupported value `MAGLEV`; Baton supports ROUND_ROBIN, RANDOM"
        );
        let e = decode::<Policy>(json!(5), "p").unwrap_err();
        assert!(
            e.message.starts_with("unsupported value 5;"),
            "{}",
            e.message
        );
        assert!(decode::<Policy>(json!("roundrobin"), "p").is_err());
    }
}
