//! region: one generation's membership of a chain's shared stats region — creating it (epoch 0,
//! reclaiming a dead chain's), attaching to it (epoch > 0), allocating slots by name, and
//! leaving it (the last generation out unlinks it).
//!
//! Attach, detach and allocation happen under the region's robust mutex; reads never lock. This
//! module owns that lifecycle and the header's flags; the entries of the generation table and the
//! slots are read and written only through `table` (which states the publication order that lets
//! readers see whole entries).
//!
//! Who holds what: the [`Region`] owns the file whose open file description carries this
//! generation's liveness lock (released on detach or when the process dies) and an `Arc` of the
//! mapping, which every handle from this region also holds; the mapping is unmapped when the last
//! of them drops, whether or not the name is still linked.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use memmap2::MmapOptions;
use parking_lot::Mutex;

use crate::error::Error;
use crate::layout::{self, HeaderError, Kind, Layout, Words, MAX_GENERATIONS};
use crate::shm::{self, Backing, Use};
use crate::sys::{Cell, LockFailure, Locked, RoMapping, RwMapping, Shared};
use crate::table::{self, GenerationInfo, StatRecord};

/// Envoy's old default for `--max-stats`.
pub const DEFAULT_MAX_STATS: u64 = 16_384;
/// Envoy's old default for `--max-obj-name-len`.
pub const DEFAULT_MAX_OBJ_NAME_LEN: u64 = 60;

/// How a generation joins its chain's region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Epoch 0: create the region. A region left by a chain with no live generation is
    /// reclaimed; one with a live generation is refused, naming its pid.
    Create,
    /// Epoch > 0: attach to the existing region as a new generation.
    Attach,
}

/// Everything [`Region::open`] needs.
#[derive(Clone, Debug)]
pub struct RegionOptions {
    pub backing: Backing,
    /// For messages only.
    pub base_id: u32,
    pub epoch: u32,
    pub mode: OpenMode,
    pub max_stats: u64,
    pub max_obj_name_len: u64,
    /// Longest wait for the region lock on a path that serves requests (allocating a stat the
    /// first time it is used); past it the stat falls back to process memory.
    pub lock_timeout: Duration,
    /// Longest wait for the region lock while attaching or detaching.
    pub attach_timeout: Duration,
}

/// What [`Region::detach`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detached {
    /// Other generations remain; the region stays.
    Remaining,
    /// This was the last generation: the region's name was removed.
    Removed,
    /// Already detached.
    Already,
}

/// Why a stat could not get a slot (it then lives in process memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AllocError {
    Full,
    NameTooLong,
    Lock(String),
    /// The region can no longer be used safely (its file shrank).
    Unusable(String),
}

/// One generation's attachment to a region.
#[derive(Debug)]
pub struct Region {
    backing: Backing,
    path: String,
    base_id: u32,
    epoch: u32,
    /// The backing object, opened read-write. Its open file description holds the OFD lock on
    /// byte `generation` for as long as this generation is attached; closing it (drop) or the
    /// process dying releases the lock.
    file: File,
    map: Arc<RwMapping>,
    layout: Layout,
    /// When the chain was created, read once at attach (the header field never changes).
    created: SystemTime,
    generation: usize,
    lock_timeout: Duration,
    attach_timeout: Duration,
    index: Mutex<Index>,
    detached: AtomicBool,
}

/// This process's name → slot index, caught up lazily with the published slots.
#[derive(Debug, Default)]
struct Index {
    by_name: HashMap<(Kind, String), u32>,
    scanned: u32,
}

/// The region's mutex, held; released on drop. `!Send`: a pthread mutex must be unlocked by the
/// thread that locked it.
struct Guard<'a> {
    map: &'a RwMapping,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.map.mutex_unlock(layout::OFF_MUTEX);
    }
}

fn header_error(path: &str, e: HeaderError) -> Error {
    Error::header(path, e)
}

