//! Binding listen sockets. The data plane is handed sockets that are already bound; this is the
//! one place that decides their options (and, with the hot restart issue, where inherited ones
//! come from).

use std::net::SocketAddr;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues per listen socket (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Bind a TCP listen socket on `addr` as Envoy does: `SO_REUSEADDR`, IPv6 sockets IPv6-only.
pub fn bind_tcp(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
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
    socket
        .bind(&addr.into())
        .with_context(|| format!("could not bind {addr}"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("could not listen on {addr}"))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
