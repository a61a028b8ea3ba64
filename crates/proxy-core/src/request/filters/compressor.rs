//! `envoy.filters.http.compressor`: a response is compressed with the encoding the client
//! prefers among the compressor filters that run for the request (Envoy's choice, made once
//! per response and shared by them), when it is long enough, of an allowed type, not already
//! encoded and not `no-transform`; streamed, each piece flushed as it passes.

use std::collections::BTreeMap;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};

use crate::body::{ProxyBody, RequestBody};
use crate::config::{CompressorFilter, CompressorPerRoute};
use crate::context::Ctx;
use crate::stats::CompressorStats;

/// A compressor filter that ran on the request, for its response.
#[derive(Debug)]
pub(super) struct Registered {
    /// The filter's `http_filters` entry, and its stats' index.
    filter: usize,
    stats: usize,
    per_route: Option<CompressorPerRoute>,
    /// The request's `accept-encoding` as this filter saw it.
    accept_encoding: Option<HeaderValue>,
}

/// Which encoding the client's `accept-encoding` picks, and which header stat it counts.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    encoding: String,
    stat: HeaderStat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderStat {
    Valid,
    Identity,
    Wildcard,
    NotValid,
}

pub(super) fn decode(
    cx: Ctx<'_>,
    filter: usize,
    cfg: &CompressorFilter,
    per_route: Option<CompressorPerRoute>,
    req: &mut Request<RequestBody>,
    registered: &mut Vec<Registered>,
) {
    let stats = cx.l.compressor_stats.iter().position(|(i, _)| *i == filter);
    let Some(stats) = stats else { return };
    let headers = req.headers_mut();
    let accept_encoding = joined(headers, header::ACCEPT_ENCODING);
    if enabled(cfg, per_route)
        && per_route
            .and_then(|p| p.remove_accept_encoding_header)
            .unwrap_or(cfg.remove_accept_encoding_header)
    {
        headers.remove(header::ACCEPT_ENCODING);
    }
    // The request direction is never compressed (its configuration is refused).
    cx.l.compressor_stats[stats].1.request.not_compressed.inc();
    registered.push(Registered {
        filter,
        stats,
        per_route,
        accept_encoding,
    });
}

/// The compressor filters that ran, on the response, last first.
pub(super) fn encode(cx: Ctx<'_>, registered: &[Registered], resp: &mut Response<ProxyBody>) {
    let mut decision: Option<Decision> = None;
    for r in registered.iter().rev() {
        let crate::config::HttpFilter::Compressor(cfg) = &cx.l.http.http_filters[r.filter].filter
        else {
            continue;
        };
        let stats = &cx.l.compressor_stats[r.stats].1;
        let end_stream = http_body::Body::is_end_stream(resp.body());
        let headers = resp.headers_mut();
        let big_enough = enabled(cfg, r.per_route) && long_enough(cfg, stats, headers);
        let compressible = big_enough
            && !is_upgrade(headers)
            && type_allowed(&cfg.content_types, headers)
            && !has_token(headers, &header::CACHE_CONTROL, "no-transform")
            && etag_allowed(cfg, stats, headers)
            && !headers.contains_key(header::CONTENT_ENCODING);
        let compress = !end_stream
            && accept_allowed(
                cx,
                cfg,
                stats,
                r,
                registered,
                big_enough,
                headers,
                &mut decision,
            )
            && compressible
            && transfer_encoding_allowed(cfg, headers);
        if compress {
            match crate::compression::compressor(&cfg.library, stats.response.clone()) {
                Ok(coder) => {
                    sanitize_etag(headers);
                    headers.remove(header::CONTENT_LENGTH);
                    headers.insert(
                        header::CONTENT_ENCODING,
                        HeaderValue::from_static(cfg.library.encoding()),
                    );
                    stats.response.compressed.inc();
                    let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
                    *resp.body_mut() = body.recode(coder);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "compressor: cannot set up the library");
                    stats.response.not_compressed.inc();
                }
            }
        } else {
            stats.response.not_compressed.inc();
        }
        if compressible {
            insert_vary(resp.headers_mut());
        }
    }
}

