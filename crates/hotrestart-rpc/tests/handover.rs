//! Parent and child in two threads over a real abstract Unix socket: listen sockets handed over in
//! batches, refusals, and a parent that survives garbage.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hotrestart_rpc::frame;
use hotrestart_rpc::negotiate;
use hotrestart_rpc::pb::HelloReply;
use hotrestart_rpc::{
    connect, serve_one, Body, Client, Endpoint, Envelope, Error, ListenSocketsReply,
    ListenSocketsRequest, Listener, RefusalReason, ServeExit, SessionEnd, SocketManifest,
    SocketType, WantedSocket,
};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use support::{options, unique_endpoint, ParentThread, TestParent, TIMEOUT, VERSION};

fn hello() -> hotrestart_rpc::Hello {
    negotiate::hello(VERSION, 1, std::process::id())
}

fn all() -> ListenSocketsRequest {
    ListenSocketsRequest {
        wanted: Vec::new(),
        all: true,
    }
}

#[test]
fn hands_over_600_listen_sockets_in_batches() {
    let endpoint = unique_endpoint("600");
    let listener = Listener::bind(&endpoint).unwrap();
    let parent = TestParent::with_listeners(600);
    let ports: Vec<u16> = parent
        .sockets
        .iter()
        .map(|(_, l)| l.local_addr().unwrap().port())
        .collect();
    let thread = ParentThread::spawn(listener, parent);

    let conn = connect(&endpoint, TIMEOUT).unwrap();
    assert_eq!(conn.peer().pid, i32::try_from(std::process::id()).unwrap());
    let mut client = Client::handshake(conn, hello(), TIMEOUT).unwrap();
    assert_eq!(client.parent().epoch, 0);
    assert_eq!(client.parent().concurrency, 4);

    let received = client.request_listen_sockets(all()).unwrap();
    assert_eq!(received.len(), 600);
    for (i, (manifest, fd)) in received.into_iter().enumerate() {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(
            FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC),
            "fd {i} lacks CLOEXEC"
        );
        let listener = TcpListener::from(fd);
        let local = listener.local_addr().unwrap();
        assert_eq!(local.port(), ports[i], "socket {i}");
        assert_eq!(manifest.address.parse::<SocketAddr>().unwrap(), local);
        assert_eq!(manifest.worker_index, u32::try_from(i % 4).unwrap());
        if i % 150 == 0 {
            // Same kernel socket: a connection to the parent's port is accepted on our copy.
            let mut out = TcpStream::connect(local).unwrap();
            out.write_all(b"x").unwrap();
            let (mut inbound, _) = listener.accept().unwrap();
            let mut byte = [0u8; 1];
            inbound.read_exact(&mut byte).unwrap();
            assert_eq!(&byte, b"x");
        }
    }

    // Only what is wanted.
    let wanted = ListenSocketsRequest {
        wanted: vec![WantedSocket {
            address: format!("127.0.0.1:{}", ports[7]),
            socket_type: SocketType::Tcp.into(),
        }],
        all: false,
    };
    let one = client.request_listen_sockets(wanted).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        TcpListener::from(one.into_iter().next().unwrap().1)
            .local_addr()
            .unwrap()
            .port(),
        ports[7]
    );

    assert!(matches!(client.stats(), Err(Error::NotSupported { .. })));
    client.drain_listeners(false, false).unwrap();
    assert!(matches!(
        client.drain_listeners(false, false),
        Err(Error::Remote { .. })
    ));
    // A parent that cannot serve again says so; the session goes on.
    assert!(matches!(
        client.roll_back("test"),
        Err(Error::Remote { .. })
    ));
    client.terminate().unwrap();
    let (exit, parent) = thread.join();
    assert_eq!(exit, ServeExit::Terminated);
    assert!(parent.drained.load(std::sync::atomic::Ordering::Acquire));
    assert!(parent.terminated.load(std::sync::atomic::Ordering::Acquire));
}

#[test]
fn bad_versions_are_refused_and_the_parent_keeps_serving() {
    let endpoint = unique_endpoint("version");
    let thread = ParentThread::spawn(
        Listener::bind(&endpoint).unwrap(),
        TestParent::with_listeners(1),
    );

    let mut wrong_protocol = hello();
    wrong_protocol.protocol_version = 99;
    let err = Client::handshake(
        connect(&endpoint, TIMEOUT).unwrap(),
        wrong_protocol,
        TIMEOUT,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Refused { reason: RefusalReason::ProtocolVersion, ref detail } if detail.contains("99")),
        "{err}"
    );

    let wrong_version = negotiate::hello("another.version", 1, 1);
    let err = Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), wrong_version, TIMEOUT)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: RefusalReason::HotRestartVersion,
                ..
            }
        ),
        "{err}"
    );

    let wrong_epoch = negotiate::hello(VERSION, 5, 1);
    let err =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), wrong_epoch, TIMEOUT).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: RefusalReason::Epoch,
                ..
            }
        ),
        "{err}"
    );

    // Still serving: a good child gets its socket.
    let mut client =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    assert_eq!(client.request_listen_sockets(all()).unwrap().len(), 1);
    client.terminate().unwrap();
    assert_eq!(thread.join().0, ServeExit::Terminated);
}

