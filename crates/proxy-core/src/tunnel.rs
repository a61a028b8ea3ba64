//! Upgrade tunnels (WebSocket and the like) once both sides have switched protocols, and
//! `tcp_proxy` connections: bytes are copied both ways until both have finished, and — when
//! both ends are plain TCP sockets — a connection idle in both directions can move to the next
//! generation with its two sockets.
//!
//! The copy is our own rather than `tokio::io::copy_bidirectional` because the hand-over needs
//! to know that no byte is held in either direction's buffer at the moment the sockets leave.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::handover::{ChainId, Handover, Kind, Leaving, Mode};
use crate::io::{ServerIo, Stream};
use crate::upstream::Counted;

/// Bytes read at once each way in an upgrade tunnel.
pub(crate) const BUF: usize = 16 * 1024;

/// Who a tunnel belongs to, for a hand-over's manifest.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    /// [`Kind::Tunnel`] or [`Kind::TcpProxy`].
    pub kind: Kind,
    /// The filter chain that serves it.
    pub chain: ChainId,
    pub listener: SocketAddr,
    pub peer: SocketAddr,
    pub upstream: SocketAddr,
    pub cluster: String,
    pub requests: u64,
    /// No byte either way for this long closes the tunnel (the HCM's shorter of
    /// `stream_idle_timeout` and `idle_timeout`, as an upgraded stream is one that stays
    /// open); `tcp_proxy`'s `idle_timeout`. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// How long it had been idle already (one arriving from the previous generation): the idle
    /// timeout counts from then.
    pub idle: Duration,
}

/// One end of a connection that may move to the next generation: its socket can be
/// duplicated when it is a plain one, and bytes read ahead of the copy are held in front of it.
pub trait Movable: AsyncRead + AsyncWrite + Unpin {
    /// Bytes held in front of the socket (taken out).
    fn take_prefix(&mut self) -> Bytes;
    /// Puts bytes back in front of the socket.
    fn prepend(&mut self, bytes: Bytes);
    /// A duplicate of the socket; `None` when it is not a plain one.
    fn dup_plain_socket(&self) -> Option<io::Result<OwnedFd>>;
    fn is_plain(&self) -> bool;
}

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Both directions finished (or failed).
    Closed,
    /// It moved to the next generation.
    HandedOver,
    /// No byte moved either way for its idle timeout: both ends were closed.
    IdleTimeout,
}

/// Copy between the downstream connection and hyper's upgraded upstream connection. With a
/// `handover` (the tunnel may move), a cleartext upstream is unwrapped to its socket; any other
/// is copied as it is.
pub async fn run(
    down: ServerIo,
    up: Upgraded,
    handover: Option<&Handover>,
    info: TunnelInfo,
) -> Ended {
    let Some(handover) = handover else {
        return copy(down, TokioIo::new(up), info.idle_timeout, BUF).await;
    };
    match up.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let up = ServerIo::new(Stream::Plain(parts.io.into_inner()), parts.read_buf);
            run_plain(down, up, handover, info, BUF).await
        }
        Err(up) => copy(down, TokioIo::new(up), info.idle_timeout, BUF).await,
    }
}

/// Copy between `down` and `up` until both directions have finished (an end that has sent
/// everything is shut down for writing; the other direction goes on), either fails, or no
/// byte moves either way for `idle_timeout`, through a `buf`-byte buffer each way. Never handed
/// over.
pub async fn copy<D, U>(mut down: D, mut up: U, idle_timeout: Option<Duration>, buf: usize) -> Ended
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut to_up, mut to_down) = (Pump::with_capacity(buf), Pump::with_capacity(buf));
    let mut last_active = Instant::now();
    let mut idle = IdleClock::new(idle_timeout);
    let stop = poll_fn(|cx| {
        let pumps = (&mut to_up, &mut to_down);
        pump_both(
            cx,
            &mut down,
            &mut up,
            pumps,
            false,
            &mut last_active,
            &mut idle,
        )
    })
    .await;
    match stop {
        Stop::IdleTimeout => Ended::IdleTimeout,
        Stop::Finished | Stop::Idle => Ended::Closed,
    }
}

