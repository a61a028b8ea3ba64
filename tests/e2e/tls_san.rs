//! `validation_context.match_typed_subject_alt_names` (and the deprecated
//! `match_subject_alt_names`), upstream on the server's certificate and downstream on a client
//! certificate under mTLS. Envoy 1.40 accepts every matcher kind used here, refuses
//! `SAN_TYPE_UNSPECIFIED`, SAN matchers without `trusted_ca` ("SAN-based verification of peer
//! certificates without trusted CA is insecure and not allowed") and `ignore_case` with
//! `safe_regex`; a chain that verifies with no name matching counts `ssl.fail_verify_san` and
//! neither `connection_error` nor `handshake` (Envoy 1.40, upstream, `sni` naming none of the
//! certificate's names: the matching cluster answered 200, the other 503 with only
//! `fail_verify_san` 1).

use serde_json::{json, Value};

use crate::support::*;
use crate::tls::{
    data, downstream_socket, echo_config, get_with, stat_prefix, tls_upstream_alpn, with_chains,
    Ca, ClientOpts,
};

fn san(kind: &str, matcher: Value) -> Value {
    json!({"san_type": kind, "matcher": matcher})
}

/// An upstream TLS socket trusting `ca`, sending SNI `sni`, with `validation` merged into its
/// validation context.
fn upstream_tls(ca: &str, sni: &str, validation: Value) -> Value {
    let mut vc = json!({"trusted_ca": data(ca)});
    if let (Some(vc), Value::Object(extra)) = (vc.as_object_mut(), validation) {
        vc.extend(extra);
    }
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": {"validation_context": vc},
        },
    })
}

