//! The boundary between the restart RPC's messages and Baton's typed values: socket addresses
//! travel as strings in the protobuf messages and are parsed here, once, when a message
//! arrives (and printed here when one leaves). Nothing past this module sees an address string.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hotrestart_rpc::pb::{
    ChainIdentity, ConnectionKind, HostHealth, ListenSocketsRequest, MovedConnection,
    SocketManifest, SocketType, WantedSocket,
};
use proxy_core::handover;

/// The listen sockets a child asks for, as the parent reads the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Every socket the parent has.
    All,
    /// The sockets at these addresses (an entry that is not an address matches nothing).
    Addresses(HashSet<SocketAddr>),
}

// === impl Wanted ===

impl Wanted {
    /// The child's request for the sockets at `addrs`.
    pub fn request(addrs: impl IntoIterator<Item = SocketAddr>) -> ListenSocketsRequest {
        ListenSocketsRequest {
            wanted: addrs
                .into_iter()
                .map(|addr| WantedSocket {
                    address: addr.to_string(),
                    socket_type: SocketType::Tcp as i32,
                })
                .collect(),
            all: false,
        }
    }

    /// The parent's reading of a request.
    pub fn from_request(request: &ListenSocketsRequest) -> Self {
        if request.all {
            return Wanted::All;
        }
        Wanted::Addresses(
            request
                .wanted
                .iter()
                .filter_map(|w| w.address.parse().ok())
                .collect(),
        )
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        match self {
            Wanted::All => true,
            Wanted::Addresses(addrs) => addrs.contains(addr),
        }
    }
}

/// The manifest entry of a TCP listen socket lent to the child.
pub fn manifest(addr: SocketAddr, name: &str) -> SocketManifest {
    SocketManifest {
        address: addr.to_string(),
        socket_type: SocketType::Tcp as i32,
        worker_index: 0,
        options: None,
        name: name.to_owned(),
    }
}

/// A listen socket the parent sent, with the address its manifest names.
pub fn inherited(
    manifest: &SocketManifest,
    fd: OwnedFd,
) -> anyhow::Result<(SocketAddr, TcpListener)> {
    let addr: SocketAddr = manifest.address.parse().with_context(|| {
        format!(
            "the parent sent a socket with an unusable address {:?}",
            manifest.address
        )
    })?;
    if manifest.socket_type != SocketType::Tcp as i32 {
        bail!("the parent sent a non-TCP socket for {addr}");
    }
    Ok((addr, TcpListener::from(fd)))
}

/// The parent's host health as it goes in its restart state.
pub fn host_health(hosts: &[proxy_core::cluster::HostHealth]) -> Vec<HostHealth> {
    hosts
        .iter()
        .map(|h| HostHealth {
            cluster: h.cluster.clone(),
            address: h.addr.to_string(),
            failed_active_hc: h.failed_active_hc,
            ejected_for_ms: u64::try_from(h.ejected_for.as_millis()).unwrap_or(u64::MAX),
            ejections: h.ejections,
        })
        .collect()
}

/// The parent's host health as the child reads it (an entry whose address does not parse is
/// left out).
pub fn inherited_health(
    state: &hotrestart_rpc::ParentState,
) -> Vec<proxy_core::cluster::HostHealth> {
    state
        .hosts
        .iter()
        .filter_map(|h| {
            Some(proxy_core::cluster::HostHealth {
                cluster: h.cluster.clone(),
                addr: h.address.parse().ok()?,
                failed_active_hc: h.failed_active_hc,
                ejected_for: Duration::from_millis(h.ejected_for_ms),
                ejections: h.ejections,
            })
        })
        .collect()
}

/// A live connection as the parent offers it.
pub fn moved_connection(c: &handover::Leaving) -> MovedConnection {
    let (upstream, cluster) = c
        .upstream
        .as_ref()
        .map(|(a, n)| (a.to_string(), n.clone()))
        .unwrap_or_default();
    MovedConnection {
        kind: match c.kind {
            handover::Kind::Http1 => ConnectionKind::Http1,
            handover::Kind::Tunnel => ConnectionKind::Tunnel,
            handover::Kind::TcpProxy => ConnectionKind::TcpProxy,
        }
        .into(),
        listener_address: c.listener.to_string(),
        peer_address: c.peer.to_string(),
        read_buf: c.read_buf.to_vec(),
        idle_ms: u64::try_from(c.idle.as_millis()).unwrap_or(u64::MAX),
        requests: c.requests,
        upstream_address: upstream,
        cluster,
        chain: Some(ChainIdentity {
            name: c.chain.name.clone(),
            digest: c.chain.digest.to_vec(),
        }),
    }
}

