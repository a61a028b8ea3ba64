//! An HTTP/2 connection, with a drain that refuses no stream (see [`crate::h2_drain`]).

use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::context::{ConnCtx, ListenerShared};
use crate::h2_drain::{DrainCtl, H2Io};
use crate::io::ServerIo;
use crate::LocalExec;

use super::svc::{HandleFuture, Svc};

const H2_DRAIN_PING_WAIT: Duration = Duration::from_secs(1);

/// Serve an HTTP/2 connection. A drain first makes sure the client has processed every response
/// already sent (a PING round trip, holding our writes), then sends GOAWAY(2^31-1) and lets
/// hyper's graceful shutdown finish the connection: it keeps reading until every open stream
/// has finished. See [`crate::h2_drain`].
pub(super) async fn serve_http2<F: HandleFuture>(
    io: ServerIo,
    svc: Svc<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
) -> Result<(), hyper::Error> {
    let ctl = DrainCtl::new();
    let mut builder = http2::Builder::new(LocalExec);
    builder.timer(TokioTimer::new());
    let o = &l.http.http2;
    if o.initial_stream_window_size.is_some() {
        builder.initial_stream_window_size(o.initial_stream_window_size);
    }
    if o.initial_connection_window_size.is_some() {
        builder.initial_connection_window_size(o.initial_connection_window_size);
    }
    if o.max_concurrent_streams.is_some() {
        builder.max_concurrent_streams(o.max_concurrent_streams);
    }
    if let Some(k) = o.keepalive {
        builder
            .keep_alive_interval(Some(k.interval))
            .keep_alive_timeout(k.timeout);
    }
    let conn = builder.serve_connection(TokioIo::new(H2Io::new(io, ctl.clone())), svc);
    tokio::pin!(conn);
    let idle = l.http.idle_timeout;
    let far = Duration::from_secs(365 * 24 * 3600);
    let idle_sleep = tokio::time::sleep(idle.unwrap_or(far));
    tokio::pin!(idle_sleep);
    let ping_wait = tokio::time::sleep(far);
    tokio::pin!(ping_wait);
    let mut drain = ctx.drain.clone();
    let mut closing = false;
    let mut shut = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = drain.close_requested(), if !closing => {
                closing = true;
                if !ctx.drain.asked_by_limit() {
                    l.http_stats.downstream_cx_drain_close.inc();
                }
                ctl.start();
                ping_wait.as_mut().reset(tokio::time::Instant::now() + H2_DRAIN_PING_WAIT);
            }
            _ = ctl.released(), if closing && !shut => {
                shut = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ping_wait.as_mut(), if closing && !shut => {
                // No answer to the PING: the GOAWAY goes out at the next frame boundary, and
                // `released` follows.
                ctl.hurry();
                ping_wait.as_mut().reset(tokio::time::Instant::now() + far);
            }
            _ = idle_sleep.as_mut(), if !closing && idle.is_some() => {
                let idle = idle.unwrap_or(far);
                let since = ctx.last_active.get().elapsed();
                if ctx.active.get() == 0 && since >= idle {
                    closing = true;
                    shut = true;
                    l.http_stats.downstream_cx_idle_timeout.inc();
                    conn.as_mut().graceful_shutdown();
                } else {
                    let next = if ctx.active.get() == 0 { idle - since } else { idle };
                    idle_sleep.as_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        }
    }
}
