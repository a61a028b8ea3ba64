//! layout: where every field of the shared region lives, as pure arithmetic over offsets (plus
//! [`HistogramCells`], the typed shape of a histogram's words) — no mapping, no syscalls. The
//! header is also encoded to bytes here ([`encode_header`]) so a golden fixture pins layout
//! version 1 byte for byte.
//!
//! Region (all integers native-endian, every field naturally aligned, every shared field accessed
//! only through atomics):
//!
//! ```text
//! 0    u64  magic "BATONSHM"            | 64   u32 ready (1 once initialised)
//! 8    u32  layout version              | 128  [64] robust process-shared pthread mutex
//! 12   u32  header size (512)           | 192  generation table: MAX_GENERATIONS x 32 bytes
//! 16   u64  total size                  |        u32 state (0 free, 1 attached), u32 epoch,
//! 24   u32  slot capacity (--max-stats) |        u32 pid, u32 phase (owner-defined),
//! 28   u32  name capacity               |        u64 attach time (unix ns), u64 attach sequence
//! 32   u32  slot size                   | 448..512 reserved (zero)
//! 36   u32  generation capacity         |
//! 40   u64  chain creation time (ns)    | 512  slots: capacity x slot size
//! 48   u32  slots published             |
//! 52   u32  closed (being unlinked)     |
//! 56   u64  attach sequence (attaches ever made)
//! ```
//!
//! A slot: `u32 state` (1 = published), `u32 kind`, `u32 name length`, `u32 reserved`, the name
//! padded to 8 bytes, then [`VALUE_WORDS`] 8-byte words: a counter uses word 0, a gauge one word
//! per generation slot, a histogram its buckets, count and sum.
//!
//! Liveness locks are not in the data: generation `g` holds an OFD write lock on byte `g` of the
//! region's file (advisory, so it never conflicts with the mapping).

use std::sync::atomic::AtomicU64;

/// Upper bounds, in milliseconds, of the histogram buckets (Envoy's default set). Values above
/// the last bound only count in `+Inf`. Part of the region layout: changing them is a new
/// layout version.
pub const HISTOGRAM_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// "BATONSHM" read as a native-endian u64.
pub const MAGIC: u64 = u64::from_ne_bytes(*b"BATONSHM");
/// Bumped on any change of the offsets or meanings below.
pub const LAYOUT_VERSION: u32 = 1;
/// Generations that can be attached at once (Envoy runs at most two; the rest is headroom for a
/// stuck parent plus a failed child).
pub const MAX_GENERATIONS: usize = 8;
/// As Envoy's old shared-memory stats: a stat name may be the longest object name plus this
/// many bytes of suffix (`cluster.<name>.` + the longest stat suffix).
pub const MAX_STAT_SUFFIX_LEN: u32 = 127;
/// Words of a histogram: one per bucket bound, one for `+Inf`, the count and the sum (µs).
pub const HISTOGRAM_WORDS: usize = HISTOGRAM_BUCKETS_MS.len() + 3;
/// Value words of every slot: enough for a histogram and for one gauge share per generation.
pub const VALUE_WORDS: usize = if HISTOGRAM_WORDS > MAX_GENERATIONS {
    HISTOGRAM_WORDS
} else {
    MAX_GENERATIONS
};
/// The largest region Baton agrees to create (64 GiB of address space, mostly never touched).
pub const MAX_REGION_BYTES: u64 = 1 << 36;

pub const OFF_MAGIC: usize = 0;
pub const OFF_VERSION: usize = 8;
pub const OFF_HEADER_SIZE: usize = 12;
pub const OFF_TOTAL_SIZE: usize = 16;
pub const OFF_MAX_STATS: usize = 24;
pub const OFF_NAME_CAP: usize = 28;
pub const OFF_SLOT_SIZE: usize = 32;
pub const OFF_MAX_GENERATIONS: usize = 36;
pub const OFF_CREATED_NS: usize = 40;
pub const OFF_USED: usize = 48;
pub const OFF_CLOSED: usize = 52;
pub const OFF_ATTACH_SEQ: usize = 56;
pub const OFF_READY: usize = 64;
pub const OFF_MUTEX: usize = 128;
pub const MUTEX_BYTES: usize = 64;
pub const OFF_GENERATIONS: usize = 192;
pub const GENERATION_BYTES: usize = 32;
pub const HEADER_SIZE: usize = 512;

/// Offsets inside a generation entry.
pub const GEN_STATE: usize = 0;
pub const GEN_EPOCH: usize = 4;
pub const GEN_PID: usize = 8;
pub const GEN_PHASE: usize = 12;
pub const GEN_ATTACHED_NS: usize = 16;
pub const GEN_SEQ: usize = 24;

/// Offsets inside a slot.
pub const SLOT_STATE: usize = 0;
pub const SLOT_KIND: usize = 4;
pub const SLOT_NAME_LEN: usize = 8;
pub const SLOT_NAME: usize = 16;

