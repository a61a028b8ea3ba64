//! `envoy.filters.http.fault`: delays and aborts injected into matching requests, as Envoy
//! decides them: both rolled when the request arrives (each counting `faults_overflow` on its
//! own when `max_active_faults` are already active), the delay first, then the abort.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use shm_stats::Gauge;

use crate::body::{ProxyBody, RequestBody};
use crate::config::{
    FaultAbort, FaultAbortKind, FaultDelay, FaultDelayKind, FaultFilter, FractionalPercent,
};
use crate::context::Ctx;
use crate::flags::ResponseFlags;
use crate::stats::FaultFilterStats;

use super::super::local::local_reply;
use super::super::tracker::Tracker;

static DELAY_REQUEST: HeaderName = HeaderName::from_static("x-envoy-fault-delay-request");
static DELAY_PERCENTAGE: HeaderName =
    HeaderName::from_static("x-envoy-fault-delay-request-percentage");
static ABORT_REQUEST: HeaderName = HeaderName::from_static("x-envoy-fault-abort-request");
static ABORT_GRPC_REQUEST: HeaderName = HeaderName::from_static("x-envoy-fault-abort-grpc-request");
static ABORT_PERCENTAGE: HeaderName =
    HeaderName::from_static("x-envoy-fault-abort-request-percentage");
static DOWNSTREAM_NODE: HeaderName = HeaderName::from_static("x-envoy-downstream-service-node");
static DOWNSTREAM_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-downstream-service-cluster");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Envoy's body (and `grpc-message`) for an injected abort.
const ABORT_BODY: &str = "fault filter abort";

/// A faulted request, counted in `active_faults` until it is answered (or dropped).
#[derive(Debug)]
pub(super) struct Active(Gauge);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What an abort answers with.
#[derive(Clone, Copy, Debug)]
enum Abort {
    Http(u16),
    Grpc(u32),
}

pub(super) async fn decode(
    cx: Ctx<'_>,
    f: &FaultFilter,
    target_cluster: Option<&str>,
    req: &Request<RequestBody>,
    tracker: &mut Tracker,
    active: &mut Option<Active>,
) -> Result<(), Box<Response<ProxyBody>>> {
    let Some(stats) = cx.l.fault_stats.as_ref() else {
        return Ok(());
    };
    if !applies(f, target_cluster, req) {
        return Ok(());
    }
    let h = req.headers();
    let delay = f
        .delay
        .and_then(|d| delay_of(d, h))
        .filter(|_| !overflow(f, stats));
    let abort = f
        .abort
        .and_then(|a| abort_of(a, h))
        .filter(|_| !overflow(f, stats));
    if delay.is_none() && abort.is_none() {
        return Ok(());
    }
    stats.active_faults.inc();
    *active = Some(Active(stats.active_faults.clone()));
    let downstream = f
        .downstream_cluster_stats
        .then(|| h.get(&DOWNSTREAM_CLUSTER).and_then(|v| v.to_str().ok()))
        .flatten()
        .filter(|c| !c.is_empty());
    if let Some(d) = delay {
        stats.delays_injected.inc();
        if let Some(c) = downstream {
            stats.downstream_cluster(c, "delays_injected");
        }
        tracker.add_flag(ResponseFlags::DELAY_INJECTED);
        tokio::time::sleep(d).await;
    }
    let Some(abort) = abort else {
        return Ok(());
    };
    stats.aborts_injected.inc();
    if let Some(c) = downstream {
        stats.downstream_cluster(c, "aborts_injected");
    }
    tracker.add_flag(ResponseFlags::FAULT_INJECTED);
    Err(Box::new(abort_reply(abort, is_grpc(h))))
}

/// The request is one the fault is for: its cluster, downstream node and headers.
fn applies(f: &FaultFilter, target_cluster: Option<&str>, req: &Request<RequestBody>) -> bool {
    if let Some(c) = &f.upstream_cluster {
        if target_cluster != Some(c.as_str()) {
            return false;
        }
    }
    if !f.downstream_nodes.is_empty() {
        let node = req
            .headers()
            .get(&DOWNSTREAM_NODE)
            .and_then(|v| v.to_str().ok());
        if !node.is_some_and(|n| f.downstream_nodes.iter().any(|d| d == n)) {
            return false;
        }
    }
    f.headers.iter().all(|m| super::header_matches(m, req))
}

/// `max_active_faults` are active already (counted in `faults_overflow`).
fn overflow(f: &FaultFilter, stats: &FaultFilterStats) -> bool {
    let over = f
        .max_active_faults
        .is_some_and(|max| stats.active_faults.value() >= i64::from(max));
    if over {
        stats.faults_overflow.inc();
    }
    over
}

/// The first value of `name`, as a number.
fn number(h: &HeaderMap, name: &HeaderName) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The configured percentage, or a header's numerator capped by it.
fn percentage(
    p: FractionalPercent,
    h: &HeaderMap,
    header: Option<&HeaderName>,
) -> FractionalPercent {
    match header.and_then(|name| number(h, name)) {
        Some(n) => FractionalPercent {
            numerator: p.numerator.min(u32::try_from(n).unwrap_or(u32::MAX)),
            ..p
        },
        None => p,
    }
}

fn delay_of(d: FaultDelay, h: &HeaderMap) -> Option<Duration> {
    let (duration, pct) = match d.kind {
        FaultDelayKind::Fixed(t) => (t, percentage(d.percentage, h, None)),
        FaultDelayKind::Header => (
            Duration::from_millis(number(h, &DELAY_REQUEST)?),
            percentage(d.percentage, h, Some(&DELAY_PERCENTAGE)),
        ),
    };
    pct.hit(fastrand::u64(..)).then_some(duration)
}

fn abort_of(a: FaultAbort, h: &HeaderMap) -> Option<Abort> {
    let (abort, pct) = match a.kind {
        FaultAbortKind::Http(s) => (Abort::Http(s), a.percentage),
        FaultAbortKind::Grpc(g) => (Abort::Grpc(g), a.percentage),
        FaultAbortKind::Header => {
            // An HTTP status wins over a gRPC one; one out of [200, 600) is no abort.
            let abort = if h.contains_key(&ABORT_REQUEST) {
                let s = number(h, &ABORT_REQUEST).filter(|s| (200..600).contains(s))?;
                Abort::Http(s as u16)
            } else {
                Abort::Grpc(u32::try_from(number(h, &ABORT_GRPC_REQUEST)?).ok()?)
            };
            (abort, percentage(a.percentage, h, Some(&ABORT_PERCENTAGE)))
        }
    };
    pct.hit(fastrand::u64(..)).then_some(abort)
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Envoy's local reply for an abort: text for HTTP, trailers-only for a gRPC request (an HTTP
/// status mapped to its gRPC status as Envoy maps it).
fn abort_reply(abort: Abort, grpc_request: bool) -> Response<ProxyBody> {
    if !grpc_request {
        let status = match abort {
            Abort::Http(s) => StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
            Abort::Grpc(_) => StatusCode::OK,
        };
        return local_reply(status, Bytes::from_static(ABORT_BODY.as_bytes()));
    }
    let grpc = match abort {
        Abort::Grpc(g) => g,
        Abort::Http(s) => grpc_status_of(s),
    };
    let mut resp = local_reply(StatusCode::OK, Bytes::new());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(grpc));
    h.insert(GRPC_MESSAGE.clone(), HeaderValue::from_static(ABORT_BODY));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// The gRPC status for an HTTP status (gRPC's HTTP mapping, as Envoy applies it).
fn grpc_status_of(http: u16) -> u32 {
    match http {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}
