//! How late the server itself sends agent audio, over every call: a lock-free histogram the
//! call loops write and `/metrics` reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of [`MediaLateness`]'s buckets, in microseconds; `+Inf` is implied. Fine at the
/// low end, where a healthy server is (under a millisecond), and up to a second, where an
/// overloaded one goes.
pub const MEDIA_LATENESS_BUCKETS_US: [u64; 12] = [
    500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Buckets including `+Inf`.
const BUCKETS: usize = MEDIA_LATENESS_BUCKETS_US.len() + 1;

/// Lateness of outbound audio against its pacing deadline ([`crate::Pacer::take_lateness`]),
/// one observation per socket write that the pacer had to wait for. Shared by every call
/// (`CallDeps::media_lateness`); recording is three relaxed atomic additions.
#[derive(Debug, Default)]
pub struct MediaLateness {
    /// Non-cumulative counts per bucket of [`MEDIA_LATENESS_BUCKETS_US`], then `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A reading of [`MediaLateness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaLatenessCounts {
    /// Non-cumulative counts per bucket of [`MEDIA_LATENESS_BUCKETS_US`], then `+Inf`.
    pub buckets: [u64; BUCKETS],
    /// Sum of the observations, µs.
    pub sum_us: u64,
    /// Observations.
    pub count: u64,
}

impl MediaLateness {
    /// Records one send's lateness.
    pub fn record(&self, lateness: Duration) {
        let us = u64::try_from(lateness.as_micros()).unwrap_or(u64::MAX);
        let index = MEDIA_LATENESS_BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(MEDIA_LATENESS_BUCKETS_US.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far (each field read on its own: a send recorded meanwhile may show in
    /// one and not yet in another).
    #[must_use]
    pub fn counts(&self) -> MediaLatenessCounts {
        MediaLatenessCounts {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = MediaLateness::default();
        for us in [0, 500, 501, 4_000, 1_000_000, 3_000_000] {
            h.record(Duration::from_micros(us));
        }
        let c = h.counts();
        assert_eq!(c.count, 6);
        assert_eq!(c.sum_us, 500 + 501 + 4_000 + 1_000_000 + 3_000_000);
        // 0 and 500 µs in "<= 0.5 ms", 501 in "<= 1 ms", 4 ms in "<= 5 ms", 1 s in the last
        // bound, 3 s past every bound.
        assert_eq!(c.buckets, [2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1]);
    }
}
