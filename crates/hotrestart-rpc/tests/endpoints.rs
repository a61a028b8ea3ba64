//! Restart socket addresses: filesystem sockets (mode, live peer protected, stale file replaced,
//! atomic replacement), no parent, and a peer of another uid refused.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hotrestart_rpc::{connect, negotiate, Client, Endpoint, Error, Listener};

use support::{unique_endpoint, TIMEOUT, VERSION};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("baton-rpc-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn filesystem_socket_lifecycle() {
    let dir = TempDir::new("path");
    let path = dir.0.join("restart.sock");
    let endpoint = Endpoint::path(&path, Some(0o600));

    let first = Listener::bind(&endpoint).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // A live listener is never unlinked.
    assert!(matches!(
        Listener::bind(&endpoint),
        Err(Error::AddressInUse { .. })
    ));
    assert!(path.exists());
    drop(first);
    assert!(!path.exists(), "a listener removes its own socket file");

    // A stale socket (its process gone, file left behind) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let second = Listener::bind(&endpoint).unwrap();
    assert!(connect(&endpoint, TIMEOUT).is_ok());

    // Replacing in place: the old listener's drop leaves the new file alone.
    let third = Listener::bind_replacing(&endpoint).unwrap();
    drop(second);
    assert!(path.exists());
    let conn = connect(&endpoint, TIMEOUT).unwrap();
    assert!(third.accept(TIMEOUT).is_ok());
    drop(conn);
    drop(third);
    assert!(!path.exists());

    // Something that is not a socket is never removed.
    std::fs::write(&path, b"data").unwrap();
    assert!(matches!(
        Listener::bind(&endpoint),
        Err(Error::BadAddress { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

#[test]
fn a_socket_file_handle_removes_only_its_own_file() {
    let dir = TempDir::new("socket-file");
    let path = dir.0.join("restart.sock");
    let endpoint = Endpoint::path(&path, Some(0o600));
    let abstract_listener = Listener::bind(&unique_endpoint("no-file")).unwrap();
    assert!(abstract_listener.socket_file().is_none());

    let old = Listener::bind(&endpoint).unwrap();
    let old_file = old.socket_file().expect("a path listener has a file");
    assert_eq!(old_file.path(), path.as_path());
    // A successor renames its socket over the path: the old handle leaves it alone.
    let new = Listener::bind_replacing(&endpoint).unwrap();
    let new_file = new.socket_file().unwrap();
    old_file.remove_if_ours();
    assert!(path.exists());
    // The last one removes it, while its listener is still held elsewhere (a thread).
    new_file.remove_if_ours();
    assert!(!path.exists());
    drop((old, new));
}

#[test]
fn no_parent_is_recognisable() {
    let err = connect(&unique_endpoint("nobody"), TIMEOUT).unwrap_err();
    assert!(err.is_no_peer(), "{err}");
    let dir = TempDir::new("nobody");
    let err = connect(&Endpoint::path(dir.0.join("none.sock"), None), TIMEOUT).unwrap_err();
    assert!(err.is_no_peer(), "{err}");
    // Abstract names are per chain and epoch.
    let a = Listener::bind(&Endpoint::for_epoch(u64::from(std::process::id()) << 20, 0)).unwrap();
    assert!(matches!(
        Listener::bind(a.endpoint()),
        Err(Error::AddressInUse { .. })
    ));
}

const CONNECT_ENV: &str = "HOTRESTART_RPC_TEST_CONNECT_TO";

/// Kills and reaps a spawned process when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    // Re-executed as uid 65534: play the foreign child and report through the exit code.
    if let Some(name) = std::env::var_os(CONNECT_ENV) {
        let endpoint = Endpoint::Abstract(name.into_encoded_bytes());
        let code = match connect(&endpoint, TIMEOUT).and_then(|conn| {
            Client::handshake(
                conn,
                negotiate::hello(VERSION, 1, std::process::id()),
                TIMEOUT,
            )
        }) {
            Ok(_) => 3,
            Err(e) => {
                eprintln!("foreign child refused as expected: {e}");
                0
            }
        };
        std::process::exit(code);
    }
    if !nix::unistd::geteuid().is_root() {
        println!("note: not root, cannot spawn a process of another uid; skipping");
        return;
    }

    let endpoint = unique_endpoint("uid");
    let Endpoint::Abstract(name) = &endpoint else {
        unreachable!()
    };
    let listener = Listener::bind(&endpoint).unwrap();
    // The test binary may sit under a directory uid 65534 cannot enter (a 0700 checkout or
    // temp dir): run a world-readable copy of it from the system temp dir.
    let exe = std::env::temp_dir().join(format!("hotrestart-rpc-uid-test-{}", std::process::id()));
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _copy = RemoveOnDrop(exe.clone());
    let child = Command::new(&exe)
        .args(["--exact", "a_peer_of_another_uid_is_refused", "--nocapture"])
        .env(CONNECT_ENV, String::from_utf8(name.clone()).unwrap())
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);

    let err = listener.accept(TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PeerRefused {
                uid: 65534,
                expected: 0,
                ..
            }
        ),
        "{err}"
    );

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < TIMEOUT, "foreign child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "the foreign child was not refused");

    // The listener is unaffected: a peer of our uid is accepted.
    let _conn = connect(&endpoint, TIMEOUT).unwrap();
    assert!(listener.accept(TIMEOUT).is_ok());
}
