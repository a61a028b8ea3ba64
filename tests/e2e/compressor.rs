//! `envoy.filters.http.compressor` (issue 19) with gzip, brotli and zstd libraries: the
//! encoding chosen from `accept-encoding`, the response headers (`content-encoding`, `vary`,
//! `content-length`, ETag) and the stats were taken from Envoy 1.40 on the same configurations
//! and requests; bodies are checked by decoding them.

use std::io::Read as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::support::*;

const COMPRESSOR: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor";
const PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute";
const GZIP: &str = "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip";
const BROTLI: &str = "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli";
const ZSTD: &str = "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

fn compressor(name: &str, library: &str, lib_type: &str, extra: Value) -> Value {
    let mut tc = json!({"@type": COMPRESSOR,
        "compressor_library": {"name": library, "typed_config": {"@type": lib_type}}});
    if let (Value::Object(tc), Value::Object(extra)) = (&mut tc, extra) {
        tc.extend(extra);
    }
    json!({"name": name, "typed_config": tc})
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}})
}

/// `hello world hello world …`, `n` bytes.
fn text(n: usize) -> Vec<u8> {
    b"hello world ".iter().copied().cycle().take(n).collect()
}

/// Answers as the query says: `n` bytes of text, `ct` (content type, `none` for none), `etag`,
/// `ce` (content-encoding), `cc` (cache-control), `vary`, `chunked` (no length); the request's
/// accept-encoding in `x-seen-ae`.
async fn upstream() -> Upstream {
    Upstream::custom(|req: Request<Incoming>| async move {
        let q: Vec<(String, String)> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%22", "\"").replace("%20", " ")))
            .collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let n: usize = get("n").and_then(|n| n.parse().ok()).unwrap_or(100);
        let body = text(n);
        let mut r = Response::builder().status(200);
        match get("ct") {
            Some("none") => {}
            ct => r = r.header("content-type", ct.unwrap_or("text/plain")),
        }
        for (q, h) in [
            ("etag", "etag"),
            ("ce", "content-encoding"),
            ("cc", "cache-control"),
            ("vary", "vary"),
        ] {
            if let Some(v) = get(q) {
                r = r.header(h, v);
            }
        }
        let seen = req
            .headers()
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok());
        r = r.header("x-seen-ae", seen.unwrap_or("-"));
        if get("chunked").is_some() {
            let (mut tx, b) = channel_body(1);
            tokio::spawn(async move {
                let _ = tx.send_data(body.into()).await;
            });
            r.body(b).unwrap()
        } else {
            r.header("content-length", n).body(full(body)).unwrap()
        }
    })
    .await
}

