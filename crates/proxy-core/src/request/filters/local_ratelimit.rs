//! `envoy.filters.http.local_ratelimit`: a token bucket (shared by the workers, or one per
//! connection) in front of the router, with Envoy's `filter_enabled` / `filter_enforced`
//! rolls, its 429 (`local_rate_limited`, flag `RL`) and its `x-ratelimit-*` headers.

use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::body::{ProxyBody, RequestBody};
use crate::config::{AppendAction, Consumed, HeaderAdd, LocalRateLimit};
use crate::context::Ctx;
use crate::flags::ResponseFlags;

use super::super::local::local_reply;
use super::super::tracker::Tracker;

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Envoy's body for a limited request.
const BODY: &[u8] = b"local_rate_limited";

/// `x-ratelimit-*` for the response (DRAFT_VERSION_03).
#[derive(Debug, Clone, Copy)]
pub(super) struct Passed {
    limit: u32,
    remaining: u32,
    reset: u64,
}

pub(super) fn decode(
    cx: Ctx<'_>,
    cfg: &LocalRateLimit,
    req: &mut Request<RequestBody>,
    tracker: &mut Tracker,
    passed: &mut Option<Passed>,
) -> Result<(), Box<Response<ProxyBody>>> {
    if !cfg.enabled.hit(fastrand::u64(..)) {
        return Ok(());
    }
    let stats =
        cx.l.local_rate_limit_stats
            .iter()
            .find(|(p, _)| *p == cfg.stat_prefix)
            .map(|(_, s)| s);
    stats.inspect(|s| s.enabled.inc());
    let consumed = consume(cx, cfg);
    if cfg.x_ratelimit_headers {
        *passed = Some(Passed {
            limit: cfg.bucket.max_tokens,
            remaining: consumed.remaining,
            reset: consumed.reset_secs,
        });
    }
    if consumed.allowed {
        stats.inspect(|s| s.ok.inc());
        return Ok(());
    }
    stats.inspect(|s| s.rate_limited.inc());
    if !cfg.enforced.hit(fastrand::u64(..)) {
        add(req.headers_mut(), &cfg.request_headers_when_not_enforced);
        return Ok(());
    }
    stats.inspect(|s| s.enforced.inc());
    tracker.add_flag(ResponseFlags::RATE_LIMITED);
    let status = StatusCode::from_u16(cfg.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let mut resp = local_reply(status, Bytes::from_static(BODY));
    add(resp.headers_mut(), &cfg.response_headers_to_add);
    Err(Box::new(resp))
}

/// A token from the configuration's bucket, or the connection's own copy of it.
fn consume(cx: Ctx<'_>, cfg: &LocalRateLimit) -> Consumed {
    let now = Instant::now();
    if !cfg.per_connection {
        return cfg.bucket.consume(now);
    }
    let key = std::sync::Arc::as_ptr(&cfg.bucket) as usize;
    let mut buckets = cx.c.rate_limit_buckets.borrow_mut();
    if let Some((_, b)) = buckets.iter().find(|(k, _)| *k == key) {
        return b.consume(now);
    }
    let b = cfg.bucket.fresh();
    let consumed = b.consume(now);
    buckets.push((key, b));
    consumed
}

pub(super) fn encode(passed: Option<&Passed>, resp: &mut Response<ProxyBody>) {
    let Some(p) = passed else { return };
    let h = resp.headers_mut();
    h.insert(LIMIT.clone(), HeaderValue::from(p.limit));
    h.insert(REMAINING.clone(), HeaderValue::from(p.remaining));
    h.insert(RESET.clone(), HeaderValue::from(p.reset));
}

/// Header additions with plain values (the parser refuses command operators here).
fn add(h: &mut HeaderMap, adds: &[HeaderAdd]) {
    for a in adds {
        let Ok(v) = HeaderValue::from_str(&a.value) else {
            continue;
        };
        if v.is_empty() && !a.keep_empty_value {
            continue;
        }
        match a.action {
            AppendAction::AppendIfExistsOrAdd => {
                h.append(a.name.clone(), v);
            }
            AppendAction::AddIfAbsent => {
                if !h.contains_key(&a.name) {
                    h.insert(a.name.clone(), v);
                }
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                h.insert(a.name.clone(), v);
            }
            AppendAction::OverwriteIfExists => {
                if h.contains_key(&a.name) {
                    h.insert(a.name.clone(), v);
                }
            }
        }
    }
}
