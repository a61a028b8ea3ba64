//! shm: the region's backing object — its name from the base id, creating, opening and
//! unlinking it — and the OFD locks by which a generation proves it is alive.
//!
//! The backing is a POSIX shared-memory object `/baton_<base-id>` (in `/dev/shm` on Linux,
//! mode 0600) or, with `--hot-restart-file`, a regular file; both are mapped the same way.
//!
//! Why not the `shared_memory` crate: it is unmaintained, pins an old `nix`, and unlinks the
//! object when its owner drops — exactly the race this crate must avoid (a parent exiting would
//! remove the region its child just attached to, resetting every counter). Opening, locking and
//! unlinking are a few `nix` calls; the policy of when to unlink lives in `region`.
//!
//! Liveness: generation slot `g` holds an open-file-description (OFD) write lock on byte `g` of
//! the backing file. The kernel drops it when the process dies, whatever the cause, so a dead
//! generation is detectable without trusting its pid (pids are reused and differ across PID
//! namespaces). OFD locks belong to the open file description, not the process, so two opens in
//! one process (tests) still see each other's locks.
//!
//! Trust: an existing backing is used only if this process's user owns it and no other user can
//! write it ([`check_trusted`]), and its size is checked against the layout ([`check_len`])
//! before anything past the header is read, because touching a mapped page past the end of a
//! shrunk file faults (SIGBUS) instead of failing.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

use crate::error::Error;
use crate::layout::MAX_GENERATIONS;

/// Who may use an existing backing (see [`check_trusted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// A generation maps it read-write and trusts what it finds.
    Generation,
    /// A read-only view (`baton stats`); root may read any user's region.
    View,
}

/// Where a chain's region lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A POSIX shared-memory object name (`/baton_<base-id>`).
    Shm(String),
    /// A regular file (`--hot-restart-file`).
    File(PathBuf),
}

// === impl Backing ===

impl Backing {
    /// The shared-memory object of base id `base_id`.
    pub fn for_base_id(base_id: u32) -> Backing {
        Backing::Shm(format!("/baton_{base_id}"))
    }

    /// How to name it in messages (`/dev/shm/baton_7` on Linux).
    pub fn display(&self) -> String {
        match self {
            Backing::Shm(name) => format!("/dev/shm{name}"),
            Backing::File(p) => p.display().to_string(),
        }
    }

    /// Create it; fails with `AlreadyExists` if it exists.
    pub(crate) fn create_excl(&self) -> io::Result<File> {
        match self {
            Backing::Shm(name) => shm_open(
                name.as_str(),
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
                Mode::S_IRUSR | Mode::S_IWUSR,
            )
            .map(File::from)
            .map_err(io::Error::from),
            Backing::File(p) => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p),
        }
    }

    pub(crate) fn open(&self, writable: bool) -> io::Result<File> {
        match self {
            Backing::Shm(name) => {
                let flag = if writable {
                    OFlag::O_RDWR
                } else {
                    OFlag::O_RDONLY
                };
                shm_open(name.as_str(), flag, Mode::empty())
                    .map(File::from)
                    .map_err(io::Error::from)
            }
            Backing::File(p) => std::fs::OpenOptions::new()
                .read(true)
                .write(writable)
                .open(p),
        }
    }

    /// Remove the name; mappings and open descriptors stay valid. Absent already is fine.
    pub(crate) fn unlink(&self) -> io::Result<()> {
        let r = match self {
            Backing::Shm(name) => shm_unlink(name.as_str()).map_err(io::Error::from),
            Backing::File(p) => std::fs::remove_file(p),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Whether the name exists (for picking a free base id).
    pub(crate) fn exists(&self) -> io::Result<bool> {
        match self.open(false) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            // Someone else's object: it exists.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(true),
            Err(e) => Err(e),
        }
    }
}

fn byte_lock(kind: libc::c_short, byte: usize) -> libc::flock {
    libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: libc::off_t::try_from(byte).unwrap_or(libc::off_t::MAX),
        l_len: 1,
        // Must be 0 for OFD locks.
        l_pid: 0,
    }
}

/// Take the OFD write lock on `byte` of `file` without waiting: `Ok(false)` if another open
/// file description holds it.
pub(crate) fn try_lock_byte(file: &File, byte: usize) -> io::Result<bool> {
    let fl = byte_lock(libc::F_WRLCK as libc::c_short, byte);
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Release this description's OFD lock on `byte`.
pub(crate) fn unlock_byte(file: &File, byte: usize) -> io::Result<()> {
    let fl = byte_lock(libc::F_UNLCK as libc::c_short, byte);
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl))
        .map(drop)
        .map_err(io::Error::from)
}

/// Whether another open file description holds a lock on `byte` (this description's own locks
/// never show).
pub(crate) fn byte_locked_by_other(file: &File, byte: usize) -> io::Result<bool> {
    let mut fl = byte_lock(libc::F_WRLCK as libc::c_short, byte);
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut fl)).map_err(io::Error::from)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// The generation-table indexes whose liveness byte another open file description holds.
pub(crate) fn live_generations(file: &File) -> io::Result<Vec<usize>> {
    let mut live = Vec::new();
    for g in 0..MAX_GENERATIONS {
        if byte_locked_by_other(file, g)? {
            live.push(g);
        }
    }
    Ok(live)
}

/// Refuse a backing this process should not trust: owned by another user (except for a view by
/// root), or writable by group or others. Returns the file's size (the same `fstat`).
pub(crate) fn check_trusted(file: &File, path: &str, usage: Use) -> Result<u64, Error> {
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    let uid = nix::unistd::geteuid().as_raw();
    let owner_ok = meta.uid() == uid || (usage == Use::View && uid == 0);
    let mode = meta.mode() & 0o7777;
    if !owner_ok || mode & 0o022 != 0 {
        return Err(Error::Untrusted {
            path: path.to_owned(),
            owner: meta.uid(),
            mode,
            uid,
        });
    }
    Ok(meta.len())
}

/// Check that `file` still holds `expected` bytes (one `fstat`): a mapping of it may only be read
/// past the header while this holds. Racing a truncation is still possible between the check and
/// the reads; the owner check above limits who can do that to this process's own user.
pub(crate) fn check_len(file: &File, path: &str, expected: u64) -> Result<(), Error> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("inspect", path, e))?
        .len();
    if len < expected {
        return Err(Error::Shrunk {
            path: path.to_owned(),
            len,
            expected,
        });
    }
    Ok(())
}
