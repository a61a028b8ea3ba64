//! Baton's own HTTP/1.1 loop reading a client's request head: `http1::request::parse`, then
//! `http1::request::fill` on what it accepted, as `downstream::h1_loop` calls them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proxy_core::http1::names::NameCache;
use proxy_core::http1::request::{self, Parsed};

fuzz_target!(|data: &[u8]| {
    let mut spans = Vec::new();
    let Parsed::Head(head) = request::parse(data, &mut spans) else {
        return;
    };
    assert!(head.len <= data.len(), "a head longer than its buffer");
    assert!(head.fields <= spans.len() && head.fields <= request::MAX_SERVED_FIELDS);
    // The loop splits the head off its buffer and converts it.
    let raw = Bytes::copy_from_slice(&data[..head.len]);
    let mut names = NameCache::new(64);
    let mut req = http::Request::new(());
    if request::fill(&mut req, &head, &raw, &spans, &mut names, 4) {
        assert_eq!(req.method(), head.method);
        assert!(req.headers().len() <= head.fields);
    }
});
