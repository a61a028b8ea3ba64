//! Header handling on the request path: the rules a request head must meet before it is
//! routed ([`check_request`]: one `Host`, a `Connection` that names no field the proxy manages,
//! no `x-envoy-*` from outside), hop-by-hop removal (RFC 9110 §7.6.1), the `x-forwarded-*`
//! headers, request ids and upgrade detection. Pure functions over a [`HeaderMap`], benchmarked
//! in `benches/headers.rs`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};

use crate::config::Underscores;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ENVOY_EXTERNAL_ADDRESS: HeaderName =
    HeaderName::from_static("x-envoy-external-address");
pub static VIA: HeaderName = HeaderName::from_static("via");
pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Why a request head is refused before routing ([`Refusal::status`]: 400, or 431 for its
/// size); the HTTP/1.1 connection closes after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2), or an HTTP/2 one with neither
    /// `:authority` nor `host`.
    MissingHost,
    /// More than one `Host` field line (RFC 9112 §3.2).
    DuplicateHost,
    /// The target's authority has userinfo (`http://user@host/`): RFC 9110 §4.2.4 says to
    /// treat it as an error.
    UserinfoInTarget,
    /// `Connection` names `Host` or a field the proxy itself sets (Envoy answers 400 too).
    ConnectionNamesManaged,
    /// The fields' names and values add up to more than `max_request_headers_kb` (431).
    HeadersTooLarge,
    /// A target with a fragment, an authority-form target on other than CONNECT, an
    /// asterisk-form one on other than OPTIONS (RFC 9112 §3.2).
    BadTarget,
    /// A `Host` that is no `host[:port]` (RFC 9110 §7.2): a space, userinfo, a path.
    BadHost,
    /// `Content-Length` and `Transfer-Encoding` both (RFC 9112 §6.3).
    FramingConflict,
    /// A transfer coding other than exactly one `chunked` (501, as Envoy).
    UnsupportedTransferCoding,
    /// HTTP/1.0 (or 0.9) while the HCM's `http_protocol_options.accept_http_10` is off, its
    /// default (426, as Envoy).
    Http10NotAccepted,
    /// More fields than `common_http_protocol_options.max_headers_count` (431, as Envoy).
    TooManyHeaders,
    /// A field name with `_` under `headers_with_underscores_action: REJECT_REQUEST` (400).
    UnderscoreInName,
}

impl Refusal {
    /// The status a refused request is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::HeadersTooLarge | Refusal::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Refusal::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::Http10NotAccepted => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The body it is answered with (Envoy's words where Envoy has a body).
    pub fn body(self) -> &'static str {
        match self {
            Refusal::UnsupportedTransferCoding => "Not Implemented",
            Refusal::Http10NotAccepted => "Upgrade Required",
            Refusal::FramingConflict | Refusal::UnderscoreInName => "Bad Request",
            Refusal::HeadersTooLarge | Refusal::TooManyHeaders => "Request Header Fields Too Large",
            _ => "",
        }
    }
}

/// What [`check_request`] needs of the connection and the HCM.
#[derive(Clone, Copy, Debug)]
pub struct Checks<'a> {
    /// `max_request_headers_kb` in bytes.
    pub max_head: usize,
    /// The client is internal (`internal_address_config`): its `x-envoy-*` fields stay.
    pub internal: bool,
    /// `http_protocol_options.accept_http_10`.
    pub accept_http_10: bool,
    /// `http_protocol_options.default_host_for_http_10`: the `Host` of an HTTP/1.0 request
    /// without one.
    pub default_host_10: Option<&'a HeaderValue>,
}

/// Whether a `Host` value is a `host[:port]`: reg-name, IPv4 or bracketed IPv6 characters and a
/// port, nothing else (no space, no userinfo, no path). Empty is allowed (RFC 9110 §7.2).
#[inline]
pub fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| HOST_BYTES[usize::from(b)])
}

/// The bytes a `Host` value may hold, by value (one load per byte on every request).
static HOST_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b':'
                    | b'['
                    | b']'
            );
        b += 1;
    }
    t
};

/// A head's size as Envoy counts it against `max_request_headers_kb`: its fields' names and
/// values.
pub fn fields_size(h: &HeaderMap) -> usize {
    h.iter().map(|(n, v)| n.as_str().len() + v.len()).sum()
}