async fn send(baton: &Baton, method: &str, path: &str, ae: Option<&str>) -> Resp {
    let mut req = request(method, "h", path, empty());
    if let Some(ae) = ae {
        req.headers_mut()
            .insert("accept-encoding", ae.parse().unwrap());
    }
    send1(baton.addr(), req).await.expect("a response")
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        "zstd" => out = zstd::stream::decode_all(data).expect("zstd"),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

/// Expected of one response: its content-encoding (None: sent as is), `vary`, `etag`.
struct Expect {
    path: &'static str,
    method: &'static str,
    ae: Option<&'static str>,
    encoding: Option<&'static str>,
    vary: Option<&'static str>,
    etag: Option<&'static str>,
}

const fn get(
    path: &'static str,
    ae: Option<&'static str>,
    encoding: Option<&'static str>,
    vary: Option<&'static str>,
) -> Expect {
    Expect {
        path,
        method: "GET",
        ae,
        encoding,
        vary,
        etag: None,
    }
}

const AE: Option<&str> = Some("Accept-Encoding");

/// The requests and what Envoy 1.40 answered, filters gzip (`text_optimized`), brotli, zstd in
/// that order, gzip disabled on `/off`.
const CASES: &[Expect] = &[
    get("/a?n=29", Some("gzip"), None, None),
    get("/a?n=30", Some("gzip"), Some("gzip"), AE),
    get("/a?n=100", Some("br"), Some("br"), AE),
    get("/a?n=100", Some("zstd"), Some("zstd"), AE),
    get("/a?n=100", Some("gzip;q=0.5, br;q=0.8"), Some("br"), AE),
    // Equal q-values: the client's order decides.
    get("/a?n=100", Some("gzip, br, zstd"), Some("gzip"), AE),
    get("/a?n=100", Some("zstd, br, gzip"), Some("zstd"), AE),
    // `*`: the first filter's.
    get("/a?n=100", Some("*"), Some("gzip"), AE),
    get("/a?n=100", Some("identity"), None, AE),
    get("/a?n=100", Some("gzip;q=0"), None, AE),
    get("/a?n=100", Some("identity;q=0.5, gzip;q=0.5"), None, AE),
    get("/a?n=100&ct=image/png", Some("gzip"), None, None),
    get("/a?n=100&ct=none", Some("gzip"), Some("gzip"), AE),
    // A strong ETag is removed from a compressed response, a weak one kept.
    get("/a?n=100&etag=%22abc%22", Some("gzip"), Some("gzip"), AE),
    Expect {
        etag: Some("W/\"abc\""),
        ..get("/a?n=100&etag=W/%22abc%22", Some("gzip"), Some("gzip"), AE)
    },
    Expect {
        encoding: Some("deflate"),
        ..get("/a?n=100&ce=deflate", Some("gzip"), None, None)
    },
    get("/a?n=100&cc=no-transform", Some("gzip"), None, None),
    get(
        "/a?n=100&vary=Origin",
        Some("gzip"),
        Some("gzip"),
        Some("Origin, Accept-Encoding"),
    ),
    get("/a?n=100&chunked=1", Some("gzip"), Some("gzip"), AE),
    // gzip disabled here: brotli and zstd still see gzip chosen.
    get("/off?n=100", Some("gzip"), None, AE),
    Expect {
        method: "HEAD",
        ..get("/a?n=100", Some("gzip"), None, AE)
    },
    get(
        "/a?n=100&ct=text/html;%20charset=utf-8",
        Some("gzip"),
        Some("gzip"),
        AE,
    ),
    get("/a?n=100", None, None, AE),
    get("/a?n=0", Some("gzip"), None, None),
    get("/a?n=100000", Some("gzip"), Some("gzip"), AE),
    get("/a?n=100000", Some("gzip"), Some("gzip"), AE),
    get("/a?n=100000", Some("br"), Some("br"), AE),
    get("/a?n=100000", Some("zstd"), Some("zstd"), AE),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_compressors_answer_as_envoy_does() {
    let up = upstream().await;
    let filters = json!([
        compressor("gz", "text_optimized", GZIP, json!({})),
        compressor("br", "br", BROTLI, json!({})),
        compressor("zs", "zs", ZSTD, json!({})),
        router()
    ]);
    let config = Config::new()
        .hcm("http_filters", filters)
        .route(
            json!({"match": {"prefix": "/off"}, "route": {"cluster": "up"},
            "typed_per_filter_config": {"gz": {"@type": PER_ROUTE, "disabled": true}}}),
        )
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    for (i, c) in CASES.iter().enumerate() {
        let r = send(&baton, c.method, c.path, c.ae).await;
        let what = format!("case {i}: {} {:?}", c.path, c.ae);
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.header("content-encoding"), c.encoding, "{what}");
        assert_eq!(r.header("vary"), c.vary, "{what}");
        assert_eq!(r.header("etag"), c.etag, "{what}");
        let n: usize = c
            .path
            .split("n=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let compressed = matches!(c.encoding, Some("gzip" | "br" | "zstd"));
        if compressed {
            // Chunked: no content-length.
            assert_eq!(r.header("content-length"), None, "{what}");
            assert_eq!(decode(c.encoding.unwrap(), &r.body), text(n), "{what}");
        } else if c.method == "GET" {
            assert_eq!(&r.body[..], &text(n)[..], "{what}");
        }
        // accept-encoding is passed on (remove_accept_encoding_header is off).
        assert_eq!(r.header("x-seen-ae"), Some(c.ae.unwrap_or("-")), "{what}");
    }
    // Envoy 1.40's counts for the same requests.
    let expect: &[(&str, [i64; 3])] = &[
        // (stat, [gzip, brotli, zstd])
        ("compressed", [11, 3, 3]),
        ("not_compressed", [17, 25, 25]),
        ("content_length_too_small", [2, 2, 2]),
        ("header_compressor_used", [12, 3, 3]),
        ("header_compressor_overshadowed", [6, 16, 16]),
        ("header_identity", [2, 2, 2]),
        ("header_not_valid", [2, 2, 2]),
        ("header_wildcard", [1, 1, 1]),
        ("no_accept_header", [1, 1, 1]),
        ("not_compressed_etag", [0, 0, 0]),
        ("request.not_compressed", [28, 28, 28]),
        ("request.compressed", [0, 0, 0]),
    ];
    let prefixes = [
        "http.ingress_http.compressor.text_optimized.gzip",
        "http.ingress_http.compressor.br.brotli",
        "http.ingress_http.compressor.zs.zstd",
    ];
    for (stat, values) in expect {
        for (p, v) in prefixes.iter().zip(values) {
            let name = format!("{p}.{stat}");
            assert_eq!(baton.stat(&name).await, Some(*v), "{name}");
        }
    }
    // The bodies gzip compressed (n = 30, 8 × 100, 2 × 100 000), as Envoy counted them.
    let gz_in = baton
        .stat(&format!("{}.total_uncompressed_bytes", prefixes[0]))
        .await;
    assert_eq!(gz_in, Some(30 + 100 * 8 + 200_000));
    let gz_out = baton
        .stat(&format!("{}.total_compressed_bytes", prefixes[0]))
        .await;
    assert!(gz_out.is_some_and(|n| n > 0 && n < 10_000), "{gz_out:?}");
}

/// The second configuration Envoy 1.40 was run on: a brotli filter disabled by its
/// `enabled` flag (on for `/on`), and a gzip filter with `response_direction_config`
/// (stats under `response.`), a minimum length of 100, text/plain only, no ETag, and
/// accept-encoding removed (kept on `/keep`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_direction_config_and_per_route_overrides_as_envoy() {
    let up = upstream().await;
    let filters = json!([
        compressor(
            "brx",
            "offlib",
            BROTLI,
            json!({"response_direction_config": {
            "common_config": {"enabled": {"default_value": false, "runtime_key": "off_enabled"}}}})
        ),
        compressor(
            "gz",
            "lib",
            GZIP,
            json!({"response_direction_config": {
            "common_config": {"min_content_length": 100, "content_type": ["text/plain"]},
            "disable_on_etag_header": true, "remove_accept_encoding_header": true}})
        ),
        router()
    ]);
    let per = |name: &str, v: Value| {
        let mut m = serde_json::Map::new();
        let mut v = v;
        v["@type"] = json!(PER_ROUTE);
        m.insert(name.to_owned(), v);
        Value::Object(m)
    };
    let config = Config::new()
        .hcm("http_filters", filters)
        .route(json!({"match": {"prefix": "/keep"}, "route": {"cluster": "up"},
            "typed_per_filter_config": per("gz", json!({"overrides": {"response_direction_config": {"remove_accept_encoding_header": false}}}))}))
        .route(json!({"match": {"prefix": "/empty"}, "route": {"cluster": "up"},
            "typed_per_filter_config": per("brx", json!({"overrides": {}}))}))
        .route(json!({"match": {"prefix": "/on"}, "route": {"cluster": "up"},
            "typed_per_filter_config": per("brx", json!({"overrides": {"response_direction_config": {}}}))}))
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let baton = Baton::start(&config).await;
    // (path, accept-encoding, content-encoding, vary, what the upstream saw)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
    );
    let cases: &[Case] = &[
        ("/a?n=100", "gzip, br", Some("gzip"), AE, "-"),
        ("/a?n=99", "gzip, br", None, None, "-"),
        ("/a?n=100&ct=text/html", "gzip, br", None, None, "-"),
        ("/a?n=100&etag=W/%22x%22", "gzip, br", None, None, "-"),
        // br is chosen, though its filter is off: nothing is compressed.
        ("/a?n=100", "br, gzip", None, AE, "-"),
        ("/on?n=100", "br, gzip", Some("br"), AE, "-"),
        ("/empty?n=100", "br, gzip", None, AE, "-"),
        ("/keep?n=100", "gzip", Some("gzip"), AE, "gzip"),
        (
            "/on?n=100&ct=text/html",
            "br;q=0.2, gzip;q=0.1",
            Some("br"),
            AE,
            "-",
        ),
    ];
    for (path, ae, enc, vary, seen) in cases {
        let r = send(&baton, "GET", path, Some(ae)).await;
        assert_eq!(r.header("content-encoding"), *enc, "{path} {ae}");
        assert_eq!(r.header("vary"), *vary, "{path} {ae}");
        assert_eq!(r.header("x-seen-ae"), Some(*seen), "{path} {ae}");
        if let Some(enc) = enc {
            let n = if path.contains("n=99") { 99 } else { 100 };
            assert_eq!(decode(enc, &r.body), text(n));
        }
    }
    let expect = [
        ("lib.gzip.header_compressor_overshadowed", 5),
        ("lib.gzip.header_compressor_used", 3),
        ("lib.gzip.not_compressed_etag", 1),
        ("lib.gzip.request.not_compressed", 9),
        ("lib.gzip.response.compressed", 2),
        ("lib.gzip.response.content_length_too_small", 1),
        ("lib.gzip.response.not_compressed", 7),
        ("lib.gzip.response.total_uncompressed_bytes", 200),
        ("offlib.brotli.header_compressor_used", 2),
        ("offlib.brotli.request.not_compressed", 9),
        ("offlib.brotli.response.compressed", 2),
        ("offlib.brotli.response.not_compressed", 7),
        ("offlib.brotli.response.total_uncompressed_bytes", 200),
        ("offlib.brotli.no_accept_header", 0),
    ];
    for (stat, v) in expect {
        let name = format!("http.ingress_http.compressor.{stat}");
        assert_eq!(baton.stat(&name).await, Some(v), "{name}");
    }
    // Not under the filter's own prefix once response_direction_config is given.
    assert_eq!(
        baton
            .stat("http.ingress_http.compressor.lib.gzip.compressed")
            .await,
        None
    );
}