/// Copy between two sockets; when both are plain and a successor takes connections (of this
/// kind), stop at a moment both directions are idle and offer them. Through a `buf`-byte
/// buffer each way.
pub async fn run_plain<D: Movable, U: Movable>(
    mut down: D,
    mut up: U,
    handover: &Handover,
    info: TunnelInfo,
    buf: usize,
) -> Ended {
    let mut reg = if down.is_plain() && up.is_plain() {
        handover.register()
    } else {
        None
    };
    let mut modes = handover.subscribe();
    let mut to_up = Pump::with_capacity(buf);
    let mut to_down = Pump::with_capacity(buf);
    let now = Instant::now();
    let mut last_active = now.checked_sub(info.idle).unwrap_or(now);
    let mut idle = IdleClock::new(info.idle_timeout);
    loop {
        let mode = *modes.borrow_and_update();
        if mode == Mode::Active && info.kind == Kind::TcpProxy && !handover.moves_tcp_proxy() {
            // The successor does not take `tcp_proxy` connections: this one stays.
            reg = None;
        }
        let moving = reg.is_some() && mode == Mode::Active;
        let stop = tokio::select! {
            r = poll_fn(|cx| {
                let pumps = (&mut to_up, &mut to_down);
                pump_both(cx, &mut down, &mut up, pumps, moving, &mut last_active, &mut idle)
            }) => r,
            changed = modes.changed(), if reg.is_some() => {
                if changed.is_err() || *modes.borrow() == Mode::Ended {
                    reg = None;
                }
                continue;
            }
        };
        match stop {
            Stop::Finished => return Ended::Closed,
            Stop::IdleTimeout => return Ended::IdleTimeout,
            Stop::Idle => {
                if offer(&mut down, &mut up, handover, &info, last_active.elapsed()).await {
                    return Ended::HandedOver;
                }
                // Not taken: it stays, and is not offered again.
                reg = None;
            }
        }
    }
}

async fn offer<D: Movable, U: Movable>(
    down: &mut D,
    up: &mut U,
    handover: &Handover,
    info: &TunnelInfo,
    idle: Duration,
) -> bool {
    // Idle means both pumps had read everything their source had yielded, prefixes included.
    let (dp, upp) = (down.take_prefix(), up.take_prefix());
    if !dp.is_empty() || !upp.is_empty() {
        down.prepend(dp);
        up.prepend(upp);
        return false;
    }
    let fds = match (down.dup_plain_socket(), up.dup_plain_socket()) {
        (Some(Ok(d)), Some(Ok(u))) => vec![d, u],
        _ => return false,
    };
    handover
        .offer(Leaving {
            kind: info.kind,
            listener: info.listener,
            peer: info.peer,
            read_buf: Bytes::new(),
            idle,
            requests: info.requests,
            upstream: Some((info.upstream, info.cluster.clone())),
            chain: info.chain.clone(),
            fds,
        })
        .await
}

// === impl Movable ===

impl Movable for ServerIo {
    fn take_prefix(&mut self) -> Bytes {
        ServerIo::take_prefix(self)
    }

    fn prepend(&mut self, bytes: Bytes) {
        ServerIo::prepend(self, bytes);
    }

    fn dup_plain_socket(&self) -> Option<io::Result<OwnedFd>> {
        ServerIo::dup_plain_socket(self)
    }

    fn is_plain(&self) -> bool {
        ServerIo::is_plain(self)
    }
}

/// An upstream connection counted in its cluster's byte stats.
impl<M: Movable> Movable for Counted<M> {
    fn take_prefix(&mut self) -> Bytes {
        self.get_mut().take_prefix()
    }

    fn prepend(&mut self, bytes: Bytes) {
        self.get_mut().prepend(bytes);
    }

    fn dup_plain_socket(&self) -> Option<io::Result<OwnedFd>> {
        self.get_ref().dup_plain_socket()
    }

    fn is_plain(&self) -> bool {
        self.get_ref().is_plain()
    }
}

enum Stop {
    Finished,
    /// Both directions idle while a successor takes connections.
    Idle,
    /// No byte either way for the tunnel's idle timeout.
    IdleTimeout,
}

