//! `/stats` in Envoy's text and JSON forms, and the query parameters every stats endpoint
//! shares (`filter=<regex>`, `usedonly`, `format=`).

use std::fmt::Write as _;

use regex::{Regex, RegexBuilder};
use serde_json::{json, Value as Json};
use shm_stats::{HistogramSnapshot, Snapshot, Value};

/// The quantiles Envoy reports for histograms, in percent.
pub(super) const SUPPORTED_QUANTILES: [f64; 10] =
    [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// Largest compiled filter regex accepted, so a hostile filter cannot eat the process's memory.
const FILTER_SIZE_LIMIT: usize = 1 << 20;

/// How a stats endpoint renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StatsFormat {
    Text,
    Json,
    Prometheus,
}

/// Why a stats request's parameters were refused (400).
#[derive(Debug, thiserror::Error)]
pub(super) enum ParamError {
    #[error("could not compile filter regex {pattern:?}: {reason}")]
    Filter { pattern: String, reason: String },
    #[error("could not use format {0:?}: supported formats are text, json and prometheus")]
    Format(String),
}

/// Which stats a request selects.
#[derive(Debug, Default)]
pub(super) struct StatsParams {
    /// Only stats whose name this regex finds a match in.
    pub filter: Option<Regex>,
    /// Only counters and gauges that are not zero, histograms with samples.
    pub used_only: bool,
}

impl StatsParams {
    /// The parameters of a stats request, from its decoded query parameters.
    pub fn from_query(params: &[(String, String)]) -> Result<Self, ParamError> {
        let mut out = StatsParams::default();
        for (key, value) in params {
            match key.as_str() {
                "usedonly" => out.used_only = true,
                "filter" if !value.is_empty() => {
                    let regex = RegexBuilder::new(value)
                        .size_limit(FILTER_SIZE_LIMIT)
                        .build()
                        .map_err(|e| ParamError::Filter {
                            pattern: value.clone(),
                            reason: e.to_string(),
                        })?;
                    out.filter = Some(regex);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Whether the stat `name` with `value` is selected.
    pub fn selects(&self, name: &str, value: &Value) -> bool {
        if self.used_only {
            let used = match value {
                Value::Counter(v) => *v != 0,
                Value::Gauge(v) => *v != 0,
                Value::Histogram(h) => h.count > 0,
            };
            if !used {
                return false;
            }
        }
        self.filter.as_ref().is_none_or(|re| re.is_match(name))
    }
}

/// The `format=` parameter, if any (the last one wins).
pub(super) fn format_param(params: &[(String, String)]) -> Result<Option<StatsFormat>, ParamError> {
    let Some((_, value)) = params.iter().rev().find(|(k, _)| k == "format") else {
        return Ok(None);
    };
    match value.as_str() {
        "text" => Ok(Some(StatsFormat::Text)),
        "json" => Ok(Some(StatsFormat::Json)),
        "prometheus" => Ok(Some(StatsFormat::Prometheus)),
        other => Err(ParamError::Format(other.to_owned())),
    }
}

/// The selected stats of `snapshot`, in name order.
pub(super) fn selected<'a>(
    snapshot: &'a Snapshot,
    params: &'a StatsParams,
) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
    snapshot
        .stats
        .iter()
        .filter(move |(name, value)| params.selects(name, value))
        .map(|(name, value)| (name.as_str(), value))
}

/// The quantile `percent` of `h`, `None` without samples.
fn quantile(h: &HistogramSnapshot, percent: f64) -> Option<f64> {
    h.quantile(percent / 100.0)
}

/// Envoy's text form: counters and gauges as `name: value` in name order, then histograms as
/// `name: P0(interval,cumulative) ...`. There are no intervals here, so both values are the
/// cumulative one.
pub(super) fn render_text(snapshot: &Snapshot, params: &StatsParams) -> String {
    let mut out = String::new();
    let mut histograms = Vec::new();
    for (name, value) in selected(snapshot, params) {
        match value {
            Value::Counter(v) => {
                let _ = writeln!(out, "{name}: {v}");
            }
            Value::Gauge(v) => {
                let _ = writeln!(out, "{name}: {v}");
            }
            Value::Histogram(h) => histograms.push((name, h)),
        }
    }
    for (name, h) in histograms {
        if h.count == 0 {
            let _ = writeln!(out, "{name}: No recorded values");
            continue;
        }
        let _ = write!(out, "{name}:");
        for p in SUPPORTED_QUANTILES {
            match quantile(h, p) {
                Some(v) => {
                    let _ = write!(out, " P{p}({v},{v})");
                }
                None => {
                    let _ = write!(out, " P{p}(nan,nan)");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Envoy's JSON form: `{"stats":[{"name","value"}..., {"histograms":{...}}]}`, the histogram
/// element only when a histogram is selected.
pub(super) fn render_json(snapshot: &Snapshot, params: &StatsParams) -> String {
    let mut stats = Vec::new();
    let mut computed = Vec::new();
    for (name, value) in selected(snapshot, params) {
        match value {
            Value::Counter(v) => stats.push(json!({ "name": name, "value": v })),
            Value::Gauge(v) => stats.push(json!({ "name": name, "value": v })),
            Value::Histogram(h) => {
                let values: Vec<Json> = SUPPORTED_QUANTILES
                    .iter()
                    .map(|p| {
                        let v = quantile(h, *p);
                        json!({ "interval": v, "cumulative": v })
                    })
                    .collect();
                computed.push(json!({ "name": name, "values": values }));
            }
        }
    }
    if !computed.is_empty() {
        stats.push(json!({
            "histograms": {
                "supported_quantiles": SUPPORTED_QUANTILES,
                "computed_quantiles": computed,
            }
        }));
    }
    let mut body = json!({ "stats": stats }).to_string();
    body.push('\n');
    body
}

#[cfg(test)]
mod tests {
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
}
