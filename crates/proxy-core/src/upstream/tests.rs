use std::time::Duration;

use super::*;

/// `tcp_keepalive` as the kernel reports it back for a connected socket.
#[tokio::test]
async fn keepalive_options_reach_the_socket() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let sock = socket2::SockRef::from(&s);
    assert!(!sock.keepalive().unwrap());
    let k = crate::config::TcpKeepalive {
        probes: Some(4),
        time: Some(Duration::from_secs(17)),
        interval: Some(Duration::from_secs(3)),
    };
    set_keepalive(&s, &k).unwrap();
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(17));
    assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(3));
    assert_eq!(sock.keepalive_retries().unwrap(), 4);
    // Only what is given changes.
    let s2 = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let before = socket2::SockRef::from(&s2).keepalive_interval().unwrap();
    let only_time = crate::config::TcpKeepalive {
        time: Some(Duration::from_secs(9)),
        ..Default::default()
    };
    set_keepalive(&s2, &only_time).unwrap();
    let sock2 = socket2::SockRef::from(&s2);
    assert_eq!(sock2.keepalive_time().unwrap(), Duration::from_secs(9));
    assert_eq!(sock2.keepalive_interval().unwrap(), before);
}
