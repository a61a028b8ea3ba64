//! HTTP/2 downstream (prior knowledge) to HTTP/1.1 and HTTP/2 upstreams, many concurrent streams
//! on one connection.

use http::Version;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_downstream_to_h1_and_h2_upstreams_with_50_concurrent_streams() {
    let up1 = Upstream::echo("h1").await;
    let up2 = Upstream::echo_h2("h2").await;
    let config = Config::new()
        .route(route("/h1/", "c1", json!({})))
        .route(route("/h2/", "c2", json!({})))
        .cluster(cluster("c1", &[up1.port()]))
        .cluster(with(
            cluster("c2", &[up2.port()]),
            "typed_extension_protocol_options",
            http2_options(),
        ))
        .render();
    let baton = Baton::start(&config).await;

    let client = within(5, "h2 connect", H2::connect(baton.addr()))
        .await
        .expect("h2 connect");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let which = if i % 2 == 0 { "h1" } else { "h2" };
            let req = http::Request::post(format!("http://svc.example/{which}/{i}"))
                .body(full(format!("body-{i}")))
                .unwrap();
            let resp = c.send(req).await.expect("h2 request");
            (i, which, resp)
        }));
    }
    for t in tasks {
        let (i, which, resp) = within(10, "h2 streams", t).await.unwrap();
        assert_eq!(resp.status, 200, "stream {i}");
        assert_eq!(resp.header("x-upstream"), Some(which), "stream {i}");
        assert_eq!(resp.text(), format!("body-{i}"), "stream {i}");
        assert!(resp.header("x-envoy-upstream-service-time").is_some());
    }
    let seen1 = up1.seen();
    let seen2 = up2.seen();
    assert_eq!(seen1.len(), 25);
    assert_eq!(seen2.len(), 25);
    for s in &seen1 {
        assert_eq!(s.version, Version::HTTP_11);
        assert_eq!(
            s.header("host"),
            Some("svc.example"),
            "authority becomes Host"
        );
        assert_eq!(s.method, http::Method::POST);
    }
    for s in &seen2 {
        assert_eq!(s.version, Version::HTTP_2);
        assert_eq!(
            s.uri.authority().map(|a| a.as_str()),
            Some("svc.example"),
            "authority forwarded over HTTP/2"
        );
    }
    // All 50 streams shared one downstream connection.
    baton
        .wait_stat("http.ingress_http.downstream_rq_http2_total", 50)
        .await;
    assert_eq!(
        baton
            .stat("http.ingress_http.downstream_cx_http2_total")
            .await,
        Some(1)
    );
    // HTTP/2 upstream streams are multiplexed: far fewer connections than requests.
    assert!(up2.conns() <= 2, "h2 upstream connections: {}", up2.conns());
}
