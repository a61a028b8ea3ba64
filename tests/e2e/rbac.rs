//! `envoy.filters.http.rbac` and `envoy.filters.network.rbac` (issue 20): rules with ALLOW,
//! DENY and LOG, shadow rules, permissions and principals of every kind Baton evaluates
//! (headers and pseudo-headers, paths, addresses and ports, the mTLS peer certificate's names,
//! `and`/`or`/`not`), the per-route override, the network filter in front of `tcp_proxy`, and
//! the refusal of what Baton does not evaluate. Expected responses and stats were taken from
//! Envoy 1.40 on the same configurations: a denied request is answered `403` with
//! `content-type: text/plain` and the body `RBAC: access denied` (19 bytes); the stats are
//! `http.<stat_prefix>.rbac.[<rules_stat_prefix>.]{allowed,denied}` and
//! `….rbac.[<shadow_rules_stat_prefix>.]shadow_{allowed,denied}` (Envoy 1.40 printed
//! `http.ingress.rbac.r_.allowed` for `rules_stat_prefix: r_`), `<stat_prefix>.rbac.*` for the
//! network filter; a route whose `RBACPerRoute` has no `rbac` is let through and counted
//! nowhere; `LOG` shadow rules count `shadow_allowed`.

use serde_json::{json, Value};

use crate::support::client::{empty, request, send1, Resp};
use crate::support::config::{cluster, Config};
use crate::support::tcp::{exchange, TcpEcho};
use crate::support::upstream::Upstream;
use crate::support::{validate_config, Baton};
use crate::tcp_proxy::{addr, bootstrap, tcp};
use crate::tls::{data, downstream_socket, echo_config, get_with, with_chains, Ca, ClientOpts};

const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const PER_ROUTE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
const NET_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

fn filters(rbac: Value) -> Value {
    let mut tc = json!({"@type": RBAC});
    tc.as_object_mut()
        .unwrap()
        .extend(rbac.as_object().unwrap().clone());
    json!([{"name": "rbac", "typed_config": tc},
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}])
}

fn header_exact(name: &str, value: &str) -> Value {
    json!({"header": {"name": name, "string_match": {"exact": value}}})
}

async fn send(b: &Baton, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = request(method, "rbac.test", path, empty());
    for (k, v) in headers {
        req.headers_mut()
            .append(k.parse::<http::HeaderName>().unwrap(), v.parse().unwrap());
    }
    send1(b.addr(), req).await.expect("a response")
}

