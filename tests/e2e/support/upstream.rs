//! In-process upstreams on 127.0.0.1: hyper HTTP/1.1 and HTTP/2 servers running a handler (echo,
//! fixed response, fail-first, WebSocket-style upgrade), and raw TCP servers that misbehave on
//! purpose (close at once, answer garbage, never answer, close keep-alive connections).
//!
//! Every upstream stops (its accept loop and all its connections) when dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::client::{channel_body, empty, full, incoming, pattern, Body};

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Shared state of an upstream, visible to the test.
#[derive(Debug, Default)]
pub struct State {
    /// Requests (hyper upstreams) or connections (raw upstreams) handled.
    pub hits: AtomicUsize,
    /// Connections accepted.
    pub conns: AtomicUsize,
    /// Chunks of `/slow/` responses written so far.
    pub chunks_sent: AtomicUsize,
    /// [`Upstream::checked`]: `/healthz` answers 503 while set.
    pub failing: AtomicBool,
    /// [`Upstream::checked`]: requests for `/healthz` (also counted in `hits`).
    pub health_hits: AtomicUsize,
    /// [`Upstream::checked`]: every other request answers 500 while set.
    pub broken: AtomicBool,
    pub seen: Mutex<Vec<Seen>>,
}

pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(super) type Handler =
    Arc<dyn Fn(Request<Incoming>, Arc<State>) -> BoxFuture<Response<Body>> + Send + Sync>;

/// A running upstream.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    H1,
    H2,
}

impl Upstream {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn conns(&self) -> usize {
        self.state.conns.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw a request")
    }

