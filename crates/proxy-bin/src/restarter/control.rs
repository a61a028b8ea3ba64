//! The restarter's control socket: where `baton reload` and `baton status` reach a running
//! `baton restarter`. One JSON request line in, one JSON reply line out, over a Unix stream
//! socket named from the base id (abstract `@baton_restarter_<base-id>` by default, or the
//! `--socket-path` given to both sides; a leading `@` means the abstract namespace).
//!
//! Peers are authenticated both ways with SO_PEERCRED under the hot restart sockets' rule (same
//! uid, or root): a restarter answers no other user, and a client talks to no other user's
//! restarter squatting the name.
//!
//! Why not `hotrestart_rpc`'s framing: its envelope carries the generation-to-generation
//! messages (hello, sockets, drain) and nothing else; a reload/status exchange is a different
//! protocol between different processes, so it gets its own tiny one, reusing only the peer
//! policy ([`hotrestart_rpc::peer_credentials`], [`hotrestart_rpc::PeerCred::allowed_for`]).

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

/// Longest request or reply line accepted.
const MAX_LINE: usize = 1 << 20;
/// How long a connected client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("could not use the control socket address {address:?}: {source}")]
    BadAddress { address: String, source: io::Error },
    #[error(
        "could not bind the restarter's control socket {address}: another restarter already \
         listens there (is a chain with this base id already running?)"
    )]
    InUse { address: String },
    #[error("could not bind the restarter's control socket {address}: {source}")]
    Bind { address: String, source: io::Error },
    #[error("could not reach a restarter at {address} (is `baton restarter` running with this base id?): {source}")]
    Connect { address: String, source: io::Error },
    #[error(
        "refusing the restarter at {address}: it runs as uid {uid}, this process as uid {ours}"
    )]
    PeerRefused {
        address: String,
        uid: u32,
        ours: u32,
    },
    #[error("could not talk to the restarter at {address}: {source}")]
    Exchange { address: String, source: io::Error },
    #[error("the restarter at {address} sent an unreadable reply: {reason}")]
    BadReply { address: String, reason: String },
}

impl ControlError {
    /// Whether nothing listens at the address (no restarter runs).
    pub fn is_no_peer(&self) -> bool {
        matches!(self, ControlError::Connect { source, .. }
            if matches!(source.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound))
    }
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the next generation and answer once it serves or has failed.
    Reload,
    /// The restarter's view of the chain.
    Status,
}

/// The answer to [`Request::Reload`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReloadReply {
    pub fn served(epoch: u32, pid: u32) -> Self {
        Self {
            ok: true,
            epoch: Some(epoch),
            pid: Some(pid),
            error: None,
        }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            ok: false,
            epoch: None,
            pid: None,
            error: Some(reason.into()),
        }
    }
}

/// A request handed to the supervisor with the channel for its answer.
#[derive(Debug)]
pub enum Command {
    Reload(oneshot::Sender<ReloadReply>),
    Status(oneshot::Sender<serde_json::Value>),
}

/// The control socket address of chain `base_id`: `socket_path` when given, else the abstract
/// `@baton_restarter_<base_id>`.
pub fn address(socket_path: Option<&str>, base_id: u32) -> String {
    socket_path.map_or_else(|| format!("@baton_restarter_{base_id}"), str::to_owned)
}

fn unix_addr(address: &str) -> Result<UnixAddr, ControlError> {
    let addr = match address.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
        None => UnixAddr::from_pathname(address),
    };
    addr.map_err(|source| ControlError::BadAddress {
        address: address.to_owned(),
        source,
    })
}

fn our_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The restarter's listening control socket. A filesystem socket is removed on drop.
#[derive(Debug)]
pub struct ControlListener {
    inner: UnixListener,
    address: String,
    path: Option<PathBuf>,
}

