//! [`Console`]: the registry task that subscribes to the calls' event broadcast, keeps the
//! live-call snapshot and the metrics, and republishes each event (serialized once, numbered)
//! to the browsers.
//!
//! Ordering invariant: the registry applies an event to the snapshot and publishes it under one
//! lock, and a browser takes its snapshot and subscribes under the same lock, so every browser
//! sees each event exactly once: either inside its snapshot or as a later `call` event.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use call::{CallEvent, CallSummary};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::auth::ApiToken;
use crate::live::{LiveCall, LiveCalls, event_call_sid};
use crate::metrics::{Metrics, ScrapeGauges};

/// Reads the CRM write-queue depth at scrape time (e.g. `move || writer.depth()`).
pub type DepthProbe = Arc<dyn Fn() -> usize + Send + Sync>;

/// How the console is set up.
#[derive(Clone)]
pub struct ConsoleOptions {
    /// `CRMD_API_TOKEN`; without it the data routes and `/metrics` answer 503.
    pub api_token: Option<ApiToken>,
    /// CRM write-queue depth for `crmd_db_queue_depth` (omitted from `/metrics` when `None`).
    pub db_queue_depth: Option<DepthProbe>,
    /// Call recordings waiting to be encoded, for `crmd_recordings_pending_encode` (omitted
    /// when `None`).
    pub recordings_pending_encode: Option<DepthProbe>,
    /// The async runtime's smoothed timer lateness in microseconds, for
    /// `crmd_runtime_lag_microseconds` (omitted when `None`).
    pub runtime_lag_us: Option<DepthProbe>,
    /// How late calls send their agent audio, for the `crmd_media_out_lateness_seconds`
    /// histogram (omitted when `None`): the same [`call::MediaLateness`] as the calls'
    /// `CallDeps::media_lateness`.
    pub media_out_lateness: Option<Arc<call::MediaLateness>>,
    /// Events buffered per browser; a browser further behind loses events (counted) and is
    /// told to resynchronise. Calls never wait for browsers.
    pub per_browser_buffer: usize,
    /// A live call not heard of for this long is dropped from the snapshot (its end was lost).
    pub stale_call_after: Duration,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            api_token: None,
            db_queue_depth: None,
            recordings_pending_encode: None,
            runtime_lag_us: None,
            media_out_lateness: None,
            per_browser_buffer: 1024,
            stale_call_after: Duration::from_secs(3600),
        }
    }
}

impl fmt::Debug for ConsoleOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleOptions")
            .field("api_token", &self.api_token)
            .field("db_queue_depth", &self.db_queue_depth.is_some())
            .field(
                "recordings_pending_encode",
                &self.recordings_pending_encode.is_some(),
            )
            .field("runtime_lag_us", &self.runtime_lag_us.is_some())
            .field("media_out_lateness", &self.media_out_lateness.is_some())
            .field("per_browser_buffer", &self.per_browser_buffer)
            .field("stale_call_after", &self.stale_call_after)
            .finish()
    }
}

/// One call event as sent to browsers, serialized once for all of them.
#[derive(Debug)]
pub struct PublishedEvent {
    pub(crate) seq: u64,
    pub(crate) call_sid: String,
    pub(crate) json: String,
}

impl PublishedEvent {
    /// Position in the console's event sequence (1, 2, …; a snapshot carries the last one it
    /// includes).
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The call it belongs to.
    #[must_use]
    pub fn call_sid(&self) -> &str {
        &self.call_sid
    }

    /// `{"seq":…,"at_ms":…,"event":{"type":…}}` (`at_ms`: when the console saw it, unix ms).
    #[must_use]
    pub fn json(&self) -> &str {
        &self.json
    }
}

#[derive(Debug, Default)]
struct Registry {
    live: LiveCalls,
    seq: u64,
}

struct Inner {
    registry: Mutex<Registry>,
    fanout: broadcast::Sender<Arc<PublishedEvent>>,
    metrics: Metrics,
    options: ConsoleOptions,
}

