//! `envoy.filters.listener.tls_inspector`: a connection's first bytes are peeked — never
//! consumed, so whatever serves the connection next reads them again — until they are known to
//! be a TLS ClientHello (its server name and ALPN protocols are then kept) or not TLS at all.
//! The ClientHello is parsed by rustls' `Acceptor` over a copy of the peeked bytes.

use std::io;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// The largest ClientHello read (Envoy's TLS inspector's default limit, 16 KiB, plus the
/// record headers).
const MAX_CLIENT_HELLO: usize = 16 * 1024 + 64;

/// What the TLS inspector learned of a connection.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inspected {
    /// The first bytes are a TLS ClientHello.
    pub tls: bool,
    /// Its server name, lower-cased without a trailing dot.
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

/// What the bytes peeked so far say.
#[derive(Debug, PartialEq, Eq)]
enum Peeked {
    NeedMore,
    NotTls,
    Hello(Inspected),
}

/// Peek at `stream` until its first bytes tell. `Ok(None)`: the peer closed (or sent a
/// ClientHello larger than Baton reads) before they did.
pub async fn inspect(stream: &TcpStream) -> io::Result<Option<Inspected>> {
    let mut buf = vec![0u8; MAX_CLIENT_HELLO];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        match parse(&buf[..n]) {
            Peeked::NotTls => return Ok(Some(Inspected::default())),
            Peeked::Hello(h) => return Ok(Some(h)),
            Peeked::NeedMore if n == buf.len() => return Ok(None),
            Peeked::NeedMore => {}
        }
        if n == seen {
            // Nothing new since the last peek: forget the readiness the peek left set (the
            // bytes are still unread), so the next peek waits for more to arrive.
            let _ = stream.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
        seen = n;
    }
}

/// Whether `buf` starts a TLS handshake record and, if so, its ClientHello once complete.
fn parse(buf: &[u8]) -> Peeked {
    // A handshake record (22) of TLS 1.x (3, x).
    if buf[0] != 0x16 || buf.get(1).is_some_and(|&v| v != 0x03) {
        return Peeked::NotTls;
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(None) => Peeked::NeedMore,
        Err(_) => Peeked::NotTls,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            Peeked::Hello(Inspected {
                tls: true,
                sni: hello
                    .server_name()
                    .map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
                alpn: hello
                    .alpn()
                    .map(|a| a.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                    .unwrap_or_default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello from rustls' client.
    fn client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_client_hello_gives_its_sni_and_alpn_and_a_partial_one_asks_for_more() {
        let hello = client_hello("Www.Example.com", &[b"h2", b"http/1.1"]);
        assert_eq!(
            parse(&hello),
            Peeked::Hello(Inspected {
                tls: true,
                sni: Some("www.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
            })
        );
        assert_eq!(parse(&hello[..1]), Peeked::NeedMore);
        assert_eq!(parse(&hello[..hello.len() - 1]), Peeked::NeedMore);
    }

    #[test]
    fn cleartext_is_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Peeked::NotTls);
        assert_eq!(parse(b"\x16\x01"), Peeked::NotTls);
        assert_eq!(
            parse(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"),
            Peeked::NotTls
        );
    }

    #[tokio::test]
    async fn peeks_a_hello_split_across_writes_without_consuming_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let hello = client_hello("a.test", &[]);
        let (first, second) = hello.split_at(10);
        c.write_all(first).await.unwrap();
        let second = second.to_vec();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            c.write_all(&second).await.unwrap();
            c
        });
        let got = inspect(&s).await.unwrap().unwrap();
        assert_eq!(got.sni.as_deref(), Some("a.test"));
        let mut all = vec![0; hello.len()];
        s.read_exact(&mut all).await.unwrap();
        assert_eq!(all, hello);
        drop(writer.await.unwrap());
    }
}
