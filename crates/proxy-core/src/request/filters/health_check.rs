//! `envoy.filters.http.health_check`, with Envoy's answers and stats.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::body::{ProxyBody, RequestBody};
use crate::config::HealthCheckFilter;
use crate::context::Ctx;

use super::super::local::local_reply;

static HEALTHCHECKED_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-upstream-healthchecked-cluster");
static IMMEDIATE_FAIL: HeaderName = HeaderName::from_static("x-envoy-immediate-health-check-fail");

/// What the filter decided on the way in, for the way out.
#[derive(Debug, Default)]
pub(super) struct Passed {
    /// A health check let through: the response names the service cluster.
    health_check: Option<HeaderValue>,
    /// The filter ran and the server fails health checks (or drains): every response says so.
    failing: bool,
}

impl Passed {
    /// The request was a health check the filter let through.
    pub(super) fn is_health_check(&self) -> bool {
        self.health_check.is_some()
    }
}

pub(super) fn decode(
    cx: Ctx<'_>,
    hc: &HealthCheckFilter,
    req: &Request<RequestBody>,
    passed: &mut Passed,
) -> Result<(), Box<Response<ProxyBody>>> {
    let failing = cx.c.drain.health_check_failed() || cx.c.drain.is_draining();
    passed.failing |= failing;
    if !hc.headers.iter().all(|m| super::header_matches(m, req)) {
        return Ok(());
    }
    let cluster =
        HeaderValue::from_str(&hc.service_cluster).unwrap_or_else(|_| HeaderValue::from_static(""));
    if hc.pass_through_mode && !failing {
        passed.health_check = Some(cluster);
        return Ok(());
    }
    let stats = cx.l.health_check_stats.as_ref();
    if let Some(s) = stats {
        s.request_total.inc();
    }
    let status = if failing {
        stats.inspect(|s| s.failed.inc());
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        stats.inspect(|s| s.ok.inc());
        StatusCode::OK
    };
    let mut resp = local_reply(status, Bytes::new());
    resp.headers_mut()
        .insert(HEALTHCHECKED_CLUSTER.clone(), cluster);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Err(Box::new(resp))
}

pub(super) fn encode(passed: &Passed, resp: &mut Response<ProxyBody>) {
    if let Some(cluster) = &passed.health_check {
        resp.headers_mut()
            .insert(HEALTHCHECKED_CLUSTER.clone(), cluster.clone());
    }
    if passed.failing {
        resp.headers_mut()
            .insert(IMMEDIATE_FAIL.clone(), HeaderValue::from_static("true"));
    }
}
