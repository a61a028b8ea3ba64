//! TLS: SNI choosing between filter chains (and the default chain), ALPN choosing HTTP/2 or
//! HTTP/1.1, mTLS accepted and refused, upstream TLS with SNI and a trusted CA, validation
//! errors, and certificates rotated by a hot restart with no failed handshake. Every
//! certificate is generated here (rcgen, ring).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::support::client::{empty, full, Body, BoxError, Resp};
use crate::support::config::{cluster, route, with, Config};
use crate::support::upstream::Upstream;
use crate::support::{run_baton, within, Baton, TempDir, BATON};

// ------------------------------------------------------------------------------------------
// Certificates.

pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A PEM certificate and key.
#[derive(Clone)]
pub(crate) struct Leaf {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Self { cert, key }
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    pub(crate) fn leaf(&self, name: &str) -> Leaf {
        self.leaf_for(&[name])
    }

    /// A certificate with exactly these subject alternative names.
    pub(crate) fn leaf_sans(&self, sans: Vec<rcgen::SanType>) -> Leaf {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "san test".to_owned());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A certificate without alternative names, with this subject (`CN`, `O`).
    pub(crate) fn leaf_subject(&self, rdns: &[(&str, &str)]) -> Leaf {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for (kind, value) in rdns {
            let kind = match *kind {
                "CN" => rcgen::DnType::CommonName,
                "O" => rcgen::DnType::OrganizationName,
                other => panic!("no DN type {other}"),
            };
            p.distinguished_name.push(kind, value.to_string());
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A certificate for every name in `names` (the first is its common name).
    pub(crate) fn leaf_for(&self, names: &[&str]) -> Leaf {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, names[0].to_owned());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

pub(crate) fn der(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

pub(crate) fn key_der(pem: &str) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

pub(crate) fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ------------------------------------------------------------------------------------------
// Configuration.

pub(crate) fn data(inline: &str) -> Value {
    json!({ "inline_string": inline })
}

pub(crate) fn downstream_socket(leaf: &Leaf, extra: Value) -> Value {
    let mut tc = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": data(&leaf.cert), "private_key": data(&leaf.key)}],
            "alpn_protocols": ["h2", "http/1.1"],
        },
    });
    merge(&mut tc, extra);
    json!({"name": "envoy.transport_sockets.tls", "typed_config": tc})
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// `config` with its listener's filter chain replaced by one chain per `(server_names,
/// transport_socket)`, all with the same HTTP connection manager.
pub(crate) fn with_chains(config: &Config, chains: Vec<(Vec<&str>, Value)>) -> String {
    let text = config
        .render()
        .replace("{{ADMIN}}", "\"{{ADMIN}}\"")
        .replace("{{LISTEN}}", "\"{{LISTEN}}\"");
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let listener = &mut v["static_resources"]["listeners"][0];
    let filters = listener["filter_chains"][0]["filters"].clone();
    listener["listener_filters"] = json!([{"name": "envoy.filters.listener.tls_inspector"}]);
    listener["filter_chains"] = chains
        .into_iter()
        .map(|(names, ts)| {
            let mut c = json!({"filters": filters, "transport_socket": ts});
            if !names.is_empty() {
                c["filter_chain_match"] = json!({ "server_names": names });
            }
            c
        })
        .collect();
    serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}")
}

pub(crate) fn echo_config(up: &Upstream) -> Config {
    Config::new()
        .route(route("/", "echo", json!({})))
        .cluster(cluster("echo", &[up.port()]))
}

// ------------------------------------------------------------------------------------------
// A TLS client.

pub(crate) struct ClientOpts<'a> {
    pub(crate) sni: &'a str,
    pub(crate) alpn: &'a [&'a str],
    pub(crate) roots: &'a [&'a str],
    pub(crate) client_cert: Option<&'a Leaf>,
}

/// What one TLS request saw.
pub(crate) struct Seen {
    peer_cert: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
    pub(crate) resp: Resp,
    version: Version,
}

