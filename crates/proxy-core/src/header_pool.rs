//! Header maps reused from one request to the next on a worker thread.
//!
//! A `HeaderMap` is two heap arrays; building one per request head and dropping it once the
//! message has been written is two allocations and two frees each way. Baton's own HTTP/1.1
//! loops give the maps of the messages they are done with back here (emptied, capacity kept)
//! and take one for the next head they parse.

use std::cell::RefCell;

use http::HeaderMap;

/// Room every new map is made with, so that a map taken back fits most messages as it is.
const SMALLEST: usize = 16;
/// Maps kept per thread.
const KEPT: usize = 64;
/// A map that grew past this many fields is dropped rather than kept.
const LARGEST_KEPT: usize = 128;

thread_local! {
    static POOL: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `fields` fields.
pub(crate) fn take(fields: usize) -> HeaderMap {
    let reused = POOL.with(|p| p.borrow_mut().pop());
    match reused {
        Some(mut m) => {
            if m.capacity() < fields {
                m.reserve(fields);
            }
            m
        }
        None => HeaderMap::with_capacity(fields.max(SMALLEST)),
    }
}

/// Give a map back for a later [`take`].
pub(crate) fn give(mut map: HeaderMap) {
    if map.capacity() > LARGEST_KEPT {
        return;
    }
    map.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEPT {
            p.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HOST;

    #[test]
    fn maps_come_back_empty_with_their_room() {
        let mut m = take(8);
        assert!(m.capacity() >= 8);
        m.insert(HOST, "x".parse().unwrap());
        let cap = m.capacity();
        give(m);
        let again = take(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
        let mut big = HeaderMap::with_capacity(1000);
        big.insert(HOST, "x".parse().unwrap());
        give(big);
        assert!(take(1).capacity() < 1000, "an oversized map is not kept");
    }
}