/// Whether `name` is a field the proxy manages: `Host`, the request id, `x-forwarded-for`,
/// `x-forwarded-proto` and `x-envoy-*`. A `Connection` naming one would have the proxy drop it.
pub fn is_managed(name: &[u8]) -> bool {
    match name.len() {
        4 => name.eq_ignore_ascii_case(b"host"),
        12 => name.eq_ignore_ascii_case(b"x-request-id"),
        15 => name.eq_ignore_ascii_case(b"x-forwarded-for"),
        17 => name.eq_ignore_ascii_case(b"x-forwarded-proto"),
        _ => is_envoy(name),
    }
}

/// Whether `name` is an `x-envoy-*` field.
pub fn is_envoy(name: &[u8]) -> bool {
    name.len() > 8 && name[..8].eq_ignore_ascii_case(b"x-envoy-")
}

/// Check a request head from a client, and bring it to the one form the rest of the proxy
/// relies on; hyper's sessions (HTTP/1.x and HTTP/2) run every request through it. Baton's own
/// HTTP/1.1 loop serves only heads that need nothing done here (it leaves the rest to hyper).
///
/// - Exactly one `Host` in HTTP/1.1, at most one in HTTP/1.0; an HTTP/2 request needs
///   `:authority` or one `host`.
/// - An authority in the target (absolute-form, `:authority`) replaces `Host`: the upstream
///   gets the authority routing used, never a second opinion. One with userinfo is refused.
/// - No `Connection` token may name a field the proxy manages ([`is_managed`]).
/// - `x-envoy-*` fields are removed unless the client is `internal` (the HCM's
///   `internal_address_config`; none is by default); the fault filter's `x-envoy-fault-*`
///   controls and `x-envoy-original-dst-host` stay, as in Envoy.
/// - The fields add up to at most `max_head` bytes ([`fields_size`]).
/// - HTTP/1.0 only with `accept_http_10`; a valid `Host`, target form and transfer coding
///   ([`check_form`]).
/// - An `Upgrade: h2c` is no switch Baton makes: the field goes, the request is served as it
///   is (as Envoy does).
pub fn check_request<B>(req: &mut Request<B>, checks: Checks<'_>) -> Result<(), Refusal> {
    if fields_size(req.headers()) > checks.max_head {
        return Err(Refusal::HeadersTooLarge);
    }
    check_form(req, checks.accept_http_10)?;
    if let Some(host) = checks.default_host_10 {
        if req.version() == Version::HTTP_10 && !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, host.clone());
        }
    }
    for line in req.headers().get_all(header::CONNECTION) {
        let names_managed = line
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| is_managed(t.trim_ascii()));
        if names_managed {
            return Err(Refusal::ConnectionNamesManaged);
        }
    }
    let hosts = req.headers().get_all(header::HOST).iter().count();
    let http2 = req.version() == Version::HTTP_2;
    if hosts > 1 && !http2 {
        return Err(Refusal::DuplicateHost);
    }
    if hosts == 0 && req.version() == Version::HTTP_11 {
        return Err(Refusal::MissingHost);
    }
    if let Some(authority) = req.uri().authority() {
        if authority.as_str().contains('@') {
            return Err(Refusal::UserinfoInTarget);
        }
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
    } else if http2 && hosts != 1 {
        return Err(if hosts == 0 {
            Refusal::MissingHost
        } else {
            Refusal::DuplicateHost
        });
    }
    if !checks.internal {
        strip_envoy(req.headers_mut());
    }
    let h2c = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"h2c"));
    if h2c {
        req.headers_mut().remove(header::UPGRADE);
    }
    Ok(())
}

/// `common_http_protocol_options.max_headers_count` and `headers_with_underscores_action`,
/// on whichever path read the request: more fields than `max` is 431; a name with `_` is
/// refused or its field removed, as configured.
pub fn check_fields(
    h: &mut HeaderMap,
    max: usize,
    underscores: Underscores,
) -> Result<(), Refusal> {
    if h.len() > max {
        return Err(Refusal::TooManyHeaders);
    }
    let with_underscore = |n: &HeaderName| n.as_str().contains('_');
    match underscores {
        Underscores::Allow => {}
        Underscores::Reject => {
            if h.keys().any(with_underscore) {
                return Err(Refusal::UnderscoreInName);
            }
        }
        Underscores::Drop => {
            let dropped: Vec<HeaderName> =
                h.keys().filter(|n| with_underscore(n)).cloned().collect();
            for name in dropped {
                h.remove(name);
            }
        }
    }
    Ok(())
}

