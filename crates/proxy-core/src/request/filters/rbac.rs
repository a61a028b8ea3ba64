//! `envoy.filters.http.rbac`: the shadow rules are evaluated and counted
//! (`shadow_allowed` / `shadow_denied`), then the enforced rules decide — a denied request is
//! answered 403 `RBAC: access denied` (`text/plain`, as Envoy 1.40), counted in `denied`, an
//! allowed one in `allowed`. A route's `RBACPerRoute` replaces the rules (not the stats); rules
//! left unset let every request through uncounted.
//!
//! The remote address (`remote_ip`) is the peer after the PROXY protocol, or, without
//! `use_remote_address`, the last address of `x-forwarded-for` when it is one (Envoy trusts no
//! hop more, as `xff_num_trusted_hops` is 0).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use crate::body::{ProxyBody, RequestBody};
use crate::config::Rbac;
use crate::context::Ctx;
use crate::headers::X_FORWARDED_FOR;
use crate::rbac::{evaluate, RequestHead, Subject};
use crate::stats::RbacStats;

use super::super::local::local_reply;

/// Envoy's body for a denied request.
const BODY: &[u8] = b"RBAC: access denied";

pub(super) fn decode(
    cx: Ctx<'_>,
    rbac: &Rbac,
    stats: Option<&RbacStats>,
    req: &Request<RequestBody>,
) -> Result<(), Box<Response<ProxyBody>>> {
    if rbac.rules.is_none() && rbac.shadow_rules.is_none() {
        return Ok(());
    }
    let c = cx.c;
    let head = RequestHead {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
    };
    let subject = match &c.identity {
        Some(id) => id.subject(c.local, remote(cx, req), Some(head)),
        // Not read (a connection that arrived from the previous generation): cleartext.
        None => Subject {
            local: c.local,
            direct_remote: c.remote,
            remote: remote(cx, req),
            tls: None,
            sni: None,
            request: Some(head),
        },
    };
    if let Some(shadow) = &rbac.shadow_rules {
        let d = evaluate(shadow, &subject);
        if let Some(s) = stats {
            if d.allowed {
                s.shadow_allowed.inc();
            } else {
                s.shadow_denied.inc();
            }
        }
    }
    let Some(rules) = &rbac.rules else {
        return Ok(());
    };
    let d = evaluate(rules, &subject);
    if d.allowed {
        stats.inspect(|s| s.allowed.inc());
        return Ok(());
    }
    stats.inspect(|s| s.denied.inc());
    tracing::debug!(policy = d.policy.unwrap_or("none"), "RBAC: access denied");
    Err(Box::new(local_reply(
        StatusCode::FORBIDDEN,
        Bytes::from_static(BODY),
    )))
}

/// The downstream's address as Envoy's connection manager settles it.
fn remote(cx: Ctx<'_>, req: &Request<RequestBody>) -> SocketAddr {
    let peer = cx.c.remote;
    if cx.l.http.use_remote_address {
        return peer;
    }
    req.headers()
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .map_or(peer, |ip| SocketAddr::new(ip, 0))
}
