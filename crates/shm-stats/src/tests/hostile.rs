//! A region written by a buggy or hostile process of the same user, or shrunk under its readers:
//! every reader and writer gets a clear error or ignores what it cannot trust, and nothing
//! panics (not even detaching in `Drop`) or faults (SIGBUS).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use super::*;
use crate::layout::Kind;
use crate::region::AllocError;

/// A directory of its own for a test's file-backed region; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "baton-shm-hostile-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn backing(&self) -> Backing {
        Backing::File(self.0.join("region"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn file_opts(backing: &Backing, epoch: u32, mode: OpenMode) -> RegionOptions {
    RegionOptions {
        backing: backing.clone(),
        ..opts(0, epoch, mode)
    }
}

fn truncate(backing: &Backing, len: u64) {
    let Backing::File(p) = backing else {
        panic!("file backing expected")
    };
    OpenOptions::new()
        .write(true)
        .open(p)
        .expect("open for truncation")
        .set_len(len)
        .expect("truncate");
}

fn chmod(backing: &Backing, mode: u32) {
    let Backing::File(p) = backing else {
        panic!("file backing expected")
    };
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_bogus_published_count_is_clamped_by_every_reader_and_writer() {
    let id = unique_base_id();
    let _guard = ShmGuard(vec![id]);
    let first = Region::open(opts(id, 0, OpenMode::Create)).expect("create");
    let second = Region::open(opts(id, 1, OpenMode::Attach)).expect("attach");
    let gauge = first.find_or_alloc(Kind::Gauge, "g").expect("slot");
    first.gauge_cell(gauge).get().store(5, Ordering::Relaxed);
    second.gauge_cell(gauge).get().store(7, Ordering::Relaxed);
    let view = RegionView::open(&Backing::for_base_id(id)).expect("view");

    // Another process of the same user writes a count far past the capacity.
    for bogus in [65, u32::MAX] {
        first
            .mapping()
            .u32_at(lay::OFF_USED)
            .store(bogus, Ordering::Release);
        // The generations' own readers and allocator: clamped, and a full region.
        assert_eq!(first.usage(), (64, 64));
        assert_eq!(
            first.find_or_alloc(Kind::Counter, "new"),
            Err(AllocError::Full)
        );
        assert!(second.read().iter().any(|r| r.name == "g"));
        // A view opened before: clamped; a new view or generation: a clear error.
        let report = view.read();
        assert_eq!(report.used, 64);
        assert!(report.stats.iter().any(|r| r.name == "g"));
        let err = RegionView::open(&Backing::for_base_id(id)).expect_err("corrupt");
        assert!(
            err.to_string()
                .contains("inconsistent published slot count"),
            "{err}"
        );
        let err = Region::open(opts(id, 2, OpenMode::Attach)).expect_err("corrupt");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    // Leaving zeroes this generation's gauge shares over the clamped count: no panic in
    // `detach` nor in `Drop`.
    assert_eq!(second.detach().expect("detach"), Detached::Remaining);
    assert_eq!(
        first
            .read()
            .iter()
            .find(|r| r.name == "g")
            .map(|r| &r.value),
        Some(&Value::Gauge(5))
    );
    drop(first);
    assert!(!Path::new(&shm_path(id)).exists());
}

#[test]
fn a_shrunk_region_is_refused_and_never_faults() {
    let dir = TempDir::new();
    let backing = dir.backing();
    let region = Region::open(file_opts(&backing, 0, OpenMode::Create)).expect("create");
    region.find_or_alloc(Kind::Counter, "c").expect("slot");
    let view = RegionView::open(&backing).expect("view");
    let total = Layout::new(64, 16).expect("layout").total_size;

    // Shrunk past the header: a new generation or view is refused before reading the slots.
    truncate(&backing, HEADER_SIZE as u64);
    let err = Region::open(file_opts(&backing, 1, OpenMode::Attach)).expect_err("shrunk");
    assert!(
        matches!(err, Error::Shrunk { len, expected, .. } if len == HEADER_SIZE as u64 && expected == total),
        "{err}"
    );
    assert!(err.to_string().contains("shorter than the"), "{err}");
    let err = RegionView::open(&backing).expect_err("shrunk");
    assert!(matches!(err, Error::Shrunk { .. }), "{err}");

    // Shrunk to nothing under mapped readers: reading any page would fault, so nothing is read.
    truncate(&backing, 0);
    assert!(matches!(view.try_read(), Err(Error::Shrunk { len: 0, .. })));
    let report = view.read();
    assert!(report.stats.is_empty() && report.generations.is_empty());
    assert!(region.read().is_empty());
    assert!(region.generations().is_empty());
    assert_eq!(region.usage(), (0, 64));
    region.set_phase(3);
    assert!(matches!(
        region.find_or_alloc(Kind::Counter, "d"),
        Err(AllocError::Unusable(_))
    ));
    assert!(matches!(
        region.reap_dead_generations(),
        Err(Error::Shrunk { .. })
    ));
    let err = RegionView::open(&backing).expect_err("empty");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // Detaching (and so `Drop`) reports it instead of touching the table.
    assert!(matches!(region.detach(), Err(Error::Shrunk { .. })));
    drop(region);
}

#[test]
fn a_region_others_can_write_or_own_is_refused() {
    let dir = TempDir::new();
    let backing = dir.backing();
    let region = Region::open(file_opts(&backing, 0, OpenMode::Create)).expect("create");

    for mode in [0o620, 0o602, 0o666] {
        chmod(&backing, mode);
        let err = Region::open(file_opts(&backing, 1, OpenMode::Attach)).expect_err("mode");
        assert!(
            matches!(err, Error::Untrusted { mode: m, .. } if m == mode),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("mode {mode:04o}")),
            "{err}"
        );
        let err = RegionView::open(&backing).expect_err("mode");
        assert!(matches!(err, Error::Untrusted { .. }), "{err}");
    }
    // Group- or other-readable is fine: only writing is a threat.
    chmod(&backing, 0o644);
    let second = Region::open(file_opts(&backing, 1, OpenMode::Attach)).expect("attach");
    assert!(RegionView::open(&backing).is_ok());
    drop(second);

    // Another owner (only root can give a file away): a generation refuses it, root's view reads.
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        let Backing::File(p) = &backing else {
            unreachable!()
        };
        std::os::unix::fs::chown(p, Some(4242), None).expect("chown");
        let err = Region::open(file_opts(&backing, 1, OpenMode::Attach)).expect_err("owner");
        assert!(
            matches!(
                err,
                Error::Untrusted {
                    owner: 4242,
                    uid: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("owned by uid 4242"), "{err}");
        assert!(RegionView::open(&backing).is_ok());
        std::os::unix::fs::chown(p, Some(uid), None).expect("chown back");
    }
    assert_eq!(region.detach().expect("detach"), Detached::Removed);
}

#[test]
fn a_stale_region_with_a_bad_mode_is_not_reclaimed() {
    let dir = TempDir::new();
    let backing = dir.backing();
    let region = Region::open(file_opts(&backing, 0, OpenMode::Create)).expect("create");
    // Simulate a crash: the liveness lock goes, the file stays.
    let Backing::File(p) = &backing else {
        unreachable!()
    };
    let keep = dir.0.join("kept");
    fs::hard_link(p, &keep).expect("link");
    region.detach().expect("detach");
    fs::rename(&keep, p).expect("restore");
    chmod(&backing, 0o666);
    let err = Region::open(file_opts(&backing, 0, OpenMode::Create)).expect_err("untrusted");
    assert!(matches!(err, Error::Untrusted { .. }), "{err}");
    chmod(&backing, 0o600);
    let region = Region::open(file_opts(&backing, 0, OpenMode::Create)).expect("reclaimed");
    assert_eq!(region.detach().expect("detach"), Detached::Removed);
}

#[test]
fn a_shorter_file_than_its_header_says_decodes_as_shrunk() {
    let layout = Layout::new(4, 8).expect("layout");
    let mut b = encode_header(&layout, 1);
    b.resize(layout.total_len(), 0);
    assert_eq!(lay::decode_header(&b[..], layout.total_size), Ok(layout));
    assert_eq!(
        lay::decode_header(&b[..], layout.total_size - 1),
        Err(lay::HeaderError::Shrunk {
            len: layout.total_size - 1,
            expected: layout.total_size
        })
    );
    assert_eq!(
        lay::decode_header(&b[..], layout.total_size + 8),
        Err(lay::HeaderError::Inconsistent("size"))
    );
}