/// Runs of `/` in `uri`'s path made one (`merge_slashes`); `None` when there is none.
pub fn merge_slashes(uri: &http::Uri) -> Option<http::Uri> {
    let path = uri.path();
    if !path.contains("//") {
        return None;
    }
    let mut merged = String::with_capacity(uri.path_and_query().map_or(0, |p| p.as_str().len()));
    let mut last_slash = false;
    for ch in path.chars() {
        if ch == '/' && last_slash {
            continue;
        }
        last_slash = ch == '/';
        merged.push(ch);
    }
    if let Some(q) = uri.query() {
        merged.push('?');
        merged.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(merged.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// The request's version, target form, `Host` values and transfer coding.
fn check_form<B>(req: &Request<B>, accept_http_10: bool) -> Result<(), Refusal> {
    let version = req.version();
    if (version == Version::HTTP_10 || version == Version::HTTP_09) && !accept_http_10 {
        return Err(Refusal::Http10NotAccepted);
    }
    let uri = req.uri();
    let method = req.method();
    if uri.scheme().is_none() && uri.authority().is_some() && method != Method::CONNECT {
        return Err(Refusal::BadTarget);
    }
    if uri.path() == "*" && method != Method::OPTIONS {
        return Err(Refusal::BadTarget);
    }
    let h = req.headers();
    if h.get_all(header::HOST)
        .iter()
        .any(|v| !valid_host(v.as_bytes()))
    {
        return Err(Refusal::BadHost);
    }
    let mut codings = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(te) = codings.next() {
        let chunked = te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
        if !chunked || codings.next().is_some() {
            return Err(Refusal::UnsupportedTransferCoding);
        }
    }
    Ok(())
}

/// Remove every `x-envoy-*` field but the fault filter's controls (`x-envoy-fault-*`) and
/// the `ORIGINAL_DST` cluster's `x-envoy-original-dst-host`, which Envoy 1.40 takes from any
/// client and passes on.
fn strip_envoy(h: &mut HeaderMap) {
    let stripped = |name: &[u8]| {
        is_envoy(name)
            && !(name.len() > 14 && name[8..14].eq_ignore_ascii_case(b"fault-"))
            && !name.eq_ignore_ascii_case(b"x-envoy-original-dst-host")
    };
    while let Some(name) = h.keys().find(|k| stripped(k.as_str().as_bytes())).cloned() {
        h.remove(&name);
    }
}

/// The upgrade a request asks for (`Connection: upgrade` + `Upgrade: <type>`).
pub fn upgrade_type(h: &HeaderMap) -> Option<&str> {
    let up = h.get(header::UPGRADE)?.to_str().ok()?;
    let conn_has_upgrade = h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    conn_has_upgrade.then_some(up)
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), keeping `Connection: upgrade` and `Upgrade`
/// for a protocol switch.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: Upgrade) {
    let keep_upgrade = upgrade == Upgrade::Keep;
    const CONNECTION: u8 = 1;
    const KEEP_ALIVE_: u8 = 2;
    const PROXY_CONNECTION_: u8 = 4;
    const TRANSFER_ENCODING: u8 = 8;
    const UPGRADE: u8 = 16;
    const TE: u8 = 32;
    // One pass over the names finds which are present (most messages carry none, or only
    // `Connection: keep-alive`): only those are then removed, each removal being a hashed lookup.
    let mut present = 0u8;
    for k in h.keys() {
        present |= match k.as_str() {
            "connection" => CONNECTION,
            "keep-alive" => KEEP_ALIVE_,
            "proxy-connection" => PROXY_CONNECTION_,
            "transfer-encoding" => TRANSFER_ENCODING,
            "upgrade" => UPGRADE,
            "te" => TE,
            _ => 0,
        };
    }
    if present == 0 {
        return;
    }
    let mut remove_te = false;
    // A clone of the value is a reference count, not a copy; removing by `&str` looks the name
    // up case-insensitively without building a `HeaderName` (an allocation for custom names).
    if present & CONNECTION != 0 {
        // Every `Connection` line counts. Unless kept, `Connection` goes first: removing the
        // entry hands back its values, one hashed lookup instead of a get and a remove; more
        // than one line (rare) costs a `Vec`.
        let lines: Lines = match h.entry(header::CONNECTION) {
            header::Entry::Vacant(_) => Lines::One(None),
            header::Entry::Occupied(e) => {
                if e.iter().nth(1).is_some() {
                    if keep_upgrade {
                        Lines::Many(e.iter().cloned().collect())
                    } else {
                        Lines::Many(e.remove_entry_mult().1.collect())
                    }
                } else if keep_upgrade {
                    Lines::One(Some(e.get().clone()))
                } else {
                    Lines::One(Some(e.remove()))
                }
            }
        };
        let lines = match &lines {
            Lines::One(v) => v.as_slice(),
            Lines::Many(v) => v.as_slice(),
        };
        for conn in lines {
            for t in conn.to_str().unwrap_or("").split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("upgrade") {
                    // Handled below with the fixed hop-by-hop set (`upgrade` only when not
                    // kept for a protocol switch).
                } else if t.eq_ignore_ascii_case("te") {
                    remove_te = true;
                } else if !t.is_empty() {
                    h.remove(t);
                }
            }
        }
    }
    if present & KEEP_ALIVE_ != 0 {
        h.remove(&KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_ != 0 {
        h.remove(&PROXY_CONNECTION);
    }
    if present & TRANSFER_ENCODING != 0 {
        h.remove(header::TRANSFER_ENCODING);
    }
    if present & UPGRADE != 0 && !keep_upgrade {
        h.remove(header::UPGRADE);
    }
    if present & TE != 0 {
        let trailers_only = h
            .get(header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if remove_te || !trailers_only {
            h.remove(header::TE);
        }
    }
}

/// The `Connection` lines of a message: nearly always one.
enum Lines {
    One(Option<HeaderValue>),
    Many(Vec<HeaderValue>),
}

/// Whether a protocol switch's `Upgrade` / `Connection: upgrade` stay (a request or response of
/// a switch being forwarded) or go with the other hop-by-hop fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upgrade {
    Strip,
    Keep,
}

/// What the downstream connection tells the upstream in `x-forwarded-*` and `via`.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded<'a> {
    /// The downstream peer.
    pub remote: SocketAddr,
    /// `use_remote_address`: the peer is appended to `x-forwarded-for` (unless
    /// `skip_xff_append`), `x-forwarded-proto` is set (not only kept), and an external client's
    /// address is told in `x-envoy-external-address`.
    pub use_remote_address: bool,
    /// `skip_xff_append`.
    pub skip_xff_append: bool,
    /// The downstream connection is TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    /// The client is internal (`internal_address_config`): with `use_remote_address`, the
    /// upstream is told so in `x-envoy-internal: true`, as Envoy does.
    pub internal: bool,
    /// The HCM's `via`, appended to the request's.
    pub via: Option<&'a HeaderValue>,
    /// `xff_num_trusted_hops`: the external client is the address this many entries from the
    /// right of `x-forwarded-for` (0: the peer).
    pub trusted_hops: u32,
}

impl<'a> Forwarded<'a> {
    /// The forwarding fields alone (no `skip_xff_append`, no `via`).
    pub fn of(remote: SocketAddr, use_remote_address: bool, tls: bool, internal: bool) -> Self {
        Self {
            remote,
            use_remote_address,
            skip_xff_append: false,
            tls,
            internal,
            via: None,
            trusted_hops: 0,
        }
    }

    /// What a connection from `remote` (over TLS or not) tells the upstream under `hcm`.
    #[inline]
    pub fn from_hcm(
        hcm: &'a crate::config::HttpConnectionManager,
        remote: SocketAddr,
        tls: bool,
    ) -> Self {
        Self {
            remote,
            use_remote_address: hcm.use_remote_address,
            skip_xff_append: hcm.skip_xff_append,
            tls,
            internal: hcm.is_internal(remote.ip()),
            via: hcm.via.as_ref(),
            trusted_hops: hcm.xff_num_trusted_hops,
        }
    }
}

/// `x-envoy-downstream-service-cluster`, set by `add_user_agent`.
pub static X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER: HeaderName =
    HeaderName::from_static("x-envoy-downstream-service-cluster");

/// `add_user_agent` (Envoy 1.40): `x-envoy-downstream-service-cluster` is the service cluster,
/// and so is `user-agent` when the request has none or an empty one.
pub fn add_user_agent(h: &mut HeaderMap, service_cluster: &HeaderValue) {
    h.insert(
        X_ENVOY_DOWNSTREAM_SERVICE_CLUSTER.clone(),
        service_cluster.clone(),
    );
    if h.get(http::header::USER_AGENT).is_none_or(|v| v.is_empty()) {
        h.insert(http::header::USER_AGENT, service_cluster.clone());
    }
}

/// `value` appended to `name`'s value, after `, ` (Envoy's way with `via`); set when absent.
pub fn append_value(h: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    let joined = match h.get(name) {
        Some(prev) if !prev.is_empty() => {
            let mut b = BytesMut::with_capacity(prev.len() + 2 + value.len());
            b.extend_from_slice(prev.as_bytes());
            b.extend_from_slice(b", ");
            b.extend_from_slice(value.as_bytes());
            HeaderValue::from_maybe_shared(b.freeze()).unwrap_or_else(|_| value.clone())
        }
        _ => value.clone(),
    };
    h.insert(name.clone(), joined);
}

/// Prepare a request's headers for the upstream: hop-by-hop removed, `x-forwarded-for` (with
/// `use_remote_address`, the peer appended), `x-forwarded-proto` (`https` when the
/// downstream connection is TLS), `x-envoy-internal` / `x-envoy-external-address`, `via`.
pub fn prepare_request_headers(h: &mut HeaderMap, fwd: Forwarded<'_>, upgrade: Upgrade) {
    let Forwarded {
        remote,
        use_remote_address,
        skip_xff_append,
        tls,
        internal,
        via,
        trusted_hops,
    } = fwd;
    // With trusted hops: the client as `x-forwarded-for` arrived, and internal only without one.
    let mut client = remote.ip();
    let mut internal = internal;
    if trusted_hops > 0 && use_remote_address {
        if let Some(xff) = h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            internal &= xff.is_empty();
            if let Some(ip) = xff
                .rsplit(',')
                .nth(trusted_hops as usize - 1)
                .and_then(|a| a.trim().parse().ok())
            {
                client = ip;
            }
        }
    }
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    strip_hop_by_hop(h, upgrade);
    if use_remote_address {
        if !skip_xff_append {
            let prev = h
                .get(&X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .filter(|p| !p.is_empty());
            // One allocation: 39 bytes is the longest IPv6 address text.
            let mut value = String::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
            if let Some(prev) = prev {
                value.push_str(prev);
                value.push_str(", ");
            }
            // Writing to a `String` cannot fail.
            let _ = write!(value, "{}", remote.ip());
            if let Ok(v) = HeaderValue::try_from(value) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        h.insert(X_FORWARDED_PROTO.clone(), proto);
        if internal {
            h.insert(X_ENVOY_INTERNAL.clone(), HeaderValue::from_static("true"));
        } else {
            // The trusted client address (`xff_num_trusted_hops` 0: the peer), as Envoy tells
            // it for an external client.
            let mut ip = String::with_capacity(39);
            let _ = write!(ip, "{client}");
            if let Ok(v) = HeaderValue::try_from(ip) {
                h.insert(X_ENVOY_EXTERNAL_ADDRESS.clone(), v);
            }
        }
    } else {
        // One hashed lookup: kept when present, set when absent.
        h.entry(&X_FORWARDED_PROTO).or_insert(proto);
    }
    if let Some(via) = via {
        append_value(h, &VIA, via);
    }
}

/// A random UUID v4 for `x-request-id`.
pub fn new_request_id() -> HeaderValue {
    let text = uuid_text(uuid_v4_bits());
    // Cut from a per-thread chunk of ids: one allocation per `IDS_PER_CHUNK` requests instead
    // of one each (a value shares its chunk until dropped).
    let id = REQUEST_IDS.with(|chunk| {
        let mut chunk = chunk.borrow_mut();
        if chunk.capacity() < text.len() {
            *chunk = BytesMut::with_capacity(text.len() * IDS_PER_CHUNK);
        }
        chunk.extend_from_slice(&text);
        chunk.split_to(text.len()).freeze()
    });
    HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Request ids cut from one allocation.
const IDS_PER_CHUNK: usize = 128;

thread_local! {
    /// What is left of this thread's chunk of request ids.
    static REQUEST_IDS: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// A random UUID v4 as text (the name Envoy gives a listener configured without one).
pub fn new_uuid() -> String {
    String::from_utf8_lossy(&uuid_text(uuid_v4_bits())).into_owned()
}

fn uuid_v4_bits() -> u128 {
    let bits = fastrand::u128(..);
    // Version 4 and the RFC 4122 variant.
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    (bits & !(0x3 << 62)) | (0x2 << 62)
}

/// `bits` in the 8-4-4-4-12 hex form of a UUID.
fn uuid_text(bits: u128) -> [u8; 36] {
    /// Where each byte's two digits go: a dash before bytes 4, 6, 8 and 10. Constant
    /// positions let the compiler drop the bounds checks.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; 36];
    for (byte, at) in bits.to_be_bytes().into_iter().zip(AT) {
        let [hi, lo] = HEX_PAIRS[usize::from(byte)];
        out[at] = hi;
        out[at + 1] = lo;
    }
    out
}

/// Each byte's two lowercase hex digits: one lookup per byte instead of two.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

pub mod path;

#[cfg(test)]
mod tests;
