//! The only module with `unsafe`: moving frames and their fds over a connected Unix stream socket
//! with `sendmsg`/`recvmsg` and SCM_RIGHTS.
//!
//! Received fds are opened close-on-exec (`MSG_CMSG_CLOEXEC`) and wrapped in [`OwnedFd`] the
//! moment the kernel hands them over, so every error path closes them. Truncated ancillary data
//! (`MSG_CTRUNC`) and a count that differs from the frame header are errors, never ignored.
//! Every call is bounded by a deadline applied with SO_RCVTIMEO/SO_SNDTIMEO.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};
use crate::frame::{self, FrameHeader, HEADER_LEN, MAX_FDS_PER_FRAME};
use crate::pb::Envelope;

/// Sends one frame (`msg` with `fds`) within `timeout`.
pub(crate) fn send_frame(
    stream: &UnixStream,
    msg: &Envelope,
    fds: &[BorrowedFd<'_>],
    timeout: Duration,
) -> Result<()> {
    let bytes = frame::encode(msg, fds.len())?;
    send_bytes(stream, &bytes, fds, timeout)
}

/// Sends `bytes`; `fds` ride with the first byte. Also used by tests to send raw frames.
pub(crate) fn send_bytes(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    timeout: Duration,
) -> Result<()> {
    const OP: &str = "send a frame";
    let deadline = Deadline::new(timeout);
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut sent = 0;
    while sent < bytes.len() {
        let remaining = deadline.remaining(OP)?;
        stream
            .set_write_timeout(Some(remaining))
            .map_err(|e| Error::io("set the send timeout", e))?;
        let iov = [IoSlice::new(&bytes[sent..])];
        // The fds go with the first bytes only; once any byte is out, they have been sent.
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
            &rights
        } else {
            &[]
        };
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err(Error::PeerClosed { mid_frame: true }),
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Err(deadline.timeout(OP)),
            Err(e) => return Err(Error::errno(OP, e)),
        }
    }
    Ok(())
}

/// Receives one frame within `timeout`: its message and exactly the fds its header declares.
pub(crate) fn recv_frame(
    stream: &UnixStream,
    timeout: Duration,
) -> Result<(Envelope, Vec<OwnedFd>)> {
    let deadline = Deadline::new(timeout);
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER_LEN];
    read_exact(stream, &mut header, &mut fds, &deadline, true)?;
    let header = FrameHeader::decode(&header)?;
    let mut payload = vec![0u8; header.payload_len];
    read_exact(stream, &mut payload, &mut fds, &deadline, false)?;
    frame::check_fd_count(&header, fds.len())?;
    let msg = frame::decode_payload(&payload)?;
    Ok((msg, fds))
}

/// Fills `buf` from the socket, collecting any fds that arrive into `fds`. Reads never go past
/// `buf`, so they never reach into the next frame (whose fds stay queued with its first byte).
fn read_exact(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: &Deadline,
    frame_start: bool,
) -> Result<()> {
    const OP: &str = "receive a frame";
    // Room for one full SCM_RIGHTS message: the kernel never merges two senders' fds into one read.
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS_PER_FRAME]);
    let mut filled = 0;
    while filled < buf.len() {
        let remaining = deadline.remaining(OP)?;
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| Error::io("set the receive timeout", e))?;
        let mut iov = [IoSliceMut::new(&mut buf[filled..])];
        let (bytes, truncated) = match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                // With MSG_CTRUNC nix refuses to walk the partial control buffer, so fds the kernel
                // installed before truncating cannot be taken (they stay open until exit); the
                // error below drops the connection. The buffer holds SCM_MAX_FD fds and we never
                // ask for credentials or security labels, so a Linux peer cannot cause this.
                // Otherwise take ownership of every fd right away.
                if let Ok(cmsgs) = msg.cmsgs() {
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(raw) = cmsg {
                            for fd in raw {
                                // SAFETY: the kernel just installed `fd` in this process's table
                                // for this message (SCM_RIGHTS); nothing else refers to it, so
                                // this OwnedFd is its only owner and closes it exactly once.
                                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                    }
                }
                (msg.bytes, truncated)
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Err(deadline.timeout(OP)),
            Err(e) => return Err(Error::errno(OP, e)),
        };
        if truncated {
            return Err(Error::ControlTruncated);
        }
        if fds.len() > MAX_FDS_PER_FRAME {
            return Err(Error::TooManyFds {
                count: fds.len(),
                max: MAX_FDS_PER_FRAME,
            });
        }
        if bytes == 0 {
            return Err(Error::PeerClosed {
                mid_frame: !frame_start || filled > 0,
            });
        }
        filled += bytes;
    }
    Ok(())
}

/// A point in time a whole call must finish by.
struct Deadline {
    start: Instant,
    timeout: Duration,
}

// === impl Deadline ===

impl Deadline {
    fn new(timeout: Duration) -> Self {
        Self {
            start: Instant::now(),
            timeout,
        }
    }

    /// Time left, never zero (SO_RCVTIMEO of zero means "forever").
    fn remaining(&self, op: &'static str) -> Result<Duration> {
        let left = self.timeout.saturating_sub(self.start.elapsed());
        if left < Duration::from_micros(1) {
            return Err(self.timeout(op));
        }
        Ok(left)
    }

    fn timeout(&self, op: &'static str) -> Error {
        Error::Timeout {
            op,
            after: self.timeout,
        }
    }
}
