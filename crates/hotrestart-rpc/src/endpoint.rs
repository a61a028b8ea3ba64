//! Where a generation listens for its successor: an abstract Unix socket named from the base id
//! and epoch (the default: nothing on disk, nothing to clean up), or a filesystem path with an
//! optional mode. Binding a path never unlinks a live peer's socket: the path is probed by
//! connecting first, and only a stale socket (connection refused) is removed.

use std::fmt;
use std::fs;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest abstract name Linux accepts (sun_path minus the leading NUL).
pub const MAX_ABSTRACT_NAME: usize = 107;

/// A restart socket's address.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// Linux abstract namespace; the name without its leading NUL.
    Abstract(Vec<u8>),
    /// A filesystem socket; `mode` (e.g. `0o600`) is applied after binding.
    Path { path: PathBuf, mode: Option<u32> },
}

/// The inode a [`Listener`](crate::Listener) bound at a path, so it only ever removes its own file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BoundFile {
    dev: u64,
    ino: u64,
}

// === impl Endpoint ===

impl Endpoint {
    /// The default endpoint of generation `epoch` in the chain `base_id`:
    /// abstract `baton_hotrestart_<base_id>_<epoch>`.
    pub fn for_epoch(base_id: u64, epoch: u32) -> Self {
        Self::Abstract(format!("baton_hotrestart_{base_id}_{epoch}").into_bytes())
    }

    /// The endpoint of generation `epoch` under `--socket-path BASE`: `BASE_<base_id>_<epoch>`.
    pub fn path_for_epoch(base: &Path, base_id: u64, epoch: u32, mode: Option<u32>) -> Self {
        let mut path = base.as_os_str().to_owned();
        path.push(format!("_{base_id}_{epoch}"));
        Self::Path {
            path: PathBuf::from(path),
            mode,
        }
    }

    /// An exact filesystem path (the `--hot-restart-file` flow).
    pub fn path(path: impl Into<PathBuf>, mode: Option<u32>) -> Self {
        Self::Path {
            path: path.into(),
            mode,
        }
    }

    pub(crate) fn socket_addr(&self) -> Result<SocketAddr> {
        match self {
            Self::Abstract(name) => {
                if name.len() > MAX_ABSTRACT_NAME {
                    return Err(self.bad(format!("name longer than {MAX_ABSTRACT_NAME} bytes")));
                }
                SocketAddr::from_abstract_name(name).map_err(|e| self.bad(e.to_string()))
            }
            Self::Path { path, .. } => {
                SocketAddr::from_pathname(path).map_err(|e| self.bad(e.to_string()))
            }
        }
    }

    fn bad(&self, reason: String) -> Error {
        Error::BadAddress {
            address: self.to_string(),
            reason,
        }
    }

    /// Binds a listening socket here (see the module docs for paths).
    pub(crate) fn bind(&self) -> Result<(UnixListener, Option<BoundFile>)> {
        let addr = self.socket_addr()?;
        match self {
            Self::Abstract(_) => {
                let listener = UnixListener::bind_addr(&addr).map_err(|e| self.bind_error(e))?;
                Ok((listener, None))
            }
            Self::Path { path, mode } => {
                self.remove_if_stale(path)?;
                let listener = UnixListener::bind_addr(&addr).map_err(|e| self.bind_error(e))?;
                let bound = finish_path(path, *mode)?;
                Ok((listener, Some(bound)))
            }
        }
    }

    /// Binds a listening socket at this path in place of the live one there: binds beside it and
    /// renames over it, so the path is never missing and the old socket keeps its connections.
    /// Only for a successor that has already been accepted by the process listening there.
    pub(crate) fn bind_replacing(&self) -> Result<(UnixListener, Option<BoundFile>)> {
        let Self::Path { path, mode } = self else {
            return Err(self.bad("only a filesystem socket can be replaced".into()));
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove a leftover temporary restart socket", e)),
        }
        let listener = UnixListener::bind(&tmp).map_err(|e| self.bind_error(e))?;
        let bound = finish_path(&tmp, *mode)?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename the restart socket into place", e));
        }
        Ok((listener, Some(bound)))
    }

    fn bind_error(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::AddrInUse {
            Error::AddressInUse {
                address: self.to_string(),
            }
        } else {
            Error::io("bind the restart socket", e)
        }
    }

    /// Removes `path` only if it is a socket nobody listens on.
    fn remove_if_stale(&self, path: &Path) -> Result<()> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("inspect the restart socket path", e)),
        };
        if !meta.file_type().is_socket() {
            return Err(self.bad("exists and is not a socket".into()));
        }
        match UnixStream::connect(path) {
            Ok(_probe) => Err(Error::AddressInUse {
                address: self.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing stale restart socket");
                match fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io("remove a stale restart socket", e)),
                }
            }
            Err(e) => Err(Error::io("probe the restart socket path", e)),
        }
    }
}

fn finish_path(path: &Path, mode: Option<u32>) -> Result<BoundFile> {
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set the restart socket's mode", e))?;
    }
    let meta =
        fs::symlink_metadata(path).map_err(|e| Error::io("inspect the bound restart socket", e))?;
    Ok(BoundFile {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

// === impl BoundFile ===

impl BoundFile {
    /// Removes `path` if it is still the file this process bound.
    pub(crate) fn remove_if_ours(&self, path: &Path) {
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = fs::remove_file(path);
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Self::Path { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            Endpoint::for_epoch(7, 3),
            Endpoint::Abstract(b"baton_hotrestart_7_3".to_vec())
        );
        assert_eq!(
            Endpoint::for_epoch(7, 3).to_string(),
            "@baton_hotrestart_7_3"
        );
        assert_eq!(
            Endpoint::path_for_epoch(Path::new("/run/baton"), 1, 2, Some(0o600)),
            Endpoint::path("/run/baton_1_2", Some(0o600))
        );
        assert!(matches!(
            Endpoint::Abstract(vec![b'a'; 200]).socket_addr(),
            Err(Error::BadAddress { .. })
        ));
    }
}
