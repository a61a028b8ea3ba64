//! `/stats/prometheus`: the stats in Prometheus' text exposition format, as Envoy writes it.
//!
//! Each stat goes through Envoy's default tag extraction ([`super::tags`]); the tag-extracted
//! name, prefixed with `envoy_` and with every character other than ASCII letters, digits and
//! `_` turned into `_`, is the metric name, and the tags become labels. Metrics sharing a name
//! form one family with one `# TYPE` line; families come counters first, then gauges, then
//! histograms, each group sorted by name.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use shm_stats::{HistogramSnapshot, Snapshot, Value, HISTOGRAM_BUCKETS_MS};

use super::stats_format::{selected, StatsParams};
use super::tags::extract_tags;

/// The metric name (or label name) Envoy derives from a tag-extracted stat name.
pub(super) fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 6);
    out.push_str("envoy_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// The label name of the tag `tag` (`envoy.cluster_name` → `envoy_cluster_name`).
fn label_name(tag: &str) -> String {
    tag.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `k1="v1",k2="v2"` for a stat's tags (empty without tags).
fn labels(tags: &[(&'static str, String)]) -> String {
    let mut out = String::new();
    for (i, (tag, value)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&label_name(tag));
        out.push_str("=\"");
        escape_label_value(value, &mut out);
        out.push('"');
    }
    out
}

/// `{labels}` or nothing when there are no labels.
fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// One family's samples: (labels, value).
type Family<T> = BTreeMap<String, Vec<(String, T)>>;

/// Render the selected stats of `snapshot`.
pub(super) fn render(snapshot: &Snapshot, params: &StatsParams) -> String {
    let mut counters: Family<u64> = BTreeMap::new();
    let mut gauges: Family<i64> = BTreeMap::new();
    let mut histograms: Family<&HistogramSnapshot> = BTreeMap::new();
    for (name, value) in selected(snapshot, params) {
        let tagged = extract_tags(name);
        let metric = sanitize_name(&tagged.name);
        let labels = labels(&tagged.tags);
        match value {
            Value::Counter(v) => counters.entry(metric).or_default().push((labels, *v)),
            Value::Gauge(v) => gauges.entry(metric).or_default().push((labels, *v)),
            Value::Histogram(h) => histograms.entry(metric).or_default().push((labels, h)),
        }
    }

    let mut out = String::new();
    for (metric, samples) in &counters {
        let _ = writeln!(out, "# TYPE {metric} counter");
        for (labels, v) in samples {
            let _ = writeln!(out, "{metric}{} {v}", braces(labels));
        }
    }
    for (metric, samples) in &gauges {
        let _ = writeln!(out, "# TYPE {metric} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{metric}{} {v}", braces(labels));
        }
    }
    for (metric, samples) in &histograms {
        let _ = writeln!(out, "# TYPE {metric} histogram");
        for (labels, h) in samples {
            write_histogram(&mut out, metric, labels, h);
        }
    }
    out
}

fn write_histogram(out: &mut String, metric: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, cum) in HISTOGRAM_BUCKETS_MS.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{metric}_bucket{{{labels}{sep}le=\"{bound}\"}} {cum}");
    }
    let _ = writeln!(
        out,
        "{metric}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "{metric}_sum{} {}", braces(labels), h.sum_ms);
    let _ = writeln!(out, "{metric}_count{} {}", braces(labels), h.count);
}

#[cfg(test)]
mod tests;
