//! Prometheus counters, gauges and histograms, rendered in the text exposition format (0.0.4)
//! by hand. Everything is lock-free atomics except the few label maps (turn kinds, call end
//! reasons, WhatsApp statuses), which change rarely and are bounded in size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use call::{
    CallEvent, CallSummary, EndReason, MEDIA_LATENESS_BUCKETS_US, MediaLatenessCounts, TurnLatency,
};

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

/// Distinct label values kept per labelled counter; further values are counted as `other`.
pub const MAX_LABEL_VALUES: usize = 32;

/// Reads one stage's milliseconds from a [`TurnLatency`].
type StageReader = fn(&TurnLatency) -> Option<u64>;

/// The latency stages of a turn, as `stage` label values, with how to read each.
const STAGES: [(&str, StageReader); 7] = [
    ("eou", |l| l.eou_ms),
    ("stt_final_lag", |l| l.stt_final_lag_ms),
    ("responder_first_token", |l| l.responder_first_token_ms),
    ("tts_first_byte", |l| l.tts_first_byte_ms),
    ("first_frame_after_eou", |l| l.first_frame_after_eou_ms),
    ("speech_end_to_first_frame", |l| {
        l.speech_end_to_first_frame_ms
    }),
    ("twilio_clock", |l| l.twilio_clock_ms),
];

/// A histogram of millisecond observations, exposed in seconds.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS_SECONDS`], then `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
    sum_ms: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe_ms(&self, ms: u64) {
        let seconds = ms as f64 / 1000.0;
        let index = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let counts = self.buckets.iter().map(|b| b.load(Ordering::Relaxed));
        let sum = self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        write_histogram(
            out,
            name,
            labels,
            LATENCY_BUCKETS_SECONDS.iter().copied(),
            counts,
            sum,
        );
    }
}

/// Writes a histogram's `_bucket` (cumulative, `+Inf` last), `_sum` and `_count` lines from
/// non-cumulative `counts`: one per bound in `bounds_seconds`, then the `+Inf` bucket.
fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds_seconds: impl Iterator<Item = f64>,
    mut counts: impl Iterator<Item = u64>,
    sum_seconds: f64,
) {
    let separator = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, count) in bounds_seconds.zip(counts.by_ref()) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += counts.next().unwrap_or(0);
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum_seconds}");
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

/// A counter per label value, bounded to [`MAX_LABEL_VALUES`] distinct values.
#[derive(Debug, Default)]
struct LabelledCounter(Mutex<BTreeMap<String, u64>>);

impl LabelledCounter {
    fn add(&self, value: &str, n: u64) {
        let value = sanitize_label(value);
        let Ok(mut map) = self.0.lock() else { return };
        let key = if map.contains_key(&value) || map.len() < MAX_LABEL_VALUES {
            value
        } else {
            "other".to_owned()
        };
        *map.entry(key).or_insert(0) += n;
    }

    fn get(&self, value: &str) -> u64 {
        self.0
            .lock()
            .map(|map| map.get(value).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, label: &str) {
        let Ok(map) = self.0.lock() else { return };
        for (value, count) in map.iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
        }
    }
}

/// Label values are kept to `[a-z0-9_-]` (lower-cased, anything else `_`, at most 40 bytes), so
/// no escaping is needed and a hostile status string cannot break the exposition.
fn sanitize_label(value: &str) -> String {
    let cleaned: String = value
        .trim()
        .chars()
        .take(40)
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

/// Every figure `/metrics` exposes that is not read at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    calls_started: AtomicU64,
    calls_ended: LabelledCounter,
    turns: LabelledCounter,
    barge_ins: AtomicU64,
    barge_in_latency: Histogram,
    stage_latency: [Histogram; STAGES.len()],
    stt_restarts: AtomicU64,
    stt_reopens: AtomicU64,
    websocket_errors: AtomicU64,
    whatsapp_sends: LabelledCounter,
    calls_refused: LabelledCounter,
    events_lagged: AtomicU64,
    sse_events_dropped: AtomicU64,
    sse_clients: AtomicU64,
}