fn assert_denied(r: &Resp, what: &str) {
    assert_eq!(r.status, 403, "{what}");
    assert_eq!(r.text(), "RBAC: access denied", "{what}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{what}");
    assert_eq!(r.header("content-length"), Some("19"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_shadow_rules_and_per_route_overrides_as_envoy() {
    let up = Upstream::echo("up").await;
    let config = Config::new()
        .hcm(
            "http_filters",
            filters(json!({
                "rules_stat_prefix": "r_",
                "shadow_rules_stat_prefix": "s_",
                "rules": {"action": "ALLOW", "policies": {"p1": {
                    "permissions": [header_exact(":method", "GET")],
                    "principals": [header_exact("x-allow", "yes")]}}},
                "shadow_rules": {"action": "DENY", "policies": {"s1": {
                    "permissions": [{"url_path": {"path": {"prefix": "/shadow"}}}],
                    "principals": [{"any": true}]}}},
            })),
        )
        .route(
            json!({"match": {"prefix": "/open"}, "route": {"cluster": "up"},
            "typed_per_filter_config": {"rbac": {"@type": PER_ROUTE}}}),
        )
        .route(
            json!({"match": {"prefix": "/override"}, "route": {"cluster": "up"},
            "typed_per_filter_config": {"rbac": {"@type": PER_ROUTE, "rbac": {
                "rules": {"action": "DENY", "policies": {"no-evil": {
                    "permissions": [{"any": true}],
                    "principals": [header_exact("x-user", "evil")]}}}}}}}),
        )
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let b = Baton::start(&config).await;
    // Envoy 1.40: no x-allow → 403; GET with x-allow → 200 (shadow DENY matches /shadow).
    assert_denied(&send(&b, "GET", "/x", &[]).await, "GET /x");
    let r = send(&b, "GET", "/shadow", &[("x-allow", "yes")]).await;
    assert_eq!(r.status, 200);
    assert_denied(
        &send(&b, "POST", "/x", &[("x-allow", "yes")]).await,
        "POST /x",
    );
    // An empty RBACPerRoute: through, uncounted.
    assert_eq!(send(&b, "POST", "/open", &[]).await.status, 200);
    // The route's rules replace the filter's (DENY x-user: evil); the filter's stats count.
    assert_eq!(send(&b, "POST", "/override", &[]).await.status, 200);
    assert_denied(
        &send(&b, "GET", "/override", &[("x-user", "evil")]).await,
        "override",
    );
    let p = "http.ingress_http.rbac";
    assert_eq!(b.stat(&format!("{p}.r_.allowed")).await, Some(2));
    assert_eq!(b.stat(&format!("{p}.r_.denied")).await, Some(3));
    assert_eq!(b.stat(&format!("{p}.s_.shadow_allowed")).await, Some(2));
    assert_eq!(b.stat(&format!("{p}.s_.shadow_denied")).await, Some(1));
    assert_eq!(b.stat(&format!("{p}.allowed")).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_and_principals_of_every_kind() {
    let up = Upstream::echo("up").await;
    let policy = |permission: Value, principal: Value| json!({"permissions": [permission], "principals": [principal]});
    let any = json!({"any": true});
    // Policies are ORed; each lets through one kind of request.
    let config = Config::new()
        .hcm(
            "http_filters",
            filters(json!({"rules": {"action": "ALLOW", "policies": {
                // The path without its query.
                "path": policy(json!({"url_path": {"path": {"exact": "/p"}}}), any.clone()),
                // :path is the target with its query.
                "query": policy(header_exact(":path", "/q?x=1"), any.clone()),
                "authority": policy(
                    json!({"header": {"name": ":authority", "string_match": {"suffix": ".example"}}}),
                    any.clone()),
                // and/or/not: GET on /and (not with x-block).
                "and": policy(
                    json!({"and_rules": {"rules": [
                        header_exact(":method", "GET"),
                        {"url_path": {"path": {"prefix": "/and"}}},
                        {"not_rule": {"header": {"name": "x-block", "present_match": true}}}]}}),
                    json!({"or_ids": {"ids": [
                        {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
                        {"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}]}})),
                // The remote address: x-forwarded-for's last (use_remote_address is off).
                "xff": policy(
                    json!({"url_path": {"path": {"prefix": "/xff"}}}),
                    json!({"remote_ip": {"address_prefix": "192.0.2.0", "prefix_len": 24}})),
                // The listener's address and port.
                "dest": policy(
                    json!({"and_rules": {"rules": [
                        {"destination_ip": {"address_prefix": "127.0.0.1"}},
                        {"destination_port_range": {"start": 1, "end": 65536}},
                        {"url_path": {"path": {"prefix": "/dest"}}}]}}),
                    json!({"not_id": {"authenticated": {}}})),
                "port": policy(
                    json!({"and_rules": {"rules": [
                        {"destination_port": 1},
                        {"url_path": {"path": {"prefix": "/port"}}}]}}),
                    any.clone()),
                // Inverted: a missing header matches nothing (Envoy 1.40 denied `/inv` alone).
                "inv": policy(
                    json!({"url_path": {"path": {"prefix": "/inv"}}}),
                    json!({"header": {"name": "x-block", "string_match": {"exact": "1"},
                        "invert_match": true}})),
                "regex": policy(any.clone(), json!({"header": {"name": "x-id",
                    "string_match": {"safe_regex": {"regex": "[0-9]+"}}}})),
            }}})),
        )
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let b = Baton::start(&config).await;
    let ok = |r: Resp, what: &str| assert_eq!(r.status, 200, "{what}");
    ok(
        send(&b, "GET", "/p?x=1", &[]).await,
        "url_path ignores the query",
    );
    assert_denied(&send(&b, "GET", "/p/", &[]).await, "url_path exact");
    ok(send(&b, "GET", "/q?x=1", &[]).await, ":path with query");
    assert_denied(&send(&b, "GET", "/q", &[]).await, ":path without query");
    let mut req = request("GET", "a.example", "/x", empty());
    req.headers_mut()
        .insert("host", "a.example".parse().unwrap());
    ok(send1(b.addr(), req).await.unwrap(), ":authority");
    ok(send(&b, "GET", "/and", &[]).await, "and");
    assert_denied(&send(&b, "POST", "/and", &[]).await, "and: method");
    assert_denied(
        &send(&b, "GET", "/and", &[("x-block", "1")]).await,
        "and: not",
    );
    ok(
        send(
            &b,
            "GET",
            "/xff",
            &[("x-forwarded-for", "10.1.1.1, 192.0.2.7")],
        )
        .await,
        "xff last",
    );
    assert_denied(
        &send(
            &b,
            "GET",
            "/xff",
            &[("x-forwarded-for", "192.0.2.7, 10.1.1.1")],
        )
        .await,
        "xff not last",
    );
    assert_denied(&send(&b, "GET", "/xff", &[]).await, "no xff: the peer");
    ok(
        send(&b, "GET", "/dest", &[]).await,
        "destination, not authenticated",
    );
    assert_denied(&send(&b, "GET", "/port", &[]).await, "destination_port");
    ok(send(&b, "GET", "/any", &[("x-id", "123")]).await, "regex");
    assert_denied(
        &send(&b, "GET", "/any", &[("x-id", "12a")]).await,
        "regex whole",
    );
    assert_denied(&send(&b, "GET", "/inv", &[]).await, "inverted, missing");
    assert_denied(
        &send(&b, "GET", "/inv", &[("x-block", "1")]).await,
        "inverted, equal",
    );
    ok(
        send(&b, "GET", "/inv", &[("x-block", "2")]).await,
        "inverted",
    );
    assert_eq!(b.stat("http.ingress_http.rbac.allowed").await, Some(8));
    assert_eq!(b.stat("http.ingress_http.rbac.denied").await, Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_principals_match_uri_then_dns_sans_then_subject() {
    let up = Upstream::echo("up").await;
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let server = ca.leaf("m.test");
    let mut config = echo_config(&up);
    config = config.hcm(
        "http_filters",
        filters(json!({"rules": {"action": "ALLOW", "policies": {
            "spiffe": {"permissions": [{"any": true}], "principals": [
                {"authenticated": {"principal_name": {"exact": "spiffe://test/ns/a"}}}]},
            "dns": {"permissions": [{"any": true}], "principals": [
                {"authenticated": {"principal_name": {"suffix": ".trusted.test"}}}]},
            // RFC 2253, as Envoy prints it (OpenSSL's XN_FLAG_RFC2253): the last RDN first.
            "subject": {"permissions": [{"any": true}], "principals": [
                {"authenticated": {"principal_name": {"exact": "O=Acme,CN=subject only"}}}]},
        }}})),
    );
    let text = with_chains(
        &config,
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
    let b = Baton::start(&text).await;
    let roots = [ca.pem()];
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let o = |cert| ClientOpts {
        sni: "m.test",
        alpn: &["http/1.1"],
        roots: &roots,
        client_cert: cert,
    };
    let uri = client_ca.leaf_sans(vec![rcgen::SanType::URI(
        "spiffe://test/ns/a".try_into().unwrap(),
    )]);
    let dns = client_ca.leaf_for(&["c.trusted.test"]);
    let other = client_ca.leaf_for(&["c.untrusted.test"]);
    let subject = client_ca.leaf_subject(&[("CN", "subject only"), ("O", "Acme")]);
    let status = |r: crate::tls::Seen| r.resp.status;
    assert_eq!(
        status(get_with(b.addr(), o(Some(&uri))).await.unwrap()),
        200
    );
    assert_eq!(
        status(get_with(b.addr(), o(Some(&dns))).await.unwrap()),
        200
    );
    assert_eq!(
        status(get_with(b.addr(), o(Some(&subject))).await.unwrap()),
        200
    );
    let denied = get_with(b.addr(), o(Some(&other))).await.unwrap();
    assert_eq!(denied.resp.status, 403);
    assert_eq!(denied.resp.text(), "RBAC: access denied");
    assert_eq!(b.stat("http.ingress_http.rbac.allowed").await, Some(3));
    assert_eq!(b.stat("http.ingress_http.rbac.denied").await, Some(1));
}

fn net_rbac(rbac: Value) -> Value {
    let mut tc = json!({"@type": NET_RBAC, "stat_prefix": "tcp"});
    tc.as_object_mut()
        .unwrap()
        .extend(rbac.as_object().unwrap().clone());
    json!({"name": "envoy.filters.network.rbac", "typed_config": tc})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_rbac_in_front_of_tcp_proxy() {
    let echo = TcpEcho::start(None).await;
    let chain = |rbac: Value| {
        let mut f = vec![net_rbac(rbac)];
        f.extend(tcp(json!({"cluster": "echo"})).as_array().unwrap().clone());
        json!({"filters": f})
    };
    // Envoy 1.40 on the same configuration: the denied connection is closed, counted in
    // tcp.rbac.denied; a LOG shadow rule counts shadow_allowed.
    let deny_local = chain(json!({
        "rules": {"action": "DENY", "policies": {"p": {
            "permissions": [{"any": true}],
            "principals": [{"remote_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}}]}}},
        "shadow_rules": {"action": "LOG", "policies": {"p": {
            "permissions": [{"any": true}], "principals": [{"any": true}]}}},
    }));
    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [deny_local]}),
        vec![cluster("echo", &[echo.port()])],
    ))
    .await;
    assert_eq!(exchange(addr(&b), b"hello").await, None);
    b.wait_stat("tcp.rbac.denied", 1).await;
    assert_eq!(b.stat("tcp.rbac.shadow_allowed").await, Some(1));
    assert_eq!(b.stat("tcp.rbac.allowed").await, Some(0));
    assert_eq!(echo.accepted(), 0);
    drop(b);
    let allow = chain(json!({
        "rules": {"action": "ALLOW", "policies": {"p": {
            "permissions": [{"not_rule": {"destination_port": 1}}],
            "principals": [{"direct_remote_ip": {"address_prefix": "127.0.0.1"}}]}}},
    }));
    let b = Baton::start(&bootstrap(
        json!({"filter_chains": [allow]}),
        vec![cluster("echo", &[echo.port()])],
    ))
    .await;
    let got = exchange(addr(&b), b"hello").await;
    assert_eq!(got.as_deref(), Some(&b"hellobye"[..]));
    b.wait_stat("tcp.rbac.allowed", 1).await;
    assert_eq!(b.stat("tcp.rbac.denied").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_rbac_in_front_of_the_http_connection_manager() {
    let up = Upstream::echo("up").await;
    let text = Config::new()
        .route(json!({"match": {"prefix": "/"}, "route": {"cluster": "up"}}))
        .cluster(cluster("up", &[up.port()]))
        .render();
    let mut v: Value = serde_json::from_str(
        &text
            .replace("{{ADMIN}}", "\"{{ADMIN}}\"")
            .replace("{{LISTEN}}", "\"{{LISTEN}}\""),
    )
    .unwrap();
    let fs = v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        .as_array_mut()
        .unwrap();
    fs.insert(
        0,
        net_rbac(json!({"rules": {"action": "DENY", "policies": {"p": {
            "permissions": [{"any": true}],
            "principals": [{"remote_ip": {"address_prefix": "127.0.0.1"}}]}}}})),
    );
    let text = serde_json::to_string(&v)
        .unwrap()
        .replace("\"{{ADMIN}}\"", "{{ADMIN}}")
        .replace("\"{{LISTEN}}\"", "{{LISTEN}}");
    let b = Baton::start(&text).await;
    let req = request("GET", "x", "/", empty());
    assert!(send1(b.addr(), req).await.is_err());
    b.wait_stat("tcp.rbac.denied", 1).await;
    assert_eq!(up.hits(), 0);
}

/// `--mode validate` on an HCM with this RBAC filter; its stderr.
fn refused(rbac: Value) -> String {
    let text = Config::new()
        .hcm("http_filters", filters(rbac))
        .route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 200}}))
        .render();
    let (status, err) = validate_config(&text);
    assert!(!status.success(), "accepted");
    err
}

#[test]
fn what_baton_does_not_evaluate_is_refused_with_its_path() {
    let p = "http_filters[0].typed_config";
    let one = |permission: Value, principal: Value| json!({"rules": {"policies": {"x": {"permissions": [permission], "principals": [principal]}}}});
    let any = json!({"any": true});
    for (rbac, path) in [
        (
            one(json!({"metadata": {"filter": "f"}}), any.clone()),
            format!("{p}.rules.policies.x.permissions[0].metadata"),
        ),
        (
            one(any.clone(), json!({"filter_state": {"key": "k"}})),
            format!("{p}.rules.policies.x.principals[0].filter_state"),
        ),
        (
            one(
                json!({"and_rules": {"rules": [any.clone(), {"uri_template": {}}]}}),
                any.clone(),
            ),
            format!("{p}.rules.policies.x.permissions[0].and_rules.rules[1].uri_template"),
        ),
        (
            json!({"rules": {"policies": {"x": {"permissions": [any.clone()],
                "principals": [any.clone()], "condition": {}}}}}),
            format!("{p}.rules.policies.x.condition"),
        ),
        (json!({"matcher": {}}), format!("{p}.matcher")),
        (
            json!({"track_per_rule_stats": true}),
            format!("{p}.track_per_rule_stats"),
        ),
        (
            one(any.clone(), json!({"any": false})),
            format!("{p}.rules.policies.x.principals[0].any"),
        ),
        (
            json!({"rules": {"action": "NOPE"}}),
            format!("{p}.rules.action"),
        ),
    ] {
        let err = refused(rbac.clone());
        assert!(err.contains(&path), "{rbac}: {err}");
    }
}

#[test]
fn network_rbac_refusals() {
    let validate = |filters: Value| {
        let text = bootstrap(
            json!({"filter_chains": [{"filters": filters}]}),
            vec![cluster("echo", &[1])],
        );
        let (status, err) = validate_config(&text);
        assert!(!status.success(), "accepted");
        err
    };
    let tp = tcp(json!({"cluster": "echo"}))[0].clone();
    let sni = net_rbac(json!({"rules": {"policies": {"p": {
        "permissions": [{"requested_server_name": {"exact": "a.test"}}],
        "principals": [{"any": true}]}}}}));
    // A chain without a transport socket: the server name is the TLS inspector's, which Baton
    // does not give the network filters.
    let err = validate(json!([sni, tp.clone()]));
    assert!(err.contains("filters[0].typed_config"), "{err}");
    assert!(err.contains("requested_server_name"), "{err}");
    let err = validate(json!([tp.clone(), net_rbac(json!({}))]));
    assert!(err.contains("filters[0]"), "{err}");
    let err = validate(json!([
        net_rbac(json!({"enforcement_type": "CONTINUOUS"})),
        tp.clone()
    ]));
    assert!(
        err.contains("filters[0].typed_config.enforcement_type"),
        "{err}"
    );
    let mut no_prefix = net_rbac(json!({}));
    no_prefix["typed_config"]
        .as_object_mut()
        .unwrap()
        .remove("stat_prefix");
    let err = validate(json!([no_prefix, tp]));
    assert!(err.contains("filters[0].typed_config.stat_prefix"), "{err}");
}
