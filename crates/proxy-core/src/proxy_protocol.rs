//! `envoy.filters.listener.proxy_protocol`: a connection that opens with a PROXY protocol header
//! (v1 text or v2 binary, parsed by the `ppp` crate) has the header read off — and only the
//! header: it is peeked first, so exactly its bytes are consumed — and the addresses it carries
//! become the connection's remote and local addresses. A connection that does not open with
//! one is refused, or served as it is with `allow_requests_without_proxy_protocol`.

use std::io;
use std::net::SocketAddr;

use ppp::v2;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The v1 header's start.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header (with its CRLF), per the specification.
const V1_MAX: usize = 107;
/// The v2 header's signature; its fixed part is 16 bytes, the last two the length of the rest.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;

/// Which version a header was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// What the first bytes of a connection were.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A header, read off the connection: the client's and the proxied-to addresses, or `None`
    /// (v1 `UNKNOWN`, v2 `LOCAL` or an address family other than IP: the connection's own
    /// addresses stand).
    Found(Version, Option<(SocketAddr, SocketAddr)>),
    /// Not a PROXY protocol header (nothing was read).
    NotFound,
    /// A malformed header.
    Error(Version),
    /// The peer closed first.
    Closed,
}

/// What the bytes peeked so far say.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// At least this many bytes are needed.
    NeedMore(usize),
    Done(Header, usize),
}

/// Read the PROXY protocol header `stream` opens with, if it does.
pub async fn read(stream: &TcpStream) -> io::Result<Header> {
    let mut buf = vec![0u8; 256];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Header::Closed);
        }
        match examine(&buf[..n]) {
            Step::Done(Header::Found(v, addrs), len) => {
                consume(stream, &mut buf[..len]).await?;
                return Ok(Header::Found(v, addrs));
            }
            Step::Done(other, _) => return Ok(other),
            Step::NeedMore(want) if want > buf.len() => buf.resize(want, 0),
            Step::NeedMore(_) if n == seen => {
                // Nothing new since the last peek: wait for more bytes (see `tls_inspector`).
                let _ = stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
            }
            Step::NeedMore(_) => {}
        }
        seen = n;
    }
}

/// Read exactly `buf.len()` bytes (already known to be there).
async fn consume(stream: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        stream.readable().await?;
        match stream.try_read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `a` and `b` agree on their common length.
fn agrees(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn examine(buf: &[u8]) -> Step {
    if agrees(buf, V2_SIGNATURE) {
        return examine_v2(buf);
    }
    if agrees(buf, V1_PREFIX) {
        return examine_v1(buf);
    }
    Step::Done(Header::NotFound, 0)
}

fn examine_v1(buf: &[u8]) -> Step {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Step::Done(Header::Error(Version::V1), 0)
        } else {
            Step::NeedMore(buf.len() + 1)
        };
    };
    let len = end + 2;
    let header = match ppp::v1::Header::try_from(&buf[..len]) {
        Ok(h) => h,
        Err(_) => return Step::Done(Header::Error(Version::V1), 0),
    };
    let addrs = match header.addresses {
        ppp::v1::Addresses::Unknown => None,
        ppp::v1::Addresses::Tcp4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        ppp::v1::Addresses::Tcp6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
    };
    Step::Done(Header::Found(Version::V1, addrs), len)
}

fn examine_v2(buf: &[u8]) -> Step {
    if buf.len() < V2_FIXED {
        return Step::NeedMore(V2_FIXED);
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Step::NeedMore(len);
    }
    let header = match v2::Header::try_from(&buf[..len]) {
        Ok(h) => h,
        Err(_) => return Step::Done(Header::Error(Version::V2), 0),
    };
    let addrs = match (header.command, header.addresses) {
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        _ => None,
    };
    Step::Done(Header::Found(Version::V2, addrs), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[test]
    fn v1_headers_their_addresses_and_their_end() {
        let h = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\nGET /";
        let want = Some((
            "1.2.3.4:1111".parse().unwrap(),
            "5.6.7.8:2222".parse().unwrap(),
        ));
        assert_eq!(
            examine(h),
            Step::Done(Header::Found(Version::V1, want), h.len() - 5)
        );
        let h = b"PROXY TCP6 ::1 ::2 1 2\r\n";
        let want = Some(("[::1]:1".parse().unwrap(), "[::2]:2".parse().unwrap()));
        assert_eq!(
            examine(h),
            Step::Done(Header::Found(Version::V1, want), h.len())
        );
        assert_eq!(
            examine(b"PROXY UNKNOWN\r\n"),
            Step::Done(Header::Found(Version::V1, None), 15)
        );
        assert_eq!(examine(b"PRO"), Step::NeedMore(4));
        assert_eq!(examine(b"PROXY TCP4 1.2.3.4"), Step::NeedMore(19));
        assert_eq!(
            examine(b"PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n"),
            Step::Done(Header::Error(Version::V1), 0)
        );
        assert_eq!(examine(&[b'P'; 1][..]), Step::NeedMore(2));
        assert_eq!(
            examine(b"GET / HTTP/1.1\r\n"),
            Step::Done(Header::NotFound, 0)
        );
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(examine(&long), Step::Done(Header::Error(Version::V1), 0));
    }

    #[test]
    fn v2_headers_proxy_and_local() {
        let addrs = [9, 9, 9, 9, 5, 6, 7, 8, 0x0d, 0x05, 0, 80];
        let h = v2(1, 0x11, &addrs);
        let want = Some((
            "9.9.9.9:3333".parse().unwrap(),
            "5.6.7.8:80".parse().unwrap(),
        ));
        assert_eq!(
            examine(&h),
            Step::Done(Header::Found(Version::V2, want), 28)
        );
        assert_eq!(examine(&h[..20]), Step::NeedMore(28));
        assert_eq!(examine(&h[..5]), Step::NeedMore(16));
        let local = v2(0, 0x00, &[]);
        assert_eq!(
            examine(&local),
            Step::Done(Header::Found(Version::V2, None), 16)
        );
        let mut bad = v2(1, 0x11, &addrs);
        bad[12] = 0x31; // version 3
        assert_eq!(examine(&bad), Step::Done(Header::Error(Version::V2), 0));
    }

    #[tokio::test]
    async fn reads_exactly_the_header_split_across_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        c.write_all(b"PROXY TCP4 1.2.3.4 5.6").await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            c.write_all(b".7.8 1111 2222\r\nhello").await.unwrap();
            c
        });
        let got = read(&s).await.unwrap();
        assert!(
            matches!(got, Header::Found(Version::V1, Some(_))),
            "{got:?}"
        );
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        drop(writer.await.unwrap());
    }
}