/// Figures read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeGauges {
    /// Calls in progress.
    pub calls_active: usize,
    /// CRM write-queue depth, when a probe is configured.
    pub db_queue_depth: Option<usize>,
    /// Call recordings waiting to be encoded, when a probe is configured.
    pub recordings_pending_encode: Option<usize>,
    /// The async runtime's smoothed timer lateness (µs), when a probe is configured.
    pub runtime_lag_us: Option<usize>,
    /// How late calls have sent their agent audio, when configured.
    pub media_out_lateness: Option<MediaLatenessCounts>,
}

impl Metrics {
    /// Counts what a call event says (calls, turns, barge-ins, latency, socket failures).
    /// `new_turn_kind` comes from the live registry, which knows when a turn starts.
    pub fn observe_event(&self, event: &CallEvent, new_turn_kind: Option<&str>) {
        if let Some(kind) = new_turn_kind {
            self.turns.add(kind, 1);
        }
        match event {
            CallEvent::CallStarted { .. } => {
                self.calls_started.fetch_add(1, Ordering::Relaxed);
            }
            CallEvent::BargeIn { latency_ms, .. } => {
                self.barge_ins.fetch_add(1, Ordering::Relaxed);
                self.barge_in_latency.observe_ms(*latency_ms);
            }
            CallEvent::Latency { latency, .. } => {
                for ((_, read), histogram) in STAGES.iter().zip(&self.stage_latency) {
                    if let Some(ms) = read(latency) {
                        histogram.observe_ms(ms);
                    }
                }
            }
            CallEvent::CallEnded { end_reason, .. } => {
                let reason = match end_reason {
                    EndReason::Stopped => "stopped",
                    EndReason::SocketClosedWithoutStop => "socket_closed_without_stop",
                    EndReason::TransportFailed { .. } => {
                        self.websocket_errors.fetch_add(1, Ordering::Relaxed);
                        "transport_failed"
                    }
                    EndReason::HungUpByAgent { .. } => "hung_up_by_agent",
                    _ => "other",
                };
                self.calls_ended.add(reason, 1);
            }
            _ => {}
        }
    }

    /// Counts what only a finished call's summary knows: STT restarts and reopens.
    pub fn observe_call_summary(&self, summary: &CallSummary) {
        self.stt_restarts
            .fetch_add(u64::from(summary.stt_restarts), Ordering::Relaxed);
        self.stt_reopens
            .fetch_add(u64::from(summary.stt_reopens), Ordering::Relaxed);
    }

