//! `envoy.extensions.filters.http.compressor.v3.Compressor` with its gzip, brotli and zstd
//! libraries, and the per-route `CompressorPerRoute`. The request direction and what the
//! libraries cannot honour (gzip's `memory_level` and `compression_strategy`, zstd's
//! `dictionary`) are refused by name.

use proxy_core::config::{
    BrotliMode, BrotliParams, CompressorFilter, CompressorLibrary, CompressorPerRoute, GzipParams,
    ZstdParams, DEFAULT_CONTENT_TYPES,
};
use serde::Deserialize;
use serde_json::Value;

use super::super::de::{self, join};
use super::super::{raw, ConfigError};
use super::BoolValue;

pub(super) const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor";
pub(super) const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute";
const GZIP: &str = "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip";
const BROTLI: &str = "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli";
const ZSTD: &str = "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    compressor_library: Option<Library>,
    response_direction_config: Option<ResponseDirection>,
    request_direction_config: Option<Value>,
    choose_first: Option<bool>,
    // The deprecated fields of the response direction, used without response_direction_config.
    content_length: Option<raw::UInt32>,
    #[serde(default)]
    content_type: Vec<String>,
    disable_on_etag_header: Option<bool>,
    remove_accept_encoding_header: Option<bool>,
    runtime_enabled: Option<FeatureFlag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Library {
    name: Option<String>,
    typed_config: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseDirection {
    common_config: Option<Common>,
    disable_on_etag_header: Option<bool>,
    remove_accept_encoding_header: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    enabled: Option<FeatureFlag>,
    min_content_length: Option<raw::UInt32>,
    #[serde(default)]
    content_type: Vec<String>,
}

/// `config.core.v3.RuntimeFeatureFlag`: Baton has no runtime, so `default_value` decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureFlag {
    default_value: Option<BoolValue>,
    #[allow(dead_code)] // no runtime overrides it
    runtime_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gzip {
    memory_level: Option<raw::UInt32>,
    compression_level: Option<Value>,
    compression_strategy: Option<Value>,
    window_bits: Option<raw::UInt32>,
    chunk_size: Option<raw::UInt32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Brotli {
    quality: Option<raw::UInt32>,
    encoder_mode: Option<Value>,
    window_bits: Option<raw::UInt32>,
    input_block_bits: Option<raw::UInt32>,
    chunk_size: Option<raw::UInt32>,
    disable_literal_context_modeling: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Zstd {
    compression_level: Option<raw::UInt32>,
    enable_checksum: Option<bool>,
    strategy: Option<Value>,
    dictionary: Option<Value>,
    chunk_size: Option<raw::UInt32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerRoute {
    disabled: Option<bool>,
    overrides: Option<Overrides>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    response_direction_config: Option<ResponseOverrides>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseOverrides {
    remove_accept_encoding_header: Option<BoolValue>,
}

pub(super) fn parse(rest: Value, path: &str) -> Result<CompressorFilter, ConfigError> {
    let raw: Raw = super::decode(rest, path)?;
    if raw.request_direction_config.is_some() {
        return Err(ConfigError::new(
            join(path, "request_direction_config"),
            "request compression is not supported by Baton (responses only)",
        ));
    }
    let lib_path = join(path, "compressor_library");
    let lib = raw
        .compressor_library
        .ok_or_else(|| ConfigError::new(&lib_path, "is required (as in Envoy)"))?;
    let library_name = lib
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ConfigError::new(join(&lib_path, "name"), "is required (as in Envoy)"))?;
    let tc_path = join(&lib_path, "typed_config");
    let tc = lib
        .typed_config
        .ok_or_else(|| ConfigError::new(&tc_path, "is required (as in Envoy)"))?;
    let library = library(tc, &tc_path)?;
    let response_scoped_stats = raw.response_direction_config.is_some();
    let (common, disable_on_etag_header, remove_accept_encoding_header, common_path) =
        match raw.response_direction_config {
            Some(r) => (
                r.common_config.unwrap_or_default(),
                r.disable_on_etag_header,
                r.remove_accept_encoding_header,
                join(&join(path, "response_direction_config"), "common_config"),
            ),
            None => (
                Common {
                    enabled: raw.runtime_enabled,
                    min_content_length: raw.content_length,
                    content_type: raw.content_type,
                },
                raw.disable_on_etag_header,
                raw.remove_accept_encoding_header,
                path.to_owned(),
            ),
        };
    let enabled = match common.enabled {
        None => true,
        Some(f) => f
            .default_value
            .ok_or_else(|| {
                ConfigError::new(
                    join(&join(&common_path, "enabled"), "default_value"),
                    "is required (as in Envoy)",
                )
            })?
            .get(),
    };
    // 0 (or unset) is Envoy's default, 30.
    let min_content_length = match common.min_content_length.map(|m| m.get()) {
        None | Some(0) => 30,
        Some(n) => u64::from(n),
    };
    let content_types = if common.content_type.is_empty() {
        DEFAULT_CONTENT_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        common
            .content_type
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect()
    };
    Ok(CompressorFilter {
        library,
        library_name,
        enabled,
        min_content_length,
        content_types,
        disable_on_etag_header: disable_on_etag_header.unwrap_or(false),
        remove_accept_encoding_header: remove_accept_encoding_header.unwrap_or(false),
        choose_first: raw.choose_first.unwrap_or(false),
        response_scoped_stats,
    })
}

fn library(tc: Value, path: &str) -> Result<CompressorLibrary, ConfigError> {
    let (url, rest) = de::split_any(tc, path)?;
    match url.as_str() {
        GZIP => gzip(de::decode(rest, path)?, path),
        BROTLI => brotli(de::decode(rest, path)?, path),
        ZSTD => zstd(de::decode(rest, path)?, path),
        _ => Err(ConfigError::new(
            join(path, "@type"),
            format!("unsupported compressor library `{url}`; Baton supports gzip, brotli and zstd"),
        )),
    }
}

/// `v` within `[lo, hi]`, or `default` when unset.
fn ranged(
    v: Option<raw::UInt32>,
    default: u32,
    (lo, hi): (u32, u32),
    path: &str,
    field: &str,
) -> Result<u32, ConfigError> {
    match v.map(|v| v.get()) {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(_) => Err(ConfigError::new(
            join(path, field),
            format!("must be between {lo} and {hi} (as in Envoy)"),
        )),
    }
}

/// A protobuf enum written as its name or its number: its number, when one of `names`
/// (index = number, `None` for gaps).
fn enum_value(
    v: Option<Value>,
    names: &[(&str, u32)],
    path: &str,
    field: &str,
) -> Result<u32, ConfigError> {
    let bad = || {
        let list: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        ConfigError::new(
            join(path, field),
            format!("must be one of {}", list.join(", ")),
        )
    };
    match v {
        None => Ok(0),
        Some(Value::String(s)) => names
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(bad),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| names.iter().find(|(_, v)| u64::from(*v) == n))
            .map(|(_, v)| *v)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

fn gzip(g: Gzip, path: &str) -> Result<CompressorLibrary, ConfigError> {
    if g.memory_level.is_some() {
        return Err(ConfigError::new(
            join(path, "memory_level"),
            "is not supported by Baton (its zlib keeps its own memory level); leave it unset",
        ));
    }
    let levels = [
        ("DEFAULT_COMPRESSION", 0),
        ("BEST_SPEED", 1),
        ("COMPRESSION_LEVEL_1", 1),
        ("COMPRESSION_LEVEL_2", 2),
        ("COMPRESSION_LEVEL_3", 3),
        ("COMPRESSION_LEVEL_4", 4),
        ("COMPRESSION_LEVEL_5", 5),
        ("COMPRESSION_LEVEL_6", 6),
        ("COMPRESSION_LEVEL_7", 7),
        ("COMPRESSION_LEVEL_8", 8),
        ("COMPRESSION_LEVEL_9", 9),
        ("BEST_COMPRESSION", 9),
    ];
    let level = match enum_value(g.compression_level, &levels, path, "compression_level")? {
        // zlib's Z_DEFAULT_COMPRESSION.
        0 => 6,
        n => n,
    };
    let strategies = [
        ("DEFAULT_STRATEGY", 0),
        ("FILTERED", 1),
        ("HUFFMAN_ONLY", 2),
        ("RLE", 3),
        ("FIXED", 4),
    ];
    if enum_value(
        g.compression_strategy,
        &strategies,
        path,
        "compression_strategy",
    )? != 0
    {
        return Err(ConfigError::new(
            join(path, "compression_strategy"),
            "only DEFAULT_STRATEGY is supported by Baton (its zlib binding sets no other)",
        ));
    }
    Ok(CompressorLibrary::Gzip(GzipParams {
        level,
        window_bits: ranged(g.window_bits, 12, (9, 15), path, "window_bits")? as u8,
        chunk_size: ranged(g.chunk_size, 4096, (4096, 65536), path, "chunk_size")?,
    }))
}

fn brotli(b: Brotli, path: &str) -> Result<CompressorLibrary, ConfigError> {
    let modes = [("DEFAULT", 0), ("GENERIC", 1), ("TEXT", 2), ("FONT", 3)];
    let mode = match enum_value(b.encoder_mode, &modes, path, "encoder_mode")? {
        2 => BrotliMode::Text,
        3 => BrotliMode::Font,
        _ => BrotliMode::Generic,
    };
    Ok(CompressorLibrary::Brotli(BrotliParams {
        quality: ranged(b.quality, 3, (0, 11), path, "quality")?,
        window_bits: ranged(b.window_bits, 18, (10, 24), path, "window_bits")?,
        input_block_bits: ranged(b.input_block_bits, 24, (16, 24), path, "input_block_bits")?,
        disable_literal_context_modeling: b.disable_literal_context_modeling.unwrap_or(false),
        mode,
        chunk_size: ranged(b.chunk_size, 4096, (4096, 65536), path, "chunk_size")?,
    }))
}

fn zstd(z: Zstd, path: &str) -> Result<CompressorLibrary, ConfigError> {
    if z.dictionary.is_some() {
        return Err(ConfigError::new(
            join(path, "dictionary"),
            "zstd dictionaries are not supported by Baton",
        ));
    }
    let strategies = [
        ("DEFAULT", 0),
        ("FAST", 1),
        ("DFAST", 2),
        ("GREEDY", 3),
        ("LAZY", 4),
        ("LAZY2", 5),
        ("BTLAZY2", 6),
        ("BTOPT", 7),
        ("BTULTRA", 8),
        ("BTULTRA2", 9),
    ];
    let level = z.compression_level.map_or(3, |l| l.get());
    Ok(CompressorLibrary::Zstd(ZstdParams {
        // libzstd clamps a level above its maximum (22).
        level: level.min(22) as i32,
        enable_checksum: z.enable_checksum.unwrap_or(false),
        strategy: enum_value(z.strategy, &strategies, path, "strategy")?,
        chunk_size: ranged(z.chunk_size, 4096, (4096, 65536), path, "chunk_size")?,
    }))
}

pub(super) fn parse_per_route(rest: Value, path: &str) -> Result<CompressorPerRoute, ConfigError> {
    let raw: PerRoute = super::decode(rest, path)?;
    match (raw.disabled, raw.overrides) {
        (Some(true), None) => Ok(CompressorPerRoute {
            response_enabled: Some(false),
            remove_accept_encoding_header: None,
        }),
        (Some(false), None) => Err(ConfigError::new(
            join(path, "disabled"),
            "must be true when set (Envoy: const true)",
        )),
        (None, Some(o)) => Ok(match o.response_direction_config {
            // An empty override changes nothing, as in Envoy.
            None => CompressorPerRoute::default(),
            Some(r) => CompressorPerRoute {
                response_enabled: Some(true),
                remove_accept_encoding_header: r.remove_accept_encoding_header.map(|b| b.get()),
            },
        }),
        (None, None) => Err(ConfigError::new(
            path,
            "needs one of `disabled`, `overrides` (Envoy: the override is required)",
        )),
        (Some(_), Some(_)) => Err(ConfigError::new(
            path,
            "has both `disabled` and `overrides`; give one",
        )),
    }
}
