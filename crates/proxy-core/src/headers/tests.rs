use super::*;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

#[test]
fn strip_removes_hop_by_hop_and_connection_named_headers() {
    let mut h = map(&[
        ("host", "a"),
        ("connection", "Keep-Alive, X-Hop ,, bad name, upgrade"),
        ("keep-alive", "timeout=5"),
        ("x-hop", "1"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
        ("x-end", "2"),
    ]);
    strip_hop_by_hop(&mut h, Upgrade::Strip);
    assert_eq!(h, map(&[("host", "a"), ("x-end", "2")]));
}

#[test]
fn strip_keeps_upgrade_and_te_trailers() {
    let mut h = map(&[
        ("connection", "x-hop, Upgrade"),
        ("x-hop", "1"),
        ("upgrade", "websocket"),
        ("te", "Trailers"),
    ]);
    strip_hop_by_hop(&mut h, Upgrade::Keep);
    assert_eq!(
        h,
        map(&[
            ("connection", "x-hop, Upgrade"),
            ("upgrade", "websocket"),
            ("te", "Trailers"),
        ])
    );
    assert_eq!(upgrade_type(&h), Some("websocket"));
}

#[test]
fn strip_without_keep_upgrade_removes_upgrade_named_in_connection() {
    let mut h = map(&[
        ("connection", "upgrade"),
        ("upgrade", "h2c"),
        ("te", "trailers"),
    ]);
    strip_hop_by_hop(&mut h, Upgrade::Strip);
    assert_eq!(h, map(&[("te", "trailers")]));
}

#[test]
fn strip_te_named_in_connection_and_keep_alive_only() {
    let mut h = map(&[("connection", "TE, close"), ("te", "trailers"), ("x", "1")]);
    strip_hop_by_hop(&mut h, Upgrade::Strip);
    assert_eq!(h, map(&[("x", "1")]));
    let mut h = map(&[("connection", "keep-alive"), ("server", "o")]);
    strip_hop_by_hop(&mut h, Upgrade::Strip);
    assert_eq!(h, map(&[("server", "o")]));
    let mut h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
    strip_hop_by_hop(&mut h, Upgrade::Keep);
    assert_eq!(
        h,
        map(&[("connection", "upgrade"), ("upgrade", "websocket")])
    );
}

#[test]
fn strip_honours_every_connection_line() {
    let mut h = map(&[
        ("connection", "keep-alive"),
        ("x-a", "1"),
        ("connection", "X-A"),
        ("x-b", "2"),
        ("connection", "x-b, te"),
        ("te", "trailers"),
        ("x-c", "3"),
    ]);
    strip_hop_by_hop(&mut h, Upgrade::Strip);
    assert_eq!(h, map(&[("x-c", "3")]));
    let mut h = map(&[
        ("connection", "upgrade"),
        ("connection", "x-a"),
        ("x-a", "1"),
        ("upgrade", "websocket"),
    ]);
    strip_hop_by_hop(&mut h, Upgrade::Keep);
    assert_eq!(
        h,
        map(&[
            ("connection", "upgrade"),
            ("connection", "x-a"),
            ("upgrade", "websocket"),
        ])
    );
}

fn req(version: Version, uri: &'static str, pairs: &[(&'static str, &'static str)]) -> Request<()> {
    let mut r = Request::new(());
    *r.version_mut() = version;
    *r.uri_mut() = http::Uri::from_static(uri);
    *r.headers_mut() = map(pairs);
    r
}

#[test]
fn host_rules() {
    let check = |mut r: Request<()>| check_request(&mut r, checks(1 << 16)).map(|()| r);
    let v11 = Version::HTTP_11;
    assert_eq!(check(req(v11, "/", &[])).err(), Some(Refusal::MissingHost));
    let two = [("host", "a"), ("host", "b")];
    assert_eq!(
        check(req(v11, "/", &two)).err(),
        Some(Refusal::DuplicateHost)
    );
    assert_eq!(
        check(req(Version::HTTP_10, "/", &two)).err(),
        Some(Refusal::DuplicateHost)
    );
    assert!(check(req(Version::HTTP_10, "/", &[])).is_ok());
    // The absolute-form authority replaces Host.
    let r = check(req(v11, "http://pub.example/x", &[("host", "admin")])).expect("ok");
    assert_eq!(
        r.headers().get_all("host").iter().collect::<Vec<_>>(),
        ["pub.example"]
    );
    assert_eq!(
        check(req(
            v11,
            "http://admin@pub.example/x",
            &[("host", "pub.example")]
        ))
        .err(),
        Some(Refusal::UserinfoInTarget)
    );
    // HTTP/2: `:authority` wins over any `host`; without it, exactly one `host`.
    let h2 = Version::HTTP_2;
    let r = check(req(h2, "http://pub.example/x", &two)).expect("ok");
    assert_eq!(
        r.headers().get_all("host").iter().collect::<Vec<_>>(),
        ["pub.example"]
    );
    assert!(check(req(h2, "/", &[("host", "a")])).is_ok());
    assert_eq!(check(req(h2, "/", &[])).err(), Some(Refusal::MissingHost));
    assert_eq!(
        check(req(h2, "/", &two)).err(),
        Some(Refusal::DuplicateHost)
    );
}

#[test]
fn connection_naming_managed_fields_and_envoy_fields() {
    let check = |mut r: Request<()>| check_request(&mut r, checks(1 << 16)).map(|()| r);
    for name in [
        "Host",
        "x-request-id",
        "X-Forwarded-For",
        "x-forwarded-proto",
        "x-envoy-a",
    ] {
        let mut r = req(
            Version::HTTP_11,
            "/",
            &[("host", "h"), ("connection", "close")],
        );
        r.headers_mut().append(
            header::CONNECTION,
            HeaderValue::from_str(&format!("keep-alive, {name}")).expect("value"),
        );
        assert_eq!(
            check(r).err(),
            Some(Refusal::ConnectionNamesManaged),
            "{name}"
        );
    }
    let r = req(
        Version::HTTP_11,
        "/",
        &[
            ("host", "h"),
            ("x-envoy-internal", "true"),
            ("x-envoy-original-path", "/a"),
            ("x-envoyish", "kept"),
            ("connection", "x-hop"),
        ],
    );
    let r = check(r).expect("ok");
    assert_eq!(
        *r.headers(),
        map(&[
            ("host", "h"),
            ("x-envoyish", "kept"),
            ("connection", "x-hop")
        ])
    );
    // 21 bytes of names and values.
    let mut r = req(
        Version::HTTP_11,
        "/",
        &[("host", "h"), ("x-long", "0123456789")],
    );
    assert_eq!(
        check_request(&mut r, checks(20)),
        Err(Refusal::HeadersTooLarge)
    );
    assert_eq!(check_request(&mut r, checks(21)), Ok(()));
}

#[test]
fn prepare_appends_remote_address_and_sets_proto() {
    let remote: SocketAddr = ([192, 0, 2, 1], 4000).into();
    let mut h = map(&[("x-forwarded-for", "203.0.113.9"), ("connection", "close")]);
    prepare_request_headers(
        &mut h,
        Forwarded::of(remote, true, false, false),
        Upgrade::Strip,
    );
    assert_eq!(
        h,
        map(&[
            ("x-forwarded-for", "203.0.113.9, 192.0.2.1"),
            ("x-forwarded-proto", "http"),
            // An external client's address, as Envoy tells it with use_remote_address.
            ("x-envoy-external-address", "192.0.2.1"),
        ])
    );
    let v6: SocketAddr = "[2001:db8::ff00:42:8329]:443".parse().unwrap_or(remote);
    let mut h = map(&[("x-forwarded-for", "")]);
    prepare_request_headers(
        &mut h,
        Forwarded::of(v6, true, false, false),
        Upgrade::Strip,
    );
    assert_eq!(
        h,
        map(&[
            ("x-forwarded-for", "2001:db8::ff00:42:8329"),
            ("x-forwarded-proto", "http"),
            ("x-envoy-external-address", "2001:db8::ff00:42:8329"),
        ])
    );
    let mut h = map(&[("x-forwarded-proto", "https")]);
    prepare_request_headers(
        &mut h,
        Forwarded::of(remote, false, false, false),
        Upgrade::Strip,
    );
    assert_eq!(h, map(&[("x-forwarded-proto", "https")]));
    // Over TLS, with use_remote_address, Baton sets the scheme it saw.
    let mut h = map(&[("x-forwarded-proto", "http")]);
    prepare_request_headers(
        &mut h,
        Forwarded::of(remote, true, true, false),
        Upgrade::Strip,
    );
    assert_eq!(
        h,
        map(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "https"),
            ("x-envoy-external-address", "192.0.2.1"),
        ])
    );
}

#[test]
fn uuid_text_is_8_4_4_4_12_lowercase_hex() {
    assert_eq!(
        &uuid_text(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
        b"01234567-89ab-cdef-fedc-ba9876543210"
    );
    assert_eq!(&uuid_text(0), b"00000000-0000-0000-0000-000000000000");
    assert_eq!(
        &uuid_text(u128::MAX),
        b"ffffffff-ffff-ffff-ffff-ffffffffffff"
    );
}

#[test]
fn request_id_is_a_uuid_v4() {
    let id = new_request_id();
    let s = id.to_str().unwrap_or_default();
    assert_eq!(s.len(), 36);
    assert_eq!(s.as_bytes()[14], b'4');
    assert!(matches!(s.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    for (i, c) in s.bytes().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            assert_eq!(c, b'-', "{s}");
        } else {
            assert!(matches!(c, b'0'..=b'9' | b'a'..=b'f'), "{s}");
        }
    }
    assert_ne!(new_request_id(), id);
}

/// The checks of an external client's request, HTTP/1.0 accepted.
fn checks(max_head: usize) -> Checks<'static> {
    Checks {
        max_head,
        internal: false,
        accept_http_10: true,
        default_host_10: None,
    }
}
