//! Field names as a peer sent them, remembered: a peer sends the same names in the same case
//! message after message, and comparing bytes is cheaper than parsing a name. Each name comes
//! with what it means to the codec ([`Kind`]), worked out once.

use http::header::{self, HeaderName};

use crate::headers::{KEEP_ALIVE, PROXY_CONNECTION};

/// What a field name means to framing, keep-alive and hop-by-hop handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Keep-Alive, Proxy-Connection, Upgrade: hop-by-hop, nothing more.
    Hop,
    /// Hop-by-hop unless its value is `trailers`.
    Te,
    Other,
}

/// Names remembered, up to a bound.
#[derive(Debug)]
pub struct NameCache {
    entries: Vec<(Box<[u8]>, HeaderName, Kind)>,
    cap: usize,
}

// === impl Kind ===

impl Kind {
    pub fn of(name: &HeaderName) -> Self {
        if name == header::CONTENT_LENGTH {
            Kind::ContentLength
        } else if name == header::TRANSFER_ENCODING {
            Kind::TransferEncoding
        } else if name == header::CONNECTION {
            Kind::Connection
        } else if name == KEEP_ALIVE || name == PROXY_CONNECTION || name == header::UPGRADE {
            Kind::Hop
        } else if name == header::TE {
            Kind::Te
        } else {
            Kind::Other
        }
    }
}

// === impl NameCache ===

impl NameCache {
    /// A cache of at most `cap` names.
    pub const fn new(cap: usize) -> Self {
        Self {
            entries: Vec::new(),
            cap,
        }
    }

    /// `raw`, the `i`-th field of a head, as a field name (`None`: not a valid name). Entry
    /// `i` is tried first: a peer sends its fields in the same order every time.
    #[inline]
    pub fn get(&mut self, i: usize, raw: &[u8]) -> Option<(HeaderName, Kind)> {
        match self.entries.get(i) {
            Some(entry) if *entry.0 == *raw => Some((entry.1.clone(), entry.2)),
            _ => self.search(raw),
        }
    }

    /// `raw` as a field name, from anywhere in the cache (for peers whose fields come in no
    /// fixed order: the many clients of a worker thread).
    #[inline]
    pub fn find(&mut self, raw: &[u8]) -> Option<HeaderName> {
        match self.entries.iter().find(|(r, _, _)| **r == *raw) {
            Some((_, name, _)) => Some(name.clone()),
            None => self.search(raw).map(|(name, _)| name),
        }
    }

    /// `raw` anywhere in the cache, or parsed (and remembered while there is room).
    #[inline(never)]
    fn search(&mut self, raw: &[u8]) -> Option<(HeaderName, Kind)> {
        if let Some((_, name, kind)) = self.entries.iter().find(|(r, _, _)| **r == *raw) {
            return Some((name.clone(), *kind));
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        let kind = Kind::of(&name);
        if self.entries.len() < self.cap {
            self.entries.push((raw.into(), name.clone(), kind));
        }
        Some((name, kind))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cached_as_sent() {
        let mut cache = NameCache::new(24);
        let a = cache.get(0, b"Content-Type").expect("valid");
        assert_eq!(a, (header::CONTENT_TYPE, Kind::Other));
        assert_eq!(cache.get(0, b"Content-Type"), Some(a.clone()));
        assert_eq!(cache.get(5, b"Content-Type"), Some(a));
        assert_eq!(
            cache.get(0, b"content-type"),
            Some((header::CONTENT_TYPE, Kind::Other))
        );
        assert_eq!(cache.len(), 2, "one entry per spelling");
        assert_eq!(cache.get(0, b"bad name"), None);
        for i in 0..100 {
            let raw = format!("x-custom-{i}");
            let (name, kind) = cache.get(i, raw.as_bytes()).expect("valid");
            assert_eq!((name.as_str(), kind), (raw.as_str(), Kind::Other));
        }
        assert_eq!(cache.len(), 24, "bounded");
    }

    #[test]
    fn names_are_classified() {
        let mut cache = NameCache::new(24);
        let kinds = [
            (&b"Content-Length"[..], Kind::ContentLength),
            (b"transfer-encoding", Kind::TransferEncoding),
            (b"Connection", Kind::Connection),
            (b"Keep-Alive", Kind::Hop),
            (b"proxy-connection", Kind::Hop),
            (b"Upgrade", Kind::Hop),
            (b"TE", Kind::Te),
            (b"Trailer", Kind::Other),
            (b"x-connection", Kind::Other),
        ];
        for round in 0..2 {
            for (i, (raw, kind)) in kinds.iter().enumerate() {
                let got = cache.get(i, raw).map(|(_, k)| k);
                assert_eq!(got, Some(*kind), "{raw:?}, round {round}");
            }
        }
    }
}
