//! Live connections handed from parent to child: the batch's fds are the parent's very sockets,
//! every batch is acknowledged connection by connection, and a batch the child never
//! acknowledges (it vanished) is the parent's again.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotrestart_rpc::pb::DrainListeners;
use hotrestart_rpc::{
    connect, negotiate, serve, Client, ConnectionKind, ConnectionsAck, ConnectionsBatch, Error,
    ListenSocketsRequest, Listener, MovedConnection, ParentHandler, ParentState, SocketManifest,
    TakeConnections,
};
use support::{options, unique_endpoint, TIMEOUT, VERSION};

/// What the test parent saw, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    handover_asked: bool,
    acks: Vec<Vec<bool>>,
    sessions_ended: usize,
}

/// A parent with live connections: each entry is a manifest and its sockets (server ends).
struct ConnParent {
    conns: Vec<(MovedConnection, Vec<TcpStream>)>,
    /// Index of the first connection of the batch awaiting its ack, and its length.
    lent: Option<(usize, usize)>,
    seen: Arc<Mutex<Seen>>,
}

impl ParentHandler for ConnParent {
    fn state(&mut self) -> ParentState {
        ParentState {
            epoch: 0,
            pid: std::process::id(),
            ..Default::default()
        }
    }

    fn listen_sockets(
        &mut self,
        _request: &ListenSocketsRequest,
    ) -> Result<Vec<(SocketManifest, BorrowedFd<'_>)>, String> {
        Ok(Vec::new())
    }

    fn drain_listeners(&mut self, request: &DrainListeners) -> Result<(), String> {
        self.seen.lock().unwrap().handover_asked = request.handover_connections;
        Ok(())
    }

    fn terminate(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn take_connections(
        &mut self,
        request: &TakeConnections,
    ) -> Result<(ConnectionsBatch, Vec<BorrowedFd<'_>>), String> {
        // Whole connections only, up to max_fds.
        let mut fds = 0;
        let mut n = 0;
        for (_, socks) in &self.conns {
            if fds + socks.len() > request.max_fds as usize {
                break;
            }
            fds += socks.len();
            n += 1;
        }
        self.lent = Some((0, n));
        let batch = ConnectionsBatch {
            connections: self.conns[..n].iter().map(|(m, _)| m.clone()).collect(),
            more: n < self.conns.len(),
            still_open: self.conns.len() as u64,
        };
        let fds = self.conns[..n]
            .iter()
            .flat_map(|(_, s)| s.iter().map(AsFd::as_fd))
            .collect();
        Ok((batch, fds))
    }

    fn connections_ack(&mut self, ack: &ConnectionsAck) -> Result<(), String> {
        self.seen.lock().unwrap().acks.push(ack.taken.clone());
        if let Some((start, n)) = self.lent.take() {
            // Taken ones are closed (dropped) here; the rest stay.
            let mut i = 0;
            self.conns.retain(|_| {
                let keep = i < start
                    || i >= start + n
                    || !ack.taken.get(i - start).copied().unwrap_or(false);
                i += 1;
                keep
            });
        }
        Ok(())
    }

    /// Takes back the first connection of a batch only (and keeps its socket, as served).
    fn give_connections(
        &mut self,
        batch: ConnectionsBatch,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<Vec<bool>, String> {
        let mut taken = vec![false; batch.connections.len()];
        if let (Some(first), Some(fd)) = (batch.connections.first(), fds.into_iter().next()) {
            taken[0] = true;
            self.conns.push((first.clone(), vec![TcpStream::from(fd)]));
        }
        Ok(taken)
    }

    fn session_ended(&mut self) {
        self.lent = None;
        self.seen.lock().unwrap().sessions_ended += 1;
    }
}

/// A connected pair on 127.0.0.1: (client end, server end).
fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn moved(kind: ConnectionKind, read_buf: &[u8]) -> MovedConnection {
    MovedConnection {
        kind: kind.into(),
        listener_address: "127.0.0.1:10000".into(),
        peer_address: "127.0.0.1:5555".into(),
        read_buf: read_buf.to_vec(),
        idle_ms: 12,
        requests: 3,
        ..Default::default()
    }
}

fn spawn_parent(
    parent: ConnParent,
) -> (
    hotrestart_rpc::Endpoint,
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<ConnParent>,
) {
    let endpoint = unique_endpoint("conns");
    let listener = Listener::bind(&endpoint).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut parent = parent;
        serve(&listener, &mut parent, &options(), &flag);
        parent
    });
    (endpoint, stop, handle)
}