    pub(super) async fn serve(proto: Proto, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.conns.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let st = st.clone();
                let svc = service_fn(move |req| {
                    st.hits.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req, st.clone());
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let io = TokioIo::new(stream);
                conns.spawn(async move {
                    let _ = match proto {
                        Proto::H1 => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, svc)
                                .with_upgrades()
                                .await
                        }
                        Proto::H2 => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .max_concurrent_streams(1000)
                                .serve_connection(io, svc)
                                .await
                        }
                    };
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, state, task }
    }

    /// An HTTP/1.1 upstream answering every request with `f`'s response.
    pub async fn custom<F, Fut>(f: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |req, st| {
            record(&req, &st);
            let f = f.clone();
            Box::pin(async move { f(req).await })
        });
        Self::serve(Proto::H1, handler).await
    }

    /// The echo upstream (HTTP/1.1), named `name` (its `x-upstream` response header). See
    /// [`echo_handler`] for what it answers.
    pub async fn echo(name: &str) -> Self {
        Self::serve(Proto::H1, echo_handler(name)).await
    }

    /// The echo upstream speaking HTTP/2 with prior knowledge only.
    pub async fn echo_h2(name: &str) -> Self {
        Self::serve(Proto::H2, echo_handler(name)).await
    }

    /// Always answers `status` with `body`.
    pub async fn fixed(status: u16, body: &'static str) -> Self {
        Self::serve(
            Proto::H1,
            Arc::new(move |req, st| {
                record(&req, &st);
                Box::pin(async move { reply(status, full(body)) })
            }),
        )
        .await
    }

    /// The echo upstream with a health endpoint: `/healthz` answers 200, or 503 while
    /// [`Self::set_failing`] says so; everything else is echoed whatever the health.
    pub async fn checked(name: &str) -> Self {
        Self::checked_with(Proto::H1, name).await
    }

    /// [`Self::checked`] speaking HTTP/2 with prior knowledge only.
    pub async fn checked_h2(name: &str) -> Self {
        Self::checked_with(Proto::H2, name).await
    }

    async fn checked_with(proto: Proto, name: &str) -> Self {
        let echo = echo_handler(name);
        Self::serve(
            proto,
            Arc::new(move |req, st| {
                if req.uri().path() != "/healthz" {
                    if st.broken.load(Ordering::SeqCst) {
                        record(&req, &st);
                        return Box::pin(async { reply(500, full("broken")) });
                    }
                    return echo(req, st);
                }
                record(&req, &st);
                st.health_hits.fetch_add(1, Ordering::SeqCst);
                let status = if st.failing.load(Ordering::SeqCst) {
                    503
                } else {
                    200
                };
                Box::pin(async move { reply(status, full("health")) })
            }),
        )
        .await
    }

    /// [`Self::checked`]: make `/healthz` answer 503 (`true`) or 200.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// [`Self::checked`]: answer every request but health checks with 500 (`true`), or echo.
    pub fn set_broken(&self, broken: bool) {
        self.state.broken.store(broken, Ordering::SeqCst);
    }

    /// [`Self::checked`]: requests other than health checks.
    pub fn proxied(&self) -> usize {
        self.hits() - self.state.health_hits.load(Ordering::SeqCst)
    }

    /// Answers the first `n` requests with 503, then echoes.
    pub async fn fail_first(n: usize) -> Self {
        let echo = echo_handler("after-failures");
        let count = Arc::new(AtomicUsize::new(0));
        Self::serve(
            Proto::H1,
            Arc::new(move |req, st| {
                if count.fetch_add(1, Ordering::SeqCst) < n {
                    record(&req, &st);
                    Box::pin(async { reply(503, full("try again")) })
                } else {
                    echo(req, st)
                }
            }),
        )
        .await
    }

    /// Answers `Upgrade: websocket` with `101 Switching Protocols` and then echoes raw bytes;
    /// anything else with 200 `no upgrade`.
    pub async fn websocket() -> Self {
        Self::serve(
            Proto::H1,
            Arc::new(|mut req, st| {
                record(&req, &st);
                let wants = req
                    .headers()
                    .get("upgrade")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
                if !wants {
                    return Box::pin(async { reply(200, full("no upgrade")) });
                }
                let on_upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(up) = on_upgrade.await {
                        let mut io = TokioIo::new(up);
                        let mut buf = vec![0u8; 4096];
                        loop {
                            match io.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                });
                Box::pin(async {
                    let mut r = reply(101, empty());
                    r.headers_mut()
                        .insert("connection", "upgrade".parse().expect("value"));
                    r.headers_mut()
                        .insert("upgrade", "websocket".parse().expect("value"));
                    r
                })
            }),
        )
        .await
    }

    /// A raw TCP upstream: each accepted connection is handed to `f`.
    pub async fn raw<F, Fut>(f: F) -> Self
    where
        F: Fn(TcpStream, Arc<State>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.conns.fetch_add(1, Ordering::SeqCst);
                conns.spawn(f(stream, st.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, state, task }
    }

    /// Answers `reply` each time a connection's bytes contain `expect` (counted in `hits`),
    /// until the peer closes.
    pub async fn ping_pong(expect: &'static [u8], reply: &'static [u8]) -> Self {
        Self::raw(move |mut s, st| async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                while let Some(i) = got.windows(expect.len()).position(|w| w == expect) {
                    got.drain(..i + expect.len());
                    st.hits.fetch_add(1, Ordering::SeqCst);
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
            }
        })
        .await
    }

    /// Accepts and closes at once (a reset before any response).
    pub async fn close_immediately() -> Self {
        Self::raw(|s, st| async move {
            st.hits.fetch_add(1, Ordering::SeqCst);
            drop(s);
        })
        .await
    }

    /// Reads the request head, answers `HELLO\r\n\r\n` (not HTTP) and closes.
    pub async fn garbage() -> Self {
        Self::raw(|mut s, st| async move {
            st.hits.fetch_add(1, Ordering::SeqCst);
            let _ = read_head(&mut s).await;
            let _ = s.write_all(b"HELLO\r\n\r\n").await;
            let _ = s.shutdown().await;
        })
        .await
    }

    /// Accepts and never answers (the connection stays open until the upstream is dropped).
    pub async fn silent() -> Self {
        Self::raw(|mut s, st| async move {
            st.hits.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            std::future::pending::<()>().await;
        })
        .await
    }

    /// A minimal HTTP/1.1 server answering `200 ok` with keep-alive, which closes each
    /// connection after `n` responses: announcing it with `Connection: close` on the last one
    /// when `announce`, silently otherwise.
    pub async fn close_after(n: usize, announce: bool) -> Self {
        Self::raw(move |mut s, st| async move {
            for i in 1..=n {
                if read_head(&mut s).await.is_none() {
                    return;
                }
                st.hits.fetch_add(1, Ordering::SeqCst);
                let last = i == n && announce;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{}\r\nok",
                    if last { "connection: close\r\n" } else { "" }
                );
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = s.shutdown().await;
        })
        .await
    }

    /// A minimal HTTP/1.1 keep-alive server answering `200 ok` that silently closes a connection
    /// once it has been idle for `idle`.
    pub async fn idle_closer(idle: Duration) -> Self {
        Self::raw(move |mut s, st| async move {
            loop {
                match tokio::time::timeout(idle, read_head(&mut s)).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
                st.hits.fetch_add(1, Ordering::SeqCst);
                let resp = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
            drop(s);
        })
        .await
    }
}

