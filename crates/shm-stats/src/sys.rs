//! sys: the crate's only unsafe code. It turns offsets of a shared mapping into atomics, holds
//! the hot-path [`Cell`] (a pointer into a mapping or a heap allocation, kept alive by an `Arc`),
//! and drives the robust process-shared pthread mutex that lives inside the region.
//!
//! Everything here upholds one rule: shared memory is only ever touched through atomic types
//! (`AtomicU8/U32/U64/I64`) or through the pthread mutex functions, never through `&[u8]`/`&mut`,
//! because other processes write the same bytes at any time. Offsets are bounds- and
//! alignment-checked before a pointer is made from them.
//!
//! It depends on `layout` alone (for [`Words`] and [`HistogramCells`]), so the unsafe layer sits
//! directly on the layout and nothing it trusts comes from above.

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

use crate::layout::{HistogramCells, Words};

/// A writable `MAP_SHARED` mapping of a region. Held (through `Arc`) by the region and by every
/// handle pointing into it; unmapped when the last one drops.
pub(crate) struct RwMapping {
    map: MmapRaw,
}

/// A read-only mapping (`baton stats`): loads only, and only `Relaxed` ones.
///
/// std allows atomic loads on read-only memory only as plain `Relaxed` loads of at most pointer
/// size (an `Acquire` load may be lowered to an instruction that needs write access on some
/// targets), so every load here is `Relaxed`, followed by an `Acquire` fence: together they
/// synchronise with the writers' `Release` stores exactly as an `Acquire` load would.
pub(crate) struct RoMapping {
    map: MmapRaw,
}

/// A value a [`Cell`] may point at.
///
/// # Safety
/// Implementors are made only of atomics (or `#[repr(C)]` structs/arrays of them), so every bit
/// pattern is valid, every access goes through `&self`, and concurrent access from other
/// processes is never a data race. Their alignment is at most 8.
pub(crate) unsafe trait Shared: Send + Sync + 'static {}

// SAFETY: an atomic integer: any bits are valid, all accesses are atomic.
unsafe impl Shared for AtomicU64 {}
// SAFETY: as above.
unsafe impl Shared for AtomicI64 {}
// SAFETY: `HistogramCells` is `#[repr(C)]` and holds only `AtomicU64`s.
unsafe impl Shared for HistogramCells {}

/// A pointer to one shared value, with an owner that keeps its memory alive: the hot path is one
/// dereference and one atomic instruction, whether the value is in the region or on the heap.
pub(crate) struct Cell<T: Shared> {
    ptr: NonNull<T>,
    /// The mapping or heap allocation `ptr` points into; never read, only kept.
    _owner: Arc<dyn Any + Send + Sync>,
}

/// The mutex was taken; `OwnerDied` means its previous holder died holding it and the state it
/// protects may be half-updated (the mutex was made consistent again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    Clean,
    OwnerDied,
}

/// Why the mutex was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockFailure {
    Timeout,
    NotRecoverable,
    Os(i32),
}

// === impl RwMapping ===

