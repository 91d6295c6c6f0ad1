//! Admission control: whether a new call is answered or refused with a busy signal.
//!
//! A machine that takes more calls than it can serve makes every call worse (late audio, slow
//! barge-in) and, past a point, cannot store what its calls produce. So the incoming-call
//! webhook asks [`Admission::decide`] first: over `MAX_CALLS`, or while the server reports
//! itself overloaded (an [`OverloadProbe`], e.g. the CRM write queue more than half full), the
//! call is refused unanswered with `<Reject reason="busy"/>` (Twilio does not bill it and the
//! caller hears a busy tone and can call back) and recorded in the CRM as `busy`, so the
//! business still sees who called.
//!
//! Calls count from the moment their webhook is answered: a stream answered but not opened yet
//! holds a place for [`ANSWERED_STREAM_TTL`], so a burst of webhooks cannot overshoot the cap
//! while Twilio is still connecting the streams.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an answered call holds a place while its stream has not opened.
pub const ANSWERED_STREAM_TTL: Duration = Duration::from_secs(10);

/// Reports why the server cannot take another call right now (`None`: it can). Called once
/// per incoming call, so it must be cheap.
pub type OverloadProbe = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Told of every refused call, with its cause: `max_calls` or `overload` (e.g. to count them
/// in metrics).
pub type RefusalObserver = Arc<dyn Fn(&'static str) + Send + Sync>;

/// What to do with a new call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it (`<Connect><Stream>`).
    Admit,
    /// Refuse it with a busy signal; the reason is for the log.
    Busy(String),
}

/// The admission policy of one server: a cap on concurrent calls and an overload probe.
pub struct Admission {
    max_calls: Option<usize>,
    overload: OnceLock<OverloadProbe>,
    on_refusal: OnceLock<RefusalObserver>,
    /// When each answered call whose stream has not opened yet was answered, oldest first.
    answered: Mutex<VecDeque<Instant>>,
    refused: AtomicU64,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("max_calls", &self.max_calls)
            .field("overload_probe", &self.overload.get().is_some())
            .field("refused", &self.refused_total())
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// A policy refusing calls beyond `max_calls` concurrent ones (`None`: no cap).
    #[must_use]
    pub fn new(max_calls: Option<usize>) -> Admission {
        Admission {
            max_calls,
            overload: OnceLock::new(),
            on_refusal: OnceLock::new(),
            answered: Mutex::new(VecDeque::new()),
            refused: AtomicU64::new(0),
        }
    }

    /// Also refuse calls while `probe` reports an overload. Set once; a second probe is ignored
    /// with a warning.
    pub fn set_overload_probe(&self, probe: OverloadProbe) {
        if self.overload.set(probe).is_err() {
            tracing::warn!("an overload probe was already set; the second one is ignored");
        }
    }

    /// Calls `observer` with the cause of every refusal from now on. Set once; a second observer
    /// is ignored with a warning.
    pub fn set_refusal_observer(&self, observer: RefusalObserver) {
        if self.on_refusal.set(observer).is_err() {
            tracing::warn!("a refusal observer was already set; the second one is ignored");
        }
    }

    /// Decides on a new call, given the media streams running now. An admitted call holds a
    /// place until [`stream_opened`](Self::stream_opened) or for [`ANSWERED_STREAM_TTL`].
    pub fn decide(&self, live_streams: usize, now: Instant) -> Verdict {
        let mut answered = self
            .answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while answered
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= ANSWERED_STREAM_TTL)
        {
            answered.pop_front();
        }
        let refusal = match self.max_calls {
            Some(max) if live_streams + answered.len() >= max => Some((
                "max_calls",
                format!(
                    "{} calls in progress and {} connecting; MAX_CALLS is {max}",
                    live_streams,
                    answered.len()
                ),
            )),
            _ => self
                .overload
                .get()
                .and_then(|probe| probe())
                .map(|reason| ("overload", reason)),
        };
        let Some((cause, reason)) = refusal else {
            answered.push_back(now);
            return Verdict::Admit;
        };
        drop(answered);
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = self.on_refusal.get() {
            observer(cause);
        }
        Verdict::Busy(reason)
    }

    /// A media stream opened: the oldest answered call's place passes to it.
    pub fn stream_opened(&self) {
        self.answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
    }

    /// Calls refused since the server started.
    #[must_use]
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// How late the async runtime runs a timer, smoothed: a saturated machine shows it before
/// anything else (every call's audio is late by about as much). Written by one monitor task
/// ([`spawn_runtime_lag_monitor`]), read by anyone.
#[derive(Debug, Default)]
pub struct RuntimeLag {
    /// Exponentially weighted mean of the lateness, microseconds.
    smoothed_us: AtomicU64,
}

/// Weight of the newest sample: 1/8, so with 100 ms ticks the mean follows about the last second.
const LAG_SMOOTHING: u64 = 8;
/// Samples count at most this much: one stall (a slow start-up step, a debugger) moves the mean
/// by at most 6.25 ms, so only lateness that lasts raises it far.
pub const LAG_SAMPLE_CAP: Duration = Duration::from_millis(50);

impl RuntimeLag {
    /// Adds one measurement: a timer due at some instant ran `lag` late (counted up to
    /// [`LAG_SAMPLE_CAP`]).
    pub fn record(&self, lag: Duration) {
        let sample = u64::try_from(lag.min(LAG_SAMPLE_CAP).as_micros()).unwrap_or(u64::MAX);
        let old = self.smoothed_us.load(Ordering::Relaxed);
        let new = if sample >= old {
            old + (sample - old) / LAG_SMOOTHING
        } else {
            old - (old - sample) / LAG_SMOOTHING
        };
        self.smoothed_us.store(new, Ordering::Relaxed);
    }

    /// The smoothed lateness.
    #[must_use]
    pub fn smoothed(&self) -> Duration {
        Duration::from_micros(self.smoothed_us.load(Ordering::Relaxed))
    }
}

/// Measures the runtime's timer lateness every `period` on the current Tokio runtime, for as
/// long as the runtime runs.
#[must_use]
pub fn spawn_runtime_lag_monitor(period: Duration) -> Arc<RuntimeLag> {
    let lag = Arc::new(RuntimeLag::default());
    let writer = Arc::clone(&lag);
    tokio::spawn(async move {
        let mut due = tokio::time::Instant::now();
        loop {
            due += period;
            tokio::time::sleep_until(due).await;
            let now = tokio::time::Instant::now();
            writer.record(now.saturating_duration_since(due));
            // After a stall, measure from now rather than firing the missed ticks at once.
            if now > due + period {
                due = now;
            }
        }
    });
    lag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(verdict: &Verdict) -> &str {
        match verdict {
            Verdict::Busy(reason) => reason,
            Verdict::Admit => panic!("admitted"),
        }
    }

    #[test]
    fn runtime_lag_follows_the_recent_samples() {
        let lag = RuntimeLag::default();
        assert_eq!(lag.smoothed(), Duration::ZERO);
        for _ in 0..40 {
            lag.record(Duration::from_millis(40));
        }
        // 40 samples at 1/8 weight: within 1 % of the level.
        assert!(
            lag.smoothed() > Duration::from_micros(39_600),
            "{:?}",
            lag.smoothed()
        );
        // One outlier moves it by an eighth only.
        let before = lag.smoothed();
        lag.record(Duration::ZERO);
        assert!(before - lag.smoothed() <= Duration::from_millis(5) + Duration::from_micros(1));
        // A stall counts as 50 ms at most.
        let fresh = RuntimeLag::default();
        fresh.record(Duration::from_secs(3));
        assert_eq!(fresh.smoothed(), LAG_SAMPLE_CAP / 8);
        for _ in 0..60 {
            lag.record(Duration::from_micros(500));
        }
        assert!(
            lag.smoothed() < Duration::from_millis(1),
            "{:?}",
            lag.smoothed()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_lag_monitor_measures_a_blocked_runtime() {
        let lag = spawn_runtime_lag_monitor(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The only runtime thread is blocked for 200 ms: the monitor's tick runs ~200 ms late,
        // counted as 50 ms, an eighth of which enters the mean (a busier machine only adds).
        std::thread::sleep(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            lag.smoothed() >= Duration::from_millis(6),
            "{:?}",
            lag.smoothed()
        );
    }

    #[test]
    fn without_a_cap_or_probe_every_call_is_admitted() {
        let admission = Admission::new(None);
        let now = Instant::now();
        for live in [0, 10, 100_000] {
            assert_eq!(admission.decide(live, now), Verdict::Admit);
        }
        assert_eq!(admission.refused_total(), 0);
    }

    #[test]
    fn the_cap_counts_live_streams_and_calls_still_connecting() {
        let admission = Admission::new(Some(3));
        let t0 = Instant::now();
        assert_eq!(admission.decide(1, t0), Verdict::Admit);
        assert_eq!(admission.decide(1, t0), Verdict::Admit);
        // One live stream and two answered calls whose streams have not opened: full.
        let reason = admission.decide(1, t0).clone();
        assert_eq!(
            busy(&reason),
            "1 calls in progress and 2 connecting; MAX_CALLS is 3"
        );
        // One of them connects: its place is now a live stream, still full.
        admission.stream_opened();
        assert!(matches!(admission.decide(2, t0), Verdict::Busy(_)));
        // A call ends: room for one.
        assert_eq!(admission.decide(1, t0), Verdict::Admit);
        assert_eq!(admission.refused_total(), 2);
    }

    #[test]
    fn an_answered_call_whose_stream_never_opens_frees_its_place() {
        let admission = Admission::new(Some(1));
        let t0 = Instant::now();
        assert_eq!(admission.decide(0, t0), Verdict::Admit);
        assert!(matches!(
            admission.decide(0, t0 + Duration::from_secs(9)),
            Verdict::Busy(_)
        ));
        assert_eq!(
            admission.decide(0, t0 + ANSWERED_STREAM_TTL),
            Verdict::Admit
        );
        // A stream that opens with no call waiting changes nothing.
        admission.stream_opened();
        admission.stream_opened();
        assert!(matches!(
            admission.decide(1, t0 + ANSWERED_STREAM_TTL),
            Verdict::Busy(_)
        ));
    }

    #[test]
    fn an_overload_refuses_calls_while_it_lasts() {
        let admission = Admission::new(Some(100));
        let causes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&causes);
        admission.set_refusal_observer(Arc::new(move |cause| {
            seen.lock().unwrap().push(cause);
        }));
        let overloaded = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Arc::clone(&overloaded);
        admission.set_overload_probe(Arc::new(move || {
            flag.load(Ordering::Relaxed)
                .then(|| "CRM write queue 5000 of 8192".to_owned())
        }));
        let now = Instant::now();
        let reason = admission.decide(0, now);
        assert_eq!(busy(&reason), "CRM write queue 5000 of 8192");
        overloaded.store(false, Ordering::Relaxed);
        assert_eq!(admission.decide(0, now), Verdict::Admit);
        assert_eq!(admission.refused_total(), 1);
        assert!(matches!(admission.decide(100, now), Verdict::Busy(_)));
        assert_eq!(*causes.lock().unwrap(), ["overload", "max_calls"]);
        // The cap is checked before the probe, and a refused call holds no place.
        let capped = Admission::new(Some(0));
        assert!(busy(&capped.decide(0, now)).contains("MAX_CALLS is 0"));
    }
}