/// Read one request head (to the blank line) and any `content-length` body; `None` on EOF or
/// error.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let len = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(text)
}

pub(super) fn record(req: &Request<Incoming>, st: &State) {
    st.seen.lock().expect("seen lock").push(Seen {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
}

fn reply(status: u16, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r
}

/// The echo behaviour (a request's `x-reply-server: V` gets `server: V` back, its
/// `x-reply-header: n=v` the field `n: v`), by path:
/// - `/download/<n>`: `n` generated bytes ([`pattern`]) streamed in 64 KiB chunks;
/// - `/slow/<n>`: `n` chunks `chunk <i>\n`, 50 ms apart (counted in `chunks_sent`);
/// - `/delay/<ms>`: echo after `ms` milliseconds;
/// - anything else: 200 with the request body streamed back.
///
/// Every response carries `x-upstream: <name>`.
pub(super) fn echo_handler(name: &str) -> Handler {
    let name: Arc<str> = name.into();
    Arc::new(move |req, st| {
        record(&req, &st);
        let name = name.clone();
        // `x-reply-server: V` asks for a `server: V` in the response; `x-reply-header:
        // name=value` for that field.
        let server = req.headers().get("x-reply-server").cloned();
        let extra = req
            .headers()
            .get("x-reply-header")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('='))
            .and_then(|(n, v)| {
                Some((
                    http::HeaderName::from_bytes(n.as_bytes()).ok()?,
                    http::HeaderValue::from_str(v).ok()?,
                ))
            });
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let mut resp = if let Some(n) = path.strip_prefix("/download/") {
                let total: usize = n.parse().unwrap_or(0);
                let (mut tx, body) = channel_body(4);
                tokio::spawn(async move {
                    let mut off = 0;
                    while off < total {
                        let len = (total - off).min(64 * 1024);
                        if tx.send_data(pattern(off, len)).await.is_err() {
                            return;
                        }
                        off += len;
                    }
                });
                let mut r = reply(200, body);
                r.headers_mut()
                    .insert("content-length", total.to_string().parse().expect("value"));
                r
            } else if let Some(n) = path.strip_prefix("/slow/") {
                let chunks: usize = n.parse().unwrap_or(1);
                let (mut tx, body) = channel_body(1);
                let st = st.clone();
                tokio::spawn(async move {
                    for i in 0..chunks {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
                        if tx.send(frame).await.is_err() {
                            return;
                        }
                        st.chunks_sent.fetch_add(1, Ordering::SeqCst);
                    }
                });
                reply(200, body)
            } else {
                if let Some(ms) = path.strip_prefix("/delay/") {
                    let ms: u64 = ms.parse().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let len = req.headers().get("content-length").cloned();
                let mut r = reply(200, incoming(req.into_body()));
                if let Some(len) = len {
                    r.headers_mut().insert("content-length", len);
                }
                r
            };
            resp.headers_mut()
                .insert("x-upstream", name.parse().expect("upstream name"));
            if let Some(server) = server {
                resp.headers_mut().insert("server", server);
            }
            if let Some((name, value)) = extra {
                resp.headers_mut().insert(name, value);
            }
            resp
        })
    })
}