impl ControlListener {
    /// Binds at `address`. A live restarter there is [`ControlError::InUse`]; a stale socket
    /// file (nothing listening) is replaced.
    pub fn bind(address: &str) -> Result<Self, ControlError> {
        let addr = unix_addr(address)?;
        let path = if address.starts_with('@') {
            None
        } else {
            let path = PathBuf::from(address);
            if path.exists() {
                match UnixStream::connect(&path) {
                    Ok(_) => {
                        return Err(ControlError::InUse {
                            address: address.to_owned(),
                        })
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Some(path)
        };
        let inner = UnixListener::bind_addr(&addr).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                ControlError::InUse {
                    address: address.to_owned(),
                }
            } else {
                ControlError::Bind {
                    address: address.to_owned(),
                    source,
                }
            }
        })?;
        inner
            .set_nonblocking(true)
            .map_err(|source| ControlError::Bind {
                address: address.to_owned(),
                source,
            })?;
        Ok(Self {
            inner,
            address: address.to_owned(),
            path,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Answers clients until the runtime ends, passing each request to `commands`. Must run
    /// inside a tokio runtime.
    pub async fn serve(self, commands: mpsc::UnboundedSender<Command>) {
        let listener = match self
            .inner
            .try_clone()
            .and_then(tokio::net::UnixListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(address = %self.address, "could not use the control socket: {e}");
                return;
            }
        };
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("could not accept a control connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = match hotrestart_rpc::peer_credentials(stream.as_fd()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("control connection without credentials: {e}");
                    continue;
                }
            };
            if !peer.allowed_for(our_uid()) {
                tracing::warn!(
                    peer.pid = peer.pid,
                    peer.uid = peer.uid,
                    "refusing a control connection from another uid"
                );
                continue;
            }
            tokio::spawn(handle(stream, commands.clone()));
        }
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn handle(stream: tokio::net::UnixStream, commands: mpsc::UnboundedSender<Command>) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_LINE as u64);
    let mut line = String::new();
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let reply = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => serde_json::to_value(ReloadReply::failed(format!("bad request: {e}"))),
        Ok(Request::Reload) => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Reload(tx)).is_err() {
                return;
            }
            match rx.await {
                Ok(r) => serde_json::to_value(r),
                Err(_) => serde_json::to_value(ReloadReply::failed("the restarter is exiting")),
            }
        }
        Ok(Request::Status) => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Status(tx)).is_err() {
                return;
            }
            match rx.await {
                Ok(v) => Ok(v),
                Err(_) => return,
            }
        }
    };
    let Ok(reply) = reply else { return };
    let mut text = reply.to_string();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// Sends `request` to the restarter at `address` and returns its reply line as JSON, waiting at
/// most `timeout` for it. Blocking: for the `reload` and `status` commands.
pub fn call(
    address: &str,
    request: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let addr = unix_addr(address)?;
    let stream = UnixStream::connect_addr(&addr).map_err(|source| ControlError::Connect {
        address: address.to_owned(),
        source,
    })?;
    let exchange = |source| ControlError::Exchange {
        address: address.to_owned(),
        source,
    };
    let peer = hotrestart_rpc::peer_credentials(stream.as_fd()).map_err(|e| {
        exchange(io::Error::other(format!(
            "could not read its credentials: {e}"
        )))
    })?;
    if !peer.allowed_for(our_uid()) {
        return Err(ControlError::PeerRefused {
            address: address.to_owned(),
            uid: peer.uid,
            ours: our_uid(),
        });
    }
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(exchange)?;
    stream
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(exchange)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| exchange(io::Error::other(e.to_string())))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(exchange)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .take(MAX_LINE as u64)
        .read_line(&mut reply)
        .map_err(exchange)?;
    if reply.trim().is_empty() {
        return Err(ControlError::BadReply {
            address: address.to_owned(),
            reason: "the connection closed without a reply".to_owned(),
        });
    }
    serde_json::from_str(reply.trim()).map_err(|e| ControlError::BadReply {
        address: address.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wire_format() {
        assert_eq!(address(None, 7), "@baton_restarter_7");
        assert_eq!(address(Some("/run/baton.ctl"), 7), "/run/baton.ctl");
        assert_eq!(
            serde_json::to_string(&Request::Reload).unwrap_or_default(),
            r#"{"op":"reload"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"status"}"#).ok(),
            Some(Request::Status)
        );
        assert_eq!(
            serde_json::to_string(&ReloadReply::failed("x")).unwrap_or_default(),
            r#"{"ok":false,"error":"x"}"#
        );
    }

    #[tokio::test]
    async fn request_and_reply_over_an_abstract_socket() {
        let name = format!("@baton_restarter_test_{}", std::process::id());
        let listener = ControlListener::bind(&name).expect("bind");
        assert!(matches!(
            ControlListener::bind(&name),
            Err(ControlError::InUse { .. })
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(listener.serve(tx));
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Reload(r) => {
                        let _ = r.send(ReloadReply::served(3, 42));
                    }
                    Command::Status(r) => {
                        let _ = r.send(serde_json::json!({"serving": true}));
                    }
                }
            }
        });
        let addr = name.clone();
        let reply = tokio::task::spawn_blocking(move || {
            call(&addr, &Request::Reload, Duration::from_secs(5))
        })
        .await
        .expect("join")
        .expect("call");
        assert_eq!(reply["ok"], true);
        assert_eq!(reply["epoch"], 3);
        let missing = format!("@baton_restarter_test_missing_{}", std::process::id());
        let err = tokio::task::spawn_blocking(move || {
            call(&missing, &Request::Status, Duration::from_secs(1))
        })
        .await
        .expect("join");
        assert!(matches!(&err, Err(e) if e.is_no_peer()), "{err:?}");
    }
}