/// Streamed: the first piece of a body reaches the client, compressed and decodable, while the
/// upstream still holds the rest; nothing is buffered whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_piece_is_compressed_and_flushed_as_it_arrives() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let up = Upstream::custom(move |_req: Request<Incoming>| {
        let g = g.clone();
        async move {
            let (mut tx, body) = channel_body(1);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from(text(1000))).await;
                g.notified().await;
                let _ = tx.send_data(Bytes::from(text(5000))).await;
            });
            Response::builder()
                .header("content-type", "text/plain")
                .body(body)
                .unwrap()
        }
    })
    .await;
    for (lib, enc) in [(GZIP, "gzip"), (BROTLI, "br"), (ZSTD, "zstd")] {
        let config = Config::new()
            .hcm(
                "http_filters",
                json!([compressor("c", "c", lib, json!({})), router()]),
            )
            .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
            .cluster(cluster("up", &[up.port()]))
            .render();
        let baton = Baton::start(&config).await;
        let mut c = H1::connect(baton.addr()).await.unwrap();
        let mut req = get_req("h", "/s");
        req.headers_mut()
            .insert("accept-encoding", enc.parse().unwrap());
        let resp = c.send_streaming(req).await.unwrap();
        assert_eq!(resp.headers()["content-encoding"], enc);
        let mut body = resp.into_body();
        let first = within(5, "the first compressed piece", async {
            loop {
                let f = body.frame().await.unwrap().unwrap();
                if let Ok(d) = f.into_data() {
                    if !d.is_empty() {
                        return d;
                    }
                }
            }
        })
        .await;
        let mut all = first.to_vec();
        // What came so far decodes to the first piece, whole.
        let mut partial = vec![0u8; 8192];
        let n = match enc {
            "gzip" => flate2::read::GzDecoder::new(&all[..])
                .read(&mut partial)
                .unwrap(),
            "br" => brotli::Decompressor::new(&all[..], 4096)
                .read(&mut partial)
                .unwrap(),
            _ => zstd::stream::read::Decoder::new(&all[..])
                .unwrap()
                .read(&mut partial)
                .unwrap(),
        };
        assert_eq!(&partial[..n], &text(1000)[..], "{enc}");
        gate.notify_one();
        let rest = within(5, "the rest", body.collect())
            .await
            .unwrap()
            .to_bytes();
        all.extend_from_slice(&rest);
        let mut expected = text(1000);
        expected.extend(text(5000));
        assert_eq!(decode(enc, &all), expected, "{enc}");
    }
}

