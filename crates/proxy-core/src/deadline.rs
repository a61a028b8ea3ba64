//! Per-worker coarse deadlines for request timeouts (the route `timeout`): a request registers
//! its deadline in a slot table owned by its worker thread, and one driver task per worker
//! sleeps until the earliest deadline it knows of, then marks the expired entries and wakes
//! their tasks.
//!
//! Registering and cancelling an entry is a slot push and pop on the worker's own thread: no
//! entry in tokio's timer wheel per request. The driver's single tokio timer is reset only when
//! a deadline earlier than the one it waits for is registered, or when it fires; with one route
//! timeout (every new deadline later than the pending ones) that is once per timeout period, not
//! once per request. A deadline passes at the same moment as with a tokio timer (millisecond
//! resolution), and an expired entry is reported only when its future has not finished first.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("could not finish before the deadline")]
pub struct Elapsed;

/// Run `fut` until `deadline`, on this worker thread's deadline table. Must run inside a tokio
/// `LocalSet` (the worker's), where the table's driver task is spawned.
pub fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        deadline,
        entry: None,
    }
}

pin_project_lite::pin_project! {
    /// A future bounded by a deadline; see [`timeout_at`].
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        deadline: Instant,
        entry: Option<Entry>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.entry {
            None => *this.entry = Some(Entry::register(*this.deadline, cx.waker())),
            Some(e) => {
                if e.poll_expired(cx) {
                    return Poll::Ready(Err(Elapsed));
                }
            }
        }
        Poll::Pending
    }
}

thread_local! {
    static TABLE: Rc<Table> = Rc::new(Table::default());
}

#[derive(Debug, Default)]
struct Table {
    inner: RefCell<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: Vec<Slot>,
    /// Indices of vacant slots.
    free: Vec<usize>,
    /// When the driver next looks at the table: no later than the earliest pending deadline.
    scheduled: Option<Instant>,
    /// The driver task, to wake when `scheduled` moves earlier.
    driver: Option<Waker>,
    driver_running: bool,
}

#[derive(Debug)]
enum Slot {
    Vacant,
    Pending { deadline: Instant, waker: Waker },
    Expired,
}

/// A registered deadline; dropping it cancels it.
#[derive(Debug)]
pub struct Entry {
    table: Rc<Table>,
    key: usize,
}

// === impl Entry ===

impl Entry {
    fn register(deadline: Instant, waker: &Waker) -> Self {
        let table = TABLE.with(Rc::clone);
        let key = {
            let mut t = table.inner.borrow_mut();
            let slot = Slot::Pending {
                deadline,
                waker: waker.clone(),
            };
            let key = match t.free.pop() {
                Some(k) => {
                    t.slots[k] = slot;
                    k
                }
                None => {
                    t.slots.push(slot);
                    t.slots.len() - 1
                }
            };
            if t.scheduled.is_none_or(|s| deadline < s) {
                t.scheduled = Some(deadline);
                if let Some(d) = &t.driver {
                    d.wake_by_ref();
                }
            }
            if !t.driver_running {
                t.driver_running = true;
                tokio::task::spawn_local(drive(table.clone()));
            }
            key
        };
        Self { table, key }
    }

    /// Whether the deadline has passed; otherwise keep the latest waker.
    fn poll_expired(&self, cx: &Context<'_>) -> bool {
        let mut t = self.table.inner.borrow_mut();
        match &mut t.slots[self.key] {
            Slot::Expired => true,
            Slot::Pending { waker, .. } => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                false
            }
            Slot::Vacant => false,
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut t = self.table.inner.borrow_mut();
        if let Some(slot) = t.slots.get_mut(self.key) {
            *slot = Slot::Vacant;
            t.free.push(self.key);
        }
    }
}

// === driver ===

/// Clears the running flag when the driver task ends (its `LocalSet` is dropped), so that the
/// next registration starts a new one.
struct Running(Rc<Table>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.inner.try_borrow_mut() {
            t.driver_running = false;
            t.driver = None;
        }
    }
}

async fn drive(table: Rc<Table>) {
    let _running = Running(table.clone());
    let mut sleep = pin!(tokio::time::sleep_until(Instant::now()));
    poll_fn(|cx| table.poll_drive(cx, sleep.as_mut())).await
}

impl Table {
    fn poll_drive(&self, cx: &mut Context<'_>, mut sleep: Pin<&mut Sleep>) -> Poll<()> {
        let mut t = self.inner.borrow_mut();
        if !t.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            t.driver = Some(cx.waker().clone());
        }
        loop {
            let Some(at) = t.scheduled else {
                return Poll::Pending;
            };
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for slot in t.slots.iter_mut() {
                if let Slot::Pending { deadline, waker } = slot {
                    if *deadline <= now {
                        waker.wake_by_ref();
                        *slot = Slot::Expired;
                    } else if next.is_none_or(|n| *deadline < n) {
                        next = Some(*deadline);
                    }
                }
            }
            t.scheduled = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn local<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    #[test]
    fn finishes_before_deadline() {
        local(async {
            let at = Instant::now() + Duration::from_millis(100);
            let r = timeout_at(at, async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            })
            .await;
            assert_eq!(r, Ok(7));
        });
    }

    #[test]
    fn expires_at_deadline_and_entries_are_reused() {
        local(async {
            let start = Instant::now();
            let r = timeout_at(
                start + Duration::from_millis(100),
                std::future::pending::<()>(),
            )
            .await;
            assert_eq!(r, Err(Elapsed));
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(100), "{waited:?}");
            assert!(waited < Duration::from_millis(1000), "{waited:?}");
            // A later, shorter deadline than one pending moves the driver's wake-up earlier.
            let long = tokio::task::spawn_local(timeout_at(
                Instant::now() + Duration::from_secs(15),
                std::future::pending::<()>(),
            ));
            tokio::task::yield_now().await;
            let start = Instant::now();
            let short = timeout_at(start + Duration::from_millis(30), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
            })
            .await;
            assert_eq!(short, Err(Elapsed));
            assert!(start.elapsed() < Duration::from_millis(900));
            assert!(!long.is_finished());
            long.abort();
            let slots = TABLE.with(|t| t.inner.borrow().slots.len());
            assert!(slots <= 2, "{slots} slots");
        });
    }

    #[test]
    fn many_deadlines_fire_in_order() {
        local(async {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for ms in [300u64, 100, 200, 50] {
                tasks.push(tokio::task::spawn_local(async move {
                    let r = timeout_at(
                        start + Duration::from_millis(ms),
                        std::future::pending::<()>(),
                    )
                    .await;
                    (r, start.elapsed())
                }));
            }
            for (t, ms) in tasks.into_iter().zip([300u64, 100, 200, 50]) {
                let (r, waited) = t.await.unwrap_or_else(|e| panic!("join: {e}"));
                assert_eq!(r, Err(Elapsed));
                assert!(waited >= Duration::from_millis(ms), "{ms}: {waited:?}");
                assert!(
                    waited < Duration::from_millis(ms + 1000),
                    "{ms}: {waited:?}"
                );
            }
        });
    }
}
