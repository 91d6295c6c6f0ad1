//! Figures read from the server's `/metrics` (Prometheus text exposition, version 0.0.4).

use serde::Serialize;

/// An unlabelled Prometheus histogram as exposed: cumulative bucket counts by upper bound
/// (`+Inf` as [`f64::INFINITY`]), in the order given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromHistogram {
    /// `(le, cumulative count)` per bucket.
    pub buckets: Vec<(f64, u64)>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: u64,
}

impl PromHistogram {
    /// Reads histogram `name` from a `/metrics` text; `None` when it is not there.
    #[must_use]
    pub fn parse(metrics: &str, name: &str) -> Option<PromHistogram> {
        let bucket_prefix = format!("{name}_bucket{{le=\"");
        let mut histogram = PromHistogram::default();
        let mut seen_count = false;
        for line in metrics.lines() {
            if let Some(rest) = line.strip_prefix(&bucket_prefix) {
                let (le, value) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                histogram.buckets.push((le, value.trim().parse().ok()?));
            } else if let Some(value) = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix("_sum "))
            {
                histogram.sum = value.trim().parse().ok()?;
            } else if let Some(value) = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix("_count "))
            {
                histogram.count = value.trim().parse().ok()?;
                seen_count = true;
            }
        }
        (seen_count && !histogram.buckets.is_empty()).then_some(histogram)
    }

    /// What was observed after `earlier` (a reading of the same histogram); `None` if the
    /// buckets differ or a count went down (the server restarted).
    #[must_use]
    pub fn since(&self, earlier: &PromHistogram) -> Option<PromHistogram> {
        if self.buckets.len() != earlier.buckets.len() {
            return None;
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|((le, now), (le_before, before))| {
                (le == le_before).then_some(())?;
                Some((*le, now.checked_sub(*before)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PromHistogram {
            buckets,
            sum: self.sum - earlier.sum,
            count: self.count.checked_sub(earlier.count)?,
        })
    }

    /// The `q` quantile (0..=1) as Prometheus' `histogram_quantile` estimates it: linear within
    /// the bucket it falls in, from the previous bound (0 for the first); in the `+Inf` bucket,
    /// the highest finite bound. `None` without observations.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut lower = (0.0, 0u64);
        for &(le, cumulative) in &self.buckets {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = (cumulative - lower.1) as f64;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1 as f64) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * fraction);
            }
            lower = (le, cumulative);
        }
        Some(lower.0)
    }
}

/// The server's own lateness in sending agent audio over the steady window
/// (`crmd_media_out_lateness_seconds`), as against the lateness the simulator sees on arrival
/// (`agent_frame_jitter`, which adds the network and the simulator's own delay in reading).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerSendLateness {
    /// Paced socket writes the server timed.
    pub sends: u64,
    /// Mean lateness, ms.
    pub mean_ms: Option<f64>,
    /// Median, ms (interpolated within the histogram's buckets).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms (interpolated within the histogram's buckets).
    pub p99_ms: Option<f64>,
}

impl ServerSendLateness {
    /// Summarizes the sends in `window` (a histogram difference, see [`PromHistogram::since`]).
    #[must_use]
    pub fn from_window(window: &PromHistogram) -> ServerSendLateness {
        let ms = |seconds: f64| (seconds * 1e6).round() / 1e3;
        ServerSendLateness {
            sends: window.count,
            mean_ms: (window.count > 0).then(|| ms(window.sum / window.count as f64)),
            p50_ms: window.quantile(0.5).map(ms),
            p99_ms: window.quantile(0.99).map(ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "crmd_media_out_lateness_seconds";

    fn exposition(counts: [u64; 4], sum: f64) -> String {
        format!(
            "# HELP {NAME} x\n# TYPE {NAME} histogram\n\
             {NAME}_bucket{{le=\"0.001\"}} {}\n{NAME}_bucket{{le=\"0.002\"}} {}\n\
             {NAME}_bucket{{le=\"0.005\"}} {}\n{NAME}_bucket{{le=\"+Inf\"}} {}\n\
             {NAME}_sum {sum}\n{NAME}_count {}\nother_metric 3\n",
            counts[0], counts[1], counts[2], counts[3], counts[3]
        )
    }

    #[test]
    fn a_window_of_a_histogram_gives_interpolated_quantiles() {
        let before = PromHistogram::parse(&exposition([10, 10, 10, 10], 0.005), NAME).unwrap();
        let after = PromHistogram::parse(&exposition([60, 100, 110, 110], 0.205), NAME).unwrap();
        assert_eq!(after.buckets[3], (f64::INFINITY, 110));
        let window = after.since(&before).unwrap();
        assert_eq!(window.count, 100);
        // 50 sends under 1 ms, 40 in (1, 2] ms, 10 in (2, 5] ms.
        let q = |q: f64| (window.quantile(q).unwrap() * 1e6).round() / 1e3;
        assert_eq!(q(0.5), 1.0);
        assert_eq!(q(0.7), 1.5);
        assert_eq!(q(0.99), 4.7);
        let summary = ServerSendLateness::from_window(&window);
        assert_eq!(summary.sends, 100);
        assert_eq!(summary.mean_ms, Some(2.0));
        assert_eq!(summary.p99_ms, Some(4.7));
    }

    #[test]
    fn the_inf_bucket_reads_as_the_highest_bound_and_bad_input_as_none() {
        let h = PromHistogram::parse(&exposition([0, 0, 1, 2], 1.5), NAME).unwrap();
        assert_eq!(h.quantile(0.99), Some(0.005));
        assert_eq!(PromHistogram::parse("crmd_calls_total 3\n", NAME), None);
        let empty = PromHistogram::parse(&exposition([0; 4], 0.0), NAME).unwrap();
        assert_eq!(empty.quantile(0.5), None);
        assert_eq!(ServerSendLateness::from_window(&empty).mean_ms, None);
        // A restarted server (counts went down) gives no window.
        assert_eq!(empty.since(&h), None);
    }
}
