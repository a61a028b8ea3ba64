//! view: [`RegionView`], a chain's region mapped read-only from outside the chain (`baton
//! stats`): it never writes and never takes the region's lock. It checks the header and the
//! liveness locks itself; the generation table and the slots are decoded by `table`, the same
//! decoder a generation uses on its own mapping.
//!
//! A view trusts nothing it maps: the region must be owned by this user (or be read by root) and
//! writable by nobody else, its size is checked against its header before the mapping is read
//! past it and again before every [`RegionView::read`], and every count read back is clamped to
//! the layout by `table`.

use std::fs::File;
use std::io;
use std::time::SystemTime;

use memmap2::MmapOptions;

use crate::error::Error;
use crate::layout::{self, Layout};
use crate::shm::{self, Backing, Use};
use crate::sys::RoMapping;
use crate::table::{self, GenerationInfo, StatRecord};
use crate::value::Snapshot;

/// Everything a region holds at one moment.
#[derive(Clone, Debug)]
pub struct RegionReport {
    pub path: String,
    pub chain_created: SystemTime,
    pub max_stats: u32,
    pub max_obj_name_len: u32,
    pub used: u32,
    pub generations: Vec<GenerationInfo>,
    pub stats: Vec<StatRecord>,
}

/// A read-only mapping of a chain's region, for inspection from outside the chain.
#[derive(Debug)]
pub struct RegionView {
    path: String,
    /// Opened read-only; used to test the generations' liveness locks (never to take one).
    file: File,
    map: RoMapping,
    layout: Layout,
}

// === impl RegionView ===

impl RegionView {
    /// Map `backing` read-only and check its owner, mode, size and header: [`Error::NoRegion`],
    /// [`Error::PermissionDenied`], [`Error::Untrusted`], [`Error::Shrunk`], [`Error::Version`]
    /// or [`Error::Corrupt`] otherwise.
    pub fn open(backing: &Backing) -> Result<RegionView, Error> {
        let path = backing.display();
        let file = match backing.open(false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoRegion { path }),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let len = shm::check_trusted(&file, &path, Use::View)?;
        if len < layout::HEADER_SIZE as u64 {
            return Err(Error::Corrupt {
                path,
                what: format!("{len} bytes, shorter than a header"),
            });
        }
        let map = MmapOptions::new()
            .len(usize::try_from(len).unwrap_or(usize::MAX))
            .map_raw_read_only(&file)
            .map_err(|e| Error::io("map", &path, e))?;
        let map = RoMapping::new(map);
        let layout = layout::decode_header(&map, len).map_err(|e| Error::header(&path, e))?;
        Ok(RegionView {
            path,
            file,
            map,
            layout,
        })
    }

    /// Read everything, without locking; gauges merge the generations whose liveness lock is
    /// held. A region whose file has shrunk since [`RegionView::open`] reads as empty (and is
    /// logged); [`RegionView::try_read`] says so instead.
    pub fn read(&self) -> RegionReport {
        self.try_read().unwrap_or_else(|e| {
            tracing::warn!(region = %self.path, "{e}");
            RegionReport {
                path: self.path.clone(),
                chain_created: SystemTime::UNIX_EPOCH,
                max_stats: self.layout.max_stats,
                max_obj_name_len: self.layout.max_obj_name_len(),
                used: 0,
                generations: Vec::new(),
                stats: Vec::new(),
            }
        })
    }

    /// As [`RegionView::read`], or [`Error::Shrunk`] if the region's file no longer holds its
    /// layout (reading the mapping would fault).
    pub fn try_read(&self) -> Result<RegionReport, Error> {
        shm::check_len(&self.file, &self.path, self.layout.total_size)?;
        let live = shm::live_generations(&self.file).unwrap_or_default();
        let generations = table::generations(&self.map, |g| live.contains(&g));
        Ok(RegionReport {
            path: self.path.clone(),
            chain_created: table::chain_created(&self.map),
            max_stats: self.layout.max_stats,
            max_obj_name_len: self.layout.max_obj_name_len(),
            used: table::published(&self.map, &self.layout),
            stats: table::read_stats(&self.map, &self.layout, &generations),
            generations,
        })
    }
}

impl RegionReport {
    /// The merged values, in the store's snapshot form.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stats: self
                .stats
                .iter()
                .map(|r| (r.name.clone(), r.value.clone()))
                .collect(),
        }
    }
}
