//! An HTTP/1.1 connection: Baton's own loop ([`super::h1_loop`]) first, then hyper's session
//! for whatever the loop does not serve, with the idle timeout, the drain and the hand-over to
//! the next generation.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::config::HeadTimeout;
use crate::context::{ConnCtx, ListenerShared, Upgraded};
use crate::handover::{Handover, Kind, Leaving, Mode, ModeWaiter, Registration};
use crate::io::ServerIo;

use super::h1_loop::{self, End};
use super::linger::linger_close;
use super::slow::{count_head_timeout, head_timeout_bytes, HeadWatch};
use super::svc::{HandleFuture, Svc};

/// An idle keep-alive connection asked to close is closed only once it has been idle this
/// long, so a client's next request is not met by a close it could not see coming.
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(100);

/// HTTP/1.1 server settings; `head_limit` (the HCM's `max_request_headers_kb`) caps what hyper
/// buffers while reading a message head: a longer head is answered 431.
fn h1_builder(head_limit: usize) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(head_limit)
        .keep_alive(true);
    b
}

/// How hyper's session on an HTTP/1.1 connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H1End {
    /// The client closed, an error, or a protocol switch.
    Done,
    /// We closed it (idle timeout, drain): a request racing the close may be waiting.
    Closing,
    /// Stopped at an idle point for the next generation to take it.
    Handover,
    /// A request head took too long: the connection is taken back to answer 408.
    HeadTimeout(HeadTimeout),
}

/// Serve an HTTP/1.1 connection. hyper is polled without its own shutdown so that the socket
/// comes back to us at the end: for a protocol switch (handed to the tunnel), for the next
/// generation (moved at an idle point), for a request that raced an idle close (served once
/// more), and for a lingering close.
pub(super) async fn serve_http1<F: HandleFuture>(
    io: ServerIo,
    svc: Svc<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
) -> Result<(), hyper::Error> {
    // Only a connection of a cleartext chain may move: the next generation serves it on the
    // same chain, if it still has it unchanged.
    let reg = if io.is_plain() && l.movable {
        svc.w.handover.register()
    } else {
        None
    };
    let mut io = io;
    ctx.movable.set(reg.is_some());
    match h1_loop::serve(&mut io, &svc, l, ctx, reg.is_some()).await {
        End::Closed { linger } => {
            drop(reg);
            if linger {
                linger_close(io, l.http.delayed_close_timeout).await;
            }
            Ok(())
        }
        // hyper serves the rest, from the bytes put back in front of `io` (boxed: see
        // `serve_conn`).
        End::Fallback => Box::pin(serve_http1_hyper(io, svc, l, ctx, reg)).await,
    }
}

/// The rest of an HTTP/1.1 connection, served by hyper.
async fn serve_http1_hyper<F: HandleFuture>(
    io: ServerIo,
    svc: Svc<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
    reg: Option<Registration>,
) -> Result<(), hyper::Error> {
    let handover = svc.w.handover.clone();
    let mut reg = reg;
    let mut io = io;
    let partial = io.has_prefix();
    let mut watch = HeadWatch::new(l.http.head_deadline(), io.counts(), ctx, partial);
    loop {
        ctx.movable.set(reg.is_some());
        let mut conn =
            h1_builder(l.http.max_request_head()).serve_connection(TokioIo::new(io), svc.clone());
        let waiter = reg.as_ref().map(|_| svc.w.modes.waiter());
        let end = drive_h1(&mut conn, l, ctx, waiter, watch.take()).await?;
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        if let H1End::HeadTimeout(which) = end {
            drop(reg);
            refuse_slow_head(io, l, ctx, which).await;
            return Ok(());
        }
        if let Some(tx) = ctx.upgrade.borrow_mut().take() {
            ctx.movable.set(false);
            drop(reg);
            let _ = tx.send(Upgraded {
                io,
                read_buf: parts.read_buf,
            });
            return Ok(());
        }
        if end == H1End::Handover {
            match offer_h1(&handover, &mut io, parts.read_buf, l, ctx).await {
                // The next generation serves it from here on; our copy of the socket closes
                // without a FIN (theirs keeps it open).
                None => return Ok(()),
                Some(read_buf) => {
                    // Not taken: it stays here, served and drained as usual.
                    io.prepend(read_buf);
                    reg = None;
                    continue;
                }
            }
        }
        drop(reg);
        // A request that arrived as we closed an idle connection is answered, with
        // `Connection: close`, instead of being lost.
        io.prepend(parts.read_buf);
        if end == H1End::Closing && io.take_pending().unwrap_or(false) {
            l.http_stats.downstream_cx_drain_rescued.inc();
            let mut b = h1_builder(l.http.max_request_head());
            b.keep_alive(false);
            let mut again = b.serve_connection(TokioIo::new(io), svc);
            std::future::poll_fn(|cx| again.poll_without_shutdown(cx)).await?;
            io = again.into_parts().io.into_inner();
        }
        linger_close(io, l.http.delayed_close_timeout).await;
        return Ok(());
    }
}

type H1Conn<F> = http1::Connection<TokioIo<ServerIo>, Svc<F>>;

