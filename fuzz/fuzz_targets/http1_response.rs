//! An upstream's response head, read by Baton's own client: `http1::response::parse`, then
//! `http1::response::headers` on a final head. The first input byte says whether the request was
//! HEAD; the rest is the head.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proxy_core::http1::names::NameCache;
use proxy_core::http1::response::{self, Parsed};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let mut names = NameCache::new(64);
    let mut fields = Vec::new();
    match response::parse(buf, head_request, &mut names, &mut fields) {
        Ok(Parsed::Final(head)) => {
            assert!(head.len <= buf.len(), "a head longer than its buffer");
            let raw = Bytes::copy_from_slice(&buf[..head.len]);
            let _ = response::headers(&head, &raw, &mut fields, 4);
        }
        Ok(Parsed::Informational(n)) => assert!(n <= buf.len()),
        Ok(Parsed::Partial) | Err(_) => {}
    }
});
