//! Framing, sans-IO: a frame is a fixed 12-byte header followed by a protobuf [`Envelope`].
//!
//! Header layout (big-endian):
//!
//! | bytes | field                                                       |
//! |-------|-------------------------------------------------------------|
//! | 0..4  | magic `BTHR`                                                |
//! | 4     | frame layout version ([`FRAME_VERSION`])                    |
//! | 5     | reserved, 0                                                 |
//! | 6..8  | number of fds sent with the frame (SCM_RIGHTS), ≤ 253       |
//! | 8..12 | payload length in bytes, ≤ [`MAX_PAYLOAD`]                  |
//!
//! Pure functions over bytes: no sockets, no clock. The IO module reads a header, then exactly the
//! payload it declares, and checks the fds that arrived against the declared count.

use prost::Message as _;

use crate::error::{Error, Result};
use crate::pb::Envelope;

/// First bytes of every frame.
pub const MAGIC: [u8; 4] = *b"BTHR";
/// Version of the header layout above.
pub const FRAME_VERSION: u8 = 1;
/// Size of the frame header.
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted or sent.
pub const MAX_PAYLOAD: usize = 4 << 20;
/// Most fds one frame may carry: Linux's SCM_MAX_FD.
pub const MAX_FDS_PER_FRAME: usize = 253;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Fds that accompany the frame.
    pub fd_count: usize,
    /// Bytes of payload after the header.
    pub payload_len: usize,
}

// === impl FrameHeader ===

impl FrameHeader {
    /// Parses and checks a header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(Error::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        };
        let magic = [header[0], header[1], header[2], header[3]];
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        if header[4] != FRAME_VERSION {
            return Err(Error::FrameVersion {
                found: header[4],
                supported: FRAME_VERSION,
            });
        }
        if header[5] != 0 {
            return Err(Error::ReservedBits { found: header[5] });
        }
        let fd_count = usize::from(u16::from_be_bytes([header[6], header[7]]));
        if fd_count > MAX_FDS_PER_FRAME {
            return Err(Error::TooManyFds {
                count: fd_count,
                max: MAX_FDS_PER_FRAME,
            });
        }
        let payload_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let payload_len = usize::try_from(payload_len).unwrap_or(usize::MAX);
        if payload_len > MAX_PAYLOAD {
            return Err(Error::FrameTooLarge {
                len: payload_len,
                max: MAX_PAYLOAD,
            });
        }
        Ok(Self {
            fd_count,
            payload_len,
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> Result<[u8; HEADER_LEN]> {
        let fd_count = u16::try_from(self.fd_count)
            .ok()
            .filter(|n| usize::from(*n) <= MAX_FDS_PER_FRAME)
            .ok_or(Error::TooManyFds {
                count: self.fd_count,
                max: MAX_FDS_PER_FRAME,
            })?;
        let payload_len = u32::try_from(self.payload_len)
            .ok()
            .filter(|_| self.payload_len <= MAX_PAYLOAD)
            .ok_or(Error::FrameTooLarge {
                len: self.payload_len,
                max: MAX_PAYLOAD,
            })?;
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = FRAME_VERSION;
        out[6..8].copy_from_slice(&fd_count.to_be_bytes());
        out[8..12].copy_from_slice(&payload_len.to_be_bytes());
        Ok(out)
    }
}

/// Encodes `msg` as a complete frame that declares `fd_count` accompanying fds.
pub fn encode(msg: &Envelope, fd_count: usize) -> Result<Vec<u8>> {
    let payload_len = msg.encoded_len();
    let header = FrameHeader {
        fd_count,
        payload_len,
    }
    .encode()?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload_len);
    out.extend_from_slice(&header);
    msg.encode(&mut out).map_err(|e| Error::FrameTooLarge {
        len: e.required_capacity(),
        max: MAX_PAYLOAD,
    })?;
    Ok(out)
}

/// Decodes a payload (the bytes after a header). An envelope whose body this build does not know
/// decodes with `body: None`; answering it is the caller's business.
pub fn decode_payload(payload: &[u8]) -> Result<Envelope> {
    Envelope::decode(payload).map_err(|source| Error::Decode { source })
}

/// Decodes one complete frame that arrived with `fds_received` fds. `bytes` must hold exactly one
/// frame.
pub fn decode(bytes: &[u8], fds_received: usize) -> Result<Envelope> {
    let header = FrameHeader::decode(bytes)?;
    let needed = HEADER_LEN + header.payload_len;
    if bytes.len() < needed {
        return Err(Error::Truncated {
            needed,
            available: bytes.len(),
        });
    }
    if bytes.len() > needed {
        return Err(Error::TrailingBytes {
            extra: bytes.len() - needed,
        });
    }
    check_fd_count(&header, fds_received)?;
    decode_payload(&bytes[HEADER_LEN..])
}

/// Checks that the fds received with a frame are the ones its header declares.
pub fn check_fd_count(header: &FrameHeader, fds_received: usize) -> Result<()> {
    if header.fd_count != fds_received {
        return Err(Error::FdCountMismatch {
            declared: header.fd_count,
            received: fds_received,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{envelope::Body, StatusReply};

    fn status() -> Envelope {
        Envelope::new(
            7,
            Body::StatusReply(StatusReply {
                ok: false,
                error: "nope".into(),
            }),
        )
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&status(), 3).unwrap();
        assert_eq!(&bytes[..4], b"BTHR");
        let header = FrameHeader::decode(&bytes).unwrap();
        assert_eq!(header.fd_count, 3);
        assert_eq!(header.payload_len, bytes.len() - HEADER_LEN);
        assert_eq!(decode(&bytes, 3).unwrap(), status());
    }

    #[test]
    fn fd_count_mismatch_is_typed() {
        let bytes = encode(&status(), 2).unwrap();
        assert!(matches!(
            decode(&bytes, 1),
            Err(Error::FdCountMismatch {
                declared: 2,
                received: 1
            })
        ));
    }

    #[test]
    fn too_many_fds_refused_on_both_sides() {
        assert!(matches!(
            encode(&status(), 254),
            Err(Error::TooManyFds { count: 254, .. })
        ));
        let mut bytes = encode(&status(), 0).unwrap();
        bytes[6..8].copy_from_slice(&254u16.to_be_bytes());
        assert!(matches!(
            FrameHeader::decode(&bytes),
            Err(Error::TooManyFds { count: 254, .. })
        ));
    }

    #[test]
    fn header_checks() {
        let good = encode(&status(), 0).unwrap();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(decode(&bad, 0), Err(Error::BadMagic { .. })));
        let mut bad = good.clone();
        bad[4] = 2;
        assert!(matches!(
            decode(&bad, 0),
            Err(Error::FrameVersion { found: 2, .. })
        ));
        let mut bad = good.clone();
        bad[5] = 1;
        assert!(matches!(decode(&bad, 0), Err(Error::ReservedBits { .. })));
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&bad, 0), Err(Error::FrameTooLarge { .. })));
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            decode(&bad, 0),
            Err(Error::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let good = encode(&status(), 0).unwrap();
        for len in 0..good.len() {
            assert!(decode(&good[..len], 0).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn empty_envelope_decodes_without_body() {
        let bytes = encode(&Envelope { id: 9, body: None }, 0).unwrap();
        let msg = decode(&bytes, 0).unwrap();
        assert_eq!(msg.id, 9);
        assert_eq!(msg.kind(), "none");
    }
}
