//! Live connections moving from a draining generation to its successor: cleartext HTTP/1.1
//! keep-alive connections between requests, upgrade tunnels idle in both directions, and
//! `tcp_proxy` connections (cleartext or TLS passed through) holding no byte either way. Each
//! carries the identity of the filter chain that served it ([`ChainId`]): the successor serves
//! it on that chain if it still has it unchanged, and refuses it otherwise.
//!
//! This module owns the meeting point between the data plane and whoever carries the sockets
//! (`proxy-bin`, over the hot restart socket): it knows nothing of the wire.
//!
//! Leaving (the old generation): once [`Handover::activate`] is called, every eligible connection
//! stops at its next idle point and [`Handover::offer`]s duplicates of its sockets with what
//! the successor needs to continue (bytes read but not parsed, idle time, request count). The
//! carrier [`Handover::take`]s offers in batches and [`Offer::settle`]s each with the
//! successor's answer: taken, and the connection's task drops its copy without a FIN (the
//! successor's copy keeps the socket open); not taken (or the carrier failed), and the
//! connection resumes here, drained like any other. A connection is *registered* while it could
//! still be handed over, so the carrier knows when nothing is left ([`Handover::open`]). An offer
//! the carrier has taken is *in flight* until answered: the generation waits for
//! [`Handover::settled`] before it exits, so a batch is always either the successor's or this
//! generation's, never dropped by both.
//!
//! Arriving (the new generation): the carrier turns what it received into [`Arriving`]
//! connections and passes them to [`crate::worker::Adopter::adopt`].

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shm_stats::{Counter, Store};
use tokio::sync::{oneshot, watch};

pub use crate::config::ChainId;

/// Where this generation's hand-over is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not (yet) handing over: connections are served and drained as usual.
    Off,
    /// A successor takes connections: eligible ones stop at their next idle point and move.
    Active,
    /// The successor is gone or done: what is left is drained as usual.
    Ended,
}

/// What kind of connection moves, which decides its sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 between requests: the downstream socket.
    Http1,
    /// An upgrade tunnel idle both ways: the downstream socket, then the upstream one.
    Tunnel,
    /// A `tcp_proxy` connection holding no byte either way: the downstream socket, then the
    /// upstream one. Moves only to a successor that asked for them (see [`Handover::activate`]).
    TcpProxy,
}

/// A connection offered to the successor.
#[derive(Debug)]
pub struct Leaving {
    pub kind: Kind,
    /// The listener that accepted it (its configured address).
    pub listener: SocketAddr,
    pub peer: SocketAddr,
    /// Bytes read from the client but not parsed (HTTP/1 only).
    pub read_buf: Bytes,
    /// How long it had been idle.
    pub idle: Duration,
    /// Requests served on it so far.
    pub requests: u64,
    /// A tunnel's upstream peer and cluster.
    pub upstream: Option<(SocketAddr, String)>,
    /// The filter chain that served it.
    pub chain: ChainId,
    /// Duplicates of its sockets, downstream first.
    pub fds: Vec<OwnedFd>,
}

/// A connection arriving from the previous generation, with its sockets.
#[derive(Debug)]
pub struct Arriving {
    pub kind: Kind,
    pub listener: SocketAddr,
    pub read_buf: Bytes,
    pub idle: Duration,
    pub requests: u64,
    pub cluster: String,
    /// The filter chain that served it; `None` from an older generation (then only a listener
    /// with one chain can serve it).
    pub chain: Option<ChainId>,
    /// Downstream first, then (tunnel, `tcp_proxy`) upstream.
    pub fds: Vec<OwnedFd>,
}

/// An offered connection waiting for the successor's answer.
#[derive(Debug)]
pub struct Offer {
    pub conn: Leaving,
    reply: oneshot::Sender<bool>,
    /// Set once the carrier has taken it (its sockets may be on their way to the successor);
    /// dropped with the offer, once answered.
    in_flight: Option<InFlight>,
}

