//! Drain per protocol across a restart.
