//! One try at the upstream: host selection, circuit breakers, a connection, the send, and the
//! wait for response headers within the deadline.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::client::{Home, SendError};
use crate::cluster::{Cluster, Host, Pick};
use crate::context::{ConnCtx, Worker};
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
    pub(super) checkin: Option<crate::upstream::PooledH1>,
    pub(super) sent_at: Instant,
    pub(super) attempt: Attempt,
}

/// What the tracker keeps of the upstream side until the response body is done.
pub(super) struct UpstreamTrack {
    pub(super) attempt: Attempt,
    /// An HTTP/1.1 connection to return to the pool once the response body has been read.
    pub(super) checkin: Option<crate::upstream::PooledH1>,
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

    pub(super) fn into_track(self, checkin: Option<crate::upstream::PooledH1>) -> UpstreamTrack {
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

/// The host for one try at cluster `cidx`, unless its `max_requests` breaker is open or it has
/// no host to give (an `ORIGINAL_DST` cluster's from the request's `headers` or the
/// connection's restored destination). `avoid`: the hosts already tried (this try's is added)
/// and how many times a pick among them is made again (`previous_hosts`).
pub(super) fn choose(
    w: &Worker,
    conn: &ConnCtx,
    (cidx, cluster): (usize, &Arc<Cluster>),
    headers: &http::HeaderMap,
    avoid: Option<(&mut Vec<Arc<Host>>, u32)>,
    by: Pick,
) -> Result<Arc<Host>, (UpstreamFailure, bool)> {
    let max_rq = i64::from(cluster.config.circuit_breakers.max_requests);
    if cluster.stats.upstream_rq_active.value() >= max_rq {
        cluster.stats.upstream_rq_pending_overflow.inc();
        return Err((UpstreamFailure::Overflow, false));
    }
    if cluster.config.original_dst.is_some() {
        let host = cluster.original_dst_host(Some(headers), conn.restored.then_some(conn.local));
        return host.ok_or_else(|| {
            cluster.stats.upstream_cx_none_healthy.inc();
            (UpstreamFailure::NoHealthyUpstream, false)
        });
    }
    let set = cluster.hosts();
    let mut host = w.lb.pick(cidx, cluster, &set, by);
    if let Some((tried, reselect)) = avoid {
        // As Envoy's `previous_hosts`: pick again while the host was tried, at most
        // `host_selection_retry_max_attempts` times; the last pick stands.
        let mut left = reselect;
        while left > 0
            && host
                .as_ref()
                .is_some_and(|h| tried.iter().any(|t| Arc::ptr_eq(t, h)))
        {
            host = w.lb.pick(cidx, cluster, &set, by);
            left -= 1;
        }
        if let Some(h) = &host {
            tried.push(h.clone());
        }
    }
    host.ok_or_else(|| {
        cluster.stats.upstream_cx_none_healthy.inc();
        (UpstreamFailure::NoHealthyUpstream, false)
    })
}

/// One try of `req` at `host` of cluster `cidx` (see [`choose`]).
pub(super) async fn attempt_once(
    w: &Rc<Worker>,
    (cidx, cluster): (usize, &Arc<Cluster>),
    host: Arc<Host>,
    req: &mut Request<ProxyBody>,
    deadline: Option<tokio::time::Instant>,
    per_try: Option<Duration>,
) -> Result<AttemptDone, (UpstreamFailure, bool)> {
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
            let sni = upstream::auto_sni(cluster, req.uri(), req.headers());
            let co = w
                .pools
                .checkout(cidx, cluster, &host, own, sni)
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