fn client_config(o: &ClientOpts<'_>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for r in o.roots {
        roots.add(der(r)).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut c = match o.client_cert {
        Some(l) => b
            .with_client_auth_cert(vec![der(&l.cert)], key_der(&l.key))
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = o.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(c)
}

/// One GET on a new TLS connection.
async fn tls_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
    path: &str,
) -> Result<Seen, BoxError> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_owned())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (_, conn) = tls.get_ref();
        let peer_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no peer certificate")?
            .into_owned();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let resp = if alpn.as_deref() == Some(b"h2") {
            let (mut s, conn) = http2::handshake::<_, _, Body>(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            let req = Request::get(format!("https://{sni}{path}")).body(empty())?;
            s.send_request(req).await?
        } else {
            let (mut s, conn) = http1::handshake::<_, Body>(io).await?;
            tokio::spawn(conn);
            let req = Request::get(path).header("host", sni).body(empty())?;
            s.send_request(req).await?
        };
        let version = resp.version();
        let resp = Resp::read(resp).await?;
        Ok::<_, BoxError>(Seen {
            peer_cert,
            alpn,
            resp,
            version,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await?
}

pub(crate) async fn get_with(addr: SocketAddr, o: ClientOpts<'_>) -> Result<Seen, BoxError> {
    tls_get(addr, client_config(&o), o.sni, "/tls").await
}

pub(crate) fn stat_prefix(b: &Baton) -> String {
    format!("listener.127.0.0.1_{}.ssl", b.listen)
}

// ------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn sni_selects_chain_and_alpn_selects_protocol() {
    let up = Upstream::echo("up").await;
    let ca = Ca::new("test ca");
    let (a, b, d) = (
        ca.leaf("a.test"),
        ca.leaf_for(&["b.test", "*.b.test"]),
        ca.leaf_for(&["default.test", "other.test"]),
    );
    let text = with_chains(
        &echo_config(&up),
        vec![
            (vec!["a.test"], downstream_socket(&a, json!({}))),
            (vec!["*.b.test", "b.test"], downstream_socket(&b, json!({}))),
            (vec![], downstream_socket(&d, json!({}))),
        ],
    );
    let baton = Baton::start(&text).await;
    let addr = baton.addr();
    let roots = [ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let opts = |sni: &'static str, alpn: &'static [&'static str]| ClientOpts {
        sni,
        alpn,
        roots: &[],
        client_cert: None,
    };
    let cases: [(&str, &Leaf); 4] = [
        ("a.test", &a),
        ("b.test", &b),
        ("x.b.test", &b),
        ("other.test", &d),
    ];
    for (sni, want) in cases {
        let seen = get_with(
            addr,
            ClientOpts {
                roots: &roots,
                ..opts("", &["http/1.1"])
            }
            .with_sni(sni),
        )
        .await
        .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(seen.peer_cert, der(&want.cert), "{sni}: wrong certificate");
        assert_eq!(seen.resp.status, 200);
    }
    // ALPN h2 → HTTP/2; http/1.1 → HTTP/1.1; none → HTTP/1.1 by sniffing.
    for (alpn, want_alpn, want_version) in [
        (&["h2", "http/1.1"][..], Some(&b"h2"[..]), Version::HTTP_2),
        (&["http/1.1"][..], Some(&b"http/1.1"[..]), Version::HTTP_11),
        (&[][..], None, Version::HTTP_11),
    ] {
        let seen = get_with(
            addr,
            ClientOpts {
                roots: &roots,
                ..opts("a.test", alpn)
            },
        )
        .await
        .unwrap();
        assert_eq!(seen.alpn.as_deref(), want_alpn);
        assert_eq!(seen.version, want_version);
        assert_eq!(seen.resp.status, 200);
    }
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
    let p = stat_prefix(&baton);
    baton.wait_stat(&format!("{p}.handshake"), 7).await;
    assert_eq!(baton.stat(&format!("{p}.connection_error")).await, Some(0));
    assert_eq!(baton.stat(&format!("{p}.versions.TLSv1.3")).await, Some(7));
    assert_eq!(baton.stat(&format!("{p}.no_certificate")).await, Some(7));
}

impl<'a> ClientOpts<'a> {
    fn with_sni(mut self, sni: &'a str) -> Self {
        self.sni = sni;
        self
    }
}

#[tokio::test]
async fn no_matching_chain_closes_the_connection() {
    let up = Upstream::echo("up").await;
    let ca = Ca::new("test ca");
    let a = ca.leaf("a.test");
    let text = with_chains(
        &echo_config(&up),
        vec![(vec!["a.test"], downstream_socket(&a, json!({})))],
    );
    let baton = Baton::start(&text).await;
    let roots = [ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let o = |sni| ClientOpts {
        sni,
        alpn: &[],
        roots: &roots,
        client_cert: None,
    };
    assert!(get_with(baton.addr(), o("a.test")).await.is_ok());
    assert!(get_with(baton.addr(), o("z.test")).await.is_err());
    baton
        .wait_stat(
            &format!("listener.127.0.0.1_{}.no_filter_chain_match", baton.listen),
            1,
        )
        .await;
}

#[tokio::test]
async fn mtls_accepts_trusted_client_and_refuses_others() {
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
                    "common_tls_context": {"validation_context": {"trusted_ca": data(&client_ca.pem())}},
                }),
            ),
        )],
    );
    let baton = Baton::start(&text).await;
    let roots = [ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let good = client_ca.leaf("client.test");
    let rogue = Ca::new("rogue").leaf("client.test");
    let o = |cert| ClientOpts {
        sni: "m.test",
        alpn: &["h2"],
        roots: &roots,
        client_cert: cert,
    };
    let ok = get_with(baton.addr(), o(Some(&good))).await.unwrap();
    assert_eq!(ok.resp.status, 200);
    assert!(get_with(baton.addr(), o(None)).await.is_err());
    assert!(get_with(baton.addr(), o(Some(&rogue))).await.is_err());
    let p = stat_prefix(&baton);
    baton
        .wait_stat(&format!("{p}.fail_verify_no_cert"), 1)
        .await;
    baton.wait_stat(&format!("{p}.fail_verify_error"), 1).await;
    baton.wait_stat(&format!("{p}.connection_error"), 2).await;
    assert_eq!(baton.stat(&format!("{p}.handshake")).await, Some(1));
    assert_eq!(baton.stat(&format!("{p}.no_certificate")).await, Some(0));
}

