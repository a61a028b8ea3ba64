//! Field values: comma-separated tokens, `content-length`, decimal and hex numbers, and a field
//! written onto the wire.

/// Whether a comma-separated field value holds `token` (case-insensitive).
#[inline]
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A `content-length` value; a list of equal values ("42, 42") is one length.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let mut out: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// `v` in decimal, written at the end of `buf`.
pub fn itoa_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// `v` in lower-case hex (a chunk size), written at the end of `buf`.
pub fn hex_len(mut v: usize, buf: &mut [u8; 16]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = HEX[v & 0xf];
        v >>= 4;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// `name: value\r\n` onto `w`.
#[inline]
pub fn put_field(w: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    w.extend_from_slice(name);
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(has_token(b"Upgrade", b"upgrade"));
        assert!(!has_token(b"closed", b"close"));
        assert!(!has_token(b"", b"close"));
    }

    #[test]
    fn content_lengths() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"42, 42"), Some(42));
        assert_eq!(parse_content_length(b"42, 43"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn integers() {
        assert_eq!(itoa_u64(0, &mut [0; 20]), b"0");
        assert_eq!(itoa_u64(1234567, &mut [0; 20]), b"1234567");
        assert_eq!(itoa_u64(u64::MAX, &mut [0; 20]), b"18446744073709551615");
        assert_eq!(hex_len(0, &mut [0; 16]), b"0");
        assert_eq!(hex_len(0x1a2b, &mut [0; 16]), b"1a2b");
    }

    #[test]
    fn fields() {
        let mut w = Vec::new();
        put_field(&mut w, b"a", b"b");
        assert_eq!(w, b"a: b\r\n");
    }
}