fn pump_both<D, U>(
    cx: &mut Context<'_>,
    down: &mut D,
    up: &mut U,
    (to_up, to_down): (&mut Pump, &mut Pump),
    moving: bool,
    last_active: &mut Instant,
    idle: &mut IdleClock,
) -> Poll<Stop>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let moved = to_up.moved + to_down.moved;
    let a = to_up.poll(cx, Pin::new(&mut *down), Pin::new(&mut *up));
    let b = to_down.poll(cx, Pin::new(&mut *up), Pin::new(&mut *down));
    if to_up.moved + to_down.moved != moved {
        *last_active = Instant::now();
    }
    match (a, b) {
        (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => return Poll::Ready(Stop::Finished),
        (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(Stop::Finished),
        _ => {}
    }
    if moving && to_up.is_idle() && to_down.is_idle() {
        return Poll::Ready(Stop::Idle);
    }
    if idle.poll_expired(cx, *last_active).is_ready() {
        return Poll::Ready(Stop::IdleTimeout);
    }
    Poll::Pending
}

/// A tunnel's idle timeout: ready once no byte has moved for the timeout (never without one).
/// The timer is re-armed from the last activity whenever it fires early.
struct IdleClock {
    limit: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleClock {
    fn new(limit: Option<Duration>) -> Self {
        Self { limit, sleep: None }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>, last_active: Instant) -> Poll<()> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let at = tokio::time::Instant::from_std(last_active + limit);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        loop {
            ready!(sleep.as_mut().poll(cx));
            if last_active.elapsed() >= limit {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(at);
        }
    }
}

/// One direction of the copy: read into the buffer, write it out, flush; on EOF, shut the
/// writer down.
struct Pump {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    flushed: bool,
    done: bool,
    moved: u64,
}

impl Pump {
    fn with_capacity(buf: usize) -> Self {
        Self {
            buf: vec![0; buf].into_boxed_slice(),
            pos: 0,
            cap: 0,
            eof: false,
            flushed: true,
            done: false,
            moved: 0,
        }
    }

    /// Nothing held: the buffer is empty, flushed, and the source has not ended.
    fn is_idle(&self) -> bool {
        self.pos == self.cap && self.flushed && !self.eof
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            self.moved += n as u64;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if !self.flushed {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.flushed = true;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.flushed = false;
            }
            if self.eof {
                ready!(writer.as_mut().poll_flush(cx))?;
                self.flushed = true;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    fn info() -> TunnelInfo {
        TunnelInfo {
            kind: Kind::Tunnel,
            chain: ChainId::default(),
            idle: Duration::ZERO,
            listener: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:2".parse().unwrap(),
            upstream: "127.0.0.1:3".parse().unwrap(),
            cluster: "c".into(),
            requests: 1,
            idle_timeout: None,
        }
    }

    #[tokio::test]
    async fn copies_both_ways_and_half_closes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut client, down) = pair(&l).await;
        let (mut origin, up) = pair(&l).await;
        let h = Handover::new(true, &shm_stats::Store::new());
        let t = tokio::spawn(async move {
            run_plain(
                ServerIo::new(Stream::Plain(down), Bytes::from_static(b"pre:")),
                ServerIo::new(Stream::Plain(up), Bytes::new()),
                &h,
                info(),
                BUF,
            )
            .await
        });
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 9];
        origin.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pre:hello");
        origin.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        origin.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        origin.shutdown().await.unwrap();
        assert_eq!(t.await.unwrap(), Ended::Closed);
    }

    #[tokio::test]
    async fn a_tcp_proxy_connection_is_offered_only_to_a_successor_that_takes_them() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        for takes in [false, true] {
            let (mut client, down) = pair(&l).await;
            let (mut origin, up) = pair(&l).await;
            let h = Handover::new(true, &shm_stats::Store::new());
            let h2 = h.clone();
            let mut tcp = info();
            tcp.kind = Kind::TcpProxy;
            tcp.chain.name = "db".into();
            let t = tokio::task::spawn(async move {
                run_plain(
                    ServerIo::new(Stream::Plain(down), Bytes::new()),
                    ServerIo::new(Stream::Plain(up), Bytes::new()),
                    &h2,
                    tcp,
                    BUF,
                )
                .await
            });
            while h.open() == 0 {
                tokio::task::yield_now().await;
            }
            h.activate(takes);
            if takes {
                let taker = h.clone();
                let offer = tokio::task::spawn_blocking(move || loop {
                    if let Some(o) = taker.take(253, Duration::from_secs(5)).pop() {
                        return o;
                    }
                })
                .await
                .unwrap();
                assert_eq!(offer.conn.kind, Kind::TcpProxy);
                assert_eq!(offer.conn.chain.name, "db");
                assert_eq!(offer.conn.fds.len(), 2);
                offer.settle(true);
                assert_eq!(t.await.unwrap(), Ended::HandedOver);
            } else {
                // Not offered: it leaves the hand-over and keeps copying.
                while h.open() != 0 {
                    tokio::task::yield_now().await;
                }
                assert!(h.take(253, Duration::ZERO).is_empty());
                client.write_all(b"x").await.unwrap();
                let mut b = [0u8; 1];
                origin.read_exact(&mut b).await.unwrap();
                drop((client, origin));
                assert_eq!(t.await.unwrap(), Ended::Closed);
            }
        }
    }

    #[tokio::test]
    async fn an_idle_tunnel_is_offered_and_a_refused_one_keeps_copying() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut client, down) = pair(&l).await;
        let (mut origin, up) = pair(&l).await;
        let h = Handover::new(true, &shm_stats::Store::new());
        let h2 = h.clone();
        let t = tokio::task::spawn(async move {
            run_plain(
                ServerIo::new(Stream::Plain(down), Bytes::new()),
                ServerIo::new(Stream::Plain(up), Bytes::new()),
                &h2,
                info(),
                BUF,
            )
            .await
        });
        while h.open() == 0 {
            tokio::task::yield_now().await;
        }
        h.activate(false);
        let taker = h.clone();
        let offer = tokio::task::spawn_blocking(move || loop {
            let mut got = taker.take(253, Duration::from_secs(5));
            if let Some(o) = got.pop() {
                return o;
            }
        })
        .await
        .unwrap();
        assert_eq!(offer.conn.kind, Kind::Tunnel);
        assert_eq!(offer.conn.fds.len(), 2);
        offer.settle(false);
        // Refused: still copying, and not offered again.
        client.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        origin.read_exact(&mut b).await.unwrap();
        assert_eq!(h.open(), 0);
        drop(client);
        drop(origin);
        assert_eq!(t.await.unwrap(), Ended::Closed);
    }
}