#[tokio::test]
async fn static_secrets_named_by_the_context_serve_and_verify() {
    let up = Upstream::echo("up").await;
    let (ca, client_ca) = (Ca::new("server ca"), Ca::new("client ca"));
    let server = ca.leaf("s.test");
    let ts = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "server"}],
            "validation_context_sds_secret_config": {"name": "clients"},
        },
    }});
    let secrets = json!([
        {"name": "server", "tls_certificate": {
            "certificate_chain": data(&server.cert), "private_key": data(&server.key)}},
        {"name": "clients", "validation_context": {"trusted_ca": data(&client_ca.pem())}},
    ]);
    let text = with_chains(&echo_config(&up), vec![(vec![], ts)]).replacen(
        "\"static_resources\": {",
        &format!("\"static_resources\": {{\n\"secrets\": {secrets},"),
        1,
    );
    let baton = Baton::start(&text).await;
    let roots = [ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let good = client_ca.leaf("client.test");
    let o = |cert| ClientOpts {
        sni: "s.test",
        alpn: &["http/1.1"],
        roots: &roots,
        client_cert: cert,
    };
    let ok = get_with(baton.addr(), o(Some(&good))).await.unwrap();
    assert_eq!(ok.resp.status, 200);
    assert_eq!(ok.peer_cert, der(&server.cert));
    assert!(get_with(baton.addr(), o(None)).await.is_err());
}

/// An HTTP upstream behind rustls: answers `sni=<server name> proto=<version>`.
pub(crate) struct TlsUpstream {
    pub(crate) port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_upstream(leaf: &Leaf) -> TlsUpstream {
    tls_upstream_alpn(leaf, &[b"h2", b"http/1.1"]).await
}

/// An HTTPS upstream answering `sni=<name> proto=<version>`, offering `alpn`.
pub(crate) async fn tls_upstream_alpn(leaf: &Leaf, alpn: &[&[u8]]) -> TlsUpstream {
    let mut c = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der(&leaf.cert)], key_der(&leaf.key))
        .unwrap();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(c));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = format!("sni={sni} proto={:?}", req.version());
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(full(body))) }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    TlsUpstream { port, task }
}