fn enabled(cfg: &CompressorFilter, per_route: Option<CompressorPerRoute>) -> bool {
    per_route
        .and_then(|p| p.response_enabled)
        .unwrap_or(cfg.enabled)
}

/// A header's values, joined with `,` as Envoy's inline headers are.
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Option<HeaderValue> {
    let mut all = headers.get_all(&name).iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(first.clone());
    };
    let mut v = first.as_bytes().to_vec();
    for more in std::iter::once(second).chain(all) {
        v.push(b',');
        v.extend_from_slice(more.as_bytes());
    }
    HeaderValue::from_bytes(&v).ok()
}

fn long_enough(cfg: &CompressorFilter, stats: &CompressorStats, headers: &HeaderMap) -> bool {
    let Some(len) = headers.get(header::CONTENT_LENGTH) else {
        return true;
    };
    let ok = len
        .to_str()
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n >= cfg.min_content_length);
    if !ok {
        stats.response.content_length_too_small.inc();
    }
    ok
}

/// `connection: upgrade` with an `upgrade` header.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_token(headers, &header::CONNECTION, "upgrade")
}

/// The media type (before any `;`) is one of `types` (lowercase); no content type is allowed.
fn type_allowed(types: &[String], headers: &HeaderMap) -> bool {
    match media_type(headers) {
        None => true,
        Some(t) => types.iter().any(|a| a.eq_ignore_ascii_case(t)),
    }
}

fn media_type(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim())
}

/// A comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn etag_allowed(cfg: &CompressorFilter, stats: &CompressorStats, headers: &HeaderMap) -> bool {
    let allowed = !(cfg.disable_on_etag_header && headers.contains_key(header::ETAG));
    if !allowed {
        stats.not_compressed_etag.inc();
    }
    allowed
}

/// Not already compressed in transfer.
fn transfer_encoding_allowed(cfg: &CompressorFilter, headers: &HeaderMap) -> bool {
    let own = cfg.library.encoding();
    !headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .any(|t| {
            ["gzip", "br", "deflate", "compress", "zstd", own]
                .iter()
                .any(|c| t.eq_ignore_ascii_case(c))
        })
}

/// A strong ETag no longer names the (compressed) body: removed; a weak one stays.
fn sanitize_etag(headers: &mut HeaderMap) {
    let strong = headers.get(header::ETAG).is_some_and(|v| {
        let b = v.as_bytes();
        b.len() > 2 && !((b[0] == b'w' || b[0] == b'W') && b[1] == b'/')
    });
    if strong {
        headers.remove(header::ETAG);
    }
}

/// `vary: Accept-Encoding`, added to a `vary` that lacks it.
fn insert_vary(headers: &mut HeaderMap) {
    const AE: &str = "Accept-Encoding";
    match headers.get(header::VARY) {
        None => {
            headers.insert(header::VARY, HeaderValue::from_static(AE));
        }
        Some(v) => {
            // Envoy looks for the token as written (case-sensitive).
            if v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii() == AE.as_bytes())
            {
                return;
            }
            let mut joined = v.as_bytes().to_vec();
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(AE.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(header::VARY, v);
            }
        }
    }
}

