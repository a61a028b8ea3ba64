//! A request head that takes too long (slowloris): its count and its 408, shared by Baton's own
//! loop and hyper's session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{HeadTimeout, HttpConnectionManager, ServerTransformation};
use crate::context::{ConnCtx, ListenerShared};
use crate::io::IoCounts;

/// Count a head that timed out: `downstream_rq_header_timeout` (Envoy's name) for
/// `request_headers_timeout`, and the counters `request_timeout` and `stream_idle_timeout` use.
pub(super) fn count_head_timeout(l: &ListenerShared, which: HeadTimeout) {
    let s = &l.http_stats;
    match which {
        HeadTimeout::Headers => s.downstream_rq_header_timeout.inc(),
        HeadTimeout::Request => s.downstream_rq_timeout.inc(),
        HeadTimeout::StreamIdle => s.downstream_rq_idle_timeout.inc(),
    }
    s.downstream_rq_4xx.inc();
}

/// The 408 a head that timed out is answered with, as bytes (the connection closes after it).
pub(super) fn head_timeout_bytes(which: HeadTimeout, hcm: &HttpConnectionManager) -> Vec<u8> {
    let body = which.body();
    let mut out = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {}\r\n",
        body.len(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    )
    .into_bytes();
    // No response of the upstream's here: only `PASS_THROUGH` leaves `server` out.
    if hcm.server.transformation != ServerTransformation::PassThrough {
        out.extend_from_slice(b"server: ");
        out.extend_from_slice(hcm.server.name.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(via) = &hcm.via {
        out.extend_from_slice(b"via: ");
        out.extend_from_slice(via.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The head deadline on hyper's session, which does not say when a head's first byte arrives:
/// the connection is looked at every quarter of the deadline, and a head counts as begun at
/// the first look that finds bytes read since an earlier look that saw the connection idle
/// after its last request. A head is so cut between one and one and a half deadlines after its
/// first byte, and a connection that has sent nothing since its last request never is.
pub(super) struct HeadWatch {
    limit: Duration,
    which: HeadTimeout,
    counts: Arc<IoCounts>,
    /// Bytes read when the connection was first seen idle after its last request.
    rx_idle: u64,
    /// Requests received, and when the last one ended, when last looked at.
    requests: u64,
    last_active: std::time::Instant,
    /// When bytes of a head were first seen.
    begun: Option<Instant>,
}

impl HeadWatch {
    /// `partial`: the session starts with bytes of a head already read.
    pub(super) fn new(
        deadline: Option<(Duration, HeadTimeout)>,
        counts: Arc<IoCounts>,
        ctx: &ConnCtx,
        partial: bool,
    ) -> Option<Self> {
        let (limit, which) = deadline?;
        Some(Self {
            limit,
            which,
            rx_idle: counts.rx.load(Ordering::Relaxed),
            counts,
            requests: ctx.requests.get(),
            last_active: ctx.last_active.get(),
            begun: partial.then(Instant::now),
        })
    }

    /// When to look next.
    pub(super) fn next_look(&self) -> Instant {
        Instant::now() + (self.limit / 4).max(Duration::from_millis(10))
    }

    /// Look at the connection: `Some` when a head has taken too long.
    pub(super) fn look(&mut self, ctx: &ConnCtx) -> Option<HeadTimeout> {
        let rx = self.counts.rx.load(Ordering::Relaxed);
        let (requests, last_active) = (ctx.requests.get(), ctx.last_active.get());
        if ctx.active.get() > 0 || requests != self.requests || last_active != self.last_active {
            // Busy, or a request came and went since the last look: bytes read so far were
            // its own.
            self.requests = requests;
            self.last_active = last_active;
            self.rx_idle = rx;
            self.begun = None;
            return None;
        }
        if rx == self.rx_idle {
            return None;
        }
        let begun = *self.begun.get_or_insert_with(Instant::now);
        (begun.elapsed() >= self.limit).then_some(self.which)
    }
}
