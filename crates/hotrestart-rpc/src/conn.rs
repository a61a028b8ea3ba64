//! Blocking connections between generations: the parent's [`Listener`], a connected [`Conn`] on
//! either side, and peer authentication with SO_PEERCRED (same uid, or root).
//!
//! Every call takes a timeout, so a hung peer (SIGSTOP) costs the caller at most that long. These
//! calls block: run them on a dedicated thread (or tokio's `spawn_blocking`), never on a data-plane
//! thread.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect as sys_connect, getsockopt, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags,
    SockFlag, SockType, UnixAddr,
};

use crate::endpoint::{BoundFile, Endpoint};
use crate::error::{Error, Result};
use crate::io;
use crate::pb::Envelope;

/// Credentials of the process at the other end of a connection (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The parent's restart socket. Owns the listening socket (closed on drop) and, for a path
/// endpoint, the socket file: removed on drop only if it is still the one this listener bound.
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    endpoint: Endpoint,
    bound_file: Option<BoundFile>,
}

/// One connection between two generations. Owns the socket; dropping it closes the connection.
/// The file a [`Listener`] bound at a path, for whoever outlives the thread that owns the
/// listener (a process exits without that thread dropping it): [`SocketFile::remove_if_ours`]
/// removes the file only while it is still that listener's, never a successor's socket renamed
/// over it.
#[derive(Clone, Debug)]
pub struct SocketFile {
    path: std::path::PathBuf,
    bound: BoundFile,
}

#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    peer: PeerCred,
}

// === impl PeerCred ===

impl PeerCred {
    /// Whether this peer may talk to a process running as `our_uid`: same uid, or root.
    pub fn allowed_for(&self, our_uid: u32) -> bool {
        self.uid == our_uid || self.uid == 0
    }
}

/// Reads SO_PEERCRED from a connected Unix socket.
pub fn peer_credentials(fd: BorrowedFd<'_>) -> Result<PeerCred> {
    let cred = getsockopt(&fd, sockopt::PeerCredentials)
        .map_err(|e| Error::errno("read the peer's credentials", e))?;
    Ok(PeerCred {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

fn authorize(peer: PeerCred, role: &'static str) -> Result<()> {
    let ours = nix::unistd::geteuid().as_raw();
    if peer.allowed_for(ours) {
        return Ok(());
    }
    tracing::warn!(
        peer.pid = peer.pid,
        peer.uid = peer.uid,
        our.uid = ours,
        "refusing hot restart {role}: another uid"
    );
    Err(Error::PeerRefused {
        pid: peer.pid,
        uid: peer.uid,
        expected: ours,
    })
}

// === impl Listener ===

impl Listener {
    /// Binds the restart socket at `endpoint`. A path endpoint where a live process listens is
    /// [`Error::AddressInUse`]; a stale socket file there is replaced.
    pub fn bind(endpoint: &Endpoint) -> Result<Self> {
        let (inner, bound_file) = endpoint.bind()?;
        Self::finish(inner, endpoint, bound_file)
    }

    /// Binds at a path endpoint where the parent that just accepted us still listens, replacing
    /// its socket file atomically (the `--hot-restart-file` flow: each generation listens at the
    /// same path). The parent's socket keeps working for connections already made.
    pub fn bind_replacing(endpoint: &Endpoint) -> Result<Self> {
        let (inner, bound_file) = endpoint.bind_replacing()?;
        Self::finish(inner, endpoint, bound_file)
    }

    fn finish(
        inner: UnixListener,
        endpoint: &Endpoint,
        bound_file: Option<BoundFile>,
    ) -> Result<Self> {
        inner
            .set_nonblocking(true)
            .map_err(|e| Error::io("make the restart socket non-blocking", e))?;
        tracing::debug!(%endpoint, "restart socket listening");
        Ok(Self {
            inner,
            endpoint: endpoint.clone(),
            bound_file,
        })
    }

    /// Where this listener is bound.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The file this listener bound, if it listens at a filesystem path.
    pub fn socket_file(&self) -> Option<SocketFile> {
        match (&self.bound_file, &self.endpoint) {
            (Some(bound), Endpoint::Path { path, .. }) => Some(SocketFile {
                path: path.clone(),
                bound: *bound,
            }),
            _ => None,
        }
    }

    /// Waits up to `timeout` for a connection and authenticates it. A peer of another uid (not
    /// root) is logged, disconnected and reported as [`Error::PeerRefused`]; the listener is
    /// unaffected and the caller simply accepts again.
    pub fn accept(&self, timeout: Duration) -> Result<Conn> {
        const OP: &str = "accept a restart connection";
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.inner.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::errno(OP, e)),
            }
            match self.inner.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| Error::io("make a restart connection blocking", e))?;
                    let peer = peer_credentials(stream.as_fd())?;
                    authorize(peer, "connection")?;
                    tracing::debug!(peer.pid = peer.pid, "restart connection accepted");
                    return Ok(Conn { stream, peer });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() >= timeout {
                        return Err(Error::Timeout {
                            op: OP,
                            after: timeout,
                        });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(OP, e)),
            }
        }
    }
}

