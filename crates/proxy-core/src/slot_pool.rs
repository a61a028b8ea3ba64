//! Heap slots for futures, reused per worker thread.
//!
//! A connection's future is a few KiB: past the allocator's per-thread cache, so a fresh box for
//! each connection is a slow allocation and a slow free. Here the future goes into a box taken
//! from this thread's pool (one list per future type), and the box goes back, emptied, when the
//! future is done or dropped. (A request's future has a slot of its connection's: see
//! `server::Svc`.)

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Empty slots kept per future type and thread.
const KEPT: usize = 64;

/// A pooled heap slot holding one future.
pub(crate) struct Slot<F: 'static> {
    /// `None` only while dropping.
    slot: Option<Pin<Box<Option<F>>>>,
}

/// Empty slots of one future type, each a `Pin<Box<Option<F>>>` behind `dyn Any`.
type Free = Vec<Box<dyn Any>>;

thread_local! {
    /// Empty slots by the type of the future they hold (a handful of types).
    static POOL: RefCell<Vec<(TypeId, Free)>> = const { RefCell::new(Vec::new()) };
}

/// `fut` in a slot from this thread's pool (or a new one). Always inlined: a future passed on
/// by value is one more copy of a few KiB.
#[inline(always)]
pub(crate) fn hold<F: 'static>(fut: F) -> Slot<F> {
    let slot = match take() {
        Some(mut slot) => {
            slot.set(Some(fut));
            slot
        }
        None => Box::pin(Some(fut)),
    };
    Slot { slot: Some(slot) }
}

/// An empty slot for a future of type `F` from this thread's pool.
fn take<F: 'static>() -> Option<Pin<Box<Option<F>>>> {
    POOL.with_borrow_mut(|pool| {
        let (_, free) = pool.iter_mut().find(|(t, _)| *t == TypeId::of::<F>())?;
        free.pop()?
            .downcast::<Pin<Box<Option<F>>>>()
            .ok()
            .map(|b| *b)
    })
}

/// Empty `slot` (dropping its future in place) and keep it for a later [`take`].
fn give<F: 'static>(mut slot: Pin<Box<Option<F>>>) {
    slot.set(None);
    // Not kept (just freed) while the thread is going away.
    let _ = POOL.try_with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else {
            return;
        };
        let free = match pool.iter_mut().position(|(t, _)| *t == TypeId::of::<F>()) {
            Some(i) => &mut pool[i].1,
            None => {
                pool.push((TypeId::of::<F>(), Vec::new()));
                let last = pool.len() - 1;
                &mut pool[last].1
            }
        };
        if free.len() < KEPT {
            free.push(Box::new(slot));
        }
    });
}

// === impl Slot ===

impl<F: Future + 'static> Future for Slot<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.slot.as_mut().and_then(|s| s.as_mut().as_pin_mut()) {
            Some(fut) => fut.poll(cx),
            // Never: the slot is emptied only on drop.
            None => Poll::Pending,
        }
    }
}

impl<F: 'static> Drop for Slot<F> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            give(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn slots_are_reused_and_futures_dropped_in_place() {
        let marker = Rc::new(());
        let first = hold(std::future::ready(marker.clone()));
        let addr = first
            .slot
            .as_ref()
            .map(|s| &**s as *const Option<_> as usize);
        drop(first);
        assert_eq!(
            Rc::strong_count(&marker),
            1,
            "the future was dropped with its slot"
        );
        let second = hold(std::future::ready(marker.clone()));
        let again = second
            .slot
            .as_ref()
            .map(|s| &**s as *const Option<_> as usize);
        assert_eq!(addr, again, "the same box");
        // Another type gets its own slots.
        let other = hold(std::future::ready(1u8));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut other = other;
        assert_eq!(Pin::new(&mut other).poll(&mut cx), Poll::Ready(1));
    }
}
