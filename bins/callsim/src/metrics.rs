//! Fixed-size latency histograms (mergeable across calls) and percentile summaries.

use std::time::Duration;

use serde::Serialize;

/// 10 µs buckets below 1 ms, 100 µs buckets up to 100 ms, one overflow bucket.
const FINE_BUCKETS: usize = 100;
const COARSE_BUCKETS: usize = 990;
const BUCKETS: usize = FINE_BUCKETS + COARSE_BUCKETS + 1;

/// A latency histogram with 10 µs resolution below 1 ms and 100 µs up to 100 ms; larger values
/// share one bucket (their maximum is kept exactly).
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
    max_us: u64,
    sum_us: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max_us", &self.max_us)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_us: 0,
            sum_us: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < 1_000 {
        (us / 10) as usize
    } else if us < 100_000 {
        FINE_BUCKETS + ((us - 1_000) / 100) as usize
    } else {
        BUCKETS - 1
    }
}

/// Upper bound of bucket `index` in µs.
fn bucket_ceiling(index: usize) -> u64 {
    if index < FINE_BUCKETS {
        (index as u64 + 1) * 10
    } else {
        1_000 + (index - FINE_BUCKETS + 1) as u64 * 100
    }
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)] = self.counts[bucket_of(us)].saturating_add(1);
        self.total += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Number of values.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which a fraction `q` (0..=1) of the values fall, rounded up to the bucket
    /// bound (never above the exact maximum); `None` when empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                let bound = if index == BUCKETS - 1 {
                    self.max_us
                } else {
                    bucket_ceiling(index).min(self.max_us)
                };
                return Some(Duration::from_micros(bound));
            }
        }
        Some(Duration::from_micros(self.max_us))
    }

    /// p50 / p95 / p99 / max / mean in milliseconds.
    #[must_use]
    pub fn summary(&self) -> Summary {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        Summary {
            count: self.total,
            p50_ms: ms(self.quantile(0.50)),
            p95_ms: ms(self.quantile(0.95)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: (self.total > 0).then(|| self.max_us as f64 / 1e3),
            mean_ms: (self.total > 0).then(|| self.sum_us as f64 / self.total as f64 / 1e3),
        }
    }
}

/// Percentiles of a distribution, in milliseconds (`None` when there were no values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// Mean.
    pub mean_ms: Option<f64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        write!(
            f,
            "n={} p50={} p95={} p99={} max={} ms",
            self.count,
            show(self.p50_ms),
            show(self.p95_ms),
            show(self.p99_ms),
            show(self.max_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_bucket_resolution() {
        let mut histogram = Histogram::default();
        for us in 1..=1000u64 {
            histogram.record(Duration::from_micros(us * 10));
        }
        // Values 10 µs .. 10 ms; quantiles report the bound of the value's bucket: the median
        // (5.0 ms) lies in [5.0, 5.1) ms, the 99th percentile (9.9 ms) in [9.9, 10.0) ms.
        assert_eq!(histogram.quantile(0.5), Some(Duration::from_micros(5_100)));
        assert_eq!(
            histogram.quantile(0.99),
            Some(Duration::from_micros(10_000))
        );
        assert_eq!(histogram.quantile(1.0), Some(Duration::from_micros(10_000)));
        assert_eq!(histogram.quantile(0.001), Some(Duration::from_micros(20)));
    }

    #[test]
    fn overflow_keeps_the_exact_maximum_and_merge_adds() {
        let mut a = Histogram::default();
        a.record(Duration::from_millis(250));
        let mut b = Histogram::default();
        b.record(Duration::from_micros(3));
        b.merge(&a);
        assert_eq!(b.count(), 2);
        assert_eq!(b.quantile(1.0), Some(Duration::from_millis(250)));
        assert_eq!(b.quantile(0.5), Some(Duration::from_micros(10)));
        assert_eq!(Histogram::default().summary().p50_ms, None);
    }
}