pub(crate) fn upstream_socket(ca: &str, sni: &str, alpn: &[&str]) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": {
                "alpn_protocols": alpn,
                "validation_context": {"trusted_ca": data(ca)},
            },
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_use_the_clusters_tls_context() {
    let ca = Ca::new("upstream ca");
    let up = tls_upstream(&ca.leaf("up.test")).await;
    let hc = |kind: Value| {
        let mut hc = json!({
            "timeout": "1s",
            "interval": "0.1s",
            "no_traffic_interval": "0.1s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
        });
        hc.as_object_mut()
            .expect("object")
            .extend(kind.as_object().expect("kind").clone());
        json!([hc])
    };
    let http1 = json!({"http_health_check": {"path": "/healthz"}});
    let http2 = json!({"http_health_check": {"path": "/healthz", "codec_client_type": "HTTP2"}});
    let tls_cluster = |name: &str, ca: &str, kind: Value| {
        // ALPN h2 for proxied requests: the HTTP/1.1 check must still offer http/1.1 only.
        let c = with(
            cluster(name, &[up.port]),
            "transport_socket",
            upstream_socket(ca, "up.test", &["h2"]),
        );
        with(c, "health_checks", hc(kind))
    };
    let other = Ca::new("other").pem();
    let config = Config::new()
        .route(route("/", "h1", json!({})))
        .cluster(tls_cluster("h1", &ca.pem(), http1.clone()))
        .cluster(tls_cluster("h2", &ca.pem(), http2))
        .cluster(tls_cluster(
            "tcp",
            &ca.pem(),
            json!({"tcp_health_check": {}}),
        ))
        .cluster(tls_cluster("untrusted", &other, http1));
    let baton = Baton::start(&config.render()).await;
    for c in ["h1", "h2", "tcp"] {
        baton
            .wait_stat(&format!("cluster.{c}.health_check.healthy"), 1)
            .await;
    }
    baton
        .wait_stat("cluster.untrusted.health_check.network_failure", 2)
        .await;
    assert_eq!(
        baton.stat("cluster.untrusted.health_check.healthy").await,
        Some(0)
    );
    assert_eq!(baton.stat("cluster.h1.health_check.failure").await, Some(0));
    assert_eq!(baton.stat("cluster.h2.health_check.failure").await, Some(0));
}

#[tokio::test]
async fn upstream_tls_with_sni_trusted_ca_and_alpn_h2() {
    let ca = Ca::new("upstream ca");
    let up = tls_upstream(&ca.leaf("up.test")).await;
    let config = Config::new()
        .route(route("/h1", "up_h1", json!({})))
        .route(route("/h2", "up_h2", json!({})))
        .route(route("/bad", "up_bad", json!({})))
        .cluster(with(
            cluster("up_h1", &[up.port]),
            "transport_socket",
            upstream_socket(&ca.pem(), "up.test", &[]),
        ))
        .cluster(with(
            cluster("up_h2", &[up.port]),
            "transport_socket",
            upstream_socket(&ca.pem(), "up.test", &["h2"]),
        ))
        .cluster(with(
            cluster("up_bad", &[up.port]),
            "transport_socket",
            upstream_socket(&Ca::new("other").pem(), "up.test", &[]),
        ));
    let baton = Baton::start(&config.render()).await;
    let r = crate::support::client::get(baton.addr(), "/h1").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "sni=up.test proto=HTTP/1.1")
    );
    let r = crate::support::client::get(baton.addr(), "/h2").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "sni=up.test proto=HTTP/2.0")
    );
    let r = crate::support::client::get(baton.addr(), "/bad").await;
    assert_eq!(
        r.status, 503,
        "an untrusted upstream certificate fails the connect"
    );
    baton.wait_stat("cluster.up_h1.ssl.handshake", 1).await;
    baton.wait_stat("cluster.up_h2.ssl.handshake", 1).await;
    baton
        .wait_stat("cluster.up_bad.ssl.connection_error", 1)
        .await;
    baton
        .wait_stat("cluster.up_bad.ssl.fail_verify_error", 1)
        .await;
}

#[tokio::test]
async fn validate_names_file_and_field() {
    let dir = TempDir::new("tls-validate");
    let ca = Ca::new("ca");
    let (a, b) = (ca.leaf("a.test"), ca.leaf("b.test"));
    std::fs::write(dir.file("a.pem"), &a.cert).unwrap();
    std::fs::write(dir.file("b.key"), &b.key).unwrap();
    let file_socket = |cert: &Path, key: &Path| {
        json!({"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": cert.display().to_string()},
                "private_key": {"filename": key.display().to_string()},
            }]},
        }})
    };
    let up = Upstream::echo("up").await;
    let cases = [
        (
            file_socket(&dir.file("a.pem"), &dir.file("b.key")),
            "private_key.filename",
            "does not match",
        ),
        (
            file_socket(&dir.file("missing.pem"), &dir.file("b.key")),
            "certificate_chain.filename",
            "missing.pem",
        ),
    ];
    for (socket, field, words) in cases {
        let text = with_chains(&echo_config(&up), vec![(vec![], socket)])
            .replace("{{ADMIN}}", "0")
            .replace("{{LISTEN}}", "0");
        let path = dir.file("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let (status, _, stderr) = run_baton(&["--mode", "validate", "-c", path.to_str().unwrap()]);
        assert!(!status.success(), "{field}: accepted");
        assert!(
            stderr.contains("filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0].")
                && stderr.contains(field)
                && stderr.contains(words),
            "{field}: {stderr}"
        );
    }
}

