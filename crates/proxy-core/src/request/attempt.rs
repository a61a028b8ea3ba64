//! One try at the upstream: host selection, circuit breakers, a connection, the send, and the
//! wait for response headers within the deadline.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::client::conn::http1;

use crate::body::ProxyBody;
use crate::client::{Home, SendError};
use crate::cluster::{Cluster, Host, Pick};
use crate::context::Worker;
use crate::error::UpstreamFailure;
use crate::upstream;

/// wait for response headers within the deadline.
pub(super) struct Attempt {
    pub(super) cluster: Arc<Cluster>,
    pub(super) host: Arc<Host>,
    pub(super) cidx: usize,
    done: bool,
}

pub(super) struct AttemptDone {
    pub(super) response: Response<ProxyBody>,
    /// A hyper HTTP/1.1 connection to return to the pool once the response body is read.
    pub(super) checkin: Option<http1::SendRequest<ProxyBody>>,
    pub(super) sent_at: Instant,
    pub(super) attempt: Attempt,
}

/// What the tracker keeps of the upstream side until the response body is done.
pub(super) struct UpstreamTrack {
    pub(super) attempt: Attempt,
    /// An HTTP/1.1 connection to return to the pool once the response body has been read.
    pub(super) checkin: Option<http1::SendRequest<ProxyBody>>,
}

// === impl Attempt ===

impl Attempt {
    pub(super) fn start(cluster: Arc<Cluster>, host: Arc<Host>, cidx: usize) -> Self {
        cluster.stats.upstream_rq_total.inc();
        cluster.stats.upstream_rq_active.inc();
        host.stats.rq_total.fetch_add(1, Ordering::Relaxed);
        host.stats.rq_active.fetch_add(1, Ordering::Relaxed);
        Self {
            cluster,
            host,
            cidx,
            done: false,
        }
    }

    pub(super) fn into_track(
        self,
        checkin: Option<http1::SendRequest<ProxyBody>>,
    ) -> UpstreamTrack {
        UpstreamTrack {
            checkin,
            attempt: self,
        }
    }

    /// Account for the end of this attempt.
    pub(super) fn finish(&mut self, success: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.cluster.stats.upstream_rq_active.dec();
        self.cluster.stats.upstream_rq_completed.inc();
        self.host.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
        if success {
            self.host.stats.rq_success.fetch_add(1, Ordering::Relaxed);
        } else {
            self.host.stats.rq_error.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.finish(false);
    }
}

pub(super) async fn attempt_once(
    w: &Rc<Worker>,
    cidx: usize,
    cluster: &Arc<Cluster>,
    req: &mut Request<ProxyBody>,
    deadline: Option<tokio::time::Instant>,
    per_try: Option<Duration>,
    by: Pick,
) -> Result<AttemptDone, (UpstreamFailure, bool)> {
    let max_rq = i64::from(cluster.config.circuit_breakers.max_requests);
    if cluster.stats.upstream_rq_active.value() >= max_rq {
        cluster.stats.upstream_rq_pending_overflow.inc();
        return Err((UpstreamFailure::Overflow, false));
    }
    let host = {
        let set = cluster.hosts();
        w.lb.pick(cidx, cluster, &set, by)
    };
    let Some(host) = host else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return Err((UpstreamFailure::NoHealthyUpstream, false));
    };
    let attempt = Attempt::start(cluster.clone(), host.clone(), cidx);
    let try_deadline = match (deadline, per_try) {
        (Some(d), Some(p)) => Some(d.min(tokio::time::Instant::now() + p)),
        (Some(d), None) => Some(d),
        (None, Some(p)) => Some(tokio::time::Instant::now() + p),
        (None, None) => None,
    };
    let work = async {
        let mut stale_tries = 0;
        loop {
            let own = upstream::sendable(req);
            let co = w
                .pools
                .checkout(cidx, cluster, &host, own)
                .await
                .map_err(|f| (f, false))?;
            cluster.record_connected(&host);
            let sent_at = Instant::now();
            let home = Home {
                pools: w.pools.clone(),
            };
            match co.conn.send(req, home).await {
                Ok((resp, checkin)) => return Ok((resp, checkin, sent_at)),
                Err(SendError::NotSent) if stale_tries < 3 => stale_tries += 1,
                Err(SendError::NotSent) => return Err((UpstreamFailure::Reset, co.reused)),
                Err(SendError::Failed(f)) => return Err((f, co.reused)),
            }
        }
    };
    let res = match try_deadline {
        Some(d) => match crate::deadline::timeout_at(d, work).await {
            Ok(r) => r,
            Err(_) => Err((UpstreamFailure::Timeout, false)),
        },
        None => work.await,
    };
    // Outlier detection sees the result by reference: moving the response out and back
    // costs two copies of it per request (callgrind).
    match &res {
        Ok((response, ..)) => cluster.record_outcome(&host, response.status().as_u16()),
        // Without `split_external_local_origin_errors`, as Envoy: a local failure counts as
        // the 5xx it is answered with.
        Err((f, _)) if f.is_host_failure() => {
            cluster.record_local_failure(&host, f.status().as_u16())
        }
        Err(_) => {}
    }
    match res {
        Ok((response, checkin, sent_at)) => Ok(AttemptDone {
            response,
            checkin,
            sent_at,
            attempt,
        }),
        Err(e) => {
            if e.0 == UpstreamFailure::Reset {
                cluster.stats.upstream_rq_rx_reset.inc();
            }
            Err(e)
        }
    }
}
