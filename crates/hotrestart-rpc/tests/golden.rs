//! Golden tests: the exact bytes of every message as framed on the wire, committed under
//! `tests/fixtures/`. Generations built from different commits must understand each other, so a
//! change here is a wire-format change. Set `HOTRESTART_RPC_BLESS=1` to rewrite the fixtures after
//! an intended change (and bump `PROTOCOL_VERSION` if an old peer cannot ignore it).

use std::path::PathBuf;

use hotrestart_rpc::frame::{self, FrameHeader, HEADER_LEN, MAGIC};
use hotrestart_rpc::negotiate;
use hotrestart_rpc::pb::{
    BatchAck, ChainIdentity, ConnectionKind, ConnectionsAck, ConnectionsBatch, DrainListeners,
    MovedConnection, RollBack, StatsRequest, StatusReply, TakeConnections, Terminate,
    UnknownMessage,
};
use hotrestart_rpc::{
    Body, Envelope, Error, Hello, HelloReply, ListenSocketsReply, ListenSocketsRequest,
    ParentState, RefusalReason, SocketManifest, SocketOptions, SocketType, StatsSnapshot,
    WantedSocket, PROTOCOL_VERSION,
};

const BLESS: &str = "HOTRESTART_RPC_BLESS";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.bin"))
}

fn blessing() -> bool {
    std::env::var_os(BLESS).is_some_and(|v| v == "1")
}