fn raw_connect(endpoint: &Endpoint) -> UnixStream {
    let Endpoint::Abstract(name) = endpoint else {
        panic!("abstract endpoints only");
    };
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    let stream = UnixStream::connect_addr(&addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Reads until the parent closes the connection; returns what it sent first.
fn read_to_close(mut stream: UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("parent did not close the connection: {e}"),
    }
    out
}

#[test]
fn garbage_is_rejected_and_the_listener_keeps_accepting() {
    let endpoint = unique_endpoint("garbage");
    let thread = ParentThread::spawn(
        Listener::bind(&endpoint).unwrap(),
        TestParent::with_listeners(2),
    );

    // Foreign bytes: dropped without an answer.
    let mut raw = raw_connect(&endpoint);
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_to_close(raw).is_empty());

    // A frame cut short, then the peer goes away.
    let bytes = frame::encode(&Envelope::new(1, Body::Hello(hello())), 0).unwrap();
    let mut raw = raw_connect(&endpoint);
    raw.write_all(&bytes[..bytes.len() - 3]).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_to_close(raw).is_empty());

    // A valid header with a corrupted payload.
    let mut bad = bytes.clone();
    bad[frame::HEADER_LEN] = 0xff;
    bad[frame::HEADER_LEN + 1] = 0xff;
    let mut raw = raw_connect(&endpoint);
    raw.write_all(&bad).unwrap();
    assert!(read_to_close(raw).is_empty());

    // A huge declared length.
    let mut huge = bytes.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut raw = raw_connect(&endpoint);
    raw.write_all(&huge).unwrap();
    assert!(read_to_close(raw).is_empty());

    // A request before hello: refused with a reason.
    let mut conn = connect(&endpoint, TIMEOUT).unwrap();
    conn.send(
        &Envelope::new(3, Body::ListenSocketsRequest(all())),
        &[],
        TIMEOUT,
    )
    .unwrap();
    let (reply, fds) = conn.recv(TIMEOUT).unwrap();
    assert!(fds.is_empty());
    assert_eq!(reply.id, 3);
    assert!(matches!(
        reply.body,
        Some(Body::HelloReply(HelloReply { accepted: false, reason, .. })) if reason == i32::from(RefusalReason::NotHello)
    ));

    // An unknown request after hello: answered as unknown, the session goes on.
    let mut client =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    let (reply, _) = client
        .call(Body::BatchAck(hotrestart_rpc::pb::BatchAck {
            batch_index: 0,
        }))
        .unwrap();
    assert!(
        matches!(reply.body, Some(Body::StatusReply(ref s)) if !s.ok),
        "{reply:?}"
    );
    assert_eq!(client.request_listen_sockets(all()).unwrap().len(), 2);
    client.terminate().unwrap();
    assert_eq!(thread.join().0, ServeExit::Terminated);
}

/// A hand-driven parent that answers the handshake, then sends `reply` for the first request.
fn rogue_parent(
    endpoint: &Endpoint,
    send: impl FnOnce(&mut hotrestart_rpc::Conn, u64) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let listener = Listener::bind(endpoint).unwrap();
    std::thread::spawn(move || {
        let mut conn = listener.accept(TIMEOUT).unwrap();
        let (msg, _) = conn.recv(TIMEOUT).unwrap();
        let Some(Body::Hello(h)) = msg.body else {
            panic!("expected hello");
        };
        let state = hotrestart_rpc::ParentState::default();
        let reply = negotiate::answer_hello(VERSION, &state, &h);
        conn.send(
            &Envelope::new(msg.id, Body::HelloReply(reply)),
            &[],
            TIMEOUT,
        )
        .unwrap();
        let (req, _) = conn.recv(TIMEOUT).unwrap();
        send(&mut conn, req.id);
        // Wait for the child to hang up.
        let _ = conn.recv(TIMEOUT);
    })
}

fn manifest_for(l: &TcpListener) -> SocketManifest {
    SocketManifest {
        address: l.local_addr().unwrap().to_string(),
        socket_type: SocketType::Tcp.into(),
        ..Default::default()
    }
}

