//! A bounded load client for the restart and drain tests: N concurrent HTTP/1.1 workers on
//! keep-alive connections or on a new connection per request, or one HTTP/2 connection carrying
//! rounds of concurrent streams. It counts successes, failures (transport errors and non-2xx),
//! status codes and response bodies, and runs until [`Load::stop`] or its deadline.
//!
//! It behaves as a careful real client does: a response with `Connection: close` (or an HTTP/2
//! GOAWAY) retires the connection before the next request, and a request hyper reports as never
//! written ("connection was not ready"), or an HTTP/2 stream the server refused with a graceful
//! GOAWAY (above its last stream id, so not processed: RFC 9113 §6.8), is retried on a new
//! connection and counted apart in [`Report::unsent_retries`]. Every other error after a request
//! was handed to the connection is a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::client::{empty, get_req, Body, BoxError, Resp};

/// How the workers talk to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1, each worker reusing its connection until the server asks it to close.
    KeepAlive,
    /// HTTP/1.1, a new connection per request (`Connection: close`).
    NewConnection,
    /// HTTP/2 prior knowledge: one connection (per worker), `streams` concurrent requests per
    /// round.
    H2 { streams: usize },
}

/// What the load client saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ok: u64,
    pub failed: u64,
    /// Requests retried because hyper reported them as never written.
    pub unsent_retries: u64,
    /// Connections opened (the first ones included).
    pub connects: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Response bodies (first 64 bytes) and how often each was seen.
    pub bodies: BTreeMap<String, u64>,
    /// The first few failures, for the assertion message.
    pub errors: Vec<String>,
}

impl Report {
    pub fn sent(&self) -> u64 {
        self.ok + self.failed
    }
}

#[derive(Debug, Default)]
struct Shared {
    ok: AtomicU64,
    failed: AtomicU64,
    unsent: AtomicU64,
    connects: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    bodies: Mutex<BTreeMap<String, u64>>,
    last_body: Mutex<String>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn record(&self, r: Result<Resp, BoxError>) {
        match r {
            Ok(resp) => {
                *self
                    .statuses
                    .lock()
                    .expect("lock")
                    .entry(resp.status)
                    .or_default() += 1;
                let mut body = resp.text();
                body.truncate(64);
                *self
                    .bodies
                    .lock()
                    .expect("lock")
                    .entry(body.clone())
                    .or_default() += 1;
                *self.last_body.lock().expect("lock") = body;
                if (200..300).contains(&resp.status) {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.fail(format!("status {}", resp.status));
                }
            }
            Err(e) => self.fail(format!("{e:?}")),
        }
    }

    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().expect("lock");
        if errors.len() < 10 {
            errors.push(what);
        }
    }
}

/// A running load client; stopped (and its tasks aborted) on drop.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Start `workers` workers sending `GET path` to `addr` until stopped or `max` passes.
    pub fn start(addr: SocketAddr, mode: Mode, workers: usize, path: &str, max: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let deadline = Instant::now() + max;
        let tasks = (0..workers)
            .map(|_| {
                let w = Worker {
                    addr,
                    path: path.to_owned(),
                    stop: stop.clone(),
                    shared: shared.clone(),
                    deadline,
                };
                tokio::spawn(async move {
                    match mode {
                        Mode::KeepAlive => w.run_h1(true).await,
                        Mode::NewConnection => w.run_h1(false).await,
                        Mode::H2 { streams } => w.run_h2(streams).await,
                    }
                })
            })
            .collect();
        Self {
            stop,
            shared,
            tasks,
        }
    }

    /// The counts so far.
    pub fn report(&self) -> Report {
        let s = &self.shared;
        Report {
            ok: s.ok.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            unsent_retries: s.unsent.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            statuses: s.statuses.lock().expect("lock").clone(),
            bodies: s.bodies.lock().expect("lock").clone(),
            errors: s.errors.lock().expect("lock").clone(),
        }
    }

    /// The body of the last response seen (first 64 bytes).
    pub fn last_body(&self) -> String {
        self.shared.last_body.lock().expect("lock").clone()
    }

    /// Successful responses so far.
    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::Relaxed)
    }

    /// Wait (≤ `within`) until `n` more requests have succeeded than now; false on timeout.
    pub async fn progress(&self, n: u64, within: Duration) -> bool {
        let want = self.ok() + n;
        let until = Instant::now() + within;
        while self.ok() < want {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Wait (≤ `within`) until a response body equals `body`; false on timeout.
    pub async fn wait_body(&self, body: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if self.last_body() == body {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop the workers, let requests in flight finish (≤ 10 s), and report.
    pub async fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                abort.abort();
                self.shared.fail("a worker did not stop within 10 s".into());
            }
        }
        self.report()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Worker {
    addr: SocketAddr,
    path: String,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    deadline: Instant,
}

/// Whether a response asks for its connection to be closed.
fn says_close(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.eq_ignore_ascii_case("close")))
}