/// Whether the client's `accept-encoding` picks this filter's encoding; counts the header stat.
#[allow(clippy::too_many_arguments)]
fn accept_allowed(
    cx: Ctx<'_>,
    cfg: &CompressorFilter,
    stats: &CompressorStats,
    r: &Registered,
    registered: &[Registered],
    maybe: bool,
    headers: &HeaderMap,
    decision: &mut Option<Decision>,
) -> bool {
    if !maybe {
        return false;
    }
    let Some(accept) = r.accept_encoding.as_ref() else {
        stats.no_accept_header.inc();
        return false;
    };
    let d = decision.get_or_insert_with(|| {
        let configs =
            registered
                .iter()
                .filter_map(|r| match &cx.l.http.http_filters[r.filter].filter {
                    crate::config::HttpFilter::Compressor(c) => Some(&**c),
                    _ => None,
                });
        choose(accept.as_bytes(), configs, media_type(headers))
    });
    let used = cfg.library.encoding().eq_ignore_ascii_case(&d.encoding);
    match d.stat {
        HeaderStat::Valid if used => stats.header_compressor_used.inc(),
        HeaderStat::Valid => stats.header_compressor_overshadowed.inc(),
        HeaderStat::Identity => stats.header_identity.inc(),
        HeaderStat::Wildcard => stats.header_wildcard.inc(),
        HeaderStat::NotValid => stats.header_not_valid.inc(),
    }
    used
}

