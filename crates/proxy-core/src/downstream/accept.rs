//! A connection between accept and its filter chain: the listener filters (the PROXY protocol,
//! the TLS and HTTP inspectors) run in order, bounded by `listener_filters_timeout`, then the chain is
//! chosen. The connection counts on its listener only once it has a chain, as in Envoy.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::chain::ConnMeta;
use crate::config::ListenerFilter;
use crate::context::ListenerState;
use crate::http_inspector::{self, Found};
use crate::proxy_protocol::{self, Header, Version};
use crate::tls_inspector::{self, Inspected};

use super::close_listener;

/// A connection just accepted.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    /// The client's address (the PROXY protocol's source, when it gave one).
    pub remote: SocketAddr,
    pub drain: drain::Conn,
    pub alive: mpsc::Sender<()>,
}

/// A connection of a listener, counted open on it (`listener.<address>.*`) from
/// [`ListenerConn::count`] until dropped.
pub(super) struct ListenerConn {
    pub lst: Arc<ListenerState>,
    opened: Cell<Option<Instant>>,
}

/// The chain chosen for a connection, and its addresses after the listener filters.
pub(super) struct Chosen {
    pub index: usize,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// `local` was restored by a listener filter (the original destination, or the PROXY
    /// protocol's): an `ORIGINAL_DST` cluster sends the connection's requests there.
    pub restored: bool,
}

impl ListenerConn {
    pub fn new(lst: Arc<ListenerState>) -> Self {
        Self {
            lst,
            opened: Cell::new(None),
        }
    }

    /// Count the connection open on its listener.
    pub fn count(&self) {
        let ls = &self.lst.stats;
        ls.downstream_cx_total.inc();
        ls.downstream_cx_active.inc();
        ls.server_total_connections.inc();
        self.opened.set(Some(Instant::now()));
    }

    /// The connection moved to the next generation: no longer active here, and not closed
    /// (the successor counts its end).
    pub fn moved(&self) {
        if self.opened.take().is_some() {
            let ls = &self.lst.stats;
            ls.downstream_cx_active.dec();
            ls.server_total_connections.dec();
        }
    }

    /// When it was counted open.
    pub fn opened(&self) -> Instant {
        self.opened.get().unwrap_or_else(Instant::now)
    }
}

impl Drop for ListenerConn {
    fn drop(&mut self) {
        if let Some(opened) = self.opened.get() {
            close_listener(&self.lst.stats, opened);
        }
    }
}

/// A connection no chain took: the addresses it had then, how long its listener filters
/// took, and whether it was for want of a matching chain (else a listener filter refused it or
/// gave up).
pub(super) struct Refused {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub took: Duration,
    pub no_chain: bool,
}

/// Run the listener filters and choose the chain; refused (and counted) when a listener filter
/// refused the connection or gave up, or no chain matches.
pub(super) async fn choose_chain(
    lst: &ListenerState,
    stream: &TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Chosen, Refused> {
    let started = Instant::now();
    let refused = |remote, local, no_chain| Refused {
        remote,
        local,
        took: started.elapsed(),
        no_chain,
    };
    let ls = &lst.stats;
    ls.downstream_pre_cx_active.inc();
    let filters = run_filters(lst, stream, local, remote);
    let filtered = match lst.config.listener_filters_timeout {
        None => filters.await,
        Some(d) => tokio::time::timeout(d, filters).await.unwrap_or_else(|_| {
            ls.downstream_pre_cx_timeout.inc();
            None
        }),
    };
    ls.downstream_pre_cx_active.dec();
    let Some((inspected, remote, local, restored)) = filtered else {
        return Err(refused(remote, local, false));
    };
    let meta = ConnMeta {
        local,
        remote,
        transport: if inspected.tls { "tls" } else { "raw_buffer" },
        sni: inspected.sni.as_deref(),
        alpn: &inspected.alpn,
    };
    let Some(index) = lst.select(&meta) else {
        lst.no_filter_chain_match.inc();
        return Err(refused(remote, local, true));
    };
    Ok(Chosen {
        index,
        remote,
        local,
        restored,
    })
}

/// The listener filters, in order: what the TLS inspector saw, the addresses the PROXY
/// protocol or the original destination gave (else the connection's own), and whether the
/// local address is such a restored one.
async fn run_filters(
    lst: &ListenerState,
    stream: &TcpStream,
    mut local: SocketAddr,
    mut remote: SocketAddr,
) -> Option<(Inspected, SocketAddr, SocketAddr, bool)> {
    let mut inspected = Inspected::default();
    let mut restored = false;
    for f in &lst.config.listener_filters {
        match f {
            ListenerFilter::TlsInspector => {
                inspected = tls_inspector::inspect(stream).await.ok().flatten()?;
            }
            // As Envoy's: it looks only at connections no earlier filter found to be TLS.
            ListenerFilter::HttpInspector if !inspected.tls => {
                let stats = lst.http_inspector.as_ref()?;
                let found = match http_inspector::inspect(stream).await {
                    Ok(f) => f?,
                    Err(_) => {
                        stats.read_error.inc();
                        return None;
                    }
                };
                match found {
                    Found::Http10 => stats.http10_found.inc(),
                    Found::Http11 => stats.http11_found.inc(),
                    Found::H2c => stats.http2_found.inc(),
                    Found::NotHttp => stats.http_not_found.inc(),
                }
                inspected.alpn = found.protocol().map(str::to_owned).into_iter().collect();
            }
            ListenerFilter::HttpInspector => {}
            ListenerFilter::OriginalDst => {
                if let Some(dst) = crate::original_dst::lookup(stream, local) {
                    (local, restored) = (dst, true);
                }
            }
            ListenerFilter::ProxyProtocol(pp) => {
                let stats = lst.proxy_proto.as_ref()?;
                match proxy_protocol::read(stream).await.ok()? {
                    Header::Found(v, addrs) => {
                        match v {
                            Version::V1 => stats.v1_found.inc(),
                            Version::V2 => stats.v2_found.inc(),
                        }
                        if let Some((src, dst)) = addrs {
                            (remote, local, restored) = (src, dst, true);
                        }
                    }
                    Header::NotFound if pp.allow_requests_without_proxy_protocol => {
                        stats.not_found_allowed.inc();
                    }
                    Header::NotFound => {
                        stats.not_found_disallowed.inc();
                        stats.error.inc();
                        return None;
                    }
                    Header::Error(v) => {
                        match v {
                            Version::V1 => stats.v1_error.inc(),
                            Version::V2 => stats.v2_error.inc(),
                        }
                        stats.error.inc();
                        return None;
                    }
                    Header::Closed => return None,
                }
            }
        }
    }
    Some((inspected, remote, local, restored))
}