/// Epoch 0 serves certificate A; epoch 1 (same base ID) reads B from the same files. A loop of
/// new TLS connections runs throughout: every handshake and request succeeds, and once the
/// restart is done new handshakes see B.
#[tokio::test]
async fn hot_restart_rotates_certificates_without_failed_handshakes() {
    let up = Upstream::echo("up").await;
    let certs = TempDir::new("tls-rotate");
    let ca = Ca::new("rotation ca");
    let (a, b) = (ca.leaf("rot.test"), ca.leaf("rot.test"));
    let write = |l: &Leaf| {
        // Key first, then certificate, each by rename, so a reader never sees half a file.
        for (name, text) in [("k.pem", &l.key), ("c.pem", &l.cert)] {
            let tmp = certs.file(&format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, certs.file(name)).unwrap();
        }
    };
    write(&a);
    let socket = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [{
                "certificate_chain": {"filename": certs.file("c.pem").display().to_string()},
                "private_key": {"filename": certs.file("k.pem").display().to_string()},
            }],
            "alpn_protocols": ["http/1.1"],
        },
    }});
    let text = with_chains(&echo_config(&up), vec![(vec![], socket)]);
    let socket_path = format!("@baton-tls-rotate-{}", std::process::id());
    let restart_args = [
        "--socket-path",
        socket_path.as_str(),
        "--drain-time-s",
        "2",
        "--parent-shutdown-time-s",
        "4",
    ];
    let parent = Baton::start_with(&text, &restart_args).await;
    let addr = parent.addr();
    let roots = [ca.pem()];
    let config = client_config(&ClientOpts {
        sni: "rot.test",
        alpn: &["http/1.1"],
        roots: &roots.iter().map(String::as_str).collect::<Vec<_>>(),
        client_cert: None,
    });
    let cert_b = der(&b.cert);
    let ok = Arc::new(AtomicUsize::new(0));
    let saw_b = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (config, ok, saw_b, failures, stop, cert_b) = (
            config.clone(),
            ok.clone(),
            saw_b.clone(),
            failures.clone(),
            stop.clone(),
            cert_b.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tls_get(addr, config.clone(), "rot.test", "/rot").await {
                    Ok(s) if s.resp.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if s.peer_cert == cert_b {
                            saw_b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(s) => failures.lock().push(format!("status {}", s.resp.status)),
                    Err(e) => failures.lock().push(e.to_string()),
                }
            }
        }));
    }
    // Some traffic on A, then rotate the files and hot restart.
    within(10, "traffic on epoch 0", async {
        while ok.load(Ordering::Relaxed) < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(saw_b.load(Ordering::Relaxed), 0);
    write(&b);
    let child_dir = TempDir::new("tls-rotate-child");
    let err = std::fs::File::create(child_dir.file("stderr")).unwrap();
    let mut child = Command::new(BATON)
        .arg("-c")
        .arg(&parent.config_path)
        .args([
            "--concurrency",
            "2",
            "--base-id",
            &parent.base_id.to_string(),
        ])
        .args(["--restart-epoch", "1"])
        .args(restart_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn child");
    let started = Instant::now();
    let rotated = within(15, "handshakes with certificate B", async {
        loop {
            if saw_b.load(Ordering::Relaxed) >= 20 {
                return true;
            }
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Keep going past the parent's drain.
    while rotated && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = within(15, "client loop", l).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let child_err = std::fs::read_to_string(child_dir.file("stderr")).unwrap_or_default();
    assert!(
        rotated,
        "epoch 1 never served certificate B; its stderr:\n{child_err}"
    );
    let failures = failures.lock().clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the restart: {:?}",
        failures.len(),
        failures.len() + ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
}