    /// Counts a WebSocket failure the call driver does not report (an upgrade that failed, a
    /// socket error outside a call).
    pub fn observe_websocket_error(&self) {
        self.websocket_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one call refused with a busy signal, by cause (`max_calls`, `overload`).
    pub fn observe_call_refused(&self, cause: &str) {
        self.calls_refused.add(cause, 1);
    }

    /// Counts one WhatsApp send by its outcome (`sent`, `queued`, `failed`, a provider status).
    pub fn observe_whatsapp_send(&self, status: &str) {
        self.whatsapp_sends.add(status, 1);
    }

    pub(crate) fn observe_events_lagged(&self, lost: u64) {
        self.events_lagged.fetch_add(lost, Ordering::Relaxed);
    }

    pub(crate) fn observe_sse_dropped(&self, dropped: u64) {
        self.sse_events_dropped
            .fetch_add(dropped, Ordering::Relaxed);
    }

    pub(crate) fn sse_client_connected(&self) {
        self.sse_clients.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sse_client_gone(&self) {
        self.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// Calls started so far.
    #[must_use]
    pub fn calls_started(&self) -> u64 {
        self.calls_started.load(Ordering::Relaxed)
    }

    /// Barge-ins so far.
    #[must_use]
    pub fn barge_ins(&self) -> u64 {
        self.barge_ins.load(Ordering::Relaxed)
    }

    /// Agent turns of `kind` started so far.
    #[must_use]
    pub fn turns(&self, kind: &str) -> u64 {
        self.turns.get(kind)
    }

    /// WhatsApp sends with `status` so far (label as sanitized: lower case).
    #[must_use]
    pub fn whatsapp_sends(&self, status: &str) -> u64 {
        self.whatsapp_sends.get(status)
    }

    /// Events a browser missed because it read too slowly.
    #[must_use]
    pub fn sse_events_dropped(&self) -> u64 {
        self.sse_events_dropped.load(Ordering::Relaxed)
    }

    /// Browsers connected to `/api/events` now.
    #[must_use]
    pub fn sse_clients(&self) -> u64 {
        self.sse_clients.load(Ordering::Relaxed)
    }

    /// The text exposition of every metric.
    #[must_use]
    pub fn render(&self, gauges: ScrapeGauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut simple = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        simple(
            "crmd_calls_active",
            "gauge",
            "Calls in progress (media stream started, not ended).",
            gauges.calls_active as u64,
        );
        simple(
            "crmd_calls_total",
            "counter",
            "Calls whose media stream started.",
            get(&self.calls_started),
        );
        simple(
            "crmd_barge_ins_total",
            "counter",
            "Times a caller interrupted the agent.",
            get(&self.barge_ins),
        );
        simple(
            "crmd_stt_restarts_total",
            "counter",
            "STT stream restarts the speech client reported (rotation, transient errors), counted when calls end.",
            get(&self.stt_restarts),
        );
        simple(
            "crmd_stt_reopens_total",
            "counter",
            "STT sessions the call driver reopened after the speech client gave up, counted when calls end.",
            get(&self.stt_reopens),
        );
        simple(
            "crmd_websocket_errors_total",
            "counter",
            "Media-stream WebSockets that failed (transport errors).",
            get(&self.websocket_errors),
        );
        simple(
            "crmd_console_events_lagged_total",
            "counter",
            "Call events the console's live registry missed because it fell behind the broadcast.",
            get(&self.events_lagged),
        );
        simple(
            "crmd_console_sse_events_dropped_total",
            "counter",
            "Call events dropped for browsers that read /api/events too slowly.",
            get(&self.sse_events_dropped),
        );
        simple(
            "crmd_console_sse_clients",
            "gauge",
            "Browsers connected to /api/events.",
            get(&self.sse_clients),
        );
        if let Some(depth) = gauges.db_queue_depth {
            simple(
                "crmd_db_queue_depth",
                "gauge",
                "CRM writes queued or being written.",
                depth as u64,
            );
        }
        if let Some(pending) = gauges.recordings_pending_encode {
            simple(
                "crmd_recordings_pending_encode",
                "gauge",
                "Call recordings spooled as WAV and waiting for (or in) Ogg Opus encoding.",
                pending as u64,
            );
        }
        if let Some(lag) = gauges.runtime_lag_us {
            simple(
                "crmd_runtime_lag_microseconds",
                "gauge",
                "How late the async runtime runs timers (smoothed over about a second); new calls are refused busy while it is high.",
                lag as u64,
            );
        }

        let _ = writeln!(
            out,
            "# HELP crmd_call_ends_total Calls ended, by reason.\n# TYPE crmd_call_ends_total counter"
        );
        self.calls_ended
            .render(&mut out, "crmd_call_ends_total", "reason");
        let _ = writeln!(
            out,
            "# HELP crmd_turns_total Agent turns started, by kind (greeting, reply, reprompt, goodbye, apology).\n# TYPE crmd_turns_total counter"
        );
        self.turns.render(&mut out, "crmd_turns_total", "kind");
        let _ = writeln!(
            out,
            "# HELP crmd_whatsapp_sends_total WhatsApp sends, by status.\n# TYPE crmd_whatsapp_sends_total counter"
        );
        self.whatsapp_sends
            .render(&mut out, "crmd_whatsapp_sends_total", "status");
        let _ = writeln!(
            out,
            "# HELP crmd_calls_refused_total Calls refused unanswered with a busy signal (admission control), by cause.\n# TYPE crmd_calls_refused_total counter"
        );
        self.calls_refused
            .render(&mut out, "crmd_calls_refused_total", "cause");

        let _ = writeln!(
            out,
            "# HELP crmd_barge_in_latency_seconds From caller voice onset to the clear sent to Twilio.\n# TYPE crmd_barge_in_latency_seconds histogram"
        );
        self.barge_in_latency
            .render(&mut out, "crmd_barge_in_latency_seconds", "");
        let _ = writeln!(
            out,
            "# HELP crmd_turn_stage_latency_seconds Per-turn latency by stage (eou = end-of-utterance wait).\n# TYPE crmd_turn_stage_latency_seconds histogram"
        );
        for ((stage, _), histogram) in STAGES.iter().zip(&self.stage_latency) {
            histogram.render(
                &mut out,
                "crmd_turn_stage_latency_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        if let Some(lateness) = gauges.media_out_lateness {
            render_media_lateness(&mut out, &lateness);
        }
        out
    }
}

/// `crmd_media_out_lateness_seconds`, from the calls' shared [`call::MediaLateness`].
fn render_media_lateness(out: &mut String, lateness: &MediaLatenessCounts) {
    const NAME: &str = "crmd_media_out_lateness_seconds";
    let _ = writeln!(
        out,
        "# HELP {NAME} How late agent audio left against its pacing deadline, per socket write the call had to wait for (the server's own share of outbound jitter).\n# TYPE {NAME} histogram"
    );
    write_histogram(
        out,
        NAME,
        "",
        MEDIA_LATENESS_BUCKETS_US.iter().map(|us| *us as f64 / 1e6),
        lateness.buckets.iter().copied(),
        lateness.sum_us as f64 / 1e6,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_in_seconds() {
        let histogram = Histogram::default();
        for ms in [40, 50, 120, 900, 60_000] {
            histogram.observe_ms(ms);
        }
        let mut out = String::new();
        histogram.render(&mut out, "h", "stage=\"eou\"");
        assert!(
            out.contains("h_bucket{stage=\"eou\",le=\"0.05\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("h_bucket{stage=\"eou\",le=\"0.15\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("h_bucket{stage=\"eou\",le=\"1\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("h_bucket{stage=\"eou\",le=\"10\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("h_bucket{stage=\"eou\",le=\"+Inf\"} 5\n"),
            "{out}"
        );
        assert!(out.contains("h_sum{stage=\"eou\"} 61.11\n"), "{out}");
        assert!(out.contains("h_count{stage=\"eou\"} 5\n"), "{out}");
    }

    #[test]
    fn events_feed_counters_and_latency_stages() {
        let metrics = Metrics::default();
        let sid = || "CA1".to_owned();
        metrics.observe_event(
            &CallEvent::CallStarted {
                call_sid: sid(),
                stream_sid: "MZ1".into(),
            },
            None,
        );
        metrics.observe_event(
            &CallEvent::AgentText {
                call_sid: sid(),
                turn: 2,
                kind: "reply",
                text: "Hi".into(),
            },
            Some("reply"),
        );
        metrics.observe_event(
            &CallEvent::Latency {
                call_sid: sid(),
                turn: 2,
                latency: TurnLatency {
                    eou_ms: Some(500),
                    tts_first_byte_ms: Some(80),
                    ..TurnLatency::default()
                },
            },
            None,
        );
        metrics.observe_event(
            &CallEvent::CallEnded {
                call_sid: sid(),
                end_reason: EndReason::TransportFailed {
                    detail: "reset".into(),
                },
                duration_ms: 10,
            },
            None,
        );
        metrics.observe_call_refused("overload");
        metrics.observe_call_refused("overload");
        metrics.observe_call_refused("max_calls");
        metrics.observe_whatsapp_send("Failed");
        metrics.observe_whatsapp_send("sent");
        metrics.observe_whatsapp_send("sent");
        let text = metrics.render(ScrapeGauges {
            calls_active: 3,
            db_queue_depth: Some(7),
            recordings_pending_encode: Some(2),
            runtime_lag_us: Some(1500),
            media_out_lateness: Some({
                let lateness = call::MediaLateness::default();
                for us in [300, 1_200, 1_800, 40_000] {
                    lateness.record(std::time::Duration::from_micros(us));
                }
                lateness.counts()
            }),
        });
        assert_eq!(line(&text, "crmd_calls_total "), ["crmd_calls_total 1"]);
        assert_eq!(line(&text, "crmd_calls_active "), ["crmd_calls_active 3"]);
        assert_eq!(
            line(&text, "crmd_db_queue_depth "),
            ["crmd_db_queue_depth 7"]
        );
        assert_eq!(
            line(&text, "crmd_recordings_pending_encode "),
            ["crmd_recordings_pending_encode 2"]
        );
        assert_eq!(
            line(&text, "crmd_runtime_lag_microseconds "),
            ["crmd_runtime_lag_microseconds 1500"]
        );
        assert_eq!(
            line(&text, "crmd_media_out_lateness_seconds"),
            [
                "crmd_media_out_lateness_seconds_bucket{le=\"0.0005\"} 1",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.001\"} 1",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.002\"} 3",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.003\"} 3",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.005\"} 3",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.0075\"} 3",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.01\"} 3",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.02\"} 3",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.05\"} 4",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.1\"} 4",
                "crmd_media_out_lateness_seconds_bucket{le=\"0.25\"} 4",
                "crmd_media_out_lateness_seconds_bucket{le=\"1\"} 4",
                "crmd_media_out_lateness_seconds_bucket{le=\"+Inf\"} 4",
                "crmd_media_out_lateness_seconds_sum 0.0433",
                "crmd_media_out_lateness_seconds_count 4",
            ]
        );
        assert_eq!(
            line(&text, "crmd_turns_total{"),
            ["crmd_turns_total{kind=\"reply\"} 1"]
        );
        assert_eq!(
            line(&text, "crmd_websocket_errors_total "),
            ["crmd_websocket_errors_total 1"]
        );
        assert_eq!(
            line(&text, "crmd_call_ends_total{"),
            ["crmd_call_ends_total{reason=\"transport_failed\"} 1"]
        );
        assert_eq!(
            line(&text, "crmd_calls_refused_total{"),
            [
                "crmd_calls_refused_total{cause=\"max_calls\"} 1",
                "crmd_calls_refused_total{cause=\"overload\"} 2"
            ]
        );
        assert_eq!(
            line(&text, "crmd_whatsapp_sends_total{"),
            [
                "crmd_whatsapp_sends_total{status=\"failed\"} 1",
                "crmd_whatsapp_sends_total{status=\"sent\"} 2"
            ]
        );
        assert!(
            text.contains("crmd_turn_stage_latency_seconds_bucket{stage=\"eou\",le=\"0.5\"} 1\n")
        );
        assert!(text.contains(
            "crmd_turn_stage_latency_seconds_bucket{stage=\"tts_first_byte\",le=\"0.05\"} 0\n"
        ));
        assert!(
            text.contains("crmd_turn_stage_latency_seconds_count{stage=\"tts_first_byte\"} 1\n")
        );
        assert!(text.contains("crmd_turn_stage_latency_seconds_count{stage=\"twilio_clock\"} 0\n"));
        // Every sample line is `name{labels} value` or `name value` with a numeric value.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let value = sample.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {sample:?}");
        }
    }

    #[test]
    fn label_values_are_sanitized_and_bounded() {
        let metrics = Metrics::default();
        metrics.observe_whatsapp_send("we\"ird}\nstatus");
        for n in 0..(MAX_LABEL_VALUES + 10) {
            metrics.observe_whatsapp_send(&format!("s{n}"));
        }
        let text = metrics.render(ScrapeGauges::default());
        assert!(text.contains("crmd_whatsapp_sends_total{status=\"we_ird__status\"} 1\n"));
        let lines = line(&text, "crmd_whatsapp_sends_total{");
        assert_eq!(lines.len(), MAX_LABEL_VALUES + 1, "bounded plus `other`");
        assert!(text.contains("crmd_whatsapp_sends_total{status=\"other\"} 11\n"));
        assert!(!text.contains("crmd_db_queue_depth"), "no probe, no gauge");
        assert!(!text.contains("crmd_recordings_pending_encode"));
    }
}