fn up_sans() -> Vec<rcgen::SanType> {
    vec![
        rcgen::SanType::DnsName("up.test".try_into().unwrap()),
        rcgen::SanType::URI("spiffe://td/ns/prod/sa/api".try_into().unwrap()),
        rcgen::SanType::Rfc822Name("Ops@Example.com".try_into().unwrap()),
        rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_server_names_are_matched() {
    let ca = Ca::new("upstream ca");
    let up = tls_upstream_alpn(&ca.leaf_sans(up_sans()), &[b"http/1.1"]).await;
    // (cluster, validation context fields, accepted)
    let cases: Vec<(&str, Value, bool)> = vec![
        (
            "dns_exact",
            json!({"match_typed_subject_alt_names": [san("DNS", json!({"exact": "UP.test"}))]}),
            true,
        ),
        (
            "dns_regex",
            json!({"match_typed_subject_alt_names": [san("DNS", json!({"safe_regex": {"regex": "up\\.t[a-z]+"}}))]}),
            true,
        ),
        (
            "uri_prefix",
            json!({"match_typed_subject_alt_names": [san("URI", json!({"prefix": "spiffe://td/"}))]}),
            true,
        ),
        (
            "uri_contains",
            json!({"match_typed_subject_alt_names": [san("URI", json!({"contains": "/prod/"}))]}),
            true,
        ),
        (
            "email_suffix",
            json!({"match_typed_subject_alt_names": [san("EMAIL", json!({"suffix": "@example.com", "ignore_case": true}))]}),
            true,
        ),
        (
            "ip_exact",
            json!({"match_typed_subject_alt_names": [san("IP_ADDRESS", json!({"exact": "127.0.0.1"}))]}),
            true,
        ),
        // One of several is enough.
        (
            "any_of",
            json!({"match_typed_subject_alt_names": [san("DNS", json!({"exact": "no.test"})), san("URI", json!({"suffix": "/sa/api"}))]}),
            true,
        ),
        // Deprecated: matched against every name type (here the IP address).
        (
            "deprecated",
            json!({"match_subject_alt_names": [{"exact": "127.0.0.1"}]}),
            true,
        ),
        (
            "dns_other",
            json!({"match_typed_subject_alt_names": [san("DNS", json!({"exact": "other.test"}))]}),
            false,
        ),
        // A URI matcher does not look at DNS names.
        (
            "wrong_type",
            json!({"match_typed_subject_alt_names": [san("URI", json!({"exact": "up.test"}))]}),
            false,
        ),
        (
            "case",
            json!({"match_typed_subject_alt_names": [san("EMAIL", json!({"suffix": "@example.com"}))]}),
            false,
        ),
    ];
    let mut config = Config::new();
    for (name, validation, _) in &cases {
        // The SNI names none of the certificate's names: with matchers, Envoy does not
        // compare it.
        config = config
            .route(route(&format!("/{name}"), name, json!({})))
            .cluster(with(
                cluster(name, &[up.port]),
                "transport_socket",
                upstream_tls(&ca.pem(), "elsewhere.test", validation.clone()),
            ));
    }
    let baton = Baton::start(&config.render()).await;
    for (name, _, accepted) in &cases {
        let r = get(baton.addr(), &format!("/{name}")).await;
        let want = if *accepted { 200 } else { 503 };
        assert_eq!(r.status, want, "{name}: {}", r.text());
        let san_failures = baton
            .stat(&format!("cluster.{name}.ssl.fail_verify_san"))
            .await;
        assert_eq!(san_failures, Some(i64::from(!accepted)), "{name}");
        if !accepted {
            // As Envoy 1.40 counted a SAN mismatch: no verify error, no connection error.
            for stat in ["fail_verify_error", "connection_error", "handshake"] {
                assert_eq!(
                    baton.stat(&format!("cluster.{name}.ssl.{stat}")).await,
                    Some(0),
                    "{name} {stat}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_client_names_are_matched() {
    let up = Upstream::echo("up").await;
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let server = ca.leaf("m.test");
    let text = with_chains(
        &echo_config(&up),
        vec![(
            vec![],
            downstream_socket(
                &server,
                json!({
                    "require_client_certificate": true,
                    "common_tls_context": {"validation_context": {
                        "trusted_ca": data(&client_ca.pem()),
                        "match_typed_subject_alt_names": [
                            san("URI", json!({"exact": "spiffe://td/ns/prod/sa/client"})),
                        ],
                    }},
                }),
            ),
        )],
    );
    let baton = Baton::start(&text).await;
    let roots = [ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let good = client_ca.leaf_sans(vec![rcgen::SanType::URI(
        "spiffe://td/ns/prod/sa/client".try_into().unwrap(),
    )]);
    let other = client_ca.leaf_sans(vec![rcgen::SanType::URI(
        "spiffe://td/ns/dev/sa/client".try_into().unwrap(),
    )]);
    let o = |cert| ClientOpts {
        sni: "m.test",
        alpn: &["http/1.1"],
        roots: &roots,
        client_cert: cert,
    };
    let ok = get_with(baton.addr(), o(Some(&good))).await.unwrap();
    assert_eq!(ok.resp.status, 200);
    assert!(get_with(baton.addr(), o(Some(&other))).await.is_err());
    let p = stat_prefix(&baton);
    baton.wait_stat(&format!("{p}.fail_verify_san"), 1).await;
    assert_eq!(baton.stat(&format!("{p}.fail_verify_error")).await, Some(0));
    assert_eq!(baton.stat(&format!("{p}.handshake")).await, Some(1));
}

#[test]
fn refused_as_envoy_refuses() {
    let ca = Ca::new("ca");
    let socket = |validation: Value, with_ca: bool| {
        let mut s = upstream_tls(&ca.pem(), "x.test", validation);
        if !with_ca {
            s["typed_config"]["common_tls_context"]["validation_context"]
                .as_object_mut()
                .unwrap()
                .remove("trusted_ca");
        }
        s
    };
    for (validation, with_ca, want) in [
        (
            json!({"match_typed_subject_alt_names": [san("DNS", json!({"exact": "a"}))]}),
            false,
            "without trusted CA is insecure and not allowed",
        ),
        (
            json!({"match_typed_subject_alt_names": [{"matcher": {"exact": "a"}}]}),
            true,
            "match_typed_subject_alt_names[0].san_type",
        ),
        (
            json!({"match_typed_subject_alt_names": [san("OTHER_NAME", json!({"exact": "a"}))]}),
            true,
            "match_typed_subject_alt_names[0].san_type",
        ),
        (
            json!({"match_typed_subject_alt_names": [san("DNS", json!({"safe_regex": {"regex": "a"}, "ignore_case": true}))]}),
            true,
            "match_typed_subject_alt_names[0].matcher.ignore_case",
        ),
    ] {
        let config = Config::new()
            .route(route("/", "c", json!({})))
            .cluster(with(
                cluster("c", &[free_port()]),
                "transport_socket",
                socket(validation, with_ca),
            ))
            .render();
        let (status, stderr) = validate_config(&config);
        assert!(!status.success());
        assert!(stderr.contains(want), "want {want}: {stderr}");
    }
}

fn auto_sni_options(auto_san_validation: bool) -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "upstream_http_protocol_options": {"auto_sni": true, "auto_san_validation": auto_san_validation},
        }
    })
}

/// `upstream_http_protocol_options.auto_sni`: the SNI is the request's host, one pool per
/// name; `auto_san_validation`: the certificate must be valid for that name, whatever the SAN
/// matchers say (Envoy's override).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sni_and_auto_san_validation() {
    let ca = Ca::new("upstream ca");
    let leaf = ca.leaf_for(&["a.test", "b.test"]);
    let up = tls_upstream_alpn(&leaf, &[b"http/1.1"]).await;
    let tls = |validation: Value| {
        let mut s = upstream_tls(&ca.pem(), "", validation);
        s["typed_config"].as_object_mut().unwrap().remove("sni");
        s
    };
    let c = |name: &str, validated: bool, validation: Value| {
        let c = with(
            cluster(name, &[up.port]),
            "transport_socket",
            tls(validation),
        );
        with(
            c,
            "typed_extension_protocol_options",
            auto_sni_options(validated),
        )
    };
    let config = Config::new()
        .route(route("/auto", "auto", json!({})))
        .route(route("/checked", "checked", json!({})))
        .cluster(c("auto", false, json!({})))
        .cluster(c(
            "checked",
            true,
            json!({"match_typed_subject_alt_names": [san("DNS", json!({"exact": "nothing.test"}))]}),
        ))
        .render();
    let baton = Baton::start(&config).await;
    let mut client = H1::connect(baton.addr()).await.unwrap();
    for host in ["a.test", "b.test:8443", "a.test"] {
        let r = client.send(get_req(host, "/auto")).await.unwrap();
        let name = host.split(':').next().unwrap();
        assert_eq!(
            (r.status, r.text()),
            (200, format!("sni={name} proto=HTTP/1.1"))
        );
    }
    // One connection per name, reused for the second a.test.
    baton.wait_stat("cluster.auto.upstream_cx_total", 2).await;
    let r = client.send(get_req("b.test", "/checked")).await.unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, "sni=b.test proto=HTTP/1.1".to_owned()),
        "the name sent replaces the matchers"
    );
    let r = client.send(get_req("c.test", "/checked")).await.unwrap();
    assert_eq!(r.status, 503, "c.test is not a name of the certificate");
    baton
        .wait_stat("cluster.checked.ssl.fail_verify_san", 1)
        .await;
}

#[test]
fn auto_sni_refusals() {
    let ca = Ca::new("ca");
    let mut only_validation = auto_sni_options(true);
    only_validation["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["upstream_http_protocol_options"]["auto_sni"] = json!(false);
    for (options, tls, want) in [
        (
            only_validation,
            true,
            "upstream_http_protocol_options.auto_san_validation",
        ),
        (
            auto_sni_options(false),
            false,
            "HttpProtocolOptions.upstream_http_protocol_options",
        ),
    ] {
        let mut c = with(
            cluster("c", &[free_port()]),
            "typed_extension_protocol_options",
            options,
        );
        if tls {
            c = with(
                c,
                "transport_socket",
                upstream_tls(&ca.pem(), "x.test", json!({})),
            );
        }
        let config = Config::new()
            .route(route("/", "c", json!({})))
            .cluster(c)
            .render();
        let (status, stderr) = validate_config(&config);
        assert!(!status.success());
        assert!(stderr.contains(want), "want {want}: {stderr}");
    }
}