/// A connection the child received with its `fds`; `None` for one it cannot serve (an unknown
/// kind, listener address or chain digest). Without a chain identity (an older parent), the
/// connection names no chain: only a listener with one chain can serve it.
pub fn arriving_connection(c: &MovedConnection, fds: Vec<OwnedFd>) -> Option<handover::Arriving> {
    let kind = match c.kind() {
        ConnectionKind::Http1 => handover::Kind::Http1,
        ConnectionKind::Tunnel => handover::Kind::Tunnel,
        ConnectionKind::TcpProxy => handover::Kind::TcpProxy,
        ConnectionKind::Unspecified => return None,
    };
    let listener: SocketAddr = c.listener_address.parse().ok()?;
    let chain = match &c.chain {
        None => None,
        Some(id) => Some(handover::ChainId {
            name: id.name.clone(),
            digest: id.digest.as_slice().try_into().ok()?,
        }),
    };
    Some(handover::Arriving {
        kind,
        listener,
        read_buf: bytes::Bytes::copy_from_slice(&c.read_buf),
        idle: Duration::from_millis(c.idle_ms),
        requests: c.requests,
        cluster: c.cluster.clone(),
        chain,
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_addresses_round_trip_through_the_request() -> Result<(), std::net::AddrParseError> {
        let a: SocketAddr = "127.0.0.1:10000".parse()?;
        let b: SocketAddr = "[::1]:9901".parse()?;
        let mut request = Wanted::request([a, b]);
        assert_eq!(request.wanted[1].address, "[::1]:9901");
        request.wanted.push(WantedSocket {
            address: "not an address".to_owned(),
            socket_type: SocketType::Tcp as i32,
        });
        let wanted = Wanted::from_request(&request);
        assert_eq!(wanted, Wanted::Addresses([a, b].into_iter().collect()));
        assert!(wanted.contains(&b));
        assert!(!wanted.contains(&"127.0.0.1:1".parse()?));
        request.all = true;
        assert!(Wanted::from_request(&request).contains(&"127.0.0.1:1".parse()?));
        Ok(())
    }

    #[test]
    fn a_manifest_names_its_address_once() -> Result<(), Box<dyn std::error::Error>> {
        let m = manifest("[::1]:8080".parse()?, "admin");
        assert_eq!(
            (m.address.as_str(), m.name.as_str()),
            ("[::1]:8080", "admin")
        );
        let sock = TcpListener::bind("127.0.0.1:0")?;
        let mut bad = m.clone();
        bad.address = "localhost:80".to_owned();
        let err = inherited(&bad, OwnedFd::from(sock.try_clone()?)).err();
        assert!(err.is_some_and(|e| e.to_string().contains("unusable address")));
        let (addr, _) = inherited(&m, OwnedFd::from(sock))?;
        assert_eq!(addr, "[::1]:8080".parse()?);
        Ok(())
    }

    #[test]
    fn host_health_crosses_with_typed_addresses() -> Result<(), std::net::AddrParseError> {
        let hosts = vec![proxy_core::cluster::HostHealth {
            cluster: "web".to_owned(),
            addr: "[::1]:8080".parse()?,
            failed_active_hc: true,
            ejected_for: Duration::from_millis(1500),
            ejections: 2,
        }];
        let mut state = hotrestart_rpc::ParentState {
            hosts: host_health(&hosts),
            ..Default::default()
        };
        assert_eq!(state.hosts[0].address, "[::1]:8080");
        assert_eq!(inherited_health(&state), hosts);
        state.hosts[0].address = "nowhere".to_owned();
        assert!(inherited_health(&state).is_empty());
        Ok(())
    }

    #[test]
    fn connections_cross_with_typed_addresses() -> Result<(), std::net::AddrParseError> {
        let leaving = handover::Leaving {
            kind: handover::Kind::Tunnel,
            listener: "127.0.0.1:10000".parse()?,
            peer: "127.0.0.1:5555".parse()?,
            read_buf: bytes::Bytes::from_static(b"GET"),
            idle: Duration::from_millis(1500),
            requests: 3,
            upstream: Some(("10.0.0.1:80".parse()?, "backend".to_owned())),
            chain: handover::ChainId {
                name: "ws".to_owned(),
                digest: [7; 32],
            },
            fds: Vec::new(),
        };
        let wire = moved_connection(&leaving);
        assert_eq!(wire.upstream_address, "10.0.0.1:80");
        let arriving = arriving_connection(&wire, Vec::new());
        assert!(arriving.is_some_and(|a| a.listener == leaving.listener
            && a.kind == handover::Kind::Tunnel
            && a.idle == leaving.idle
            && a.requests == 3
            && a.cluster == "backend"
            && a.chain.as_ref() == Some(&leaving.chain)
            && &a.read_buf[..] == b"GET"));
        // An older parent names no chain.
        let mut older = wire.clone();
        older.chain = None;
        assert!(arriving_connection(&older, Vec::new()).is_some_and(|a| a.chain.is_none()));
        // A digest of the wrong length names no chain this generation could have.
        let mut bad = wire.clone();
        if let Some(id) = bad.chain.as_mut() {
            id.digest.truncate(5);
        }
        assert!(arriving_connection(&bad, Vec::new()).is_none());
        let mut tcp = wire.clone();
        tcp.kind = ConnectionKind::TcpProxy.into();
        assert!(arriving_connection(&tcp, Vec::new())
            .is_some_and(|a| a.kind == handover::Kind::TcpProxy));
        let mut unknown = wire;
        unknown.listener_address = "nowhere".to_owned();
        assert!(arriving_connection(&unknown, Vec::new()).is_none());
        Ok(())
    }
}