impl RwMapping {
    /// Wrap a mapping made with `MmapRaw::map_raw` on a file opened read-write.
    pub fn new(map: MmapRaw) -> RwMapping {
        RwMapping { map }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// A checked pointer to `size` bytes at `off`, aligned to `align`.
    fn ptr_at(&self, off: usize, size: usize, align: usize) -> *mut u8 {
        let end = off.checked_add(size);
        assert!(
            end.is_some_and(|e| e <= self.map.len()) && off.is_multiple_of(align),
            "shm-stats: offset {off} (+{size}) outside or misaligned in a mapping of {}",
            self.map.len()
        );
        // The mapping's base is page-aligned, so `off.is_multiple_of(align)` aligns the pointer.
        self.map.as_mut_ptr().wrapping_add(off)
    }

    pub fn u8_at(&self, off: usize) -> &AtomicU8 {
        let p = self.ptr_at(off, 1, 1);
        // SAFETY: `p` is in bounds of the live mapping owned by `self` (checked in `ptr_at`), and
        // the region is only accessed atomically by every process, so an atomic view is sound for
        // as long as `&self` lives.
        unsafe { AtomicU8::from_ptr(p) }
    }

    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        let p = self.ptr_at(off, 4, 4).cast::<u32>();
        // SAFETY: in bounds and 4-aligned (checked in `ptr_at`), inside the mapping `self` keeps
        // alive; all processes access these bytes atomically only.
        unsafe { AtomicU32::from_ptr(p) }
    }

    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        let p = self.ptr_at(off, 8, 8).cast::<u64>();
        // SAFETY: in bounds and 8-aligned (checked in `ptr_at`), inside the mapping `self` keeps
        // alive; all processes access these bytes atomically only.
        unsafe { AtomicU64::from_ptr(p) }
    }

    /// A cell at `off`, keeping this mapping alive.
    pub fn cell<T: Shared>(self: &Arc<Self>, off: usize) -> Cell<T> {
        let p = self.ptr_at(off, std::mem::size_of::<T>(), std::mem::align_of::<T>());
        let ptr = NonNull::new(p.cast::<T>()).unwrap_or(NonNull::dangling());
        Cell {
            ptr,
            _owner: self.clone(),
        }
    }

    fn mutex_ptr(&self, off: usize) -> *mut libc::pthread_mutex_t {
        self.ptr_at(
            off,
            std::mem::size_of::<libc::pthread_mutex_t>(),
            std::mem::align_of::<libc::pthread_mutex_t>(),
        )
        .cast()
    }

    /// Initialise a robust, process-shared mutex at `off`. Only the creator of a region calls
    /// this, before publishing the region (nobody else can be using the mutex yet).
    pub fn mutex_init(&self, off: usize) -> Result<(), i32> {
        let m = self.mutex_ptr(off);
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is a local, valid for writes; init is the first call made on it.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(rc);
        }
        // SAFETY: `attr` was initialised by pthread_mutexattr_init just above.
        let rc = unsafe {
            let a = attr.as_mut_ptr();
            let mut rc = libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST);
            }
            if rc == 0 {
                // `m` is in bounds, aligned (ptr_at) and not in use by anyone: the region is not
                // published yet.
                rc = libc::pthread_mutex_init(m, a);
            }
            libc::pthread_mutexattr_destroy(a);
            rc
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(rc)
        }
    }

    /// Take the mutex at `off`, waiting at most `timeout`. A holder that died is recovered
    /// (`pthread_mutex_consistent`) and reported as [`Locked::OwnerDied`].
    pub fn mutex_lock(&self, off: usize, timeout: Duration) -> Result<Locked, LockFailure> {
        let m = self.mutex_ptr(off);
        let deadline = SystemTime::now()
            .checked_add(timeout)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(deadline.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(deadline.subsec_nanos()),
        };
        // SAFETY: `m` points at a mutex initialised by `mutex_init` by the region's creator (the
        // region is only used once its `ready` flag, written after init, is seen), in a mapping
        // `self` keeps alive; `ts` is a valid timespec.
        let rc = unsafe { libc::pthread_mutex_timedlock(m, &ts) };
        match rc {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we now hold the mutex (EOWNERDEAD means acquired, inconsistent), which
                // is the precondition of pthread_mutex_consistent.
                let rc = unsafe { libc::pthread_mutex_consistent(m) };
                if rc == 0 {
                    Ok(Locked::OwnerDied)
                } else {
                    Err(LockFailure::Os(rc))
                }
            }
            libc::ETIMEDOUT => Err(LockFailure::Timeout),
            libc::ENOTRECOVERABLE => Err(LockFailure::NotRecoverable),
            e => Err(LockFailure::Os(e)),
        }
    }

    /// Release the mutex at `off`, held by this thread.
    pub fn mutex_unlock(&self, off: usize) {
        let m = self.mutex_ptr(off);
        // SAFETY: called only by the guard that took the mutex, on the same thread (the guard is
        // !Send), so this thread owns it.
        let _ = unsafe { libc::pthread_mutex_unlock(m) };
    }
}

