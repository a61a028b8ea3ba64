//! Shared helpers of the integration tests: unique endpoints, a parent handler over real TCP
//! listen sockets, and a parent thread bounded in time.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hotrestart_rpc::pb::DrainListeners;
use hotrestart_rpc::{
    serve, Endpoint, ListenSocketsRequest, Listener, ParentHandler, ParentState, ServeExit,
    ServeOptions, SocketManifest, SocketType,
};

pub const VERSION: &str = "test.hot_restart.1";
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An abstract endpoint no other test (or test run) uses.
pub fn unique_endpoint(tag: &str) -> Endpoint {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Endpoint::Abstract(
        format!(
            "baton_rpc_test_{tag}_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
        .into_bytes(),
    )
}

pub fn options() -> ServeOptions {
    let mut opts = ServeOptions::new(VERSION);
    opts.idle_timeout = TIMEOUT;
    opts.io_timeout = TIMEOUT;
    opts.accept_poll = Duration::from_millis(50);
    opts
}

/// A parent holding real TCP listen sockets on 127.0.0.1.
#[derive(Debug)]
pub struct TestParent {
    pub sockets: Vec<(SocketManifest, TcpListener)>,
    pub drained: Arc<AtomicBool>,
    pub terminated: Arc<AtomicBool>,
}

impl TestParent {
    pub fn with_listeners(n: usize) -> Self {
        let sockets = (0..n)
            .map(|i| {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                let m = SocketManifest {
                    address: addr.to_string(),
                    socket_type: SocketType::Tcp.into(),
                    worker_index: u32::try_from(i % 4).unwrap(),
                    options: None,
                    name: format!("l{i}"),
                };
                (m, l)
            })
            .collect();
        Self {
            sockets,
            drained: Arc::default(),
            terminated: Arc::default(),
        }
    }
}

impl ParentHandler for TestParent {
    fn state(&mut self) -> ParentState {
        ParentState {
            chain_start_unix_ms: 1,
            epoch: 0,
            pid: std::process::id(),
            concurrency: 4,
            server_version: "test".into(),
            draining: self.drained.load(Ordering::Acquire),
            ..ParentState::default()
        }
    }

    fn listen_sockets(
        &mut self,
        request: &ListenSocketsRequest,
    ) -> Result<Vec<(SocketManifest, BorrowedFd<'_>)>, String> {
        Ok(self
            .sockets
            .iter()
            .filter(|(m, _)| request.all || request.wanted.iter().any(|w| w.address == m.address))
            .map(|(m, l)| (m.clone(), l.as_fd()))
            .collect())
    }

    fn drain_listeners(&mut self, _request: &DrainListeners) -> Result<(), String> {
        if self.drained.swap(true, Ordering::AcqRel) {
            return Err("already draining".into());
        }
        Ok(())
    }

    fn terminate(&mut self) -> Result<(), String> {
        self.terminated.store(true, Ordering::Release);
        Ok(())
    }
}

/// A parent serving on its own thread until a child terminates it or `stop` is set.
pub struct ParentThread {
    pub stop: Arc<AtomicBool>,
    pub handle: Option<JoinHandle<(ServeExit, TestParent)>>,
}

impl ParentThread {
    pub fn spawn(listener: Listener, parent: TestParent) -> Self {
        Self::spawn_with(listener, parent, options())
    }

    pub fn spawn_with(listener: Listener, mut parent: TestParent, opts: ServeOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let exit = serve(&listener, &mut parent, &opts, &flag);
            (exit, parent)
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    pub fn join(mut self) -> (ServeExit, TestParent) {
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for ParentThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
