use super::*;
use crate::config::AccessLogSink;
use http::{HeaderMap, HeaderValue, Method, Version};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 2026-11-23T05:14:38.123456789Z
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_795_410_878, 123_456_789)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

struct Fixture {
    req: HeaderMap,
    resp: HeaderMap,
    method: Method,
}

impl Fixture {
    fn new() -> Self {
        let mut req = HeaderMap::new();
        req.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
        req.insert("x-request-id", HeaderValue::from_static("cc21d9b0"));
        req.insert("x-forwarded-for", HeaderValue::from_static("10.0.35.28"));
        req.insert("host", HeaderValue::from_static("example.com"));
        let mut resp = HeaderMap::new();
        resp.insert(
            "x-envoy-upstream-service-time",
            HeaderValue::from_static("100"),
        );
        resp.insert("content-type", HeaderValue::from_static("text/plain"));
        Fixture {
            req,
            resp,
            method: Method::POST,
        }
    }

    fn record(&self) -> Record<'_> {
        Record {
            start_time: start(),
            method: Some(&self.method),
            path: "/api/v1/locations?x=1",
            authority: Some("locations"),
            version: Some(Version::HTTP_2),
            request_headers: &self.req,
            response_headers: Some(&self.resp),
            response_code: 204,
            response_flags: "-",
            response_code_details: "via_upstream",
            bytes_received: 154,
            bytes_sent: 0,
            duration: Duration::from_micros(226_900),
            upstream_host: Some(addr("10.0.2.1:80")),
            upstream_cluster: Some("service1"),
            route_name: Some("r1"),
            downstream_remote: addr("192.0.2.7:51234"),
            downstream_local: addr("[::1]:8080"),
            upstream_transport_failure_reason: None,
            local_reply_body: None,
            dynamic_metadata: None,
        }
    }
}

fn render(fmt: &str, rec: &Record<'_>) -> String {
    let mut out = String::new();
    Format::parse(fmt)
        .expect("format parses")
        .write(rec, &mut out);
    out
}

#[test]
fn default_format_golden() {
    let f = Fixture::new();
    let mut out = String::new();
    Format::envoy_default().write(&f.record(), &mut out);
    assert_eq!(
        out,
        "[2026-11-23T05:14:38.123Z] \"POST /api/v1/locations?x=1 HTTP/2\" 204 - 154 0 226 100 \
         \"10.0.35.28\" \"curl/8.5.0\" \"cc21d9b0\" \"locations\" \"10.0.2.1:80\"\n"
    );
}

#[test]
fn default_format_with_nothing_known_prints_dashes() {
    let method = Method::GET;
    let empty = HeaderMap::new();
    let rec = Record {
        start_time: UNIX_EPOCH,
        method: Some(&method),
        path: "/",
        authority: None,
        version: Some(Version::HTTP_11),
        request_headers: &empty,
        response_headers: None,
        response_code: 0,
        response_flags: "UF",
        response_code_details: "",
        bytes_received: 0,
        bytes_sent: 0,
        duration: Duration::ZERO,
        upstream_host: None,
        upstream_cluster: None,
        route_name: None,
        downstream_remote: addr("127.0.0.1:1"),
        downstream_local: addr("127.0.0.1:2"),
        upstream_transport_failure_reason: None,
        local_reply_body: None,
        dynamic_metadata: None,
    };
    let mut out = String::new();
    Format::envoy_default().write(&rec, &mut out);
    assert_eq!(
        out,
        "[1970-01-01T00:00:00.000Z] \"GET / HTTP/1.1\" 0 UF 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
    );
    let line = render(
        "%ROUTE_NAME% %UPSTREAM_CLUSTER% %RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %REQ(:SCHEME)%",
        &rec,
    );
    assert_eq!(line, "- - - - -");
}

#[test]
fn custom_operators() {
    let f = Fixture::new();
    let rec = f.record();
    let cases = [
        ("%REQ(:METHOD)% %REQ(:PATH)%", "POST /api/v1/locations?x=1"),
        ("%REQ(:PATH):8%", "/api/v1/"),
        ("%REQ(user-agent):4%|%REQ(X-MISSING):2%", "curl|-"),
        (
            "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
            "/api/v1/locations?x=1",
        ),
        ("%REQ(X-MISSING?USER-AGENT)%", "curl/8.5.0"),
        ("%RESP(CONTENT-TYPE)% %RESP(X-NOPE)%", "text/plain -"),
        (
            "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%",
            "204 - via_upstream",
        ),
        ("%BYTES_RECEIVED%/%BYTES_SENT% %DURATION%ms", "154/0 226ms"),
        ("%PROTOCOL%", "HTTP/2"),
        (
            "%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME%",
            "10.0.2.1:80 service1 r1",
        ),
        (
            "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
            "192.0.2.7:51234 192.0.2.7",
        ),
        (
            "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
            "[::1]:8080 ::1",
        ),
        ("100%% done", "100% done"),
        ("%START_TIME%", "2026-11-23T05:14:38.123Z"),
        (
            "%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%",
            "2026/11/23T05:14:38+0000 1795410878",
        ),
        ("%START_TIME(%s.%3f)%", "1795410878.123"),
        ("%START_TIME(%s.%6f)%", "1795410878.123456"),
        ("%START_TIME(%s.%9f)%", "1795410878.123456789"),
        ("%START_TIME(%F %T.%f)%", "2026-11-23 05:14:38.123456789"),
        ("%START_TIME(%E6S %%)%", "38.123456 %"),
        ("no operators at all", "no operators at all"),
        ("", ""),
    ];
    for (fmt, want) in cases {
        assert_eq!(render(fmt, &rec), want, "format {fmt:?}");
    }
}

