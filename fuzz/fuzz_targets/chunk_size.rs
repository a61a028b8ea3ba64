//! The chunk-size line of a chunked body (`http1::chunked::parse_chunk_size`), checked against
//! a plain restatement of RFC 9112 §7.1: hex digits (at most 15, so no overflow), optional
//! extensions after `;`, the line ending in CR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::http1::chunked::parse_chunk_size;

fn expected(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r")?;
    let size = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    let digits = std::str::from_utf8(size.trim_ascii()).ok()?;
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fuzz_target!(|line: &[u8]| {
    assert_eq!(parse_chunk_size(line).ok(), expected(line), "{line:?}");
});
