//! Choosing a listener's filter chain for a connection, as Envoy does: the chains are pruned
//! criterion by criterion, in Envoy's order — destination port, destination address
//! (`prefix_ranges`), server name, transport protocol, application protocols, source type,
//! source address, source port — keeping at each step only the chains that match the
//! connection most specifically (a chain without the criterion matches anything, least
//! specifically). There is no backtracking: a step that leaves no chain means no match.
//!
//! Pure: no socket, no allocation for a listener with one chain.

use std::net::{IpAddr, SocketAddr};

use crate::config::{ChainMatch, SourceType};

/// What is known of a connection when its chain is chosen.
#[derive(Clone, Copy, Debug)]
pub struct ConnMeta<'a> {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `tls` when the TLS inspector saw a ClientHello, else `raw_buffer`.
    pub transport: &'a str,
    /// The ClientHello's server name, lower-cased.
    pub sni: Option<&'a str>,
    /// The ClientHello's ALPN protocols.
    pub alpn: &'a [String],
}

/// How specifically a chain matches on one criterion: `None` does not match, 0 matches as a
/// chain without the criterion, higher is more specific.
type Step = fn(&ChainMatch, &ConnMeta<'_>) -> Option<u32>;

/// Envoy's order of precedence.
const STEPS: [Step; 8] = [
    destination_port,
    destination_ip,
    server_name,
    transport_protocol,
    application_protocols,
    source_type,
    source_ip,
    source_port,
];

/// The index of the chain for `conn` among `chains` (whose criteria `m` gives), if any.
pub fn select<T>(
    chains: &[T],
    m: impl Fn(&T) -> &ChainMatch,
    conn: &ConnMeta<'_>,
) -> Option<usize> {
    if let [only] = chains {
        let only = m(only);
        return STEPS.iter().all(|s| s(only, conn).is_some()).then_some(0);
    }
    let mut live: Vec<usize> = (0..chains.len()).collect();
    for step in STEPS {
        let best = live
            .iter()
            .filter_map(|&i| step(m(&chains[i]), conn))
            .max()?;
        live.retain(|&i| step(m(&chains[i]), conn) == Some(best));
    }
    live.first().copied()
}

fn destination_port(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    match c.destination_port {
        None => Some(0),
        Some(p) => (p == conn.local.port()).then_some(1),
    }
}

/// The longest prefix containing `ip` (its length + 1), 0 without prefixes.
fn longest_prefix(ranges: &[ipnet::IpNet], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    let ip = ip.to_canonical();
    ranges
        .iter()
        .filter(|r| r.contains(&ip))
        .map(|r| u32::from(r.prefix_len()) + 1)
        .max()
}

fn destination_ip(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    longest_prefix(&c.prefix_ranges, conn.local.ip())
}

fn source_ip(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    longest_prefix(&c.source_prefix_ranges, conn.remote.ip())
}

/// An exact name beats every wildcard; a longer `*.suffix` beats a shorter one.
fn server_name(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    if c.server_names.is_empty() {
        return Some(0);
    }
    let sni = conn.sni?;
    c.server_names
        .iter()
        .filter_map(|n| match n.strip_prefix('*') {
            None => (n == sni).then_some(u32::MAX),
            Some(suffix) => {
                (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len() as u32)
            }
        })
        .max()
}

fn transport_protocol(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    match &c.transport_protocol {
        None => Some(0),
        Some(p) => (p == conn.transport).then_some(1),
    }
}

fn application_protocols(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    if c.application_protocols.is_empty() {
        return Some(0);
    }
    c.application_protocols
        .iter()
        .any(|p| conn.alpn.contains(p))
        .then_some(1)
}

fn source_type(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    let (remote, local) = (
        conn.remote.ip().to_canonical(),
        conn.local.ip().to_canonical(),
    );
    let local_client = remote.is_loopback() || remote == local;
    match c.source_type {
        SourceType::Any => Some(0),
        SourceType::SameIpOrLoopback => local_client.then_some(1),
        SourceType::External => (!local_client).then_some(1),
    }
}

fn source_port(c: &ChainMatch, conn: &ConnMeta<'_>) -> Option<u32> {
    if c.source_ports.is_empty() {
        return Some(0);
    }
    c.source_ports.contains(&conn.remote.port()).then_some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta<'a>(
        local: &str,
        remote: &str,
        sni: Option<&'a str>,
        alpn: &'a [String],
    ) -> ConnMeta<'a> {
        ConnMeta {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            transport: if sni.is_some() { "tls" } else { "raw_buffer" },
            sni,
            alpn,
        }
    }

    fn names(n: &[&str]) -> ChainMatch {
        ChainMatch {
            server_names: n.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn pick(chains: &[ChainMatch], conn: &ConnMeta<'_>) -> Option<usize> {
        select(chains, |c| c, conn)
    }

    #[test]
    fn server_names_exact_then_longest_wildcard_then_none() {
        let chains = [
            names(&["*.example.com"]),
            names(&["www.example.com"]),
            names(&["*.b.example.com"]),
            names(&[]),
        ];
        let m = |sni| pick(&chains, &meta("127.0.0.1:443", "127.0.0.1:5000", sni, &[]));
        assert_eq!(m(Some("www.example.com")), Some(1));
        assert_eq!(m(Some("a.example.com")), Some(0));
        assert_eq!(m(Some("x.b.example.com")), Some(2));
        assert_eq!(m(Some("example.com")), Some(3));
        assert_eq!(m(None), Some(3));
    }

    #[test]
    fn no_backtracking_once_a_more_specific_criterion_matched() {
        // The port-specific chain wins the first step; its server name then does not match,
        // and the port-less chain that would have is not considered again (Envoy's rule).
        let chains = [
            ChainMatch {
                destination_port: Some(443),
                ..names(&["a.test"])
            },
            names(&["b.test"]),
        ];
        let conn = meta("127.0.0.1:443", "127.0.0.1:5000", Some("b.test"), &[]);
        assert_eq!(pick(&chains, &conn), None);
        let conn = meta("127.0.0.1:8443", "127.0.0.1:5000", Some("b.test"), &[]);
        assert_eq!(pick(&chains, &conn), Some(1));
    }

    #[test]
    fn transport_alpn_source_criteria() {
        let tls = ChainMatch {
            transport_protocol: Some("tls".into()),
            ..Default::default()
        };
        let h2 = ChainMatch {
            application_protocols: vec!["h2".into()],
            ..tls.clone()
        };
        let raw = ChainMatch {
            transport_protocol: Some("raw_buffer".into()),
            ..Default::default()
        };
        let chains = [tls, h2, raw];
        let alpn = ["h2".to_string()];
        assert_eq!(
            pick(
                &chains,
                &meta("127.0.0.1:1", "127.0.0.1:2", Some("x"), &alpn)
            ),
            Some(1)
        );
        assert_eq!(
            pick(&chains, &meta("127.0.0.1:1", "127.0.0.1:2", Some("x"), &[])),
            Some(0)
        );
        assert_eq!(
            pick(&chains, &meta("127.0.0.1:1", "127.0.0.1:2", None, &[])),
            Some(2)
        );

        let local = ChainMatch {
            source_type: SourceType::SameIpOrLoopback,
            ..Default::default()
        };
        let external = ChainMatch {
            source_type: SourceType::External,
            ..Default::default()
        };
        let chains = [local, external];
        assert_eq!(
            pick(&chains, &meta("10.0.0.1:1", "127.0.0.1:2", None, &[])),
            Some(0)
        );
        assert_eq!(
            pick(&chains, &meta("10.0.0.1:1", "10.0.0.1:2", None, &[])),
            Some(0)
        );
        assert_eq!(
            pick(&chains, &meta("10.0.0.1:1", "10.0.0.2:2", None, &[])),
            Some(1)
        );
    }

    #[test]
    fn longest_prefixes_and_ports() {
        let wide = ChainMatch {
            source_prefix_ranges: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let narrow = ChainMatch {
            source_prefix_ranges: vec!["10.1.0.0/16".parse().unwrap()],
            ..Default::default()
        };
        let port = ChainMatch {
            source_ports: vec![2],
            ..narrow.clone()
        };
        let dest = ChainMatch {
            prefix_ranges: vec!["192.168.0.0/16".parse().unwrap()],
            ..Default::default()
        };
        let chains = [wide, narrow, port];
        assert_eq!(
            pick(&chains, &meta("1.1.1.1:1", "10.2.0.1:2", None, &[])),
            Some(0)
        );
        assert_eq!(
            pick(&chains, &meta("1.1.1.1:1", "10.1.0.1:3", None, &[])),
            Some(1)
        );
        assert_eq!(
            pick(&chains, &meta("1.1.1.1:1", "10.1.0.1:2", None, &[])),
            Some(2)
        );
        assert_eq!(
            pick(&chains, &meta("1.1.1.1:1", "11.0.0.1:2", None, &[])),
            None
        );
        let chains = [dest];
        assert_eq!(
            pick(&chains, &meta("192.168.1.1:1", "10.0.0.1:2", None, &[])),
            Some(0)
        );
        assert_eq!(
            pick(
                &chains,
                &meta("[::ffff:192.168.1.1]:1", "10.0.0.1:2", None, &[])
            ),
            Some(0)
        );
        assert_eq!(
            pick(&chains, &meta("10.0.0.1:1", "10.0.0.1:2", None, &[])),
            None
        );
    }
}