pub const GEN_FREE: u32 = 0;
pub const GEN_ATTACHED: u32 = 1;
pub const SLOT_PUBLISHED: u32 = 1;

const _: () = assert!(OFF_GENERATIONS + MAX_GENERATIONS * GENERATION_BYTES <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= MUTEX_BYTES);
const _: () = assert!(std::mem::align_of::<libc::pthread_mutex_t>() <= 64);
const _: () = assert!(HISTOGRAM_WORDS <= VALUE_WORDS && MAX_GENERATIONS <= VALUE_WORDS);

/// What a slot holds; stored in the slot so every generation and reader agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One shared value every generation adds to.
    Counter,
    /// One share per generation; the value is their sum.
    Gauge,
    /// One share per generation; the value is the newest attached generation's share (Envoy's
    /// "never import" gauges: `server.live`, `server.uptime`, ...).
    GaugeNewest,
    /// Shared buckets, count and sum.
    Histogram,
}

impl Kind {
    pub fn code(self) -> u32 {
        match self {
            Kind::Counter => 1,
            Kind::Gauge => 2,
            Kind::GaugeNewest => 3,
            Kind::Histogram => 4,
        }
    }

    pub fn from_code(code: u32) -> Option<Kind> {
        match code {
            1 => Some(Kind::Counter),
            2 => Some(Kind::Gauge),
            3 => Some(Kind::GaugeNewest),
            4 => Some(Kind::Histogram),
            _ => None,
        }
    }
}

/// A histogram's value words as typed cells, in the slot's order: what a histogram handle points
/// at, in the region or on the heap.
#[repr(C)]
#[derive(Default)]
pub struct HistogramCells {
    /// One cell per bound in [`HISTOGRAM_BUCKETS_MS`], plus one for values above the last.
    pub buckets: [AtomicU64; HISTOGRAM_BUCKETS_MS.len() + 1],
    pub count: AtomicU64,
    /// Sum in microseconds, so that sub-millisecond samples are not lost.
    pub sum_us: AtomicU64,
}

const _: () = assert!(
    std::mem::size_of::<HistogramCells>() == HISTOGRAM_WORDS * 8
        && std::mem::align_of::<HistogramCells>() == 8
);

/// The geometry a region is created with; two processes share a region only if theirs agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub max_stats: u32,
    /// Longest stat name in bytes: `--max-obj-name-len` + [`MAX_STAT_SUFFIX_LEN`].
    pub name_cap: u32,
    pub slot_size: u32,
    pub total_size: u64,
}

/// Why capacities cannot make a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub bytes: Option<u64>,
}

impl Layout {
    /// The layout for `--max-stats` and `--max-obj-name-len`.
    pub fn new(max_stats: u64, max_obj_name_len: u64) -> Result<Layout, TooLarge> {
        let name_cap = max_obj_name_len
            .checked_add(u64::from(MAX_STAT_SUFFIX_LEN))
            .filter(|n| *n <= u64::from(u32::MAX))
            .ok_or(TooLarge { bytes: None })?;
        let padded = name_cap.div_ceil(8) * 8;
        let slot_size = SLOT_NAME as u64 + padded + (VALUE_WORDS as u64) * 8;
        let total = max_stats
            .checked_mul(slot_size)
            .and_then(|s| s.checked_add(HEADER_SIZE as u64));
        match total {
            Some(t) if t <= MAX_REGION_BYTES && max_stats >= 1 => Ok(Layout {
                max_stats: u32::try_from(max_stats).map_err(|_| TooLarge { bytes: Some(t) })?,
                name_cap: u32::try_from(name_cap).map_err(|_| TooLarge { bytes: Some(t) })?,
                slot_size: u32::try_from(slot_size).map_err(|_| TooLarge { bytes: Some(t) })?,
                total_size: t,
            }),
            other => Err(TooLarge { bytes: other }),
        }
    }

    /// `--max-obj-name-len` this layout was made from.
    pub fn max_obj_name_len(&self) -> u32 {
        self.name_cap.saturating_sub(MAX_STAT_SUFFIX_LEN)
    }

    pub fn slot_offset(&self, idx: u32) -> usize {
        HEADER_SIZE + idx as usize * self.slot_size as usize
    }

    /// Offset of value word `word` of slot `idx`.
    pub fn value_offset(&self, idx: u32, word: usize) -> usize {
        let padded = (self.name_cap as usize).div_ceil(8) * 8;
        self.slot_offset(idx) + SLOT_NAME + padded + word * 8
    }

    pub fn total_len(&self) -> usize {
        // Fits: bounded by MAX_REGION_BYTES, and Baton targets 64-bit Linux.
        usize::try_from(self.total_size).unwrap_or(usize::MAX)
    }
}

pub fn generation_offset(g: usize) -> usize {
    OFF_GENERATIONS + g * GENERATION_BYTES
}