/// Envoy's choice of encoding: among the registered compressors whose content types allow
/// the response's (the first of each encoding, in filter order), the client's token with the
/// highest q-value, the first in its list on a tie unless a later one's filter is
/// `choose_first`; `*` picks the first registered.
fn choose<'a>(
    accept: &[u8],
    configs: impl Iterator<Item = &'a CompressorFilter>,
    media: Option<&str>,
) -> Decision {
    let decision = |encoding: &str, stat| Decision {
        encoding: encoding.to_owned(),
        stat,
    };
    // encoding → (registration order, choose_first); ordered by name, as Envoy's map.
    let mut allowed: BTreeMap<String, (u32, bool)> = BTreeMap::new();
    let mut count = 0;
    for c in configs {
        if let Some(t) = media.filter(|t| !t.is_empty()) {
            if !c.content_types.iter().any(|a| a.eq_ignore_ascii_case(t)) {
                continue;
            }
        }
        let enc = c.library.encoding();
        if !allowed.contains_key(enc) {
            allowed.insert(enc.to_owned(), (count, c.choose_first));
            count += 1;
        }
    }
    let accept = String::from_utf8_lossy(accept);
    let mut pairs: Vec<(&str, f32)> = Vec::new();
    for token in accept.split(',').filter(|t| !t.is_empty()) {
        let (name, params) = match token.split_once(';') {
            Some((n, p)) => (n.trim(), Some(p)),
            None => (token.trim(), None),
        };
        let mut q = 1.0f32;
        if let Some((key, value)) = params.and_then(|p| p.split_once('=')) {
            if key.trim().eq_ignore_ascii_case("q") {
                match value.trim().parse::<f32>() {
                    Ok(v) => q = v,
                    Err(_) => continue,
                }
            }
        }
        pairs.push((name, q));
        if q == 0.0 {
            allowed.remove(name);
        }
    }
    if pairs.is_empty() || allowed.is_empty() {
        return decision("identity", HeaderStat::NotValid);
    }
    let mut choice: (&str, f32) = ("identity", 0.0);
    for &(name, q) in &pairs {
        if allowed.contains_key(name) || name == "identity" || name == "*" {
            // Envoy's map lookup on a tie adds the name (identity, `*`) when missing.
            if q > choice.1 || (q == choice.1 && allowed.entry(name.to_owned()).or_default().1) {
                choice = (name, q);
            }
        }
    }
    if choice.1 == 0.0 || choice.1.is_nan() {
        return decision("identity", HeaderStat::NotValid);
    }
    match choice.0 {
        "identity" => decision("identity", HeaderStat::Identity),
        "*" => {
            let first = allowed
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(e, _)| e.as_str())
                .unwrap_or("identity");
            decision(first, HeaderStat::Wildcard)
        }
        name => decision(name, HeaderStat::Valid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CompressorLibrary, GzipParams, ZstdParams, DEFAULT_CONTENT_TYPES};

    fn filter(library: CompressorLibrary, choose_first: bool) -> CompressorFilter {
        CompressorFilter {
            library,
            library_name: "l".into(),
            enabled: true,
            min_content_length: 30,
            content_types: DEFAULT_CONTENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            disable_on_etag_header: false,
            remove_accept_encoding_header: false,
            choose_first,
            response_scoped_stats: false,
        }
    }

    fn gzip() -> CompressorLibrary {
        CompressorLibrary::Gzip(GzipParams {
            level: 6,
            window_bits: 12,
            chunk_size: 4096,
        })
    }

    fn zstd() -> CompressorLibrary {
        CompressorLibrary::Zstd(ZstdParams {
            level: 3,
            enable_checksum: false,
            strategy: 0,
            chunk_size: 4096,
        })
    }

    fn pick(accept: &str, filters: &[CompressorFilter]) -> (String, HeaderStat) {
        let d = choose(accept.as_bytes(), filters.iter(), Some("text/plain"));
        (d.encoding, d.stat)
    }

    /// As Envoy 1.40 chose with gzip then zstd filters (see tests/e2e/compressor.rs).
    #[test]
    fn the_choice_follows_q_values_then_the_clients_order() {
        let fs = [filter(gzip(), false), filter(zstd(), false)];
        let v = |e: &str| (e.to_owned(), HeaderStat::Valid);
        assert_eq!(pick("gzip", &fs), v("gzip"));
        assert_eq!(pick("zstd, gzip", &fs), v("zstd"));
        assert_eq!(pick("gzip, zstd", &fs), v("gzip"));
        assert_eq!(pick("gzip;q=0.5, zstd;q=0.8", &fs), v("zstd"));
        assert_eq!(pick("*", &fs), ("gzip".into(), HeaderStat::Wildcard));
        assert_eq!(
            pick("gzip;q=0, *", &fs),
            ("zstd".into(), HeaderStat::Wildcard)
        );
        assert_eq!(
            pick("identity", &fs),
            ("identity".into(), HeaderStat::Identity)
        );
        assert_eq!(
            pick("identity;q=0.5, gzip;q=0.5", &fs),
            ("identity".into(), HeaderStat::Identity)
        );
        assert_eq!(
            pick("gzip;q=0", &fs),
            ("identity".into(), HeaderStat::NotValid)
        );
        assert_eq!(pick("", &fs), ("identity".into(), HeaderStat::NotValid));
        assert_eq!(pick("br", &fs), ("identity".into(), HeaderStat::NotValid));
        // Tokens are compared as written; a q that does not parse drops its token.
        assert_eq!(pick("GZIP", &fs), ("identity".into(), HeaderStat::NotValid));
        assert_eq!(pick("zstd;q=x, gzip", &fs), v("gzip"));
        // choose_first wins a tie.
        let fs = [filter(gzip(), false), filter(zstd(), true)];
        assert_eq!(pick("gzip, zstd", &fs), v("zstd"));
    }

    #[test]
    fn a_filter_whose_types_exclude_the_response_is_left_out() {
        let mut g = filter(gzip(), false);
        g.content_types = vec!["text/html".into()];
        let fs = [g, filter(zstd(), false)];
        assert_eq!(
            pick("gzip, zstd;q=0.5", &fs),
            ("zstd".into(), HeaderStat::Valid)
        );
    }

    #[test]
    fn vary_and_etag_as_envoy() {
        let mut h = HeaderMap::new();
        insert_vary(&mut h);
        assert_eq!(h[header::VARY], "Accept-Encoding");
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        insert_vary(&mut h);
        assert_eq!(h[header::VARY], "Origin, Accept-Encoding");
        insert_vary(&mut h);
        assert_eq!(h[header::VARY], "Origin, Accept-Encoding");
        h.insert(header::ETAG, HeaderValue::from_static("W/\"a\""));
        sanitize_etag(&mut h);
        assert!(h.contains_key(header::ETAG));
        h.insert(header::ETAG, HeaderValue::from_static("\"a\""));
        sanitize_etag(&mut h);
        assert!(!h.contains_key(header::ETAG));
    }
}
