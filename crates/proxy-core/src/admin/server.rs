//! The admin's accept loop and HTTP/1.1 connections (hyper). Each connection runs in its own
//! task holding a [`drain::Watch`]; on drain the loop stops accepting and every connection
//! finishes the response in flight, then closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::handlers::{handle, Ctx};
use super::{AdminState, ServerStats};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed accept (for example out of file descriptors) so that the loop does not
/// spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serve the admin interface on `listener` until `shutdown` is signalled, then stop accepting,
/// let every open connection finish its response in flight, and return once all are closed.
///
/// Registers Envoy's `server.*` gauges ([`ServerStats`]) in `state.stats` and refreshes them
/// before every stats and `/server_info` response.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut shutdown: drain::Watch) {
    let server_stats = ServerStats::new(&state.stats, &state.server);
    server_stats.refresh(state.server_state());
    let ctx = Arc::new(Ctx {
        state,
        server_stats,
    });
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so the set only holds live ones.
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            () = shutdown.signaled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                conns.spawn(serve_connection(stream, ctx.clone(), shutdown.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin: could not accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(stream: TcpStream, ctx: Arc<Ctx>, mut shutdown: drain::Watch) {
    let service = service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            let resp = handle(&ctx, req.method(), req.uri().path(), req.uri().query()).await;
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "admin: connection ended with an error");
    }
}
