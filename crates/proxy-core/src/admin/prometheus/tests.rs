//! Unit tests of [`super`].

use std::collections::{BTreeMap, HashMap};

use prometheus_parse::{HistogramCount, Sample, Scrape, Value as PValue};

use super::*;

fn store() -> shm_stats::Store {
    let store = shm_stats::Store::new();
    store.counter("cluster.backend.upstream_rq_total").add(5);
    store.counter("cluster.other.upstream_rq_total").add(2);
    store.counter("cluster.backend.upstream_rq_200").add(4);
    store.counter("cluster.backend.upstream_rq_503").add(1);
    store.counter("cluster.backend.upstream_rq_5xx").add(1);
    store.counter("http.ingress_http.downstream_rq_2xx").add(7);
    store.counter("http.ingress_http.downstream_rq_4xx");
    store
        .counter("listener.127.0.0.1_10000.downstream_cx_total")
        .add(3);
    store
        .counter("listener.[__1]_10000.downstream_cx_total")
        .add(9);
    store
        .counter("vhost.local_service.vcluster.api.upstream_rq_2xx")
        .add(6);
    store.gauge("server.live").set(1);
    store.gauge("cluster.backend.upstream_cx_active").set(2);
    let h = store.histogram("cluster.backend.upstream_rq_time");
    h.record_ms(0.3);
    h.record_ms(7.0);
    h.record_ms(7.0);
    h.record_ms(4_000_000.0);
    store.histogram("http.ingress_http.downstream_rq_time");
    store
}

/// Expected labels as (name, value).
type Labels<'a> = &'a [(&'a str, &'a str)];

fn scrape(text: &str) -> Result<Scrape, std::io::Error> {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
}

fn labels_of(s: &Sample) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in s.labels.iter() {
        out.insert(k.clone(), v.clone());
    }
    out
}

fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels_of(s) == want)
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match find(scrape, metric, labels).map(|s| &s.value) {
        Some(PValue::Counter(v)) => Some(*v),
        _ => None,
    }
}

#[test]
fn parses_with_labels_and_values() -> Result<(), Box<dyn std::error::Error>> {
    let text = render(&store().snapshot(), &StatsParams::default());
    let s = scrape(&text)?;
    let cases: &[(&str, Labels<'_>, f64)] = &[
        (
            "envoy_cluster_upstream_rq_total",
            &[("envoy_cluster_name", "backend")],
            5.0,
        ),
        (
            "envoy_cluster_upstream_rq_total",
            &[("envoy_cluster_name", "other")],
            2.0,
        ),
        (
            "envoy_cluster_upstream_rq",
            &[
                ("envoy_cluster_name", "backend"),
                ("envoy_response_code", "200"),
            ],
            4.0,
        ),
        (
            "envoy_cluster_upstream_rq",
            &[
                ("envoy_cluster_name", "backend"),
                ("envoy_response_code", "503"),
            ],
            1.0,
        ),
        (
            "envoy_cluster_upstream_rq_xx",
            &[
                ("envoy_cluster_name", "backend"),
                ("envoy_response_code_class", "5"),
            ],
            1.0,
        ),
        (
            "envoy_http_downstream_rq_xx",
            &[
                ("envoy_http_conn_manager_prefix", "ingress_http"),
                ("envoy_response_code_class", "2"),
            ],
            7.0,
        ),
        (
            "envoy_http_downstream_rq_xx",
            &[
                ("envoy_http_conn_manager_prefix", "ingress_http"),
                ("envoy_response_code_class", "4"),
            ],
            0.0,
        ),
        (
            "envoy_listener_downstream_cx_total",
            &[("envoy_listener_address", "127.0.0.1_10000")],
            3.0,
        ),
        (
            "envoy_listener_downstream_cx_total",
            &[("envoy_listener_address", "[__1]_10000")],
            9.0,
        ),
        (
            "envoy_vhost_vcluster_upstream_rq_xx",
            &[
                ("envoy_response_code_class", "2"),
                ("envoy_virtual_cluster", "api"),
                ("envoy_virtual_host", "local_service"),
            ],
            6.0,
        ),
    ];
    for (metric, labels, want) in cases {
        assert_eq!(
            counter(&s, metric, labels),
            Some(*want),
            "{metric} {labels:?} in\n{text}"
        );
    }
    match find(&s, "envoy_server_live", &[]).map(|x| &x.value) {
        Some(PValue::Gauge(v)) => assert_eq!(*v, 1.0),
        other => panic!("server.live: {other:?}"),
    }
    match find(
        &s,
        "envoy_cluster_upstream_cx_active",
        &[("envoy_cluster_name", "backend")],
    )
    .map(|x| &x.value)
    {
        Some(PValue::Gauge(v)) => assert_eq!(*v, 2.0),
        other => panic!("upstream_cx_active: {other:?}"),
    }

    // The histogram: every bound, then +Inf, sum and count.
    let hist = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "envoy_cluster_upstream_rq_time"
                && x.labels.get("envoy_cluster_name") == Some("backend")
        })
        .ok_or("no histogram sample")?;
    let PValue::Histogram(buckets) = &hist.value else {
        panic!("not a histogram: {:?}", hist.value);
    };
    let by_le: HashMap<String, f64> = buckets
        .iter()
        .map(|HistogramCount { less_than, count }| (less_than.to_string(), *count))
        .collect();
    assert_eq!(buckets.len(), HISTOGRAM_BUCKETS_MS.len() + 1);
    assert_eq!(by_le.get("0.5"), Some(&1.0));
    assert_eq!(by_le.get("5"), Some(&1.0));
    assert_eq!(by_le.get("10"), Some(&3.0));
    assert_eq!(by_le.get("3600000"), Some(&3.0));
    assert_eq!(by_le.get("inf"), Some(&4.0));
    assert!(
        text.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 4\n")
    );
    assert!(text.contains(
        "envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} 4000014.3\n"
    ));
    Ok(())
}

