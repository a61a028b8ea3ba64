//! Envoy's response flags: a small bitset, rendered as Envoy renders it (`-` when empty, else
//! the short names in Envoy's order, comma-joined: `UF,URX`).

use std::fmt;

/// The response flags of one request. Flags combine: a request may be, say, both retried to its
/// limit and failed to connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

/// Each flag with its short name, in the order Envoy renders them.
const NAMES: [(ResponseFlags, &str); 23] = [
    (ResponseFlags::FAILED_LOCAL_HEALTH_CHECK, "LH"),
    (ResponseFlags::NO_HEALTHY_UPSTREAM, "UH"),
    (ResponseFlags::UPSTREAM_REQUEST_TIMEOUT, "UT"),
    (ResponseFlags::LOCAL_RESET, "LR"),
    (ResponseFlags::UPSTREAM_REMOTE_RESET, "UR"),
    (ResponseFlags::UPSTREAM_CONNECTION_FAILURE, "UF"),
    (ResponseFlags::UPSTREAM_CONNECTION_TERMINATION, "UC"),
    (ResponseFlags::UPSTREAM_OVERFLOW, "UO"),
    (ResponseFlags::NO_ROUTE_FOUND, "NR"),
    (ResponseFlags::DELAY_INJECTED, "DI"),
    (ResponseFlags::FAULT_INJECTED, "FI"),
    (ResponseFlags::RATE_LIMITED, "RL"),
    (ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX"),
    (ResponseFlags::RATE_LIMIT_SERVICE_ERROR, "RLSE"),
    (ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
    (ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
    (ResponseFlags::STREAM_IDLE_TIMEOUT, "SI"),
    (ResponseFlags::INVALID_ENVOY_REQUEST_HEADERS, "IH"),
    (ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
    (ResponseFlags::UPSTREAM_MAX_STREAM_DURATION_REACHED, "UMSDR"),
    (ResponseFlags::DURATION_TIMEOUT, "DT"),
    (ResponseFlags::UPSTREAM_PROTOCOL_ERROR, "UPE"),
    (ResponseFlags::NO_CLUSTER_FOUND, "NC"),
];

// === impl ResponseFlags ===

impl ResponseFlags {
    pub const NONE: Self = Self(0);
    pub const FAILED_LOCAL_HEALTH_CHECK: Self = Self(1 << 0);
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1 << 1);
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 2);
    pub const LOCAL_RESET: Self = Self(1 << 3);
    pub const UPSTREAM_REMOTE_RESET: Self = Self(1 << 4);
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 5);
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 6);
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 7);
    pub const NO_ROUTE_FOUND: Self = Self(1 << 8);
    pub const DELAY_INJECTED: Self = Self(1 << 9);
    pub const FAULT_INJECTED: Self = Self(1 << 10);
    pub const RATE_LIMITED: Self = Self(1 << 11);
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: Self = Self(1 << 12);
    pub const RATE_LIMIT_SERVICE_ERROR: Self = Self(1 << 13);
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 14);
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 15);
    pub const STREAM_IDLE_TIMEOUT: Self = Self(1 << 16);
    pub const INVALID_ENVOY_REQUEST_HEADERS: Self = Self(1 << 17);
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self(1 << 18);
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: Self = Self(1 << 19);
    /// The request was not received in full within `request_timeout` (Envoy's `DT`).
    pub const DURATION_TIMEOUT: Self = Self(1 << 20);
    pub const UPSTREAM_PROTOCOL_ERROR: Self = Self(1 << 21);
    /// A `tcp_proxy` connection's cluster is not in the configuration, or a `cluster_header`
    /// names none (Envoy's `NC`).
    pub const NO_CLUSTER_FOUND: Self = Self(1 << 22);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flag Envoy writes as `short` (`UF`, `NR`, ...), if Baton sets it.
    pub fn from_short(short: &str) -> Option<Self> {
        NAMES.iter().find(|(_, n)| *n == short).map(|(f, _)| *f)
    }

    /// Whether any flag of `other` is set.
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_envoy() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(ResponseFlags::NO_ROUTE_FOUND.to_string(), "NR");
        let both = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
            | ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
        assert_eq!(
            both.to_string(),
            "UF,URX",
            "Envoy's order, not insertion order"
        );
        let mut f = ResponseFlags::NONE;
        f.insert(ResponseFlags::STREAM_IDLE_TIMEOUT);
        f.insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        assert_eq!(f.to_string(), "DC,SI");
        assert!(f.contains(ResponseFlags::STREAM_IDLE_TIMEOUT));
        assert!(!f.contains(ResponseFlags::NO_ROUTE_FOUND));
    }

    #[test]
    fn every_flag_is_one_bit_with_one_name() {
        let mut seen = 0u32;
        for (flag, name) in NAMES {
            assert_eq!(flag.0.count_ones(), 1, "{name}");
            assert_eq!(seen & flag.0, 0, "{name} twice");
            seen |= flag.0;
            assert_eq!(flag.to_string(), name);
        }
    }
}