impl Worker {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Body>, BoxError> {
        self.shared.connects.fetch_add(1, Ordering::Relaxed);
        let stream =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr)).await??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(&self, keep_alive: bool) -> http::Request<Body> {
        let mut req = get_req("test.local", &self.path);
        if !keep_alive {
            req.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        req
    }

    async fn run_h1(self, keep_alive: bool) {
        let mut sender: Option<http1::SendRequest<Body>> = None;
        while self.running() {
            let mut s = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => match self.connect_h1().await {
                    Ok(s) => s,
                    Err(e) => {
                        self.shared.fail(format!("connect: {e}"));
                        continue;
                    }
                },
            };
            let mut req = self.request(keep_alive);
            // A request hyper never wrote goes again on a new connection (at most 3 times).
            let mut tries = 0;
            let result = loop {
                tries += 1;
                let sent = async {
                    if tokio::time::timeout(Duration::from_secs(5), s.ready())
                        .await
                        .is_ok_and(|r| r.is_ok())
                    {
                        Ok(s.try_send_request(req).await)
                    } else {
                        Err(req)
                    }
                };
                let out = tokio::time::timeout(Duration::from_secs(10), sent).await;
                match out {
                    Err(_) => break Err::<Resp, BoxError>("response timed out".into()),
                    Ok(Ok(Ok(resp))) => {
                        let close = says_close(resp.headers());
                        let read =
                            tokio::time::timeout(Duration::from_secs(10), Resp::read(resp)).await;
                        match read {
                            Ok(Ok(r)) => {
                                if keep_alive && !close {
                                    sender = Some(s);
                                }
                                break Ok(r);
                            }
                            Ok(Err(e)) => break Err(e),
                            Err(_) => break Err("body timed out".into()),
                        }
                    }
                    Ok(Ok(Err(mut e))) => match e.take_message() {
                        Some(back) if tries < 3 => {
                            self.shared.unsent.fetch_add(1, Ordering::Relaxed);
                            req = back;
                        }
                        _ => break Err(Box::new(e.into_error()) as BoxError),
                    },
                    Ok(Err(back)) if tries < 3 => {
                        self.shared.unsent.fetch_add(1, Ordering::Relaxed);
                        req = back;
                    }
                    Ok(Err(_)) => break Err("connection never ready".into()),
                }
                match self.connect_h1().await {
                    Ok(n) => s = n,
                    Err(e) => break Err(format!("reconnect: {e}").into()),
                }
            };
            self.shared.record(result);
        }
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Body>, BoxError> {
        self.shared.connects.fetch_add(1, Ordering::Relaxed);
        let stream =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr)).await??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn run_h2(self, streams: usize) {
        let uri = format!("http://test.local{}", self.path);
        let mut sender: Option<http2::SendRequest<Body>> = None;
        while self.running() {
            let s = match sender.take() {
                Some(s) if !s.is_closed() && s.is_ready() => s,
                _ => match self.connect_h2().await {
                    Ok(s) => s,
                    Err(e) => {
                        self.shared.fail(format!("h2 connect: {e}"));
                        continue;
                    }
                },
            };
            let round: Vec<_> = (0..streams)
                .map(|_| {
                    let mut s = s.clone();
                    let uri = uri.clone();
                    tokio::spawn(async move {
                        let req = http::Request::get(uri.as_str())
                            .body(empty())
                            .expect("request");
                        let fut = async {
                            s.ready()
                                .await
                                .map_err(|e| (Box::new(e) as BoxError, true))?;
                            match s.try_send_request(req).await {
                                Ok(resp) => Resp::read(resp).await.map_err(|e| (e, false)),
                                Err(mut e) => {
                                    let unsent = e.take_message().is_some();
                                    let err = e.into_error();
                                    // A stream above a graceful GOAWAY's last stream id was not
                                    // processed (RFC 9113 §6.8): real clients send it again.
                                    let refused = refused_by_goaway(&err);
                                    Err((Box::new(err) as BoxError, unsent || refused))
                                }
                            }
                        };
                        match tokio::time::timeout(Duration::from_secs(10), fut).await {
                            Ok(r) => r,
                            Err(_) => Err(("h2 stream timed out".into(), false)),
                        }
                    })
                })
                .collect();
            let mut retry = 0;
            for t in round {
                match t.await {
                    Ok(Err((_, true))) => retry += 1,
                    Ok(r) => self.shared.record(r.map_err(|(e, _)| e)),
                    Err(e) => self.shared.fail(format!("h2 stream task: {e}")),
                }
            }
            // Streams the connection refused before sending them go again on a new one.
            if retry > 0 {
                self.shared.unsent.fetch_add(retry, Ordering::Relaxed);
                match self.connect_h2().await {
                    Ok(mut n) => {
                        for _ in 0..retry {
                            let req = http::Request::get(uri.as_str())
                                .body(empty())
                                .expect("request");
                            let r = async {
                                n.ready().await?;
                                let resp = n.send_request(req).await?;
                                Resp::read(resp).await
                            };
                            let r = tokio::time::timeout(Duration::from_secs(10), r)
                                .await
                                .unwrap_or_else(|_| Err("h2 retry timed out".into()));
                            self.shared.record(r);
                        }
                        sender = Some(n);
                    }
                    Err(e) => {
                        for _ in 0..retry {
                            self.shared.fail(format!("h2 reconnect: {e}"));
                        }
                    }
                }
            } else {
                sender = Some(s);
            }
        }
    }
}

/// Whether `e` is the refusal of an HTTP/2 stream by a graceful (NO_ERROR) GOAWAY from the
/// server: the stream was above the GOAWAY's last stream id and was never processed.
fn refused_by_goaway(e: &hyper::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("GoAway(") && text.contains("NO_ERROR") && text.contains("Remote")
}