/// "pid 12, pid 40" for the live slots of the region in `file`, as far as its header tells.
fn holders(file: &File, live: &[usize]) -> String {
    let pids = MmapOptions::new()
        .map_raw_read_only(file)
        .ok()
        .map(RoMapping::new)
        .filter(|m| {
            m.len() >= layout::HEADER_SIZE && m.load_u64(layout::OFF_MAGIC) == layout::MAGIC
        })
        .map(|m| {
            live.iter()
                .map(|g| table::entry(&m, *g).pid)
                .collect::<Vec<_>>()
        });
    match pids {
        Some(pids) if pids.iter().all(|p| *p != 0) && !pids.is_empty() => pids
            .iter()
            .map(|p| format!("pid {p}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "held by a process that is still starting; pid not yet recorded".to_owned(),
    }
}

// === impl Region ===

impl Region {
    /// Join (or create) the region described by `opts`.
    pub fn open(opts: RegionOptions) -> Result<Region, Error> {
        let layout =
            Layout::new(opts.max_stats, opts.max_obj_name_len).map_err(|_| Error::TooLarge {
                max_stats: opts.max_stats,
                max_obj_name_len: opts.max_obj_name_len,
                limit: layout::MAX_REGION_BYTES,
            })?;
        match opts.mode {
            OpenMode::Create => Self::create(opts, layout),
            OpenMode::Attach => Self::attach(opts, layout),
        }
    }

    fn create(opts: RegionOptions, layout: Layout) -> Result<Region, Error> {
        let path = opts.backing.display();
        for _ in 0..4 {
            match opts.backing.create_excl() {
                Ok(file) => {
                    return Self::init_new(file, &opts, layout).inspect_err(|_| {
                        let _ = opts.backing.unlink();
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create", &path, e)),
            }
            let file = match opts.backing.open(true) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            shm::check_trusted(&file, &path, Use::Generation)?;
            let live = shm::live_generations(&file)
                .map_err(|e| Error::io("check the owners of", &path, e))?;
            if !live.is_empty() {
                return Err(Error::ChainLive {
                    base_id: opts.base_id,
                    path,
                    holders: holders(&file, &live),
                });
            }
            // Nobody alive holds it. Claim the right to reclaim it (byte 0) so two epoch-0
            // starters cannot both unlink and recreate, then re-check.
            let won = shm::try_lock_byte(&file, 0).map_err(|e| Error::io("lock", &path, e))?;
            let live = shm::live_generations(&file)
                .map_err(|e| Error::io("check the owners of", &path, e))?;
            if !won || !live.is_empty() {
                return Err(Error::ChainLive {
                    base_id: opts.base_id,
                    path,
                    holders: holders(&file, &live),
                });
            }
            tracing::warn!(
                region = %path,
                "reclaiming the stats region of a chain that is no longer running"
            );
            opts.backing
                .unlink()
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        Err(Error::Busy { path })
    }

    /// Size, map and initialise a region this process just created, as generation 0.
    fn init_new(file: File, opts: &RegionOptions, layout: Layout) -> Result<Region, Error> {
        let path = opts.backing.display();
        if !shm::try_lock_byte(&file, 0).map_err(|e| Error::io("lock", &path, e))? {
            return Err(Error::ChainLive {
                base_id: opts.base_id,
                path,
                holders: "another process is reclaiming it".to_owned(),
            });
        }
        file.set_len(layout.total_size)
            .map_err(|e| Error::io("size", &path, e))?;
        let map = MmapOptions::new()
            .len(layout.total_len())
            .map_raw(&file)
            .map_err(|e| Error::io("map", &path, e))?;
        let map = Arc::new(RwMapping::new(map));
        let now = SystemTime::now();
        for f in layout::initial_fields(&layout, table::unix_ns(now)) {
            match f {
                layout::Field::U32(layout::OFF_READY, _) => {}
                layout::Field::U32(off, v) => map.u32_at(off).store(v, Ordering::Relaxed),
                layout::Field::U64(off, v) => map.u64_at(off).store(v, Ordering::Relaxed),
            }
        }
        map.mutex_init(layout::OFF_MUTEX)
            .map_err(|rc| Error::Lock {
                path: path.clone(),
                timeout: Duration::ZERO,
                why: format!(
                    "pthread_mutex_init failed: {}",
                    io::Error::from_raw_os_error(rc)
                ),
            })?;
        map.u64_at(layout::OFF_ATTACH_SEQ)
            .store(1, Ordering::Relaxed);
        table::write_generation(&map, 0, opts.epoch, 1, now);
        // Publishes every field above.
        map.u32_at(layout::OFF_READY).store(1, Ordering::Release);
        Ok(Self::new(file, map, layout, 0, opts))
    }

    fn attach(opts: RegionOptions, layout: Layout) -> Result<Region, Error> {
        let path = opts.backing.display();
        for _ in 0..3 {
            let file = match opts.backing.open(true) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::NoRegion { path })
                }
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            shm::check_trusted(&file, &path, Use::Generation)?;
            let map = Arc::new(map_ready(&file, &path, opts.attach_timeout)?);
            let len = map.len() as u64;
            let theirs = layout::decode_header(&*map, len).map_err(|e| header_error(&path, e))?;
            if theirs != layout {
                return Err(Error::Capacity {
                    path,
                    region_max_stats: theirs.max_stats,
                    region_max_obj_name_len: theirs.max_obj_name_len(),
                    max_stats: opts.max_stats,
                    max_obj_name_len: opts.max_obj_name_len,
                });
            }
            let guard = lock(&map, &path, opts.attach_timeout)?;
            if map.u32_at(layout::OFF_CLOSED).load(Ordering::Acquire) != 0 {
                // The last generation is removing it: start over on the name.
                drop(guard);
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            reap(&map, &layout, &file, None);
            if let Some((_, e)) = table::attached(&*map).find(|(_, e)| e.epoch == opts.epoch) {
                return Err(Error::EpochTaken {
                    path,
                    epoch: opts.epoch,
                    pid: e.pid,
                });
            }
            let mut claimed = None;
            for g in 0..MAX_GENERATIONS {
                if table::entry(&*map, g).state == layout::GEN_FREE
                    && shm::try_lock_byte(&file, g).map_err(|e| Error::io("lock", &path, e))?
                {
                    claimed = Some(g);
                    break;
                }
            }
            let Some(g) = claimed else {
                return Err(Error::NoGenerationSlot {
                    path,
                    slots: MAX_GENERATIONS,
                });
            };
            table::zero_gauge_column(&map, &layout, g);
            let seq = map
                .u64_at(layout::OFF_ATTACH_SEQ)
                .fetch_add(1, Ordering::AcqRel)
                + 1;
            table::write_generation(&map, g, opts.epoch, seq, SystemTime::now());
            drop(guard);
            return Ok(Self::new(file, map, layout, g, &opts));
        }
        Err(Error::NoRegion { path })
    }

    fn new(
        file: File,
        map: Arc<RwMapping>,
        layout: Layout,
        generation: usize,
        opts: &RegionOptions,
    ) -> Region {
        Region {
            path: opts.backing.display(),
            backing: opts.backing.clone(),
            base_id: opts.base_id,
            epoch: opts.epoch,
            created: table::chain_created(&*map),
            file,
            map,
            layout,
            generation,
            lock_timeout: opts.lock_timeout,
            attach_timeout: opts.attach_timeout,
            index: Mutex::new(Index::default()),
            detached: AtomicBool::new(false),
        }
    }

    pub fn base_id(&self) -> u32 {
        self.base_id
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Index of this generation in the region's table.
    pub fn generation_slot(&self) -> usize {
        self.generation
    }

    /// Where the region lives (for messages).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// When the chain's first generation created the region (Envoy's `uptime_all_epochs` counts
    /// from here).
    pub fn chain_created(&self) -> SystemTime {
        self.created
    }

    /// Slots in use and slots in all (none in use once the region's file has shrunk).
    pub fn usage(&self) -> (u32, u32) {
        let used = match self.intact() {
            Ok(()) => table::published(&*self.map, &self.layout),
            Err(_) => 0,
        };
        (used, self.layout.max_stats)
    }

    /// Publish this generation's owner-defined state in the table (e.g. its server state).
    pub fn set_phase(&self, phase: u32) {
        if self.intact().is_ok() {
            table::set_phase(&self.map, self.generation, phase);
        }
    }

    /// Whether the region's file still holds the whole layout: every path that reads or writes
    /// the table checks this first (one `fstat`), because touching a page past the end of a
    /// shrunk file faults. The hot-path handles cannot check and trust the file's owner.
    fn intact(&self) -> Result<(), Error> {
        shm::check_len(&self.file, &self.path, self.layout.total_size).inspect_err(|e| {
            tracing::warn!(region = %self.path, "{e}");
        })
    }

    /// The generation table; `live` is checked through the liveness locks. Empty once the
    /// region's file has shrunk.
    pub fn generations(&self) -> Vec<GenerationInfo> {
        if self.intact().is_err() {
            return Vec::new();
        }
        table::generations(&*self.map, |g| {
            g == self.generation && !self.detached.load(Ordering::Acquire)
                || shm::byte_locked_by_other(&self.file, g).unwrap_or(false)
        })
    }

    /// Remove the entries (and gauge shares) of generations that died without detaching. Called
    /// by every attach; the hot restart code may call it when it sees a parent die. Returns how
    /// many were removed, or the lock error.
    pub fn reap_dead_generations(&self) -> Result<usize, Error> {
        self.intact()?;
        let guard = lock(&self.map, &self.path, self.attach_timeout)?;
        let n = reap(&self.map, &self.layout, &self.file, Some(self.generation));
        drop(guard);
        Ok(n)
    }

    /// Leave the chain: remove this generation's gauge share and entry; if no other generation
    /// is alive (checked under the lock, so one attaching meanwhile is seen), unlink the region.
    pub fn detach(&self) -> Result<Detached, Error> {
        if self.detached.swap(true, Ordering::AcqRel) {
            return Ok(Detached::Already);
        }
        if let Err(e) = self.intact() {
            // Touching the table would fault: leave it to the next attach or epoch 0.
            let _ = shm::unlock_byte(&self.file, self.generation);
            return Err(e);
        }
        let guard = match lock(&self.map, &self.path, self.attach_timeout) {
            Ok(g) => g,
            Err(e) => {
                // Give up liveness anyway: the next attach or epoch 0 cleans up after us.
                let _ = shm::unlock_byte(&self.file, self.generation);
                return Err(e);
            }
        };
        table::zero_gauge_column(&self.map, &self.layout, self.generation);
        table::free_generation(&self.map, self.generation);
        let others = (0..MAX_GENERATIONS)
            .filter(|g| *g != self.generation)
            .any(|g| shm::byte_locked_by_other(&self.file, g).unwrap_or(true));
        let outcome = if others {
            Detached::Remaining
        } else {
            self.map
                .u32_at(layout::OFF_CLOSED)
                .store(1, Ordering::Release);
            if let Err(e) = self.backing.unlink() {
                tracing::warn!(region = %self.path, "could not remove the stats region: {e}");
            }
            Detached::Removed
        };
        drop(guard);
        let _ = shm::unlock_byte(&self.file, self.generation);
        Ok(outcome)
    }

    /// The slot of `name` as `kind`, allocating it if no generation has yet.
    pub(crate) fn find_or_alloc(&self, kind: Kind, name: &str) -> Result<u32, AllocError> {
        if name.len() > self.layout.name_cap as usize {
            return Err(AllocError::NameTooLong);
        }
        let key = (kind, name.to_owned());
        {
            let mut idx = self.index.lock();
            self.catch_up(&mut idx);
            if let Some(i) = idx.by_name.get(&key) {
                return Ok(*i);
            }
        }
        self.intact()
            .map_err(|e| AllocError::Unusable(e.to_string()))?;
        let guard = lock(&self.map, &self.path, self.lock_timeout)
            .map_err(|e| AllocError::Lock(e.to_string()))?;
        let mut idx = self.index.lock();
        self.catch_up(&mut idx);
        if let Some(i) = idx.by_name.get(&key) {
            return Ok(*i);
        }
        // Clamped: a count past the capacity (corrupt) reads as full.
        let used = table::published(&*self.map, &self.layout);
        if used >= self.layout.max_stats {
            return Err(AllocError::Full);
        }
        table::publish_slot(&self.map, &self.layout, used, kind, name);
        drop(guard);
        idx.by_name.insert(key, used);
        idx.scanned = idx.scanned.max(used + 1);
        Ok(used)
    }

    /// Index the slots published since the last call (none once the file has shrunk).
    fn catch_up(&self, idx: &mut Index) {
        if self.intact().is_err() {
            return;
        }
        let used = table::published(&*self.map, &self.layout);
        for i in idx.scanned..used {
            if let Some((kind, name)) = table::slot_key(&*self.map, &self.layout, i) {
                idx.by_name.entry((kind, name)).or_insert(i);
            }
        }
        idx.scanned = idx.scanned.max(used);
    }

    pub(crate) fn counter_cell<T: Shared>(&self, slot: u32) -> Cell<T> {
        self.map.cell(self.layout.value_offset(slot, 0))
    }

    pub(crate) fn gauge_cell(&self, slot: u32) -> Cell<std::sync::atomic::AtomicI64> {
        self.map
            .cell(self.layout.value_offset(slot, self.generation))
    }

    /// Every published stat, with gauges merged over the live generations.
    pub(crate) fn read(&self) -> Vec<StatRecord> {
        if self.intact().is_err() {
            return Vec::new();
        }
        let gens = self.generations();
        table::read_stats(&*self.map, &self.layout, &gens)
    }
}

#[cfg(test)]
impl Region {
    /// Take the region lock and never release it (a test helper process then stops or dies).
    pub(crate) fn hold_lock_forever(&self) -> Result<(), Error> {
        std::mem::forget(lock(&self.map, &self.path, self.attach_timeout)?);
        Ok(())
    }

    pub(crate) fn mapping(&self) -> &RwMapping {
        &self.map
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            tracing::warn!(region = %self.path, "could not detach from the stats region: {e}");
        }
    }
}

/// Map `file` once its creator has published the header (bounded wait).
fn map_ready(file: &File, path: &str, timeout: Duration) -> Result<RwMapping, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let len = file
            .metadata()
            .map_err(|e| Error::io("inspect", path, e))?
            .len();
        if len >= layout::HEADER_SIZE as u64 {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let map = MmapOptions::new()
                .len(len)
                .map_raw(file)
                .map_err(|e| Error::io("map", path, e))?;
            let map = RwMapping::new(map);
            if map.load_u32(layout::OFF_READY) == 1 {
                return Ok(map);
            }
        }
        if Instant::now() >= deadline {
            return Err(header_error(path, HeaderError::NotReady));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lock<'a>(map: &'a RwMapping, path: &str, timeout: Duration) -> Result<Guard<'a>, Error> {
    let why = match map.mutex_lock(layout::OFF_MUTEX, timeout) {
        Ok(Locked::Clean) => {
            return Ok(Guard {
                map,
                _not_send: PhantomData,
            })
        }
        Ok(Locked::OwnerDied) => {
            tracing::warn!(
                region = %path,
                "the previous holder of the stats region lock died holding it; recovered"
            );
            return Ok(Guard {
                map,
                _not_send: PhantomData,
            });
        }
        Err(LockFailure::Timeout) => "timed out (is the holder stopped?)".to_owned(),
        Err(LockFailure::NotRecoverable) => "the lock is not recoverable".to_owned(),
        Err(LockFailure::Os(rc)) => io::Error::from_raw_os_error(rc).to_string(),
    };
    Err(Error::Lock {
        path: path.to_owned(),
        timeout,
        why,
    })
}

/// Free the entries of attached generations whose liveness lock nobody holds (under the lock).
fn reap(map: &RwMapping, layout: &Layout, file: &File, own: Option<usize>) -> usize {
    let mut n = 0;
    for (g, e) in table::attached(map) {
        if Some(g) == own || shm::byte_locked_by_other(file, g).unwrap_or(true) {
            continue;
        }
        tracing::info!(
            epoch = e.epoch,
            pid = e.pid,
            "a generation left the stats region without detaching; removing its gauge share"
        );
        table::zero_gauge_column(map, layout, g);
        table::free_generation(map, g);
        n += 1;
    }
    n
}

/// The first base id in `first..=last` whose region does not exist. The caller still creates it
/// with [`OpenMode::Create`], which refuses a live chain, so a race only costs a retry.
pub fn pick_free_base_id(first: u32, last: u32) -> Result<u32, Error> {
    for id in first..=last {
        let backing = Backing::for_base_id(id);
        match backing.exists() {
            Ok(false) => return Ok(id),
            Ok(true) => {}
            Err(e) => return Err(Error::io("look for", &backing.display(), e)),
        }
    }
    Err(Error::NoFreeBaseId { first, last })
}