/// Poll hyper until the connection ends, closing it when it idles out or a drain asks, or
/// (with `handover`, while a successor takes connections) stopping it at its next idle point.
async fn drive_h1<F: HandleFuture>(
    conn: &mut H1Conn<F>,
    l: &ListenerShared,
    ctx: &ConnCtx,
    mut modes: Option<ModeWaiter>,
    mut watch: Option<HeadWatch>,
) -> Result<H1End, hyper::Error> {
    let head_look =
        tokio::time::sleep_until(watch.as_ref().map_or_else(far_off, |w| w.next_look()));
    tokio::pin!(head_look);
    let idle = l.http.idle_timeout;
    let far = Duration::from_secs(365 * 24 * 3600);
    let since = ctx.last_active.get().elapsed();
    let idle_sleep = tokio::time::sleep(idle.unwrap_or(far).saturating_sub(since));
    tokio::pin!(idle_sleep);
    let mut drain = ctx.drain.clone();
    let mut asked = false;
    let mut end = H1End::Done;
    loop {
        let mode = modes.as_ref().map_or(Mode::Off, |m| m.mode());
        let moving = mode == Mode::Active;
        if moving && end == H1End::Done && ctx.active.get() == 0 {
            // An idle point: hyper finishes what it is writing, reads nothing more, and gives
            // the socket back with any bytes it read but did not parse.
            end = H1End::Handover;
            Pin::new(&mut *conn).graceful_shutdown();
        }
        let open = end == H1End::Done;
        tokio::select! {
            // The connection first: it is what wakes this task for nearly every request.
            biased;
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                r?;
                return Ok(end);
            }
            changed = std::future::poll_fn(|cx| match &modes {
                Some(m) => m.poll_change(cx, mode),
                None => Poll::Pending,
            }), if modes.is_some() && open => {
                if changed == Mode::Ended {
                    // No successor will take it: drained as usual from here.
                    modes = None;
                    ctx.movable.set(false);
                }
            }
            _ = idle_point(ctx), if moving && open => {}
            _ = head_look.as_mut(), if watch.is_some() && open => {
                let Some(w) = watch.as_mut() else { continue };
                if let Some(which) = w.look(ctx) {
                    return Ok(H1End::HeadTimeout(which));
                }
                head_look.as_mut().reset(w.next_look());
            }
            _ = drain.close_requested(), if !asked && !moving && open => {
                // Every response from now on carries `Connection: close` (drain_close() is
                // sticky); an idle connection is closed once it has been idle for the grace.
                asked = true;
                if !ctx.drain.asked_by_limit() {
                    l.http_stats.downstream_cx_drain_close.inc();
                }
                let since = ctx.last_active.get().elapsed();
                let wait = DRAIN_IDLE_GRACE.saturating_sub(since);
                idle_sleep.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            _ = idle_sleep.as_mut(), if open && !moving && (asked || idle.is_some()) => {
                let limit = if asked { DRAIN_IDLE_GRACE } else { idle.unwrap_or(far) };
                let since = ctx.last_active.get().elapsed();
                if ctx.active.get() == 0 && since >= limit {
                    end = H1End::Closing;
                    if !asked {
                        l.http_stats.downstream_cx_idle_timeout.inc();
                    }
                    Pin::new(&mut *conn).graceful_shutdown();
                } else {
                    let next = if ctx.active.get() == 0 { limit - since } else { limit };
                    idle_sleep.as_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        }
    }
}

/// An instant no timer reaches.
fn far_off() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// Answer a request head that took too long on a connection taken back from hyper's session
/// (which had sent nothing of a response: no request was in flight), and close it.
async fn refuse_slow_head(mut io: ServerIo, l: &ListenerShared, ctx: &ConnCtx, which: HeadTimeout) {
    use tokio::io::AsyncWriteExt;
    tracing::debug!(remote = %ctx.remote, ?which, "request head timed out");
    count_head_timeout(l, which);
    if io
        .write_all(&head_timeout_bytes(which, &l.http))
        .await
        .is_ok()
    {
        let _ = io.flush().await;
        linger_close(io, l.http.delayed_close_timeout).await;
    }
}

/// Completes once no request is in progress on the connection.
fn idle_point(ctx: &ConnCtx) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        if ctx.active.get() == 0 {
            Poll::Ready(())
        } else {
            *ctx.idle_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
}

/// Offer an HTTP/1.1 connection stopped at an idle point to the next generation. `None` when
/// it was taken; otherwise the bytes read past the last request, to serve here.
async fn offer_h1(
    handover: &Handover,
    io: &mut ServerIo,
    read_buf: Bytes,
    l: &ListenerShared,
    ctx: &ConnCtx,
) -> Option<Bytes> {
    // Bytes hyper read but did not parse come first, then any our IO still held.
    let held = io.take_prefix();
    let read_buf = if held.is_empty() {
        read_buf
    } else {
        let mut b = bytes::BytesMut::with_capacity(read_buf.len() + held.len());
        b.extend_from_slice(&read_buf);
        b.extend_from_slice(&held);
        b.freeze()
    };
    let fd = match io.dup_plain_socket() {
        Some(Ok(fd)) => fd,
        _ => return Some(read_buf),
    };
    let leaving = Leaving {
        kind: Kind::Http1,
        listener: l.config.address,
        peer: ctx.remote,
        read_buf: read_buf.clone(),
        idle: ctx.last_active.get().elapsed(),
        requests: ctx.requests.get(),
        upstream: None,
        chain: l.chain.clone(),
        fds: vec![fd],
    };
    if handover.offer(leaving).await {
        None
    } else {
        Some(read_buf)
    }
}
