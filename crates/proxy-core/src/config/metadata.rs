//! `envoy.filters.http.set_metadata` and `envoy.filters.http.header_to_metadata`: what they
//! write into a request's dynamic metadata.

use http::HeaderName;
use serde_json::{Map, Value};

/// `set_metadata.v3.Config`: entries applied in order.
#[derive(Clone, Debug, Default)]
pub struct SetMetadata {
    pub entries: Vec<MetadataEntry>,
}

/// One `metadata[]` entry (or the deprecated `metadata_namespace` + `value`, which merges).
#[derive(Clone, Debug)]
pub struct MetadataEntry {
    pub namespace: String,
    pub value: Map<String, Value>,
    /// `allow_overwrite`: merged into a namespace already set; else such an entry is skipped
    /// (counted as `set_metadata.overwrite_denied`).
    pub allow_overwrite: bool,
}

/// `header_to_metadata.v3.Config`.
#[derive(Clone, Debug, Default)]
pub struct HeaderToMetadata {
    pub request_rules: Vec<HeaderRule>,
    pub response_rules: Vec<HeaderRule>,
}

/// A `Rule` on a header.
#[derive(Clone, Debug)]
pub struct HeaderRule {
    pub header: HeaderName,
    pub on_present: Option<KeyValuePair>,
    pub on_missing: Option<KeyValuePair>,
    /// `remove`: the header is removed once read.
    pub remove: bool,
}

/// A `KeyValuePair`: where the value goes and how it is read.
#[derive(Clone, Debug)]
pub struct KeyValuePair {
    /// Default `envoy.filters.http.header_to_metadata`.
    pub namespace: String,
    pub key: String,
    /// `value`: this instead of the header's (required for `on_header_missing`).
    pub value: Option<String>,
    pub kind: MetadataType,
    /// `encode: BASE64`: the value is base64 and is decoded first.
    pub base64: bool,
}

/// `ValueType` (`PROTOBUF_VALUE` is refused at parse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataType {
    String,
    Number,
}
