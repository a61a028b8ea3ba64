//! The accounting of one request: stats, the upstream connection's return, the access log.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Response;

use crate::access::{LogCapture, Outcome};
use crate::body::{BodyTimeout, Finish, ProxyBody};
use crate::context::{ConnCtx, Ctx, ListenerShared, Worker};
use crate::error::UpstreamFailure;
use crate::flags::ResponseFlags;

use super::attempt::UpstreamTrack;
use super::local::local_reply;

/// Accounts for one request when its response body ends (or is dropped): stats, the upstream
/// connection's return to the pool, the access log. A request whose future is dropped before
/// it has a response (the client left: hyper and Baton's own HTTP/1.1 loop drop it) is
/// accounted when the tracker drops.
pub(crate) struct Tracker {
    l: Arc<ListenerShared>,
    w: Rc<Worker>,
    c: Rc<ConnCtx>,
    start: Instant,
    status: u16,
    flags: ResponseFlags,
    upstream: Option<UpstreamTrack>,
    log: Option<Box<LogCapture>>,
    /// Request body bytes received, shared with the request body; made when there is one.
    bytes_received: Option<Rc<Cell<u64>>>,
    /// The health check filter took the request for a health check.
    health_check: bool,
    /// Set once accounted.
    done: bool,
}

impl Finish for Tracker {
    /// `timed_out`: the response body (the only one with a tracker) was ended by
    /// `stream_idle_timeout`.
    fn finish(
        mut self: Box<Self>,
        bytes_sent: u64,
        complete: bool,
        timed_out: Option<BodyTimeout>,
    ) {
        self.account(bytes_sent, complete, timed_out);
    }
}

impl Tracker {
    /// Start accounting for a request that has just arrived on `cx`.
    pub(super) fn new(cx: Ctx<'_>) -> Box<Self> {
        Box::new(Tracker {
            l: cx.l.clone(),
            w: cx.w.clone(),
            c: cx.c.clone(),
            start: Instant::now(),
            status: 0,
            flags: ResponseFlags::NONE,
            upstream: None,
            log: None,
            bytes_received: None,
            health_check: false,
            done: false,
        })
    }

    /// When the request arrived.
    pub(super) fn start(&self) -> Instant {
        self.start
    }

    /// The request is answered with this response flag.
    pub(super) fn set_flag(&mut self, flag: ResponseFlags) {
        self.flags = flag;
    }

    /// The request also carries this response flag (a fault filter's `DI` and `FI`).
    pub(super) fn add_flag(&mut self, flag: ResponseFlags) {
        self.flags.insert(flag);
    }

    /// Envoy's local reply for `f`, flagged.
    pub(super) fn failure_reply(&mut self, f: UpstreamFailure) -> Response<ProxyBody> {
        self.set_flag(f.flag());
        local_reply(f.status(), Bytes::from_static(f.body().as_bytes()))
    }

    /// The response flags so far.
    pub(super) fn flags(&self) -> ResponseFlags {
        self.flags
    }

    /// The request is a health check (`not_health_check_filter`).
    pub(super) fn mark_health_check(&mut self) {
        self.health_check = true;
    }

    pub(super) fn health_check(&self) -> bool {
        self.health_check
    }

    /// The response is an upstream's (not one Baton made).
    pub(super) fn answered_by_upstream(&self) -> bool {
        self.upstream.is_some()
    }

    /// The request as it arrived, when access logs or `local_reply_config` need it.
    pub(super) fn log(&self) -> Option<&LogCapture> {
        self.log.as_deref()
    }

    /// What the access log says of the request as it arrived.
    pub(super) fn log_mut(&mut self) -> Option<&mut LogCapture> {
        self.log.as_deref_mut()
    }

    pub(super) fn set_log(&mut self, log: Box<LogCapture>) {
        self.log = Some(log);
    }

    /// The response status (0: none yet).
    pub(super) fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// The upstream host and cluster that answered, for the access log.
    pub(super) fn upstream_chosen(&mut self, host: std::net::SocketAddr, cluster: &str) {
        if let Some(log) = self.log.as_mut() {
            log.upstream_host = Some(host);
            log.upstream_cluster = Some(cluster.to_owned());
        }
    }

    /// The upstream side, kept until the response body is done.
    pub(super) fn set_upstream(&mut self, up: UpstreamTrack) {
        self.upstream = Some(up);
    }

    /// The request body's byte count, shared with whatever reads the body.
    pub(super) fn received(&mut self) -> Rc<Cell<u64>> {
        self.bytes_received
            .get_or_insert_with(|| Rc::new(Cell::new(0)))
            .clone()
    }

    fn account(&mut self, bytes_sent: u64, complete: bool, timed_out: Option<BodyTimeout>) {
        self.done = true;
        let hs = &self.l.http_stats;
        hs.downstream_rq_active.dec();
        if self.status == 0 {
            // No response: the client went away first.
            hs.downstream_rq_rx_reset.inc();
        } else {
            hs.downstream_rq_completed.inc();
            hs.response_class(self.status);
        }
        // One clock read for both.
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        hs.downstream_rq_time.record(elapsed);
        let active = self.c.active.get().saturating_sub(1);
        self.c.active.set(active);
        self.c.last_active.set(now);
        if active == 0 {
            if let Some(waker) = self.c.idle_waker.take() {
                waker.wake();
            }
        }
        let mut flags = self.flags;
        if timed_out.is_some() {
            hs.downstream_rq_idle_timeout.inc();
            flags.insert(ResponseFlags::STREAM_IDLE_TIMEOUT);
        }
        if self.status == 0 && flags.is_empty() {
            flags = ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
        } else if self.status != 0 {
            self.w.tally.record(self.status, flags);
        }
        if let Some(mut up) = self.upstream.take() {
            let a = &mut up.attempt;
            a.cluster.stats.upstream_rq_time.record(elapsed);
            a.finish(complete && self.status < 500);
            if complete {
                if let Some(s) = up.checkin.take() {
                    self.w.pools.checkin(a.cidx, a.host.addr, s);
                }
            } else if flags.is_empty() {
                flags = ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
            }
        }
        if let (Some(log), Some(logs)) = (self.log.take(), self.l.access_logs.as_ref()) {
            logs.write(
                &log,
                (self.c.remote, self.c.local),
                &Outcome {
                    status: self.status,
                    flags,
                    bytes_received: self.bytes_received.as_ref().map_or(0, |b| b.get()),
                    bytes_sent,
                    duration: elapsed,
                },
            );
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.done {
            self.account(0, false, None);
        }
    }
}
