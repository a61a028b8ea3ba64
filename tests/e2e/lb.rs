//! Load balancing and discovery: round robin, weights, STRICT_DNS on `localhost`, and the
//! Envoy quick-start bootstrap served as it is.

use serde_json::json;

use crate::support::*;

/// The `x-upstream` of `n` sequential requests on one connection (so one worker's balancer).
async fn names(baton: &Baton, n: usize) -> Vec<String> {
    let mut c = H1::connect(baton.addr()).await.unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let r = c
            .send(get_req("test.local", &format!("/n{i}")))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        out.push(r.header("x-upstream").unwrap_or("?").to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let config = Config::new()
        .route(route("/", "rr", json!({})))
        .cluster(cluster("rr", &[a.port(), b.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let got = names(&baton, 20).await;
    for w in got.windows(2) {
        assert_ne!(w[0], w[1], "not alternating: {got:?}");
    }
    assert_eq!(a.hits(), 10);
    assert_eq!(b.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_to_three() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let config = Config::new()
        .route(route("/", "w", json!({})))
        .cluster(weighted_cluster("w", &[(a.port(), 1), (b.port(), 3)]))
        .render();
    let baton = Baton::start(&config).await;
    let got = names(&baton, 40).await;
    let na = got.iter().filter(|n| *n == "a").count();
    let nb = got.iter().filter(|n| *n == "b").count();
    assert_eq!((na, nb), (10, 30), "{got:?}");
    // Smooth: never more than three b in a row.
    assert!(
        got.windows(4).all(|w| w.iter().any(|n| n == "a")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_localhost_resolves_and_serves() {
    let up = Upstream::echo("dns").await;
    let c = json!({
        "name": "dns",
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        // The upstream listens on 127.0.0.1 only.
        "dns_lookup_family": "V4_ONLY",
        "load_assignment": {"cluster_name": "dns", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": up.port()}}}}
        ]}]},
    });
    let config = Config::new()
        .route(route("/", "dns", json!({})))
        .cluster(c)
        .render();
    let baton = Baton::start(&config).await;
    let r = get(baton.addr(), "/dns").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("dns"));
    let (_, clusters) = baton.admin_get("/clusters").await;
    assert!(
        clusters.contains(&format!(
            "dns::127.0.0.1:{}::hostname::localhost",
            up.port()
        )),
        "{clusters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_quickstart_fixture_serves() {
    let up = Upstream::echo("qs").await;
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/envoy-quickstart.yaml"
    ))
    .unwrap();
    // The only changes: listen and admin addresses become 127.0.0.1 with free ports (tests never
    // bind 0.0.0.0 or fixed ports), and the backend's fixed port 8080 becomes the test upstream's.
    assert_eq!(fixture.matches("0.0.0.0").count(), 2);
    assert_eq!(fixture.matches("port_value: 10000").count(), 1);
    assert_eq!(fixture.matches("port_value: 9901").count(), 1);
    assert_eq!(fixture.matches("port_value: 8080").count(), 1);
    let config = fixture
        .replace("0.0.0.0", "127.0.0.1")
        .replace("port_value: 10000", "port_value: {{LISTEN}}")
        .replace("port_value: 9901", "port_value: {{ADMIN}}")
        .replace("port_value: 8080", &format!("port_value: {}", up.port()));
    let baton = Baton::start(&config).await;
    let r = get(baton.addr(), "/anything").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("qs"));
    assert_eq!(up.last().header("host"), Some("localhost"));
    // The stdout access logger wrote a line in Envoy's default format.
    within(5, "access log line", async {
        while !baton.stdout().contains("\"GET /anything HTTP/1.1\" 200") {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_requests_by_weight_per_request() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let z = Upstream::echo("z").await;
    let config = Config::new()
        .route(
            json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                {"name": "ca", "weight": 1},
                {"name": "cb", "weight": {"value": 3}},
                {"name": "cz", "weight": 0},
            ]}}}),
        )
        .cluster(cluster("ca", &[a.port()]))
        .cluster(cluster("cb", &[b.port()]))
        .cluster(cluster("cz", &[z.port()]))
        .render();
    let baton = Baton::start(&config).await;
    let got = names(&baton, 400).await;
    let n_a = got.iter().filter(|n| *n == "a").count();
    let n_b = got.iter().filter(|n| *n == "b").count();
    // A quarter to `ca` (100 expected, σ ≈ 8.7): far outside these bounds only by a bug.
    assert!((50..=150).contains(&n_a), "a: {n_a} of 400");
    assert_eq!(n_a + n_b, 400, "weight 0 takes nothing: {got:?}");
    assert_eq!(z.hits(), 0);
    assert_eq!(
        baton.stat("cluster.ca.upstream_rq_total").await,
        Some(n_a as i64)
    );
}

#[test]
fn weighted_clusters_are_checked() {
    let bad = |weighted: serde_json::Value| {
        let config = Config::new()
            .route(json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": weighted}}))
            .cluster(cluster("ca", &[1]))
            .render()
            .replace("{{LISTEN}}", &free_port().to_string())
            .replace("{{ADMIN}}", &free_port().to_string());
        let dir = TempDir::new("weighted");
        let path = dir.file("c.yaml");
        std::fs::write(&path, config).expect("write");
        let (status, _, err) = run_baton(&["--mode", "validate", "-c", path.to_str().unwrap()]);
        assert!(!status.success());
        err
    };
    let err = bad(json!({"clusters": [{"name": "nope", "weight": 1}]}));
    assert!(
        err.contains("weighted_clusters.clusters[0].name: unknown cluster `nope`"),
        "{err}"
    );
    let err = bad(json!({"clusters": [{"name": "ca", "weight": 0}]}));
    assert!(
        err.contains("weighted_clusters.clusters: needs a cluster with a positive weight"),
        "{err}"
    );
    let err = bad(json!({"clusters": [{"name": "ca", "weight": 2}], "total_weight": 3}));
    assert!(
        err.contains("weighted_clusters.total_weight: is 3, the weights add up to 2"),
        "{err}"
    );
    let err = bad(json!({"clusters": [{"name": "ca", "weight": 2}], "runtime_key_prefix": "x"}));
    assert!(
        err.contains("weighted_clusters.runtime_key_prefix"),
        "{err}"
    );
}