#[test]
fn one_type_line_per_family_and_groups_in_order() {
    let text = render(&store().snapshot(), &StatsParams::default());
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut seen = std::collections::HashSet::new();
    for t in &types {
        assert!(seen.insert(*t), "duplicate {t}");
    }
    let kinds: Vec<&str> = types.iter().filter_map(|t| t.rsplit(' ').next()).collect();
    let first_gauge = kinds.iter().position(|k| *k == "gauge");
    let last_counter = kinds.iter().rposition(|k| *k == "counter");
    let first_hist = kinds.iter().position(|k| *k == "histogram");
    assert!(
        last_counter < first_gauge && first_gauge < first_hist,
        "{kinds:?}"
    );
    // Each family's samples follow its TYPE line directly.
    assert!(text.contains(
        "# TYPE envoy_cluster_upstream_rq_total counter\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"backend\"} 5\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"other\"} 2\n"
    ));
    assert!(text.contains("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"));
}

#[test]
fn usedonly_and_filter_apply() -> Result<(), regex::Error> {
    let snap = store().snapshot();
    let used = render(
        &snap,
        &StatsParams {
            used_only: true,
            ..Default::default()
        },
    );
    assert!(!used.contains("envoy_response_code_class=\"4\""));
    assert!(!used.contains("envoy_http_conn_manager_prefix=\"ingress_http\",le="));
    let filtered = render(
        &snap,
        &StatsParams {
            filter: Some(regex::Regex::new(r"^server\.")?),
            used_only: false,
        },
    );
    assert_eq!(
        filtered,
        "# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"
    );
    Ok(())
}

#[test]
fn names_and_label_values_are_sanitized() -> Result<(), std::io::Error> {
    let store = shm_stats::Store::new();
    store.counter("cluster.we\"ird\\name.rq-total:x").inc();
    let text = render(&store.snapshot(), &StatsParams::default());
    assert!(
        text.contains(r#"envoy_cluster_rq_total_x{envoy_cluster_name="we\"ird\\name"} 1"#),
        "{text}"
    );
    // prometheus-parse keeps label values as written (escaped).
    let s = scrape(&text)?;
    assert_eq!(
        s.samples[0].labels.get("envoy_cluster_name"),
        Some(r#"we\"ird\\name"#)
    );
    assert_eq!(sanitize_name("a.b-c:d"), "envoy_a_b_c_d");
    Ok(())
}