// === impl SocketFile ===

impl SocketFile {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Removes the file if it is still the one the listener bound.
    pub fn remove_if_ours(&self) {
        self.bound.remove_if_ours(&self.path);
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (Some(bound), Endpoint::Path { path, .. }) = (&self.bound_file, &self.endpoint) {
            bound.remove_if_ours(path);
        }
    }
}

/// Connects to the restart socket at `endpoint` (the child side) within `timeout`, and checks the
/// listening process is of our uid or root. No listener there is an [`Error::Io`] for which
/// [`Error::is_no_peer`] is true.
pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Conn> {
    const OP: &str = "connect to the parent's restart socket";
    let addr = match endpoint {
        Endpoint::Abstract(name) => UnixAddr::new_abstract(name),
        Endpoint::Path { path, .. } => UnixAddr::new(path.as_path()),
    }
    .map_err(|e| Error::BadAddress {
        address: endpoint.to_string(),
        reason: e.to_string(),
    })?;
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::errno("create a restart socket", e))?;
    // A parent whose accept queue is full (hung, or SIGSTOPped) would block connect(2) forever;
    // SO_SNDTIMEO bounds it.
    let tv = nix::sys::time::TimeVal::new(
        i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        i64::from(timeout.subsec_micros()).max(1),
    );
    setsockopt(&fd, sockopt::SendTimeout, &tv)
        .map_err(|e| Error::errno("set the connect timeout", e))?;
    loop {
        match sys_connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINPROGRESS) => {
                return Err(Error::Timeout {
                    op: OP,
                    after: timeout,
                })
            }
            Err(e) => return Err(Error::errno(OP, e)),
        }
    }
    let stream = UnixStream::from(fd);
    let peer = peer_credentials(stream.as_fd())?;
    authorize(peer, "parent")?;
    Ok(Conn { stream, peer })
}

// === impl Conn ===

impl Conn {
    /// Wraps an already connected stream (e.g. one half of a `UnixStream::pair`), authenticating
    /// its peer like [`Listener::accept`].
    pub fn from_stream(stream: UnixStream) -> Result<Self> {
        let peer = peer_credentials(stream.as_fd())?;
        authorize(peer, "connection")?;
        Ok(Self { stream, peer })
    }

    /// The process at the other end.
    pub fn peer(&self) -> PeerCred {
        self.peer
    }

    /// Sends `msg` with `fds` (at most 253) within `timeout`.
    pub fn send(
        &mut self,
        msg: &Envelope,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<()> {
        io::send_frame(&self.stream, msg, fds, timeout)
    }

    /// Receives one message and the fds that came with it within `timeout`. The fds are
    /// close-on-exec and exactly as many as the frame declared.
    pub fn recv(&mut self, timeout: Duration) -> Result<(Envelope, Vec<OwnedFd>)> {
        io::recv_frame(&self.stream, timeout)
    }

    /// Whether the peer closed its end without sending anything still unread: an orderly
    /// end of stream, looked at without consuming or waiting.
    pub(crate) fn closed_without_data(&self) -> bool {
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(recv(self.stream.as_raw_fd(), &mut [0u8; 1], flags), Ok(0))
    }

    /// Sends raw bytes as they are (no framing), for tests of a peer's error handling.
    #[doc(hidden)]
    pub fn send_raw(
        &mut self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<()> {
        io::send_bytes(&self.stream, bytes, fds, timeout)
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_policy() {
        let peer = |uid| PeerCred {
            pid: 1,
            uid,
            gid: 1,
        };
        assert!(peer(1000).allowed_for(1000));
        assert!(peer(0).allowed_for(1000));
        assert!(!peer(1001).allowed_for(1000));
        assert!(!peer(65534).allowed_for(0));
    }
}