/// A header field a fresh region starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    U32(usize, u32),
    U64(usize, u64),
}

/// The header fields of a fresh region, in the order they are written; `ready` (last) publishes
/// them.
pub fn initial_fields(layout: &Layout, created_ns: u64) -> [Field; 14] {
    [
        Field::U64(OFF_MAGIC, MAGIC),
        Field::U32(OFF_VERSION, LAYOUT_VERSION),
        Field::U32(OFF_HEADER_SIZE, HEADER_SIZE as u32),
        Field::U64(OFF_TOTAL_SIZE, layout.total_size),
        Field::U32(OFF_MAX_STATS, layout.max_stats),
        Field::U32(OFF_NAME_CAP, layout.name_cap),
        Field::U32(OFF_SLOT_SIZE, layout.slot_size),
        Field::U32(OFF_MAX_GENERATIONS, MAX_GENERATIONS as u32),
        Field::U64(OFF_CREATED_NS, created_ns),
        Field::U32(OFF_USED, 0),
        Field::U32(OFF_CLOSED, 0),
        Field::U64(OFF_ATTACH_SEQ, 0),
        // Written by the creator once the mutex is initialised.
        Field::U32(OFF_READY, 0),
        Field::U32(OFF_READY, 1),
    ]
}

/// The bytes of a fresh region's header (mutex area and generation table zero): what the golden
/// fixture holds.
pub fn encode_header(layout: &Layout, created_ns: u64) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_SIZE];
    for f in initial_fields(layout, created_ns) {
        match f {
            Field::U32(off, v) => out[off..off + 4].copy_from_slice(&v.to_ne_bytes()),
            Field::U64(off, v) => out[off..off + 8].copy_from_slice(&v.to_ne_bytes()),
        }
    }
    out
}

/// Read access to a region's words, from a mapping or from bytes.
pub trait Words {
    fn len(&self) -> usize;
    fn load_u32(&self, off: usize) -> u32;
    fn load_u64(&self, off: usize) -> u64;
    fn load_u8(&self, off: usize) -> u8;
}

impl Words for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn load_u32(&self, off: usize) -> u32 {
        self.get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    }
    fn load_u64(&self, off: usize) -> u64 {
        self.get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    }
    fn load_u8(&self, off: usize) -> u8 {
        self.get(off).copied().unwrap_or(0)
    }
}

/// What is wrong with a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    TooShort(usize),
    NotReady,
    Magic(u64),
    Version(u32),
    /// The file is shorter than the size its header describes: mapping or reading past its end
    /// would fault (SIGBUS).
    Shrunk {
        len: u64,
        expected: u64,
    },
    Inconsistent(&'static str),
}

/// Read and check a header of `file_len` bytes: magic, version, and that its geometry is
/// self-consistent and matches the file's size. Returns the region's layout.
pub fn decode_header<W: Words + ?Sized>(w: &W, file_len: u64) -> Result<Layout, HeaderError> {
    if w.len() < HEADER_SIZE || file_len < HEADER_SIZE as u64 {
        return Err(HeaderError::TooShort(w.len()));
    }
    if w.load_u32(OFF_READY) != 1 {
        return Err(HeaderError::NotReady);
    }
    let magic = w.load_u64(OFF_MAGIC);
    if magic != MAGIC {
        return Err(HeaderError::Magic(magic));
    }
    let version = w.load_u32(OFF_VERSION);
    if version != LAYOUT_VERSION {
        return Err(HeaderError::Version(version));
    }
    if w.load_u32(OFF_HEADER_SIZE) as usize != HEADER_SIZE {
        return Err(HeaderError::Inconsistent("header size"));
    }
    if w.load_u32(OFF_MAX_GENERATIONS) as usize != MAX_GENERATIONS {
        return Err(HeaderError::Inconsistent("generation capacity"));
    }
    let name_cap = w.load_u32(OFF_NAME_CAP);
    let max_obj = u64::from(name_cap.saturating_sub(MAX_STAT_SUFFIX_LEN));
    let layout = Layout::new(u64::from(w.load_u32(OFF_MAX_STATS)), max_obj)
        .map_err(|_| HeaderError::Inconsistent("capacity"))?;
    if layout.name_cap != name_cap
        || layout.slot_size != w.load_u32(OFF_SLOT_SIZE)
        || layout.total_size != w.load_u64(OFF_TOTAL_SIZE)
    {
        return Err(HeaderError::Inconsistent("slot geometry"));
    }
    if file_len < layout.total_size {
        return Err(HeaderError::Shrunk {
            len: file_len,
            expected: layout.total_size,
        });
    }
    if layout.total_size != file_len {
        return Err(HeaderError::Inconsistent("size"));
    }
    if w.load_u32(OFF_USED) > layout.max_stats {
        return Err(HeaderError::Inconsistent("published slot count"));
    }
    Ok(layout)
}