fn client(endpoint: &hotrestart_rpc::Endpoint) -> Client {
    Client::handshake(
        connect(endpoint, TIMEOUT).unwrap(),
        negotiate::hello(VERSION, 1, std::process::id()),
        TIMEOUT,
    )
    .unwrap()
}

#[test]
fn connections_move_with_their_sockets_and_are_acknowledged_one_by_one() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut c1, s1) = pair(&tcp);
    let (mut c2, s2) = pair(&tcp);
    let (mut c3, s3) = pair(&tcp); // tunnel downstream
    let (mut c4, s4) = pair(&tcp); // tunnel upstream
    let seen = Arc::new(Mutex::new(Seen::default()));
    let parent = ConnParent {
        conns: vec![
            (
                moved(ConnectionKind::Http1, b"GET / HTTP/1.1\r\n"),
                vec![s1],
            ),
            (moved(ConnectionKind::Tunnel, b""), vec![s3, s4]),
            (moved(ConnectionKind::Http1, b""), vec![s2]),
        ],
        lent: None,
        seen: seen.clone(),
    };
    let (endpoint, stop, handle) = spawn_parent(parent);
    let mut child = client(&endpoint);
    child.drain_listeners(true, false).unwrap();

    // Room for 3 fds: the first HTTP/1 connection and the tunnel.
    let (batch, fds) = child
        .take_connections(3, Duration::from_millis(10))
        .unwrap();
    assert_eq!(batch.connections.len(), 2);
    assert_eq!(fds.len(), 3);
    assert!(batch.more);
    assert_eq!(batch.connections[0].read_buf, b"GET / HTTP/1.1\r\n");
    assert_eq!(batch.connections[0].requests, 3);
    assert_eq!(batch.connections[1].kind(), ConnectionKind::Tunnel);
    // The fds are the parent's sockets: bytes from each client arrive on our copies.
    let mut ours: Vec<TcpStream> = fds.into_iter().map(TcpStream::from).collect();
    for (client, sock) in [(&mut c1, 0), (&mut c3, 1), (&mut c4, 2)] {
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        ours[sock].read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    // Take the HTTP/1 connection, refuse the tunnel.
    child.ack_connections(vec![true, false]).unwrap();

    let (batch, fds) = child
        .take_connections(253, Duration::from_millis(10))
        .unwrap();
    // The refused tunnel is offered again, with the last connection.
    assert_eq!(batch.connections.len(), 2);
    assert_eq!(fds.len(), 3);
    assert!(!batch.more);
    child.ack_connections(vec![true, true]).unwrap();
    drop(child);

    // The parent closed its copies of what was taken; ours still work, and closing ours (the
    // last copy) closes the connection.
    let mut taken: Vec<TcpStream> = fds.into_iter().map(TcpStream::from).collect();
    taken.push(ours.swap_remove(0));
    drop(ours);
    for s in &mut taken {
        s.write_all(b"k").unwrap();
    }
    for c in [&mut c1, &mut c2, &mut c3, &mut c4] {
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"k");
    }
    drop(taken);
    let mut b = [0u8; 1];
    assert_eq!(c2.read(&mut b).unwrap(), 0, "the last copy closed");

    stop.store(true, std::sync::atomic::Ordering::Release);
    let parent = handle.join().unwrap();
    assert!(parent.conns.is_empty());
    let seen = seen.lock().unwrap();
    assert!(seen.handover_asked);
    assert_eq!(seen.acks, vec![vec![true, false], vec![true, true]]);
    assert_eq!(seen.sessions_ended, 1);
}

#[test]
fn a_child_that_vanishes_before_its_ack_leaves_the_connections_with_the_parent() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut c1, s1) = pair(&tcp);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let parent = ConnParent {
        conns: vec![(moved(ConnectionKind::Http1, b""), vec![s1])],
        lent: None,
        seen: seen.clone(),
    };
    let (endpoint, stop, handle) = spawn_parent(parent);
    let mut child = client(&endpoint);
    let (_batch, fds) = child
        .take_connections(253, Duration::from_millis(10))
        .unwrap();
    // The child dies holding the fds, never acknowledging.
    drop(fds);
    drop(child);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while seen.lock().unwrap().sessions_ended == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut parent = handle.join().unwrap();
    assert_eq!(parent.conns.len(), 1, "still the parent's");
    assert!(seen.lock().unwrap().acks.is_empty());
    // And still open: the parent's copy answers.
    parent.conns[0].1[0].write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    c1.set_read_timeout(Some(TIMEOUT)).unwrap();
    c1.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
}

