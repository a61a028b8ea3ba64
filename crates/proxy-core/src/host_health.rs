//! A host's health as Envoy's admin shows it: the reasons a host is out of load balancing, as a
//! small bitset held in one atomic per host, so the checker writes it and anyone reads it
//! without a lock.

use std::sync::atomic::{AtomicU8, Ordering};

/// Why a host is not healthy; empty means healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthFlags(u8);

/// A host's [`HealthFlags`], shared between the health checker (the only writer) and readers.
#[derive(Debug, Default)]
pub struct AtomicHealth(AtomicU8);

// === impl HealthFlags ===

impl HealthFlags {
    pub const HEALTHY: Self = Self(0);
    /// Envoy's `FAILED_ACTIVE_HC`: active health checking took the host out (or has not yet
    /// let it in).
    pub const FAILED_ACTIVE_HC: Self = Self(1);
    /// Envoy's `ACTIVE_HC_TIMEOUT`: the last failed check timed out.
    pub const ACTIVE_HC_TIMEOUT: Self = Self(2);
    /// Envoy's `FAILED_OUTLIER_CHECK`: outlier detection ejected the host.
    pub const FAILED_OUTLIER_CHECK: Self = Self(4);

    /// In Envoy's order, with the words its admin prints.
    const NAMES: [(Self, &'static str); 3] = [
        (Self::FAILED_ACTIVE_HC, "/failed_active_hc"),
        (Self::FAILED_OUTLIER_CHECK, "/failed_outlier_check"),
        (Self::ACTIVE_HC_TIMEOUT, "/active_hc_timeout"),
    ];

    /// Whether load balancing may use the host.
    pub fn is_healthy(self) -> bool {
        !self.contains(Self::FAILED_ACTIVE_HC) && !self.contains(Self::FAILED_OUTLIER_CHECK)
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    #[must_use]
    pub fn with(self, other: Self, on: bool) -> Self {
        if on {
            Self(self.0 | other.0)
        } else {
            Self(self.0 & !other.0)
        }
    }

    /// Envoy's `health_flags` text: `healthy`, or every flag set (`/failed_active_hc/…`).
    pub fn render(self) -> String {
        if self == Self::HEALTHY {
            return "healthy".to_owned();
        }
        Self::NAMES
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
            .collect()
    }
}

// === impl AtomicHealth ===

impl AtomicHealth {
    pub fn new(flags: HealthFlags) -> Self {
        Self(AtomicU8::new(flags.0))
    }

    pub fn load(&self) -> HealthFlags {
        HealthFlags(self.0.load(Ordering::Acquire))
    }

    pub fn store(&self, flags: HealthFlags) {
        self.0.store(flags.0, Ordering::Release);
    }

    /// Set (`on`) or clear `flag`, leaving the others as they are: the health checker and
    /// outlier detection each own their own flags of one host.
    pub fn set(&self, flag: HealthFlags, on: bool) {
        if on {
            self.0.fetch_or(flag.0, Ordering::AcqRel);
        } else {
            self.0.fetch_and(!flag.0, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HealthFlags;

    #[test]
    fn renders_envoy_words() {
        assert_eq!(HealthFlags::HEALTHY.render(), "healthy");
        let failed = HealthFlags::HEALTHY.with(HealthFlags::FAILED_ACTIVE_HC, true);
        assert_eq!(failed.render(), "/failed_active_hc");
        assert!(!failed.is_healthy());
        let timed_out = failed.with(HealthFlags::ACTIVE_HC_TIMEOUT, true);
        assert_eq!(timed_out.render(), "/failed_active_hc/active_hc_timeout");
        assert!(timed_out
            .with(HealthFlags::FAILED_ACTIVE_HC, false)
            .is_healthy());
        let both = failed.with(HealthFlags::FAILED_OUTLIER_CHECK, true);
        assert_eq!(both.render(), "/failed_active_hc/failed_outlier_check");
        assert!(!both.with(HealthFlags::FAILED_ACTIVE_HC, false).is_healthy());
    }
}