/// An answered offer still counted in flight until dropped (see [`Offer::answer`]).
#[derive(Debug)]
#[must_use = "the offer stays in flight until this is dropped"]
pub struct Answered {
    _in_flight: Option<InFlight>,
}

/// One offer taken by the carrier and not yet answered: counted in [`Handover::in_flight`]
/// until dropped.
#[derive(Debug)]
struct InFlight {
    inner: Arc<Inner>,
}

/// This generation's hand-over state, shared by its workers and the carrier. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handover {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    /// The successor takes [`Kind::TcpProxy`] connections (set before the mode turns active).
    tcp_proxy: AtomicBool,
    mode: watch::Sender<Mode>,
    queue: Mutex<VecDeque<Offer>>,
    /// Signalled when an offer is queued, a registration ends or the mode changes.
    ready: Condvar,
    open: AtomicUsize,
    /// Workers whose [`WorkerModes`] have seen [`Mode::Active`] (see
    /// [`Handover::workers_see_active`]).
    seen_active: AtomicUsize,
    seen: tokio::sync::Notify,
    /// Offers taken by the carrier and not yet answered (see [`Handover::settled`]).
    in_flight: AtomicUsize,
    /// Signalled when an offer in flight is answered.
    settled: tokio::sync::Notify,
    handed_over: Counter,
    received: Counter,
}

/// An eligible connection's place in [`Handover::open`]; dropped when it closes, moves, or
/// can no longer move.
#[derive(Debug)]
pub struct Registration {
    inner: Arc<Inner>,
}

// === impl Handover ===

