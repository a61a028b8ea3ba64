//! Success-rate and failure-percentage detection over one interval's requests, pure: which
//! hosts are outliers, and the numbers `/clusters` shows. As Envoy 1.40 (measured): a host
//! counts when it had at least the request volume in the interval and is not ejected; the
//! detection runs when at least the minimum number of hosts count; success-rate outliers are
//! below the mean minus `success_rate_stdev_factor / 1000` population standard deviations,
//! failure-percentage outliers at or above the threshold.

use crate::config::OutlierDetection;

/// One host's interval: `None` for a host ejected now (it takes no part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sample {
    pub requests: u64,
    pub failures: u64,
}

/// What one interval's detection found.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Verdicts {
    /// The mean success rate and the ejection threshold, when success-rate detection ran.
    pub average: Option<f64>,
    pub threshold: Option<f64>,
    /// Each host's success rate, when it had `success_rate_request_volume` requests.
    pub rates: Vec<Option<f64>>,
    /// Indices of the success-rate outliers, then of the failure-percentage ones.
    pub success_rate: Vec<usize>,
    pub failure_percentage: Vec<usize>,
}

// === impl Sample ===

impl Sample {
    /// Percent of the requests that did not fail.
    fn success_rate(self) -> f64 {
        (self.requests - self.failures.min(self.requests)) as f64 * 100.0 / self.requests as f64
    }
}

/// Judge one interval of `samples` (in host order) by `cfg`.
pub(super) fn judge(samples: &[Option<Sample>], cfg: &OutlierDetection) -> Verdicts {
    let with_volume = |volume: u32| -> Vec<(usize, f64)> {
        samples
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = (*s)?;
                (s.requests > 0 && s.requests >= u64::from(volume)).then(|| (i, s.success_rate()))
            })
            .collect()
    };
    let mut v = Verdicts {
        rates: vec![None; samples.len()],
        ..Verdicts::default()
    };
    let sr = with_volume(cfg.success_rate_request_volume);
    for &(i, rate) in &sr {
        v.rates[i] = Some(rate);
    }
    if !sr.is_empty() && sr.len() >= cfg.success_rate_minimum_hosts as usize {
        let n = sr.len() as f64;
        let mean = sr.iter().map(|(_, r)| r).sum::<f64>() / n;
        let variance = sr.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
        let threshold = mean - f64::from(cfg.success_rate_stdev_factor) / 1000.0 * variance.sqrt();
        v.average = Some(mean);
        v.threshold = Some(threshold);
        v.success_rate = sr
            .iter()
            .filter(|(_, r)| *r < threshold)
            .map(|(i, _)| *i)
            .collect();
    }
    let fp = with_volume(cfg.failure_percentage_request_volume);
    if !fp.is_empty() && fp.len() >= cfg.failure_percentage_minimum_hosts as usize {
        let threshold = f64::from(cfg.failure_percentage_threshold);
        v.failure_percentage = fp
            .iter()
            .filter(|(_, r)| 100.0 - r >= threshold)
            .map(|(i, _)| *i)
            .collect();
    }
    v
}

/// A number as Envoy's admin prints a double: six significant digits, no trailing zeros
/// (`75`, `31.6987`).
pub fn format_rate(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let digits = if v.abs() >= 1.0 {
        v.abs().log10().floor() as i32 + 1
    } else {
        -((v.abs().log10().ceil()) as i32) + 1
    };
    let decimals = (6 - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            success_rate_minimum_hosts: 3,
            success_rate_request_volume: 10,
            success_rate_stdev_factor: 1000,
            failure_percentage_threshold: 40,
            failure_percentage_minimum_hosts: 3,
            failure_percentage_request_volume: 10,
            ..OutlierDetection::default()
        }
    }

    fn s(requests: u64, failures: u64) -> Option<Sample> {
        Some(Sample { requests, failures })
    }

    /// Measured on Envoy 1.40 with this configuration: three hosts at 100%, one at 0%:
    /// `success_rate_average::75`, `success_rate_ejection_threshold::31.6987`, and both
    /// kinds detect the host at 0%.
    #[test]
    fn one_failing_host_among_four() {
        let v = judge(&[s(20, 0), s(20, 0), s(20, 0), s(20, 20)], &cfg());
        assert_eq!(v.average, Some(75.0));
        assert_eq!(format_rate(v.threshold.unwrap()), "31.6987");
        assert_eq!(v.rates, [Some(100.0), Some(100.0), Some(100.0), Some(0.0)]);
        assert_eq!((v.success_rate, v.failure_percentage), (vec![3], vec![3]));
    }

    #[test]
    fn too_few_hosts_or_requests_detect_nothing() {
        // An ejected host and one under the volume do not count: two hosts are not three.
        let v = judge(&[s(20, 0), None, s(9, 9), s(20, 20)], &cfg());
        assert_eq!((v.average, v.threshold), (None, None));
        assert_eq!(v.rates, [Some(100.0), None, None, Some(0.0)]);
        assert!(v.success_rate.is_empty() && v.failure_percentage.is_empty());
        // Every host at 100%: the threshold is 100 and nobody is below it.
        let v = judge(&[s(20, 0), s(30, 0), s(10, 0)], &cfg());
        assert_eq!((v.average, v.threshold), (Some(100.0), Some(100.0)));
        assert!(v.success_rate.is_empty());
    }

    #[test]
    fn failure_percentage_is_at_or_over_its_threshold() {
        let v = judge(&[s(10, 4), s(10, 3), s(10, 0)], &cfg());
        assert_eq!(v.failure_percentage, [0]);
    }

    #[test]
    fn rates_print_as_envoy_prints_doubles() {
        assert_eq!(format_rate(75.0), "75");
        assert_eq!(format_rate(100.0), "100");
        assert_eq!(format_rate(31.698_729_810_778_07), "31.6987");
        assert_eq!(format_rate(66.666_666_7), "66.6667");
        assert_eq!(format_rate(0.5), "0.5");
        assert_eq!(format_rate(-1.0), "-1");
        assert_eq!(format_rate(-12.345_678), "-12.3457");
    }
}
