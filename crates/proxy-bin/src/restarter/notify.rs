//! sd_notify for `Type=notify` units: datagrams to `$NOTIFY_SOCKET` (a filesystem path, or a
//! leading `@` for the abstract namespace), as systemd's notify protocol defines them. Best
//! effort: without `$NOTIFY_SOCKET` (not under systemd) every call is a no-op, and a send that
//! fails is logged, never fatal.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

/// The connection to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, UnixAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a no-op notifier when it is unset or unusable.
    pub fn from_env() -> Self {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self { target: None };
        };
        let value = value.to_string_lossy().into_owned();
        match Self::to(&value) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(notify_socket = %value, "could not use NOTIFY_SOCKET: {e}");
                Self { target: None }
            }
        }
    }

    /// Notifies the socket at `address` (`@name` for an abstract one).
    pub fn to(address: &str) -> std::io::Result<Self> {
        let addr = match address.strip_prefix('@') {
            Some(name) => UnixAddr::from_abstract_name(name.as_bytes())?,
            None => UnixAddr::from_pathname(address)?,
        };
        let sock = UnixDatagram::unbound()?;
        Ok(Self {
            target: Some((sock, addr)),
        })
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends the `KEY=value` lines of `fields` in one datagram.
    pub fn send(&self, fields: &[(&str, String)]) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        let msg = message(fields);
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
            tracing::warn!("could not notify the service manager: {e}");
        }
    }
}

/// `KEY=value\n` lines; values are made single-line (STATUS= must be one line).
pub fn message(fields: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        out.push_str(key);
        out.push('=');
        out.push_str(&value.replace(['\n', '\r'], " "));
        out.push('\n');
    }
    out
}

/// CLOCK_MONOTONIC in microseconds, for `MONOTONIC_USEC=` alongside `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
        let micros = u64::try_from(ts.tv_nsec() / 1_000).unwrap_or(0);
        secs.saturating_mul(1_000_000).saturating_add(micros)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_an_abstract_socket() {
        let name = format!("baton_notify_test_{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let server = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = Notifier::to(&format!("@{name}")).expect("notifier");
        assert!(n.enabled());
        n.send(&[("READY", "1".into()), ("STATUS", "a\nb".into())]);
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=a b\n");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}
