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
mod tests;