#[test]
fn manifest_and_fd_count_mismatches_are_errors() {
    // The manifest lists three sockets, two fds come (and the frame honestly declares two).
    let endpoint = unique_endpoint("manifest");
    let parent = rogue_parent(&endpoint, |conn, id| {
        let ls: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let reply = ListenSocketsReply {
            batch_index: 0,
            batch_count: 1,
            total_sockets: 3,
            sockets: ls.iter().map(manifest_for).collect(),
        };
        let fds = [ls[0].as_fd(), ls[1].as_fd()];
        conn.send(
            &Envelope::new(id, Body::ListenSocketsReply(reply)),
            &fds,
            TIMEOUT,
        )
        .unwrap();
    });
    let mut client =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    let err = client.request_listen_sockets(all()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ManifestMismatch {
                manifests: 3,
                fds: 2
            }
        ),
        "{err}"
    );
    drop(client);
    parent.join().unwrap();

    // The frame declares three fds, two come.
    let endpoint = unique_endpoint("fdcount");
    let parent = rogue_parent(&endpoint, |conn, id| {
        let ls: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let reply = ListenSocketsReply {
            batch_index: 0,
            batch_count: 1,
            total_sockets: 3,
            sockets: ls.iter().map(manifest_for).collect(),
        };
        let bytes = frame::encode(&Envelope::new(id, Body::ListenSocketsReply(reply)), 3).unwrap();
        conn.send_raw(&bytes, &[ls[0].as_fd(), ls[1].as_fd()], TIMEOUT)
            .unwrap();
    });
    let mut client =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    let err = client.request_listen_sockets(all()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FdCountMismatch {
                declared: 3,
                received: 2
            }
        ),
        "{err}"
    );
    drop(client);
    parent.join().unwrap();
}

#[test]
fn serve_one_reports_how_the_session_ended() {
    let endpoint = unique_endpoint("serve_one");
    let listener = Listener::bind(&endpoint).unwrap();
    let t = std::thread::spawn(move || {
        let mut parent = TestParent::with_listeners(0);
        let conn = listener.accept(TIMEOUT).unwrap();
        serve_one(conn, &mut parent, &options())
    });
    let mut client =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    assert!(client.request_listen_sockets(all()).unwrap().is_empty());
    drop(client);
    assert_eq!(t.join().unwrap().unwrap(), SessionEnd::PeerClosed);
}

#[test]
fn a_silent_parent_times_out() {
    let endpoint = unique_endpoint("silent");
    let listener = Listener::bind(&endpoint).unwrap();
    // Nobody accepts: the connection sits in the backlog, the hello is buffered, no reply comes.
    let conn = connect(&endpoint, TIMEOUT).unwrap();
    let err = Client::handshake(conn, hello(), Duration::from_millis(200)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(listener);
}

#[test]
fn silent_peers_are_dropped_after_the_handshake_deadline() {
    let endpoint = unique_endpoint("silent");
    let thread = ParentThread::spawn(
        Listener::bind(&endpoint).unwrap(),
        TestParent::with_listeners(1),
    );
    // Two local processes connect and say nothing: each is closed at its own handshake
    // deadline (500 ms), not at the io timeout, and sent nothing.
    let silent: Vec<UnixStream> = (0..2).map(|_| raw_connect(&endpoint)).collect();
    for s in silent {
        assert!(read_to_close(s).is_empty(), "a silent peer is sent nothing");
    }
    let mut client =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    assert_eq!(client.request_listen_sockets(all()).unwrap().len(), 1);
    client.terminate().unwrap();
    assert_eq!(thread.join().0, ServeExit::Terminated);
}

#[test]
fn a_child_is_served_while_silent_peers_stay_connected() {
    let endpoint = unique_endpoint("silent_many");
    // A deadline far past the child's own timeout: served one after another, the silent peers
    // ahead of it would hold the child up for 12 minutes.
    let mut opts = options();
    opts.handshake_timeout = Duration::from_secs(60);
    let thread = ParentThread::spawn_with(
        Listener::bind(&endpoint).unwrap(),
        TestParent::with_listeners(1),
        opts,
    );
    let silent: Vec<UnixStream> = (0..12).map(|_| raw_connect(&endpoint)).collect();
    let mut client =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    assert_eq!(client.request_listen_sockets(all()).unwrap().len(), 1);
    // Still open (their deadline has not passed), and sent nothing.
    for s in &silent {
        s.set_nonblocking(true).unwrap();
        let err = (&*s).read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
        s.set_nonblocking(false).unwrap();
    }
    client.terminate().unwrap();
    assert_eq!(thread.join().0, ServeExit::Terminated);
    // The parent stopped serving: every connection it held is closed.
    for s in silent {
        assert!(read_to_close(s).is_empty(), "a silent peer is sent nothing");
    }
}

#[test]
fn one_session_at_a_time_and_the_next_speaker_is_served_after_it() {
    let endpoint = unique_endpoint("one_at_a_time");
    let thread = ParentThread::spawn(
        Listener::bind(&endpoint).unwrap(),
        TestParent::with_listeners(1),
    );
    let first = Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    // A second child is not answered while the first one's session runs.
    let err = Client::handshake(
        connect(&endpoint, TIMEOUT).unwrap(),
        hello(),
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(first);
    let mut next =
        Client::handshake(connect(&endpoint, TIMEOUT).unwrap(), hello(), TIMEOUT).unwrap();
    assert_eq!(next.request_listen_sockets(all()).unwrap().len(), 1);
    next.terminate().unwrap();
    assert_eq!(thread.join().0, ServeExit::Terminated);
}
