//! Fixed-size log-linear latency histograms (mergeable across calls) and percentile summaries.

use std::time::Duration;

use serde::Serialize;

/// Values below this many µs get a bucket each.
const EXACT_BELOW: u64 = 32;
/// Sub-buckets per power of two above that (relative resolution 1/32, about 3 %).
const SUB_BUCKETS: u64 = 32;
/// Largest power of two tracked (2^40 µs is about 12.7 days); larger values share the last bucket.
const MAX_EXPONENT: u64 = 40;
/// Exact buckets, 32 per power of two from 2^5 to 2^39, and one overflow bucket.
const BUCKETS: usize = (EXACT_BELOW + (MAX_EXPONENT - 5) * SUB_BUCKETS + 1) as usize;

/// A log-linear latency histogram in µs: exact below 32 µs, then 32 buckets per power of two
/// (about 3 % relative resolution) up to days; the exact maximum is kept as well. Histograms
/// of many calls merge by adding counts.
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
    if us < EXACT_BELOW {
        return us as usize;
    }
    // us >= 32, so the exponent is at least 5.
    let exponent = u64::from(63 - us.leading_zeros()).min(MAX_EXPONENT);
    if exponent == MAX_EXPONENT {
        return BUCKETS - 1;
    }
    let shift = exponent - 5;
    let sub = (us >> shift) - SUB_BUCKETS;
    (EXACT_BELOW + (exponent - 5) * SUB_BUCKETS + sub) as usize
}

/// Exclusive upper bound of bucket `index` in µs.
fn bucket_ceiling(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT_BELOW {
        return index + 1;
    }
    let exponent = 5 + (index - EXACT_BELOW) / SUB_BUCKETS;
    let sub = (index - EXACT_BELOW) % SUB_BUCKETS;
    (SUB_BUCKETS + sub + 1) << (exponent - 5)
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
    fn buckets_are_contiguous_and_three_percent_wide() {
        let mut previous_ceiling = 0;
        for index in 0..BUCKETS - 1 {
            let ceiling = bucket_ceiling(index);
            assert!(ceiling > previous_ceiling);
            // The value just below a ceiling lands in that bucket, the ceiling in the next one.
            assert_eq!(bucket_of(ceiling - 1), index);
            assert_eq!(bucket_of(ceiling), index + 1);
            previous_ceiling = ceiling;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_ceiling(bucket_of(500_000)), 507_904);
    }

    #[test]
    fn quantiles_report_the_bucket_bound_within_three_percent() {
        let mut histogram = Histogram::default();
        for us in 1..=1000u64 {
            histogram.record(Duration::from_micros(us * 10));
        }
        // Values 10 µs .. 10 ms: the median (5.0 ms) and the 99th percentile (9.9 ms).
        let p50 = histogram.quantile(0.5).unwrap().as_micros() as f64;
        assert!((5_000.0..=5_000.0 * 1.032).contains(&p50), "{p50}");
        let p99 = histogram.quantile(0.99).unwrap().as_micros() as f64;
        assert!((9_900.0..=9_900.0 * 1.032).contains(&p99), "{p99}");
        assert_eq!(histogram.quantile(1.0), Some(Duration::from_micros(10_000)));
        assert_eq!(histogram.quantile(0.001), Some(Duration::from_micros(11)));
    }

    #[test]
    fn long_latencies_keep_their_resolution() {
        let mut histogram = Histogram::default();
        for ms in [480u64, 500, 520, 560, 900] {
            histogram.record(Duration::from_millis(ms));
        }
        let p50 = histogram.quantile(0.5).unwrap().as_millis();
        assert!((520..=536).contains(&p50), "{p50}");
        assert_eq!(histogram.quantile(1.0), Some(Duration::from_millis(900)));
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_maximum() {
        let mut a = Histogram::default();
        a.record(Duration::from_millis(250));
        let mut b = Histogram::default();
        b.record(Duration::from_micros(3));
        b.merge(&a);
        assert_eq!(b.count(), 2);
        assert_eq!(b.quantile(1.0), Some(Duration::from_millis(250)));
        assert_eq!(b.quantile(0.5), Some(Duration::from_micros(4)));
        assert_eq!(Histogram::default().summary().p50_ms, None);
    }
}
