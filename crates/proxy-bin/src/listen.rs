//! Binding listen sockets. The data plane is handed sockets that are already bound; this is the
//! one place that decides their options (and, with the hot restart issue, where inherited ones
//! come from).

use std::net::SocketAddr;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues per listen socket (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Bind a TCP listen socket on `addr` as Envoy does: `SO_REUSEADDR`, IPv6 sockets IPv6-only,
/// and with `freebind` (a listener's `freebind: true`) `IP_FREEBIND` / `IPV6_FREEBIND`, so an
/// address not (yet) assigned to this host can be bound.
pub fn bind_tcp(addr: SocketAddr, freebind: bool) -> anyhow::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .with_context(|| format!("could not create a socket for {addr}"))?;
    socket
        .set_reuse_address(true)
        .with_context(|| format!("could not set SO_REUSEADDR for {addr}"))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .with_context(|| format!("could not set IPV6_V6ONLY for {addr}"))?;
    }
    if freebind {
        let set = if addr.is_ipv6() {
            socket.set_freebind_ipv6(true)
        } else {
            socket.set_freebind(true)
        };
        set.with_context(|| format!("could not set IP_FREEBIND for {addr}"))?;
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("could not bind {addr}"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("could not listen on {addr}"))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freebind_is_set_only_when_asked() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for want in [true, false] {
            let l = bind_tcp(addr, want).unwrap();
            assert_eq!(socket2::SockRef::from(&l).freebind().unwrap(), want);
        }
        let l = bind_tcp("[::1]:0".parse().unwrap(), true);
        // Hosts without IPv6 cannot bind ::1 at all; where they can, the option is set.
        if let Ok(l) = l {
            assert!(socket2::SockRef::from(&l).freebind_ipv6().unwrap());
        }
    }
}