#[test]
fn what_baton_cannot_honour_is_refused_with_its_path() {
    let refused = |extra: Value, lib: &str, lib_extra: Value| {
        let mut f = compressor("c", "c", lib, extra);
        if let (Value::Object(tc), Value::Object(e)) = (
            &mut f["typed_config"]["compressor_library"]["typed_config"],
            lib_extra,
        ) {
            tc.extend(e);
        }
        let config = Config::new()
            .hcm("http_filters", json!([f, router()]))
            .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}))
            .render();
        let (status, err) = validate_config(&config);
        assert!(!status.success());
        err
    };
    let p = "http_filters[0].typed_config";
    let err = refused(json!({"request_direction_config": {}}), GZIP, json!({}));
    assert!(
        err.contains(&format!("{p}.request_direction_config")),
        "{err}"
    );
    let err = refused(json!({}), GZIP, json!({"memory_level": 3}));
    assert!(
        err.contains(&format!("{p}.compressor_library.typed_config.memory_level")),
        "{err}"
    );
    let err = refused(json!({}), GZIP, json!({"compression_strategy": "RLE"}));
    assert!(err.contains("compression_strategy"), "{err}");
    let err = refused(json!({}), GZIP, json!({"window_bits": 8}));
    assert!(err.contains("window_bits"), "{err}");
    let err = refused(
        json!({}),
        ZSTD,
        json!({"dictionary": {"inline_string": "x"}}),
    );
    assert!(err.contains("dictionary"), "{err}");
    let err = refused(json!({}), BROTLI, json!({"quality": 12}));
    assert!(err.contains("quality"), "{err}");
    let err = refused(json!({"unknown": 1}), BROTLI, json!({}));
    assert!(err.contains("unknown"), "{err}");
}
