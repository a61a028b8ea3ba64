//! `envoy.filters.listener.original_dst`: the address a connection was sent to before netfilter
//! redirected it (`REDIRECT`/`DNAT`), read from the kernel's connection tracking with
//! `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6).
//!
//! As in Envoy, a connection the kernel knows nothing about (no conntrack entry: it was not
//! redirected, or connection tracking is not loaded) keeps its local address, and is not
//! "restored": an `ORIGINAL_DST` cluster then has no host for it.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The connection's original destination, if the kernel has one for it. `local` (its own
/// local address) chooses the address family asked for.
pub fn lookup(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = if local.is_ipv4() {
        sock.original_dst()
    } else {
        sock.original_dst_ipv6()
    };
    addr.ok()?.as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that was never redirected has no original destination to restore (the
    /// getsockopt fails with ENOENT without a conntrack entry, or reports the address the
    /// connection already has when connection tracking sees every connection).
    #[tokio::test]
    async fn a_connection_not_redirected_keeps_its_own_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let got = lookup(&s, s.local_addr().unwrap());
        assert!(got.is_none() || got == Some(addr), "{got:?}");
    }
}