#[test]
fn a_batch_of_unknown_kind_is_refused_whole() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_c1, s1) = pair(&tcp);
    let mut future = moved(ConnectionKind::Http1, b"");
    future.kind = 9;
    let parent = ConnParent {
        conns: vec![(future, vec![s1])],
        lent: None,
        seen: Arc::default(),
    };
    let (endpoint, stop, handle) = spawn_parent(parent);
    let mut child = client(&endpoint);
    let err = child
        .take_connections(253, Duration::from_millis(10))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidManifest { ref reason, .. } if reason.contains("unknown connection kind 9")),
        "{err}"
    );
    drop(child);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let parent = handle.join().unwrap();
    assert_eq!(parent.conns.len(), 1);
}

#[test]
fn a_child_hands_connections_back_and_the_parent_serves_the_ones_it_took() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut c1, s1) = pair(&tcp);
    let (_c2, s2) = pair(&tcp);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let parent = ConnParent {
        conns: Vec::new(),
        lent: None,
        seen,
    };
    let (endpoint, _stop, handle) = spawn_parent(parent);
    let mut child = client(&endpoint);
    let batch = ConnectionsBatch {
        connections: vec![
            moved(ConnectionKind::Http1, b""),
            moved(ConnectionKind::Http1, b""),
        ],
        more: false,
        still_open: 2,
    };
    // An fd short: refused before anything is sent.
    let err = child
        .give_connections(batch.clone(), &[s1.as_fd()])
        .unwrap_err();
    assert!(matches!(err, Error::BadBatch { .. }), "{err}");
    let taken = child
        .give_connections(batch, &[s1.as_fd(), s2.as_fd()])
        .unwrap();
    assert_eq!(taken, vec![true, false]);
    // The child closes its copy of the one taken: the parent's is the same socket.
    drop(s1);
    child.terminate().unwrap();
    drop(child);
    let mut parent = handle.join().unwrap();
    let (_, socks) = parent.conns.pop().unwrap();
    (&socks[0]).write_all(b"from the parent").unwrap();
    let mut got = [0u8; 15];
    c1.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from the parent");
}

#[test]
fn a_parent_without_handover_says_so() {
    struct Plain;
    impl ParentHandler for Plain {
        fn state(&mut self) -> ParentState {
            ParentState::default()
        }
        fn listen_sockets(
            &mut self,
            _: &ListenSocketsRequest,
        ) -> Result<Vec<(SocketManifest, BorrowedFd<'_>)>, String> {
            Ok(Vec::new())
        }
        fn drain_listeners(&mut self, _: &DrainListeners) -> Result<(), String> {
            Ok(())
        }
        fn terminate(&mut self) -> Result<(), String> {
            Ok(())
        }
    }
    let endpoint = unique_endpoint("plain");
    let listener = Listener::bind(&endpoint).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || serve(&listener, &mut Plain, &options(), &flag));
    let mut child = client(&endpoint);
    let err = child
        .take_connections(253, Duration::from_millis(10))
        .unwrap_err();
    assert!(
        matches!(err, Error::Remote { ref error, .. } if error.contains("does not hand over")),
        "{err}"
    );
    drop(child);
    stop.store(true, std::sync::atomic::Ordering::Release);
    handle.join().unwrap();
}

#[test]
fn a_peer_that_hangs_up_without_a_word_is_no_session() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let parent = ConnParent {
        conns: Vec::new(),
        lent: None,
        seen: seen.clone(),
    };
    let (endpoint, _stop, handle) = spawn_parent(parent);
    drop(connect(&endpoint, TIMEOUT).unwrap());
    let mut child = client(&endpoint);
    child.terminate().unwrap();
    drop(child);
    handle.join().unwrap();
    assert_eq!(seen.lock().unwrap().sessions_ended, 1);
}