#[test]
fn authority_falls_back_to_host_header() {
    let f = Fixture::new();
    let mut rec = f.record();
    rec.authority = None;
    assert_eq!(render("%REQ(:AUTHORITY)%", &rec), "example.com");
}

#[test]
fn truncation_respects_char_boundaries() {
    let f = Fixture::new();
    let mut rec = f.record();
    rec.path = "/é";
    assert_eq!(render("%REQ(:PATH):2%", &rec), "/");
}

#[test]
fn leap_day_date() {
    let f = Fixture::new();
    let mut rec = f.record();
    rec.start_time = UNIX_EPOCH + Duration::from_secs(951_868_799);
    assert_eq!(render("%START_TIME%", &rec), "2000-02-29T23:59:59.000Z");
}

#[test]
fn parse_errors() {
    let cases = [
        ("%FOO%", "unknown command operator '%FOO%'"),
        ("abc %REQ(X) def", "is not closed with '%'"),
        ("100% done", "starts no command operator"),
        ("%REQ%", "expected a header name"),
        ("%REQ(bad header)%", "invalid header name"),
        ("%DURATION(x)%", "takes no argument"),
        ("%START_TIME(%Q)%", "unsupported time specifier '%Q'"),
        ("%REQ(:PATH):x%", "maximum length"),
        ("%REQ(:PATH", "is not closed"),
        ("trailing %", "starts no command operator"),
    ];
    for (fmt, want) in cases {
        let err = Format::parse(fmt).expect_err(fmt).to_string();
        assert!(err.contains(want), "{fmt:?}: {err:?} lacks {want:?}");
        assert!(
            err.starts_with("could not parse access log format"),
            "{err}"
        );
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "baton-access-log-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Polls until `path` holds exactly `want`, for at most 5 s.
fn wait_for(path: &std::path::Path, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {got:?} != {want:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn file_writer_writes_and_reopens_after_rename() {
    let dir = temp_dir("reopen");
    let path = dir.join("access.log");
    let sink = AccessLogSink::File(path.clone());
    let w = AccessLogWriter::open(&sink).expect("open");
    w.write_line("one\n".into());
    w.write_line("two\n".into());
    wait_for(&path, "one\ntwo\n");

    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rename");
    w.reopen();
    // The reopen is asynchronous: keep writing until a line shows up in the new file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&path).map_or(true, |m| m.len() == 0) {
        assert!(
            Instant::now() < deadline,
            "no line reached the reopened file"
        );
        w.write_line("three\n".into());
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = std::fs::read_to_string(&rotated).expect("read rotated");
    assert!(old.starts_with("one\ntwo\n"), "{old:?}");
    assert!(old.lines().skip(2).all(|l| l == "three"), "{old:?}");
    drop(w);
    let new = std::fs::read_to_string(&path).expect("read new");
    assert!(
        !new.is_empty() && new.lines().all(|l| l == "three"),
        "{new:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn same_path_shares_one_writer_and_drop_flushes() {
    let dir = temp_dir("shared");
    let path = dir.join("access.log");
    let sink = AccessLogSink::File(path.clone());
    let a = AccessLogWriter::open(&sink).expect("open a");
    let b = AccessLogWriter::open(&sink).expect("open b");
    assert!(a.same_sink(&b));
    for i in 0..100 {
        a.write_line(format!("a{i}\n"));
        b.write_line(format!("b{i}\n"));
    }
    assert_eq!(a.dropped() + b.dropped(), 0);
    drop(a);
    drop(b);
    // Dropping the last handle joins the thread after its final flush.
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 200, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn open_error_names_the_path() {
    let dir = temp_dir("missing");
    let path = dir.join("no-such-dir").join("access.log");
    let err = AccessLogWriter::open(&AccessLogSink::File(path.clone()))
        .expect_err("parent directory is missing")
        .to_string();
    assert!(err.starts_with("could not open access log file"), "{err}");
    assert!(err.contains("no-such-dir"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let (w, rx) = AccessLogWriter::undrained(2);
    for i in 0..5 {
        w.write_line(format!("{i}\n"));
    }
    assert_eq!(w.dropped(), 3);
    assert_eq!(rx.try_iter().count(), 2);
    w.write_line("again\n".into());
    assert_eq!(w.dropped(), 3);
}