/// The live console: cheap to clone, shared by the routes and the registry task.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("options", &self.inner.options)
            .field("live_calls", &self.live_call_count())
            .finish_non_exhaustive()
    }
}

/// Wall-clock now, unix milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Console {
    /// A console with no registry task: feed it with [`Console::handle_call_event`].
    #[must_use]
    pub fn new(options: ConsoleOptions) -> Console {
        let (fanout, _) = broadcast::channel(options.per_browser_buffer.max(1));
        Console {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::default()),
                fanout,
                metrics: Metrics::default(),
                options,
            }),
        }
    }

    /// A console fed by `events` (the `CallDeps::events` sender): spawns the registry task,
    /// which runs until every sender of `events` is dropped. Must run inside a Tokio runtime.
    pub fn spawn(
        events: &broadcast::Sender<CallEvent>,
        options: ConsoleOptions,
    ) -> (Console, JoinHandle<()>) {
        let console = Console::new(options);
        let mut receiver = events.subscribe();
        let task_console = console.clone();
        let task = tokio::spawn(async move {
            let stale_after = task_console.inner.options.stale_call_after;
            // Often enough that a call whose end was lost leaves the view soon after the
            // summary's grace period.
            let mut sweep = tokio::time::interval(
                stale_after.clamp(Duration::from_secs(1), Duration::from_secs(5)),
            );
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    received = receiver.recv() => match received {
                        Ok(event) => task_console.handle_call_event(&event),
                        Err(broadcast::error::RecvError::Lagged(lost)) => {
                            tracing::warn!(lost, "console fell behind the call events; live view may miss lines");
                            task_console.inner.metrics.observe_events_lagged(lost);
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = sweep.tick() => task_console.handle_sweep(now_ms()),
                }
            }
        });
        (console, task)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-updated in a way that
        // matters more than losing the console, so keep serving.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Folds one call event into the live snapshot and the metrics and publishes it to the
    /// browsers. Never waits for a browser.
    pub fn handle_call_event(&self, event: &CallEvent) {
        let at_ms = now_ms();
        let event_json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, "call event not serializable; not shown in the console");
                return;
            }
        };
        let mut registry = self.registry();
        let effect = registry.live.handle_event(event, at_ms);
        if effect.stale {
            return;
        }
        self.count_and_publish(
            &mut registry,
            event,
            effect.new_turn_kind,
            at_ms,
            &event_json,
        );
    }

    /// Counts `event` in the metrics and sends it to the browsers, numbered.
    fn count_and_publish(
        &self,
        registry: &mut Registry,
        event: &CallEvent,
        new_turn_kind: Option<&'static str>,
        at_ms: u64,
        event_json: &str,
    ) {
        let call_sid = event_call_sid(event).unwrap_or_default().to_owned();
        self.inner.metrics.observe_event(event, new_turn_kind);
        registry.seq += 1;
        let seq = registry.seq;
        let published = PublishedEvent {
            seq,
            call_sid,
            json: format!(r#"{{"seq":{seq},"at_ms":{at_ms},"event":{event_json}}}"#),
        };
        // No browser connected is fine.
        let _ = self.inner.fanout.send(Arc::new(published));
    }

    fn handle_sweep(&self, now_ms: u64) {
        let stale_after =
            u64::try_from(self.inner.options.stale_call_after.as_millis()).unwrap_or(u64::MAX);
        let mut registry = self.registry();
        for end in registry.live.due_summary_ends(now_ms) {
            tracing::warn!(
                call_sid = event_call_sid(&end).unwrap_or_default(),
                "the console missed this call's end (it lagged behind the call events); ended from the call's summary"
            );
            match serde_json::to_string(&end) {
                Ok(json) => self.count_and_publish(&mut registry, &end, None, now_ms, &json),
                Err(error) => tracing::error!(%error, "call end not serializable"),
            }
        }
        let dropped = registry.live.handle_tick(now_ms, stale_after);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "console forgot live calls not heard of for a long time"
            );
        }
    }

    /// Counts what only a finished call's summary knows (STT restarts and reopens): call it
    /// with what `call::run_call` returned.
    ///
    /// A call the live view still shows is given its end from the summary: if the call's own
    /// `CallEnded` event does not come through within [`crate::live::SUMMARY_END_GRACE_MS`] (it
    /// was lost while the console lagged behind the events), the console shows and counts this
    /// end instead, once.
    pub fn observe_call_summary(&self, summary: &CallSummary) {
        self.inner.metrics.observe_call_summary(summary);
        let Some(call_sid) = summary.call_sid.as_deref().filter(|sid| !sid.is_empty()) else {
            return;
        };
        let end = CallEvent::CallEnded {
            call_sid: call_sid.to_owned(),
            end_reason: summary.end_reason.clone(),
            duration_ms: summary.duration_ms,
        };
        self.registry().live.note_summary_end(end, now_ms());
    }

    /// Counts one WhatsApp send by status (`crmd_whatsapp_sends_total{status=…}`).
    pub fn observe_whatsapp_send(&self, status: &str) {
        self.inner.metrics.observe_whatsapp_send(status);
    }

    /// Counts a call refused with a busy signal, by cause (`crmd_calls_refused_total`).
    pub fn observe_call_refused(&self, cause: &str) {
        self.inner.metrics.observe_call_refused(cause);
    }

    /// Counts a media WebSocket failure outside a call's driver (e.g. a failed upgrade).
    pub fn observe_websocket_error(&self) {
        self.inner.metrics.observe_websocket_error();
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Calls in progress (all, or only `call_sid`).
    #[must_use]
    pub fn live_calls(&self, call_sid: Option<&str>) -> Vec<LiveCall> {
        self.registry().live.snapshot(call_sid)
    }

    /// How many calls are in progress.
    #[must_use]
    pub fn live_call_count(&self) -> usize {
        self.registry().live.len()
    }

    /// `/metrics` as text.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        let gauges = ScrapeGauges {
            calls_active: self.live_call_count(),
            db_queue_depth: self
                .inner
                .options
                .db_queue_depth
                .as_ref()
                .map(|probe| probe()),
            recordings_pending_encode: self
                .inner
                .options
                .recordings_pending_encode
                .as_ref()
                .map(|probe| probe()),
            runtime_lag_us: self
                .inner
                .options
                .runtime_lag_us
                .as_ref()
                .map(|probe| probe()),
            media_out_lateness: self
                .inner
                .options
                .media_out_lateness
                .as_ref()
                .map(|lateness| lateness.counts()),
        };
        self.inner.metrics.render(gauges)
    }

    pub(crate) fn api_token(&self) -> Option<&ApiToken> {
        self.inner.options.api_token.as_ref()
    }

    /// The calls in progress (all, or only `call_sid`), the sequence number of the last event
    /// they include, and a subscription to every later event (each exactly once). A receiver
    /// that falls more than [`ConsoleOptions::per_browser_buffer`] events behind gets
    /// `Lagged(n)`: those events are lost to it alone.
    pub fn subscribe(
        &self,
        call_sid: Option<&str>,
    ) -> (Vec<LiveCall>, u64, broadcast::Receiver<Arc<PublishedEvent>>) {
        let registry = self.registry();
        let snapshot = registry.live.snapshot(call_sid);
        (snapshot, registry.seq, self.inner.fanout.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_sees_each_event_once_after_its_snapshot() {
        let console = Console::new(ConsoleOptions::default());
        let sid = "CA00000000000000000000000000000002";
        console.handle_call_event(&CallEvent::CallStarted {
            call_sid: sid.into(),
            stream_sid: "MZ2".into(),
        });
        let (snapshot, seq, mut receiver) = console.subscribe(None);
        assert_eq!(snapshot.len(), 1);
        assert_eq!(seq, 1);
        console.handle_call_event(&CallEvent::Transcript {
            call_sid: sid.into(),
            text: "שלום".into(),
            is_final: true,
        });
        let published = receiver.try_recv().unwrap();
        assert_eq!(published.seq, 2);
        assert_eq!(published.call_sid, sid);
        let value: serde_json::Value = serde_json::from_str(&published.json).unwrap();
        assert_eq!(value["event"]["type"], "transcript");
        assert_eq!(value["event"]["text"], "שלום");
        assert!(value["at_ms"].as_u64().unwrap() > 0);
        assert!(receiver.try_recv().is_err(), "nothing else was published");
        assert_eq!(console.metrics().calls_started(), 1);
    }

    /// Current-thread runtime: the 20 events are sent before the registry task first runs, so
    /// it deterministically finds 16 of them overwritten.
    #[tokio::test(flavor = "current_thread")]
    async fn the_registry_task_counts_events_it_lagged_behind_on_and_keeps_going() {
        let (events, _) = broadcast::channel(4);
        let (console, task) = Console::spawn(&events, ConsoleOptions::default());
        let (_, _, mut published) = console.subscribe(None);
        let sid = "CA00000000000000000000000000000003";
        for n in 0..20 {
            events
                .send(CallEvent::Transcript {
                    call_sid: sid.into(),
                    text: format!("line {n}"),
                    is_final: true,
                })
                .unwrap();
        }
        let mut texts = Vec::new();
        for _ in 0..4 {
            let event = published.recv().await.unwrap();
            let value: serde_json::Value = serde_json::from_str(&event.json).unwrap();
            texts.push(value["event"]["text"].as_str().unwrap().to_owned());
        }
        assert_eq!(texts, ["line 16", "line 17", "line 18", "line 19"]);
        let metrics = console.render_metrics();
        assert!(
            metrics.contains("crmd_console_events_lagged_total 16\n"),
            "{metrics}"
        );
        // The task ends when the calls' sender goes away.
        drop(events);
        task.await.unwrap();
    }

    /// The driver's summary ends a call whose `CallEnded` the console never got, once.
    #[test]
    fn a_summary_ends_a_call_whose_end_event_was_lost() {
        let console = Console::new(ConsoleOptions::default());
        let sid = "CA00000000000000000000000000000004";
        console.handle_call_event(&CallEvent::CallStarted {
            call_sid: sid.into(),
            stream_sid: "MZ4".into(),
        });
        let (_, _, mut receiver) = console.subscribe(None);
        let summary = CallSummary {
            call_sid: Some(sid.into()),
            stream_sid: Some("MZ4".into()),
            duration_ms: 1_234,
            greetings: 1,
            ..CallSummary::empty(call::EndReason::Stopped)
        };
        console.observe_call_summary(&summary);
        // Its own end may still be on the way: nothing changes within the grace period.
        console.handle_sweep(now_ms());
        assert_eq!(console.live_call_count(), 1);
        assert!(receiver.try_recv().is_err());
        console.handle_sweep(now_ms() + crate::live::SUMMARY_END_GRACE_MS + 1);
        assert_eq!(console.live_call_count(), 0);
        let published = receiver.try_recv().unwrap();
        let value: serde_json::Value = serde_json::from_str(&published.json).unwrap();
        assert_eq!(value["event"]["type"], "call_ended");
        assert_eq!(value["event"]["duration_ms"], 1_234);
        // The real end arriving late is neither shown nor counted again.
        console.handle_call_event(&CallEvent::CallEnded {
            call_sid: sid.into(),
            end_reason: call::EndReason::Stopped,
            duration_ms: 1_234,
        });
        assert!(receiver.try_recv().is_err());
        let metrics = console.render_metrics();
        assert!(
            metrics.contains("crmd_call_ends_total{reason=\"stopped\"} 1\n"),
            "{metrics}"
        );
    }

    #[test]
    fn debug_redacts_the_token() {
        let console = Console::new(ConsoleOptions {
            api_token: ApiToken::new("hunter2-secret"),
            ..ConsoleOptions::default()
        });
        let shown = format!("{console:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