/// Writes `bytes` when blessing, else checks they equal the committed fixture.
fn check_fixture(name: &str, bytes: &[u8]) {
    let path = fixture_path(name);
    if blessing() {
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let committed = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e} (run with {BLESS}=1)", path.display()));
    assert_eq!(
        committed, bytes,
        "fixture {name} differs from the current encoding: a wire-format change"
    );
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

fn parent_state() -> ParentState {
    ParentState {
        chain_start_unix_ms: 1_700_000_000_123,
        epoch: 3,
        pid: 4242,
        concurrency: 2,
        server_version: "baton 0.1.0".into(),
        draining: false,
        // The rollback fields (unset here) encode as nothing: the fixture still holds the
        // bytes of a parent that predates them.
        ..ParentState::default()
    }
}

fn manifest(port: u16, worker: u32) -> SocketManifest {
    SocketManifest {
        address: format!("127.0.0.1:{port}"),
        socket_type: SocketType::Tcp.into(),
        worker_index: worker,
        options: Some(SocketOptions {
            reuse_port: true,
            ipv6_only: false,
            transparent: false,
            freebind: false,
            backlog: 1024,
        }),
        name: format!("listener_{port}"),
    }
}

/// Every message type, with the number of fds its frame declares.
fn samples() -> Vec<(&'static str, Envelope, usize)> {
    vec![
        (
            "hello",
            Envelope::new(1, Body::Hello(negotiate::hello("11.envoy", 4, 5151))),
            0,
        ),
        (
            "hello_reply_accepted",
            Envelope::new(
                1,
                Body::HelloReply(negotiate::answer_hello(
                    "11.envoy",
                    &parent_state(),
                    &negotiate::hello("11.envoy", 4, 5151),
                )),
            ),
            0,
        ),
        (
            "hello_reply_refused",
            Envelope::new(
                1,
                Body::HelloReply(negotiate::refuse(
                    "11.envoy",
                    RefusalReason::HotRestartVersion,
                    "child hot restart version \"12.envoy\" differs from parent's \"11.envoy\""
                        .into(),
                )),
            ),
            0,
        ),
        (
            "listen_sockets_request",
            Envelope::new(
                2,
                Body::ListenSocketsRequest(ListenSocketsRequest {
                    wanted: vec![
                        WantedSocket {
                            address: "127.0.0.1:8080".into(),
                            socket_type: SocketType::Tcp.into(),
                        },
                        WantedSocket {
                            address: "/run/baton.sock".into(),
                            socket_type: SocketType::Unix.into(),
                        },
                        WantedSocket {
                            address: "127.0.0.1:5353".into(),
                            socket_type: SocketType::Udp.into(),
                        },
                    ],
                    all: false,
                }),
            ),
            0,
        ),
        (
            "listen_sockets_reply",
            Envelope::new(
                2,
                Body::ListenSocketsReply(ListenSocketsReply {
                    batch_index: 0,
                    batch_count: 1,
                    total_sockets: 2,
                    sockets: vec![manifest(8080, 0), manifest(8080, 1)],
                }),
            ),
            2,
        ),
        (
            "batch_ack",
            Envelope::new(2, Body::BatchAck(BatchAck { batch_index: 0 })),
            0,
        ),
        (
            "drain_listeners",
            // What a child without connection handover sends (and an older child sent).
            Envelope::new(
                3,
                Body::DrainListeners(DrainListeners {
                    handover_connections: false,
                    handover_tcp_proxy: false,
                }),
            ),
            0,
        ),
        (
            "drain_listeners_handover",
            Envelope::new(
                3,
                Body::DrainListeners(DrainListeners {
                    handover_connections: true,
                    handover_tcp_proxy: false,
                }),
            ),
            0,
        ),
        (
            "drain_listeners_handover_tcp_proxy",
            Envelope::new(
                3,
                Body::DrainListeners(DrainListeners {
                    handover_connections: true,
                    handover_tcp_proxy: true,
                }),
            ),
            0,
        ),
        (
            "take_connections",
            Envelope::new(
                7,
                Body::TakeConnections(TakeConnections {
                    max_fds: 253,
                    wait_ms: 200,
                }),
            ),
            0,
        ),
        (
            "connections_batch",
            Envelope::new(
                7,
                Body::ConnectionsBatch(ConnectionsBatch {
                    connections: vec![
                        MovedConnection {
                            kind: ConnectionKind::Http1.into(),
                            listener_address: "127.0.0.1:10000".into(),
                            peer_address: "127.0.0.1:40000".into(),
                            read_buf: b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec(),
                            idle_ms: 250,
                            requests: 17,
                            upstream_address: String::new(),
                            cluster: String::new(),
                            // Unset, as an older parent sends it: the fixture keeps its bytes.
                            chain: None,
                        },
                        MovedConnection {
                            kind: ConnectionKind::Tunnel.into(),
                            listener_address: "[::1]:10000".into(),
                            peer_address: "[::1]:40001".into(),
                            read_buf: Vec::new(),
                            idle_ms: 3,
                            requests: 1,
                            upstream_address: "127.0.0.1:8080".into(),
                            cluster: "ws".into(),
                            chain: None,
                        },
                    ],
                    more: true,
                    still_open: 42,
                }),
            ),
            3,
        ),
        (
            "connections_batch_chains",
            Envelope::new(
                7,
                Body::ConnectionsBatch(ConnectionsBatch {
                    connections: vec![
                        MovedConnection {
                            kind: ConnectionKind::TcpProxy.into(),
                            listener_address: "127.0.0.1:10001".into(),
                            peer_address: "127.0.0.1:40002".into(),
                            read_buf: Vec::new(),
                            idle_ms: 1200,
                            requests: 0,
                            upstream_address: "127.0.0.1:5432".into(),
                            cluster: "db".into(),
                            chain: Some(ChainIdentity {
                                name: "db".into(),
                                digest: (0u8..32).collect(),
                            }),
                        },
                        MovedConnection {
                            kind: ConnectionKind::Http1.into(),
                            listener_address: "127.0.0.1:10001".into(),
                            peer_address: "127.0.0.1:40003".into(),
                            read_buf: Vec::new(),
                            idle_ms: 5,
                            requests: 2,
                            upstream_address: String::new(),
                            cluster: String::new(),
                            chain: Some(ChainIdentity {
                                name: String::new(),
                                digest: vec![0xab; 32],
                            }),
                        },
                    ],
                    more: false,
                    still_open: 2,
                }),
            ),
            3,
        ),
        (
            "connections_ack",
            Envelope::new(
                8,
                Body::ConnectionsAck(ConnectionsAck {
                    taken: vec![true, false],
                }),
            ),
            0,
        ),
        (
            "terminate",
            Envelope::new(4, Body::Terminate(Terminate {})),
            0,
        ),
        (
            "roll_back",
            Envelope::new(
                9,
                Body::RollBack(RollBack {
                    reason: "operator rollback".into(),
                }),
            ),
            0,
        ),
        (
            "status_reply_ok",
            Envelope::new(
                3,
                Body::StatusReply(StatusReply {
                    ok: true,
                    error: String::new(),
                }),
            ),
            0,
        ),
        (
            "status_reply_error",
            Envelope::new(
                4,
                Body::StatusReply(StatusReply {
                    ok: false,
                    error: "could not drain: already draining".into(),
                }),
            ),
            0,
        ),
        (
            "unknown_message",
            Envelope::new(
                5,
                Body::UnknownMessage(UnknownMessage {
                    detail: "unknown request".into(),
                }),
            ),
            0,
        ),
        (
            "stats_request",
            Envelope::new(6, Body::StatsRequest(StatsRequest {})),
            0,
        ),
        (
            "stats_snapshot",
            Envelope::new(
                6,
                Body::StatsSnapshot(StatsSnapshot {
                    counters: vec![hotrestart_rpc::pb::Stat {
                        name: "http.ingress.downstream_rq_total".into(),
                        value: 12345,
                    }],
                    gauges: vec![hotrestart_rpc::pb::Stat {
                        name: "server.hot_restart_epoch".into(),
                        value: 3,
                    }],
                }),
            ),
            0,
        ),
    ]
}

#[test]
fn every_message_matches_its_fixture() {
    for (name, msg, fds) in samples() {
        let bytes = frame::encode(&msg, fds).unwrap();
        check_fixture(name, &bytes);
        let committed = read_fixture(name);
        assert_eq!(frame::decode(&committed, fds).unwrap(), msg, "{name}");
    }
}

#[test]
fn every_body_kind_has_a_fixture() {
    let kinds: std::collections::BTreeSet<&str> =
        samples().iter().map(|(_, m, _)| m.kind()).collect();
    // Keep in step with `Body`: one entry per oneof case of the .proto.
    let expected = [
        "hello",
        "hello_reply",
        "listen_sockets_request",
        "listen_sockets_reply",
        "batch_ack",
        "drain_listeners",
        "terminate",
        "status_reply",
        "unknown_message",
        "stats_request",
        "stats_snapshot",
        "take_connections",
        "connections_batch",
        "connections_ack",
        "roll_back",
    ];
    assert_eq!(kinds, expected.into_iter().collect());
}

// --- Hand-built payloads: what another build (older or newer) sends. Their bytes are spelled out
// --- here field by field, independent of the generated code.

/// Protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field_varint(field: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3, out);
    varint(v, out);
}

fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint((u64::from(field) << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn framed(payload: &[u8], fds: usize) -> Vec<u8> {
    let mut out = FrameHeader {
        fd_count: fds,
        payload_len: payload.len(),
    }
    .encode()
    .unwrap()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

/// An old, minimal Hello: only the protocol version and epoch set, as the first protocol version
/// could send before `hot_restart_version` and `pid` were filled in.
fn old_minimal_hello() -> Vec<u8> {
    let mut hello = Vec::new();
    field_varint(1, 1, &mut hello); // protocol_version = 1
    field_varint(3, 7, &mut hello); // epoch = 7
    let mut env = Vec::new();
    field_varint(1, 9, &mut env); // id = 9
    field_bytes(2, &hello, &mut env); // body.hello
    framed(&env, 0)
}

/// A newer peer's Hello: an extra field 15 this build does not know.
fn future_hello() -> Vec<u8> {
    let mut hello = Vec::new();
    field_varint(1, 1, &mut hello);
    field_bytes(2, b"11.envoy", &mut hello);
    field_varint(3, 4, &mut hello);
    field_varint(4, 77, &mut hello);
    field_bytes(15, b"from the future", &mut hello);
    let mut env = Vec::new();
    field_varint(1, 1, &mut env);
    field_bytes(2, &hello, &mut env);
    framed(&env, 0)
}

/// A newer peer's request: body field 99, unknown here.
fn future_request() -> Vec<u8> {
    let mut env = Vec::new();
    field_varint(1, 42, &mut env);
    field_bytes(99, &[0x08, 0x01], &mut env);
    framed(&env, 0)
}

/// A Hello from a peer speaking protocol version 2.
fn wrong_protocol_hello() -> Vec<u8> {
    let mut hello = Vec::new();
    field_varint(1, 2, &mut hello);
    field_bytes(2, b"11.envoy", &mut hello);
    field_varint(3, 4, &mut hello);
    let mut env = Vec::new();
    field_varint(1, 1, &mut env);
    field_bytes(2, &hello, &mut env);
    framed(&env, 0)
}

#[test]
fn old_payload_still_decodes() {
    check_fixture("compat_hello_v1_minimal", &old_minimal_hello());
    let msg = frame::decode(&read_fixture("compat_hello_v1_minimal"), 0).unwrap();
    assert_eq!(msg.id, 9);
    assert_eq!(
        msg.body,
        Some(Body::Hello(Hello {
            protocol_version: 1,
            hot_restart_version: String::new(),
            epoch: 7,
            pid: 0,
        }))
    );
}

#[test]
fn newer_payloads_decode_or_are_answered_as_unknown() {
    check_fixture("compat_hello_future_field", &future_hello());
    let msg = frame::decode(&read_fixture("compat_hello_future_field"), 0).unwrap();
    assert_eq!(
        msg.body,
        Some(Body::Hello(negotiate::hello("11.envoy", 4, 77)))
    );

    check_fixture("compat_future_request", &future_request());
    let msg = frame::decode(&read_fixture("compat_future_request"), 0).unwrap();
    assert_eq!(msg.id, 42);
    assert_eq!(msg.body, None, "an unknown request decodes without a body");
}

#[test]
fn wrong_protocol_version_fails_loudly() {
    check_fixture("compat_hello_protocol_v2", &wrong_protocol_hello());
    let msg = frame::decode(&read_fixture("compat_hello_protocol_v2"), 0).unwrap();
    let Some(Body::Hello(hello)) = msg.body else {
        panic!("not a hello: {msg:?}");
    };
    let reply: HelloReply = negotiate::answer_hello("11.envoy", &parent_state(), &hello);
    assert!(!reply.accepted);
    assert_eq!(reply.protocol_version, PROTOCOL_VERSION);
    let err = negotiate::check_reply(reply).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                reason: RefusalReason::ProtocolVersion,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("protocol version 2"), "{err}");

    // A frame layout from the future is refused before its payload is looked at.
    let mut bytes = read_fixture("hello");
    bytes[4] = 2;
    assert!(matches!(
        frame::decode(&bytes, 0),
        Err(Error::FrameVersion { found: 2, .. })
    ));
}

#[test]
fn every_truncation_of_every_fixture_is_a_typed_error() {
    // The samples' encodings equal the committed fixtures (checked above); encoding here keeps this
    // test independent of a concurrent bless run rewriting the files.
    for (name, msg, fds) in samples() {
        let bytes = frame::encode(&msg, fds).unwrap();
        for len in 0..bytes.len() {
            let err = frame::decode(&bytes[..len], fds).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. } | Error::Decode { .. }),
                "{name} cut at {len}: {err}"
            );
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    for (name, msg, fds) in samples() {
        let bytes = frame::encode(&msg, fds).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                let result = frame::decode(&bad, fds);
                if i < HEADER_LEN {
                    // Header damage is always caught.
                    assert!(result.is_err(), "{name}: byte {i} ^ {flip:#x} accepted");
                }
            }
        }
        // The wrong number of fds alongside a good frame.
        assert!(matches!(
            frame::decode(&bytes, fds + 1),
            Err(Error::FdCountMismatch { .. })
        ));
    }
}

#[test]
fn random_bytes_are_typed_errors() {
    let mut rng = fastrand::Rng::with_seed(0x0062_6174_6f6e);
    for _ in 0..20_000 {
        let len = rng.usize(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        match frame::decode(&bytes, 0) {
            Err(Error::BadMagic { .. } | Error::Truncated { .. }) => {}
            other => panic!("random {bytes:02x?}: {other:?}"),
        }
    }
    // Noise behind a valid header: whatever decodes must survive a round trip unchanged.
    for _ in 0..20_000 {
        let payload: Vec<u8> = (0..rng.usize(0..48)).map(|_| rng.u8(..)).collect();
        let bytes = framed(&payload, 0);
        assert_eq!(&bytes[..4], &MAGIC);
        if let Ok(msg) = frame::decode(&bytes, 0) {
            let again = frame::encode(&msg, 0).unwrap();
            assert_eq!(frame::decode(&again, 0).unwrap(), msg);
        }
    }
}
