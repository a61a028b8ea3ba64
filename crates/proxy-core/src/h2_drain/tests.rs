use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn data_frame(stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADER_LEN];
    f[0] = (payload.len() >> 16) as u8;
    f[1] = (payload.len() >> 8) as u8;
    f[2] = payload.len() as u8;
    f[3] = 0x0;
    f[5..9].copy_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ping_ack(data: [u8; 8]) -> Vec<u8> {
    let mut f = frame(TYPE_PING, &data).to_vec();
    f[4] = FLAG_ACK;
    f
}

fn goaway_max() -> Vec<u8> {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    frame(TYPE_GOAWAY, &p).to_vec()
}

/// Read exactly `n` bytes the "client" receives.
async fn recv(c: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    c.read_exact(&mut v).await.unwrap();
    v
}

/// Nothing more is readable right now.
async fn nothing_pending(c: &mut DuplexStream) {
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(std::time::Duration::from_millis(1), c.read(&mut b)).await;
    assert!(r.is_err(), "unexpected bytes: {r:?}");
}

#[test]
fn frame_tracking_is_independent_of_how_bytes_are_split() {
    let mut stream = crate::io::H2_PREFACE.to_vec();
    stream.extend(data_frame(1, b"hello"));
    stream.extend(data_frame(3, b""));
    stream.extend(data_frame(5, &[7u8; 300]));
    for split in 1..stream.len() {
        let mut f = Frames {
            left: PREFACE_LEN,
            ..Frames::default()
        };
        for chunk in stream.chunks(split) {
            f.feed(chunk);
        }
        assert!(f.at_boundary(), "chunks of {split}");
        f.feed(&stream[PREFACE_LEN..PREFACE_LEN + 4]);
        assert!(!f.at_boundary());
        assert_eq!(f.to_boundary(), HEADER_LEN - 4);
        f.feed(&stream[PREFACE_LEN + 4..PREFACE_LEN + HEADER_LEN + 2]);
        assert_eq!(f.to_boundary(), 3);
    }
}

#[tokio::test]
async fn ping_first_then_goaway_before_held_bytes_and_ack_removed() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let ctl = DrainCtl::new();
    let mut io = H2Io::new(server, ctl.clone());
    client.write_all(crate::io::H2_PREFACE).await.unwrap();
    let before = data_frame(1, b"first");
    io.write_all(&before).await.unwrap();
    // Half a frame is out when the drain starts: the PING waits for its end.
    let mid = data_frame(3, b"in the middle");
    io.write_all(&mid[..5]).await.unwrap();
    ctl.start();
    io.write_all(&mid[5..]).await.unwrap();
    let held = data_frame(5, b"held back");
    io.write_all(&held).await.unwrap();
    io.flush().await.unwrap();
    assert_eq!(ctl.phase(), Phase::Holding);
    assert_eq!(recv(&mut client, before.len()).await, before);
    assert_eq!(recv(&mut client, mid.len()).await, mid);
    let ping = recv(&mut client, HEADER_LEN + 8).await;
    assert_eq!(ping, frame(TYPE_PING, &DRAIN_PING_DATA));
    nothing_pending(&mut client).await;

    // The client's next frames: a request, an unrelated PING ACK, then ours, split mid-way.
    let req = data_frame(7, b"request");
    let other = ping_ack(*b"someone!");
    let ours = ping_ack(DRAIN_PING_DATA);
    let mut wire = req.clone();
    wire.extend(&other);
    wire.extend(&ours[..12]);
    client.write_all(&wire).await.unwrap();
    let mut got = vec![0u8; crate::io::H2_PREFACE.len() + req.len() + other.len()];
    io.read_exact(&mut got).await.unwrap();
    assert_eq!(ctl.phase(), Phase::Holding);
    client.write_all(&ours[12..]).await.unwrap();
    let after = data_frame(9, b"after");
    client.write_all(&after).await.unwrap();
    let mut next = vec![0u8; after.len()];
    io.read_exact(&mut next).await.unwrap();
    assert_eq!(next, after, "our ACK is not given to hyper");
    let mut expect = crate::io::H2_PREFACE.to_vec();
    expect.extend(&req);
    expect.extend(&other);
    assert_eq!(got, expect);
    assert_eq!(ctl.phase(), Phase::Released);
    ctl.released().await;
    assert_eq!(ctl.goaways_sent(), 1);

    io.flush().await.unwrap();
    assert_eq!(recv(&mut client, HEADER_LEN + 8).await, goaway_max());
    assert_eq!(recv(&mut client, held.len()).await, held);
    let later = data_frame(11, b"later");
    io.write_all(&later).await.unwrap();
    assert_eq!(recv(&mut client, later.len()).await, later);
}

#[tokio::test]
async fn hurry_sends_goaway_without_the_ack() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let ctl = DrainCtl::new();
    let mut io = H2Io::new(server, ctl.clone());
    ctl.start();
    let held = data_frame(1, b"held");
    io.write_all(&held).await.unwrap();
    io.flush().await.unwrap();
    assert_eq!(
        recv(&mut client, HEADER_LEN + 8).await,
        frame(TYPE_PING, &DRAIN_PING_DATA)
    );
    nothing_pending(&mut client).await;
    ctl.hurry();
    io.flush().await.unwrap();
    assert_eq!(recv(&mut client, HEADER_LEN + 8).await, goaway_max());
    assert_eq!(recv(&mut client, held.len()).await, held);
    assert_eq!(ctl.phase(), Phase::Released);
}

#[tokio::test]
async fn ping_goes_out_from_a_read_when_hyper_writes_nothing() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let ctl = DrainCtl::new();
    let mut io = H2Io::new(server, ctl.clone());
    ctl.start();
    let mut b = vec![0u8; crate::io::H2_PREFACE.len()];
    let server_side = io.read_exact(&mut b);
    let client_side = async {
        let ping = recv(&mut client, HEADER_LEN + 8).await;
        client.write_all(crate::io::H2_PREFACE).await.unwrap();
        ping
    };
    let (r, ping) = tokio::join!(server_side, client_side);
    r.unwrap();
    assert_eq!(ping, frame(TYPE_PING, &DRAIN_PING_DATA));
    assert_eq!(b, crate::io::H2_PREFACE);
    assert_eq!(ctl.phase(), Phase::Holding);
}
