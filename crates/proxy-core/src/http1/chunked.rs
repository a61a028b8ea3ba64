//! Chunked transfer coding (RFC 9112 §7.1): where a reader is in a chunked body, and the
//! chunk-size line.

/// A chunk-size line longer than this is malformed.
pub const MAX_CHUNK_LINE: usize = 1024;

/// Where a reader is in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// A chunk-size line that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunk-size line")]
pub struct BadChunk;

/// A chunk-size line without its `\n`: `1a;ext=v\r` -> 26.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, BadChunk> {
    let line = line.strip_suffix(b"\r").ok_or(BadChunk)?;
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(BadChunk);
    }
    let mut n = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(BadChunk),
        };
        n = n * 16 + u64::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a\r").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0\r").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"FF;name=value\r").unwrap(), 255);
        assert!(parse_chunk_size(b"\r").is_err());
        assert!(parse_chunk_size(b"1g\r").is_err());
        assert!(parse_chunk_size(b"10").is_err(), "bare LF");
        assert!(parse_chunk_size(b"1000000000000000\r").is_err(), "overflow");
    }
}