impl Words for RwMapping {
    fn len(&self) -> usize {
        self.map.len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        self.u32_at(off).load(Ordering::Acquire)
    }
    fn load_u64(&self, off: usize) -> u64 {
        self.u64_at(off).load(Ordering::Acquire)
    }
    fn load_u8(&self, off: usize) -> u8 {
        self.u8_at(off).load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RwMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwMapping")
            .field("len", &self.map.len())
            .finish()
    }
}

// A `Relaxed` load of a u64 is only allowed on read-only memory where a u64 is pointer-sized.
const _: () = assert!(std::mem::size_of::<u64>() <= std::mem::size_of::<usize>());

// === impl RoMapping ===

impl RoMapping {
    /// Wrap a mapping made with `MmapOptions::map_raw_read_only`.
    pub fn new(map: MmapRaw) -> RoMapping {
        RoMapping { map }
    }

    fn ptr_at(&self, off: usize, size: usize) -> *mut u8 {
        let end = off.checked_add(size);
        assert!(
            end.is_some_and(|e| e <= self.map.len()) && off.is_multiple_of(size),
            "shm-stats: offset {off} (+{size}) outside or misaligned in a mapping of {}",
            self.map.len()
        );
        self.map.as_ptr().wrapping_add(off).cast_mut()
    }
}

impl Words for RoMapping {
    fn len(&self) -> usize {
        self.map.len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        let p = self.ptr_at(off, 4).cast::<u32>();
        // SAFETY: in bounds and aligned (ptr_at) in a mapping `self` keeps alive. The memory is
        // read-only: std allows a `Relaxed` `load` (never a read-modify-write, never a stronger
        // ordering) of an atomic of at most pointer size there, and that is all this does.
        let v = unsafe { AtomicU32::from_ptr(p) }.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        v
    }
    fn load_u64(&self, off: usize) -> u64 {
        let p = self.ptr_at(off, 8).cast::<u64>();
        // SAFETY: as in `load_u32`: bounds, alignment, a `Relaxed` load of a pointer-sized
        // atomic (this crate targets 64-bit Linux).
        let v = unsafe { AtomicU64::from_ptr(p) }.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        v
    }
    fn load_u8(&self, off: usize) -> u8 {
        let p = self.ptr_at(off, 1);
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU8::from_ptr(p) }.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RoMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoMapping")
            .field("len", &self.map.len())
            .finish()
    }
}

// === impl Cell ===

impl<T: Shared> Cell<T> {
    /// A cell on the heap (the in-process store, and the fallback when the region is full).
    pub fn heap(value: T) -> Cell<T> {
        let owner = Arc::new(value);
        let ptr = NonNull::from(&*owner);
        Cell { ptr, _owner: owner }
    }

    #[inline(always)]
    pub fn get(&self) -> &T {
        // SAFETY: `ptr` was made from a live heap `Arc<T>` or from a bounds- and alignment-checked
        // offset of a mapping (RwMapping::cell); `_owner` keeps that memory alive as long as
        // `self`. `T: Shared` makes a shared reference sound under concurrent access.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Shared> Clone for Cell<T> {
    fn clone(&self) -> Self {
        Cell {
            ptr: self.ptr,
            _owner: self._owner.clone(),
        }
    }
}

// SAFETY: a `Cell` only gives out `&T`, `T: Shared` is `Sync`, and the owner is `Send + Sync`.
unsafe impl<T: Shared> Send for Cell<T> {}
// SAFETY: as above.
unsafe impl<T: Shared> Sync for Cell<T> {}
