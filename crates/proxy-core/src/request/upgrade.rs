//! A protocol switch (WebSocket) forwarded: a dedicated upstream connection, then a tunnel.

use std::sync::Arc;

use http::{Request, Response, StatusCode};

use crate::body::{ProxyBody, RequestBody};
use crate::cluster::Cluster;
use crate::context::{Ctx, Upgraded};
use crate::error::UpstreamFailure;
use crate::headers::{prepare_request_headers, strip_hop_by_hop, Forwarded, Upgrade};
use crate::router::{Forward, Route, RouteCluster};
use crate::upstream;

use super::attempt::Attempt;
use super::tracker::Tracker;

/// The upgrade request's head for the upstream, in place: forwarding fields (the upgrade
/// kept), the route's mutations, the path and host rewrites; its URI.
fn upgrade_head(
    cx: Ctx<'_>,
    (route, f): (&Route, &Forward),
    cluster: &str,
    parts: &mut http::request::Parts,
    started: std::time::Instant,
) -> http::Uri {
    let Ctx { l, c, .. } = cx;
    prepare_request_headers(
        &mut parts.headers,
        Forwarded::from_hcm(&l.http, c.remote, c.tls.is_some()),
        Upgrade::Keep,
    );
    super::mutate::mutate_request(cx, route, cluster, parts, started);
    super::rewrite::upstream_target(route, &f.config, parts, false)
}

/// Forward a protocol switch (WebSocket): a dedicated upstream connection, and once both sides
/// have switched, bytes copied both ways until either closes.
pub(super) async fn tunnel(
    cx: Ctx<'_>,
    route: &Route,
    f: &Forward,
    target: &RouteCluster,
    cluster: &Arc<Cluster>,
    req: Request<RequestBody>,
    tracker: &mut Tracker,
) -> Response<ProxyBody> {
    let Ctx { l, w, c } = cx;
    let (by, set_cookie) = super::forward::request_hash(cx, f, cluster, &req);
    let (mut parts, body) = req.into_parts();
    let uri = upgrade_head(cx, (route, f), &target.name, &mut parts, tracker.start());
    let host = {
        let set = cluster.hosts();
        w.lb.pick(target.index, cluster, &set, by)
    };
    let Some(host) = host else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return tracker.failure_reply(UpstreamFailure::NoHealthyUpstream);
    };
    let attempt = Attempt::start(cluster.clone(), host.clone(), target.index);
    let sni = upstream::auto_sni(cluster, &uri, &parts.headers);
    let mut sender = match upstream::connect_h1(cluster, &host, true, sni.as_deref()).await {
        Ok(s) => s,
        Err(e) => return tracker.failure_reply(e),
    };
    let mut up = Request::new(ProxyBody::request(body).count_into(tracker.received()));
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = parts.headers;
    let mut resp = match sender.send_request(up).await {
        Ok(r) => r,
        Err(e) => return tracker.failure_reply(upstream::classify(&e)),
    };
    let status = resp.status();
    cluster
        .stats
        .response(status.as_u16(), &w.codes[target.index]);
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers, Upgrade::Strip);
        if let Some(c) = set_cookie {
            rparts.headers.append(http::header::SET_COOKIE, *c);
        }
        tracker.set_upstream(attempt.into_track(None));
        return Response::from_parts(rparts, ProxyBody::stream(rbody));
    }
    let on_upstream = hyper::upgrade::on(&mut resp);
    // hyper hands the downstream socket back once it has written the 101.
    let (tx, on_downstream) = tokio::sync::oneshot::channel();
    *c.upgrade.borrow_mut() = Some(tx);
    let hs_active = l.http_stats.downstream_cx_upgrades_active.clone();
    let hs_idle = l.http_stats.downstream_rq_idle_timeout.clone();
    l.http_stats.downstream_cx_upgrades_total.inc();
    // The tunnel keeps the connection context (and so the generation's drain) alive.
    let conn = c.clone();
    // Only a tunnel of a cleartext chain may move (the next generation serves it on the same
    // chain).
    let handover = l.movable.then(|| w.handover.clone());
    let info = crate::tunnel::TunnelInfo {
        kind: crate::handover::Kind::Tunnel,
        chain: l.chain.clone(),
        idle: std::time::Duration::ZERO,
        listener: l.config.address,
        peer: c.remote,
        upstream: attempt.host.addr,
        cluster: cluster.config.name.clone(),
        requests: c.requests.get(),
        idle_timeout: l
            .http
            .tunnel_idle_timeout_with(f.config.stream_idle_timeout(l.http.stream_idle_timeout)),
    };
    tokio::task::spawn_local(async move {
        let _attempt = attempt;
        let (down, up) = futures_util::future::join(on_downstream, on_upstream).await;
        if let (Ok(Upgraded { mut io, read_buf }), Ok(up)) = (down, up) {
            hs_active.inc();
            io.prepend(read_buf);
            if crate::tunnel::run(io, up, handover.as_ref(), info).await
                == crate::tunnel::Ended::IdleTimeout
            {
                hs_idle.inc();
            }
            hs_active.dec();
        }
        drop(conn);
    });
    let (mut rparts, _) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers, Upgrade::Keep);
    if let Some(c) = set_cookie {
        rparts.headers.append(http::header::SET_COOKIE, *c);
    }
    Response::from_parts(rparts, ProxyBody::empty())
}
