//! `envoy.filters.http.compressor`: which responses a compressor filter compresses, with which
//! library and parameters, and its per-route `CompressorPerRoute`.

/// Envoy's `content_type` list when a configuration gives none.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
    "application/grpc-web",
    "application/grpc-web+proto",
];

/// One compressor filter (response direction; the request direction is refused at parse).
#[derive(Clone, Debug)]
pub struct CompressorFilter {
    pub library: CompressorLibrary,
    /// `compressor_library.name`: stats are `http.<prefix>.compressor.<name>.<library>.*`.
    pub library_name: String,
    /// `common_config.enabled.default_value` (default true; no runtime overrides it).
    pub enabled: bool,
    /// `common_config.min_content_length` (default 30): a shorter `content-length` is not
    /// compressed.
    pub min_content_length: u64,
    /// `common_config.content_type`, lowercased (Envoy's list when empty).
    pub content_types: Vec<String>,
    pub disable_on_etag_header: bool,
    pub remove_accept_encoding_header: bool,
    /// `choose_first`: wins ties of q-value in the client's `accept-encoding`.
    pub choose_first: bool,
    /// `response_direction_config` was given: Envoy then keeps the direction's counters
    /// (`compressed`, `total_*_bytes`, ...) under `response.`.
    pub response_scoped_stats: bool,
}

/// `compressor_library.typed_config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressorLibrary {
    Gzip(GzipParams),
    Brotli(BrotliParams),
    Zstd(ZstdParams),
}

/// `compression.gzip.compressor.v3.Gzip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GzipParams {
    /// zlib's level, 1-9 (`DEFAULT_COMPRESSION`: 6, as zlib's -1).
    pub level: u32,
    /// 9-15 (default 12).
    pub window_bits: u8,
    /// The output buffer's size (default 4096).
    pub chunk_size: u32,
}

/// `compression.brotli.compressor.v3.Brotli`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrotliParams {
    /// 0-11 (default 3).
    pub quality: u32,
    /// 10-24 (default 18).
    pub window_bits: u32,
    /// 16-24 (default 24).
    pub input_block_bits: u32,
    pub disable_literal_context_modeling: bool,
    pub mode: BrotliMode,
    pub chunk_size: u32,
}

/// `encoder_mode` (`DEFAULT` is the library's default, generic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrotliMode {
    Generic,
    Text,
    Font,
}

/// `compression.zstd.compressor.v3.Zstd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZstdParams {
    /// Default 3 (`ZSTD_CLEVEL_DEFAULT`).
    pub level: i32,
    pub enable_checksum: bool,
    /// `ZSTD_strategy` (0: the level's default).
    pub strategy: u32,
    pub chunk_size: u32,
}

/// `compressor.v3.CompressorPerRoute`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompressorPerRoute {
    /// `disabled: true` → `Some(false)`; `overrides.response_direction_config` → `Some(true)`.
    pub response_enabled: Option<bool>,
    /// `overrides.response_direction_config.remove_accept_encoding_header`.
    pub remove_accept_encoding_header: Option<bool>,
}

// === impl CompressorLibrary ===

impl CompressorLibrary {
    /// Its `content-encoding` token.
    pub fn encoding(&self) -> &'static str {
        match self {
            CompressorLibrary::Gzip(_) => "gzip",
            CompressorLibrary::Brotli(_) => "br",
            CompressorLibrary::Zstd(_) => "zstd",
        }
    }

    /// Its part of the stat names.
    pub fn stat_name(&self) -> &'static str {
        match self {
            CompressorLibrary::Gzip(_) => "gzip",
            CompressorLibrary::Brotli(_) => "brotli",
            CompressorLibrary::Zstd(_) => "zstd",
        }
    }
}