impl Handover {
    /// `enabled: false` (`--disable-connection-handover`) never activates: every connection is
    /// drained. Counts in `server.connections_handed_over` and `server.connections_received`.
    pub fn new(enabled: bool, store: &Store) -> Self {
        let (mode, _) = watch::channel(Mode::Off);
        Self {
            inner: Arc::new(Inner {
                enabled,
                tcp_proxy: AtomicBool::new(false),
                mode,
                queue: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                open: AtomicUsize::new(0),
                seen_active: AtomicUsize::new(0),
                seen: tokio::sync::Notify::new(),
                in_flight: AtomicUsize::new(0),
                settled: tokio::sync::Notify::new(),
                handed_over: store.counter("server.connections_handed_over"),
                received: store.counter("server.connections_received"),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// A successor will take connections (`tcp_proxy` ones too with `tcp_proxy`: an older
    /// successor does not know them). False (nothing changes) when disabled or ended.
    pub fn activate(&self, tcp_proxy: bool) -> bool {
        if !self.inner.enabled {
            return false;
        }
        if self.mode() == Mode::Off {
            self.inner.tcp_proxy.store(tcp_proxy, Ordering::Release);
        }
        let changed = self.inner.mode.send_if_modified(|m| {
            if *m == Mode::Off {
                *m = Mode::Active;
                true
            } else {
                false
            }
        });
        self.inner.ready.notify_all();
        changed || self.mode() == Mode::Active
    }

    /// No successor will take more: queued offers are refused and every connection still here
    /// is drained as usual.
    pub fn end(&self) {
        self.inner.mode.send_replace(Mode::Ended);
        let queued: Vec<Offer> = self.queue().drain(..).collect();
        for offer in queued {
            offer.settle(false);
        }
        self.inner.ready.notify_all();
    }

    /// The successor died and this generation serves again (a rollback): back to
    /// [`Mode::Off`], so the next successor can take connections. Offers still queued stay
    /// here.
    pub fn resume(&self) {
        if !self.inner.enabled {
            return;
        }
        self.inner.mode.send_replace(Mode::Off);
        let queued: Vec<Offer> = self.queue().drain(..).collect();
        for offer in queued {
            offer.settle(false);
        }
        self.inner.seen_active.store(0, Ordering::Release);
        self.inner.ready.notify_all();
    }

    pub fn mode(&self) -> Mode {
        *self.inner.mode.borrow()
    }

    /// Whether the successor (once [`Mode::Active`]) takes `tcp_proxy` connections.
    pub fn moves_tcp_proxy(&self) -> bool {
        self.inner.tcp_proxy.load(Ordering::Acquire)
    }

    /// Changes of [`Handover::mode`].
    pub fn subscribe(&self) -> watch::Receiver<Mode> {
        self.inner.mode.subscribe()
    }

    /// Registers an eligible connection; `None` when connections cannot move (disabled, or
    /// ended).
    pub fn register(&self) -> Option<Registration> {
        if !self.inner.enabled || self.mode() == Mode::Ended {
            return None;
        }
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        Some(Registration {
            inner: self.inner.clone(),
        })
    }

    /// Registered connections still here (queued offers included).
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Offers `conn` to the successor and waits for the answer: true when taken (the caller
    /// drops its copy of the sockets without shutting them down), false when it stays here.
    pub async fn offer(&self, conn: Leaving) -> bool {
        if self.mode() != Mode::Active {
            return false;
        }
        let (reply, answer) = oneshot::channel();
        self.queue().push_back(Offer {
            conn,
            reply,
            in_flight: None,
        });
        self.inner.ready.notify_all();
        // `end()` may have run between the mode check and the push: it drained the queue
        // before our offer was in it, so refuse it here.
        if self.mode() != Mode::Active {
            let mine: Vec<Offer> = self.queue().drain(..).collect();
            for offer in mine {
                offer.settle(false);
            }
        }
        let taken = answer.await.unwrap_or(false);
        if taken {
            self.inner.handed_over.inc();
        }
        taken
    }

    /// The carrier's side (blocking; not on a data-plane thread): offers whose sockets add up
    /// to at most `max_fds`, waiting up to `wait` for a first one. Returns early (possibly
    /// empty) when nothing registered is left or the hand-over is no longer active.
    pub fn take(&self, max_fds: usize, wait: Duration) -> Vec<Offer> {
        let deadline = Instant::now() + wait;
        let mut queue = self.queue();
        loop {
            if !queue.is_empty() || self.open() == 0 || self.mode() != Mode::Active {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = match self.inner.ready.wait_timeout(queue, left) {
                Ok((q, _)) => q,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        let mut out = Vec::new();
        let mut fds = 0;
        while let Some(offer) = queue.front() {
            let n = offer.conn.fds.len();
            if fds + n > max_fds {
                break;
            }
            fds += n;
            out.extend(queue.pop_front().map(|mut offer| {
                self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
                offer.in_flight = Some(InFlight {
                    inner: self.inner.clone(),
                });
                offer
            }));
        }
        out
    }

    /// Offers the carrier has taken (their sockets possibly on their way to the successor) and
    /// not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Waits (at most `within`) until no offer is in flight: each batch sent to the successor
    /// has been answered, so each of its connections is either the successor's (taken) or this
    /// generation's again (refused). A generation waits here before it exits, so a batch the
    /// successor is about to acknowledge is never dropped by both sides. True when settled.
    pub async fn settled(&self, within: Duration) -> bool {
        let all = async {
            loop {
                let notified = self.inner.settled.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, all).await.is_ok()
    }

    /// Waits (at most `within`) until `workers` workers have seen the hand-over become active,
    /// so that a drain started afterwards never asks a connection that could move to close.
    pub async fn workers_see_active(&self, workers: usize, within: Duration) {
        let all = async {
            loop {
                let notified = self.inner.seen.notified();
                if self.inner.seen_active.load(Ordering::Acquire) >= workers {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, all).await;
    }

    /// Counts a connection taken from the previous generation.
    pub fn count_received(&self) {
        self.inner.received.inc();
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Offer>> {
        // A panic while holding the lock cannot leave the queue inconsistent (push/pop only).
        self.inner
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One worker thread's copy of [`Handover::mode`], for its connections: a connection waiting for
/// the mode to change costs a `Cell` read per poll (a watch receiver each would cost a lock),
/// and registers its waker once.
#[derive(Debug)]
pub struct WorkerModes {
    mode: Cell<Mode>,
    next_id: Cell<u64>,
    waiting: RefCell<HashMap<u64, Waker>>,
}

/// A connection's registration with its worker's [`WorkerModes`]; removed on drop.
#[derive(Debug)]
pub struct ModeWaiter {
    modes: Rc<WorkerModes>,
    id: u64,
    registered: Cell<bool>,
}

// === impl WorkerModes ===

impl WorkerModes {
    pub fn new(handover: &Handover) -> Rc<Self> {
        Rc::new(Self {
            mode: Cell::new(handover.mode()),
            next_id: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
        })
    }

    /// Keeps this copy in step with `handover` (a task on the worker's thread; runs until the
    /// runtime ends).
    pub async fn follow(self: Rc<Self>, handover: Handover) {
        let mut rx = handover.subscribe();
        loop {
            let mode = *rx.borrow_and_update();
            if mode != self.mode.get() {
                self.mode.set(mode);
                for waker in self.waiting.borrow().values() {
                    waker.wake_by_ref();
                }
                if mode == Mode::Active {
                    handover.inner.seen_active.fetch_add(1, Ordering::AcqRel);
                    handover.inner.seen.notify_waiters();
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode.get()
    }

    pub fn waiter(self: &Rc<Self>) -> ModeWaiter {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        ModeWaiter {
            modes: self.clone(),
            id,
            registered: Cell::new(false),
        }
    }
}

// === impl ModeWaiter ===

impl ModeWaiter {
    pub fn mode(&self) -> Mode {
        self.modes.mode.get()
    }

    /// Ready with the mode once it differs from `seen`. The task's waker is kept from the first
    /// poll (a task's waker does not change between polls).
    pub fn poll_change(&self, cx: &mut Context<'_>, seen: Mode) -> Poll<Mode> {
        let now = self.modes.mode.get();
        if now != seen {
            return Poll::Ready(now);
        }
        if !self.registered.get() {
            self.registered.set(true);
            self.modes
                .waiting
                .borrow_mut()
                .insert(self.id, cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for ModeWaiter {
    fn drop(&mut self) {
        if self.registered.get() {
            self.modes.waiting.borrow_mut().remove(&self.id);
        }
    }
}

// === impl Offer ===

impl Offer {
    /// The successor's answer: `true` if it took the connection.
    pub fn settle(self, taken: bool) {
        drop(self.answer(taken));
    }

    /// As [`Offer::settle`], but the offer stays in flight (see [`Handover::settled`]) until the
    /// returned token is dropped: the carrier drops it once the successor knows its answer was
    /// heard, so this generation does not exit in between.
    pub fn answer(self, taken: bool) -> Answered {
        let _ = self.reply.send(taken);
        Answered {
            _in_flight: self.in_flight,
        }
    }
}

// === impl InFlight ===

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.inner.settled.notify_waiters();
    }
}

// === impl Registration ===

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.open.fetch_sub(1, Ordering::AcqRel);
        self.inner.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaving(fds: usize) -> Leaving {
        Leaving {
            kind: if fds == 2 { Kind::Tunnel } else { Kind::Http1 },
            listener: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:2".parse().unwrap(),
            read_buf: Bytes::new(),
            idle: Duration::ZERO,
            requests: 0,
            upstream: None,
            chain: ChainId::default(),
            fds: (0..fds)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().into())
                .collect(),
        }
    }

    #[tokio::test]
    async fn offers_wait_for_the_answer_and_batches_respect_max_fds() {
        let store = Store::new();
        let h = Handover::new(true, &store);
        let regs: Vec<_> = (0..3).map(|_| h.register().unwrap()).collect();
        assert_eq!(h.open(), 3);
        assert!(!h.offer(leaving(1)).await, "not active yet: stays");
        assert!(h.activate(false));
        let a = tokio::spawn({
            let h = h.clone();
            async move { h.offer(leaving(1)).await }
        });
        let b = tokio::spawn({
            let h = h.clone();
            async move { h.offer(leaving(2)).await }
        });
        let taker = h.clone();
        let batch = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            while got.len() < 2 {
                got.extend(taker.take(3, Duration::from_secs(5)));
            }
            got
        })
        .await
        .unwrap();
        assert_eq!(batch.iter().map(|o| o.conn.fds.len()).sum::<usize>(), 3);
        let mut it = batch.into_iter();
        it.next().unwrap().settle(true);
        it.next().unwrap().settle(false);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(a != b, "one taken, one refused");
        assert_eq!(store.counter("server.connections_handed_over").value(), 1);
        drop(regs);
        assert_eq!(h.open(), 0);
        // Nothing registered: take returns at once.
        let started = Instant::now();
        assert!(h.take(253, Duration::from_secs(30)).is_empty());
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn ending_refuses_what_is_queued_and_what_comes_later() {
        let store = Store::new();
        let h = Handover::new(true, &store);
        let _reg = h.register().unwrap();
        h.activate(false);
        let pending = tokio::spawn({
            let h = h.clone();
            async move { h.offer(leaving(1)).await }
        });
        while h.queue().is_empty() {
            tokio::task::yield_now().await;
        }
        h.end();
        assert!(!pending.await.unwrap());
        assert!(!h.offer(leaving(1)).await);
        assert!(h.register().is_none());
        assert!(!h.activate(false), "ended stays ended");
    }

    #[tokio::test]
    async fn a_rolled_back_generation_can_hand_over_again() {
        let h = Handover::new(true, &Store::new());
        let _reg = h.register().unwrap();
        h.activate(false);
        let pending = tokio::spawn({
            let h = h.clone();
            async move { h.offer(leaving(1)).await }
        });
        while h.queue().is_empty() {
            tokio::task::yield_now().await;
        }
        // The successor died: what was queued stays here, and the next one may take again.
        h.resume();
        assert!(!pending.await.unwrap());
        assert_eq!(h.mode(), Mode::Off);
        assert!(h.register().is_some());
        assert!(h.activate(false));
        // The carrier may have ended the hand-over first (the successor's session closed):
        // the rollback still leaves it Off.
        h.end();
        h.resume();
        assert_eq!(h.mode(), Mode::Off);
        assert!(!Handover::new(false, &Store::new()).activate(false));
    }

    #[tokio::test]
    async fn taken_offers_are_in_flight_until_answered() {
        let h = Handover::new(true, &Store::new());
        let _reg = h.register().unwrap();
        h.activate(false);
        let offered = tokio::spawn({
            let h = h.clone();
            async move { h.offer(leaving(1)).await }
        });
        while h.queue().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(h.in_flight(), 0, "queued, not yet taken");
        let batch = h.take(253, Duration::ZERO);
        assert_eq!(h.in_flight(), 1);
        assert!(!h.settled(Duration::from_millis(20)).await);
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.settled(Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        for offer in batch {
            offer.settle(true);
        }
        assert!(waiter.await.unwrap(), "settled once answered");
        assert_eq!(h.in_flight(), 0);
        assert!(offered.await.unwrap());
    }

    #[test]
    fn disabled_never_activates_or_registers() {
        let h = Handover::new(false, &Store::new());
        assert!(!h.activate(false));
        assert!(h.register().is_none());
        assert_eq!(h.mode(), Mode::Off);
    }

    #[test]
    fn a_dropped_offer_counts_as_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let h = Handover::new(true, &Store::new());
        let _reg = h.register().unwrap();
        h.activate(false);
        let taker = h.clone();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.is_empty() {
                got = taker.take(253, Duration::from_secs(5));
            }
            drop(got);
        });
        assert!(!rt.block_on(h.offer(leaving(1))));
        t.join().unwrap();
    }
}
