//! Unit tests of [`super`].

use super::*;

fn store() -> shm_stats::Store {
    let store = shm_stats::Store::new();
    store.counter("cluster.backend.upstream_rq_total").add(5);
    store.counter("cluster.backend.upstream_cx_total");
    store.gauge("server.live").set(1);
    store.gauge("a.gauge").set(-3);
    let h = store.histogram("cluster.backend.upstream_rq_time");
    for _ in 0..4 {
        h.record_ms(7.0);
    }
    store.histogram("http.ingress_http.downstream_rq_time");
    store
}

fn params(q: &[(&str, &str)]) -> Result<StatsParams, ParamError> {
    let owned: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    StatsParams::from_query(&owned)
}

#[test]
fn text_sorts_values_then_histograms() -> Result<(), ParamError> {
    let out = render_text(&store().snapshot(), &params(&[])?);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "a.gauge: -3");
    assert_eq!(lines[1], "cluster.backend.upstream_cx_total: 0");
    assert_eq!(lines[2], "cluster.backend.upstream_rq_total: 5");
    assert_eq!(lines[3], "server.live: 1");
    assert!(
        lines[4].starts_with("cluster.backend.upstream_rq_time: P0("),
        "{}",
        lines[4]
    );
    for label in [
        " P25(", " P50(", " P75(", " P90(", " P95(", " P99(", " P99.5(", " P99.9(", " P100(",
    ] {
        assert!(lines[4].contains(label), "{label} in {}", lines[4]);
    }
    // Every sample is 7 ms: the median lies in the (5, 10] bucket.
    let p50 = lines[4]
        .split(" P50(")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse::<f64>().ok());
    assert!(p50.is_some_and(|v| (5.0..=10.0).contains(&v)), "{p50:?}");
    assert_eq!(
        lines[5],
        "http.ingress_http.downstream_rq_time: No recorded values"
    );
    assert_eq!(lines.len(), 6);
    Ok(())
}

#[test]
fn usedonly_and_filter() -> Result<(), ParamError> {
    let snap = store().snapshot();
    let out = render_text(&snap, &params(&[("usedonly", "")])?);
    assert!(!out.contains("upstream_cx_total"));
    assert!(!out.contains("downstream_rq_time"));
    assert!(out.contains("cluster.backend.upstream_rq_time: P0("));
    let out = render_text(
        &snap,
        &params(&[("filter", r"^cluster\.backend\.upstream_rq")])?,
    );
    let names: Vec<&str> = out.lines().filter_map(|l| l.split(':').next()).collect();
    assert_eq!(
        names,
        [
            "cluster.backend.upstream_rq_total",
            "cluster.backend.upstream_rq_time"
        ]
    );
    Ok(())
}

#[test]
fn bad_filter_and_format_are_errors() {
    let err = params(&[("filter", "(")]).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.starts_with("could not compile filter regex")),
        "{err:?}"
    );
    let q = vec![("format".to_owned(), "xml".to_owned())];
    assert!(format_param(&q).is_err());
    let q = vec![("format".to_owned(), "json".to_owned())];
    assert!(matches!(format_param(&q), Ok(Some(StatsFormat::Json))));
    assert!(matches!(format_param(&[]), Ok(None)));
}

#[test]
fn json_shape() -> Result<(), Box<dyn std::error::Error>> {
    let out = render_json(&store().snapshot(), &params(&[])?);
    let v: Json = serde_json::from_str(&out)?;
    let stats = v["stats"].as_array().ok_or("stats is not an array")?;
    assert_eq!(stats[0], json!({"name": "a.gauge", "value": -3}));
    assert_eq!(
        stats[2],
        json!({"name": "cluster.backend.upstream_rq_total", "value": 5})
    );
    let hist = &stats[4]["histograms"];
    assert_eq!(
        hist["supported_quantiles"],
        json!([0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0])
    );
    let computed = hist["computed_quantiles"]
        .as_array()
        .ok_or("computed_quantiles is not an array")?;
    assert_eq!(computed.len(), 2);
    assert_eq!(computed[0]["name"], "cluster.backend.upstream_rq_time");
    let values = computed[0]["values"].as_array().ok_or("no values")?;
    assert_eq!(values.len(), 10);
    let p50 = values[2]["cumulative"].as_f64().ok_or("no p50")?;
    assert!((5.0..=10.0).contains(&p50));
    assert_eq!(values[2]["interval"], values[2]["cumulative"]);
    assert_eq!(
        computed[1]["values"][0],
        json!({"interval": null, "cumulative": null})
    );
    // Without histograms there is no histogram element.
    let out = render_json(&store().snapshot(), &params(&[("filter", "server")])?);
    let v: Json = serde_json::from_str(&out)?;
    assert_eq!(v, json!({"stats": [{"name": "server.live", "value": 1}]}));
    Ok(())
}
