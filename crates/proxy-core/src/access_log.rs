//! Access logs: Envoy's text format strings (command operators such as `%REQ(:PATH)%`), parsed
//! once into a [`Format`] and rendered per request from a [`Record`], and the
//! [`AccessLogWriter`] that hands finished lines to one background thread per sink so a request
//! never waits on disk.

mod format;
mod strftime;
mod writer;

pub use format::{Format, FormatError, JsonKind, Record, ENVOY_DEFAULT_FORMAT};
pub use writer::{AccessLogError, AccessLogWriter, CHANNEL_CAPACITY};

#[cfg(test)]
mod tests;
