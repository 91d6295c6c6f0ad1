//! `callsim load`: many concurrent conversation loops against one server on one tokio runtime,
//! with the server's (and the speech stand-in's, and our own) CPU and memory sampled from
//! `/proc` over the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::audio::{CallerClip, silence_payload_base64};
use crate::call::{CallError, CallOptions, new_identity, run_call};
use crate::metrics::{Histogram, Summary};
use crate::procstat::{self, ProcSample};
use crate::scrape::{PromHistogram, ServerSendLateness};
use crate::session::{CallPlan, Ending};
use crate::steps::Step;
use crate::twiml::TwimlError;

/// Settings of a load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How each call is placed.
    pub call: CallOptions,
    /// Concurrent calls.
    pub calls: u32,
    /// Calls start evenly spread over this time.
    pub ramp: Duration,
    /// All calls then run together for this long, and end with `stop`.
    pub duration: Duration,
    /// The server's pid, for CPU and RSS.
    pub server_pid: Option<u32>,
    /// The speech stand-in's pid, for its CPU and RSS.
    pub standin_pid: Option<u32>,
    /// Caller utterances, used in turn.
    pub clips: Vec<Arc<CallerClip>>,
    /// Every this many turns, the caller barges in over the reply instead (0: never).
    pub barge_in_every: u32,
    /// Interval of the `/proc` samples.
    pub sample_every: Duration,
    /// When a call ends before the run does (e.g. the server hangs up), place a new one in its
    /// slot, so the concurrency stays at `calls`.
    pub redial: bool,
    /// Each call hangs up (`stop`) after this long instead of running to the end of the run;
    /// with `redial`, calls then end and start all through the run, as on a real line (and what
    /// the server does after a call, e.g. encoding its recording, happens under load).
    pub call_length: Option<Duration>,
    /// The server's API token (`CRMD_API_TOKEN`), to read its `/metrics` backlogs.
    pub api_token: Option<String>,
}

/// Calls are not started with less than this left of the run.
const MIN_CALL: Duration = Duration::from_secs(1);
/// Pause before redialing after a call could not be set up.
const REDIAL_PAUSE_AFTER_ERROR: Duration = Duration::from_millis(500);
/// Pause before redialing after a busy signal: a caller tries again a few seconds later, not in a
/// tight loop (which would measure the webhook under a storm no real line produces).
const REDIAL_PAUSE_AFTER_BUSY: Duration = Duration::from_secs(5);

/// CPU and memory of one process over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    /// The pid.
    pub pid: u32,
    /// Average CPU over the steady window, in % of one core.
    pub cpu_percent: f64,
    /// `cpu_percent` divided by the calls live in the window, in % of one core.
    pub cpu_percent_per_call: f64,
    /// RSS before the first call, in KiB.
    pub rss_baseline_kib: u64,
    /// Highest RSS during the steady window, in KiB.
    pub rss_peak_kib: u64,
    /// (peak - baseline) / calls live, in KiB.
    pub rss_per_call_kib: f64,
}

/// What the machine is.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs of the machine (not only those this process may run on).
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg` when the report was made (other work on the machine skews figures).
    pub load_average: String,
}

impl Machine {
    /// Reads `/proc` for the description.
    #[must_use]
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, name)| name.trim().to_owned());
        Self {
            // The machine's, as `/proc/stat` lists them: under `taskset` the simulator's own
            // affinity would say fewer.
            cpus: procstat::sample_machine().map_or_else(
                |_| std::thread::available_parallelism().map_or(1, usize::from),
                |(_, idle)| idle.cpus as usize,
            ),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned()),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map_or_else(|_| "unknown".to_owned(), |l| l.trim().to_owned()),
        }
    }
}

/// The result of a load run (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The machine (its load average read at the end of the run).
    pub machine: Machine,
    /// `/proc/loadavg` when the run started.
    pub load_average_before: String,
    /// Calls asked for.
    pub calls_requested: u32,
    /// Ramp, seconds.
    pub ramp_s: f64,
    /// Steady duration, seconds.
    pub duration_s: f64,
    /// Calls placed (more than `calls_requested` with redial).
    pub calls_placed: u32,
    /// Calls whose webhook and handshake succeeded.
    pub calls_connected: u32,
    /// Calls that ran until the end of the run and hung up themselves with `stop`.
    pub calls_sustained: u32,
    /// Calls the server closed before the end.
    pub calls_closed_by_server: u32,
    /// Calls that ended on a socket error (WebSocket errors).
    pub ws_errors: u32,
    /// Calls the server refused unanswered (`<Reject>`: busy, at capacity); not set-up errors.
    pub calls_refused: u32,
    /// Calls that could not be set up, by reason (first 200 characters).
    pub setup_errors: BTreeMap<String, u32>,
    /// Most calls live at one sample.
    pub peak_live_calls: u32,
    /// The incoming-call webhook: POST -> TwiML received (Twilio gives up after 15 s).
    pub webhook: Summary,
    /// `start` -> first agent audio.
    pub greeting: Summary,
    /// Calls that got no greeting / more than one greeting.
    pub calls_without_greeting: u32,
    /// Calls with more than one greeting.
    pub calls_with_repeated_greeting: u32,
    /// Caller's last voiced frame -> first agent audio.
    pub turn_latency: Summary,
    /// Caller utterances without a reply.
    pub utterances_without_reply: u64,
    /// Caller onset over agent audio -> `clear`.
    pub barge_in_latency: Summary,
    /// Barge-ins without `clear`.
    pub barge_ins_missed: u64,
    /// Agent audio received after `clear` while the caller talked, summed, ms.
    pub agent_audio_after_clear_ms: u64,
    /// Caller frame pacing lateness (simulator side).
    pub pacing: Summary,
    /// Caller frames sent.
    pub frames_sent: u64,
    /// Caller frames sent > 20 ms late.
    pub frames_late: u64,
    /// Caller frames skipped after falling > 1 s behind.
    pub frames_dropped: u64,
    /// Agent frame lateness against each reply's real-time schedule.
    pub agent_frame_jitter: Summary,
    /// Audible gaps inside agent replies.
    pub playback_underruns: u64,
    /// Agent audio received, seconds.
    pub agent_audio_s: f64,
    /// Protocol violations by the server.
    pub protocol_errors: u64,
    /// The first few violations.
    pub protocol_error_samples: Vec<String>,
    /// Failed status callbacks / action requests.
    pub callback_errors: u64,
    /// Length of the steady window the CPU figures cover, seconds.
    pub steady_window_s: f64,
    /// The server.
    pub server: Option<ProcessUsage>,
    /// The speech stand-in.
    pub standin: Option<ProcessUsage>,
    /// This simulator.
    pub simulator: Option<ProcessUsage>,
    /// Whole machine busy over the steady window, in % of one core (200 % = both of 2 cores).
    pub machine_busy_percent: Option<f64>,
    /// Busy time not spent in the server, the stand-in or the simulator (other work on the
    /// machine), in % of one core.
    pub other_processes_percent: Option<f64>,
    /// The server's own backlogs, read from its `/metrics` at each sample (with
    /// [`LoadOptions::api_token`]; `None` when not read or not served).
    pub server_backlog: ServerBacklog,
    /// How late the server itself sent agent audio over the steady window, from its
    /// `/metrics` (with [`LoadOptions::api_token`]; `None` when not read or not served).
    pub server_send_lateness: Option<ServerSendLateness>,
}

/// Largest backlogs the server reported on `/metrics` over the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerBacklog {
    /// `/metrics` samples read.
    pub samples: u32,
    /// Most CRM writes waiting at one sample (`crmd_db_queue_depth`).
    pub db_queue_depth_max: Option<u64>,
    /// Most recordings waiting for their encoding at one sample
    /// (`crmd_recordings_pending_encode`).
    pub recordings_pending_encode_max: Option<u64>,
}

impl ServerBacklog {
    /// Takes in one `/metrics` text (Prometheus exposition format).
    pub fn record(&mut self, metrics: &str) {
        self.samples += 1;
        let max = |slot: &mut Option<u64>, value: Option<u64>| {
            if let Some(value) = value {
                *slot = Some(slot.map_or(value, |seen| seen.max(value)));
            }
        };
        max(
            &mut self.db_queue_depth_max,
            gauge(metrics, "crmd_db_queue_depth"),
        );
        max(
            &mut self.recordings_pending_encode_max,
            gauge(metrics, "crmd_recordings_pending_encode"),
        );
    }
}

/// The value of an unlabelled gauge in a Prometheus text exposition.
fn gauge(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        // Gauges are integers here; a float is rounded down.
        value.trim().parse::<f64>().ok().map(|v| v.max(0.0) as u64)
    })
}

/// The period of a call's media frames.
const FRAME_PERIOD: Duration = Duration::from_millis(mulaw::FRAME_MS as u64);

/// The fractional part of the golden ratio: successive multiples of it, modulo 1, spread as
/// evenly as a sequence can over [0, 1).
const GOLDEN_FRACTION: f64 = 0.618_033_988_749_895;

/// When call `index` of `calls` starts after the run's start: spread evenly over the ramp, plus a
/// phase within one 20 ms frame period, spread evenly over the calls.
///
/// Real calls begin at random moments, so their 20 ms frame clocks fall all over the period. The
/// ramp alone would line them up whenever it gives each call a whole number of frame periods:
/// 500 calls over 10 s start exactly 20 ms apart, and every call would send its frame in the same
/// instant, 500 at once, every 20 ms. The server and the simulator then see a burst that no real
/// line makes (measured at 500 calls over 10 s: crmd's own p99 send lateness 4.7-6.2 ms with the
/// phases lined up, 2.7-2.8 ms with them spread).
fn start_offset(index: u32, calls: u32, ramp: Duration) -> Duration {
    let spread = if calls > 1 {
        ramp.mul_f64(f64::from(index) / f64::from(calls))
    } else {
        Duration::ZERO
    };
    let phase = (f64::from(index) * GOLDEN_FRACTION).fract();
    spread + FRAME_PERIOD.mul_f64(phase)
}

/// The server's histogram of its own lateness in sending agent audio.
const SEND_LATENESS_METRIC: &str = "crmd_media_out_lateness_seconds";

/// Bound on one `/metrics` read: a slow server delays a sample, never the run.
const METRICS_TIMEOUT: Duration = Duration::from_millis(500);

/// The conversation loop of one load call: listen to the greeting, then turns of "say, listen
/// to the reply", every `barge_in_every`-th turn barging in 800 ms into the reply instead.
#[must_use]
pub fn conversation_steps(
    clips: &[Arc<CallerClip>],
    offset: usize,
    barge_in_every: u32,
) -> (Vec<Step>, usize) {
    let clip = |i: usize| Arc::clone(&clips[(offset + i) % clips.len()]);
    let mut steps = vec![Step::Listen(Duration::from_secs(10))];
    let turns = barge_in_every.max(1) as usize;
    for turn in 0..turns {
        steps.push(Step::Say(clip(turn)));
        if barge_in_every > 0 && turn + 1 == turns {
            steps.push(Step::Interrupt {
                after: Duration::from_millis(800),
                clip: clip(turn + 1),
            });
        }
        steps.push(Step::Listen(Duration::from_secs(8)));
    }
    (steps, 1)
}

#[derive(Debug, Default)]
struct Samples {
    server: Vec<ProcSample>,
    standin: Vec<ProcSample>,
    simulator: Vec<ProcSample>,
    machine: Vec<(Instant, procstat::MachineIdle)>,
    live: Vec<(Instant, u32)>,
    backlog: ServerBacklog,
    send_lateness: Vec<(Instant, PromHistogram)>,
}

/// The samples taken within `window` (both ends included), in order.
fn taken_in<T>(
    samples: &[(Instant, T)],
    window: (Instant, Instant),
) -> impl Iterator<Item = &(Instant, T)> {
    samples
        .iter()
        .filter(move |(at, _)| *at >= window.0 && *at <= window.1)
}

fn usage(
    pid: u32,
    samples: &[ProcSample],
    baseline: Option<ProcSample>,
    window: (Instant, Instant),
    calls: u32,
    ticks_per_second: u64,
) -> Option<ProcessUsage> {
    let in_window: Vec<&ProcSample> = samples
        .iter()
        .filter(|s| s.at >= window.0 && s.at <= window.1)
        .collect();
    let first = in_window.first()?;
    let last = in_window.last()?;
    let seconds = last.at.saturating_duration_since(first.at).as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    let cpu_seconds =
        last.cpu_ticks.saturating_sub(first.cpu_ticks) as f64 / ticks_per_second as f64;
    let cpu_percent = cpu_seconds / seconds * 100.0;
    let baseline_rss = baseline.map_or(first.rss_kib, |b| b.rss_kib);
    let peak = in_window.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let calls = f64::from(calls.max(1));
    Some(ProcessUsage {
        pid,
        cpu_percent,
        cpu_percent_per_call: cpu_percent / calls,
        rss_baseline_kib: baseline_rss,
        rss_peak_kib: peak,
        rss_per_call_kib: peak.saturating_sub(baseline_rss) as f64 / calls,
    })
}

/// Runs the load and reports.
pub async fn run_load(options: LoadOptions) -> LoadReport {
    let client = crate::call::http_client();
    let silence: Arc<str> = silence_payload_base64().into();
    let live = Arc::new(AtomicU32::new(0));
    let ticks_per_second = procstat::clock_ticks_per_second();
    let self_pid = std::process::id();

    let baseline_server = options
        .server_pid
        .and_then(|pid| procstat::sample(pid).ok());
    let baseline_standin = options
        .standin_pid
        .and_then(|pid| procstat::sample(pid).ok());
    let baseline_self = procstat::sample(self_pid).ok();

    let load_average_before = Machine::detect().load_average;
    let run_start = Instant::now();
    let ramp_end = run_start + options.ramp;
    let run_end = ramp_end + options.duration;

    // Sampler: bounded by the run's end (plus slack for calls that end late).
    let (stop_sampler, mut sampler_stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let live = Arc::clone(&live);
        let metrics = options.api_token.clone().map(|token| {
            let url = options.call.target.http_url("/metrics");
            client.get(url).bearer_auth(token).timeout(METRICS_TIMEOUT)
        });
        let (server_pid, standin_pid, every) = (
            options.server_pid,
            options.standin_pid,
            options.sample_every,
        );
        tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
            let stop_at = run_end + Duration::from_secs(5);
            while Instant::now() < stop_at {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = &mut sampler_stopped => break,
                }
                if let Some(sample) = server_pid.and_then(|pid| procstat::sample(pid).ok()) {
                    samples.server.push(sample);
                }
                if let Some(sample) = standin_pid.and_then(|pid| procstat::sample(pid).ok()) {
                    samples.standin.push(sample);
                }
                if let Ok(sample) = procstat::sample(self_pid) {
                    samples.simulator.push(sample);
                }
                if let Ok(sample) = procstat::sample_machine() {
                    samples.machine.push(sample);
                }
                samples
                    .live
                    .push((Instant::now(), live.load(Ordering::Relaxed)));
                let response = match metrics.as_ref().and_then(|m| m.try_clone()) {
                    Some(request) => request.send().await.ok(),
                    None => None,
                };
                if let Some(response) = response
                    && response.status().is_success()
                    && let Ok(text) = response.text().await
                {
                    samples.backlog.record(&text);
                    if let Some(h) = PromHistogram::parse(&text, SEND_LATENESS_METRIC) {
                        samples.send_lateness.push((Instant::now(), h));
                    }
                }
            }
            samples
        })
    };

    let clips = Arc::new(options.clips.clone());
    let mut tasks = Vec::with_capacity(options.calls as usize);
    for index in 0..options.calls {
        let start_at = run_start + start_offset(index, options.calls, options.ramp);
        let (steps, loop_from) = conversation_steps(&clips, index as usize, options.barge_in_every);
        let client = client.clone();
        let call = options.call.clone();
        let silence = Arc::clone(&silence);
        let live = Arc::clone(&live);
        let redial = options.redial;
        let call_length = options.call_length;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start_at)).await;
            let mut outcomes = Vec::new();
            // Bounded by the run's end: every call lasts at most until then.
            loop {
                let remaining = run_end.saturating_duration_since(Instant::now());
                if remaining < MIN_CALL {
                    break;
                }
                let plan = Arc::new(CallPlan {
                    steps: steps.clone(),
                    loop_from: Some(loop_from),
                    max_duration: call_length.map_or(remaining, |length| length.min(remaining)),
                });
                live.fetch_add(1, Ordering::Relaxed);
                let outcome =
                    run_call(&client, &call, plan, new_identity(), Arc::clone(&silence)).await;
                live.fetch_sub(1, Ordering::Relaxed);
                let pause = match &outcome {
                    Ok(_) => None,
                    Err(CallError::Twiml(TwimlError::Rejected { .. })) => {
                        Some(REDIAL_PAUSE_AFTER_BUSY)
                    }
                    // Do not hammer a server that fails calls.
                    Err(_) => Some(REDIAL_PAUSE_AFTER_ERROR),
                };
                outcomes.push(outcome);
                if !redial {
                    break;
                }
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
            }
            outcomes
        }));
    }

    let mut webhook = Histogram::default();
    let mut greeting = Histogram::default();
    let mut turn = Histogram::default();
    let mut barge = Histogram::default();
    let mut pacing = Histogram::default();
    let mut jitter = Histogram::default();
    let mut report = LoadReport {
        machine: Machine::detect(),
        load_average_before,
        calls_requested: options.calls,
        ramp_s: options.ramp.as_secs_f64(),
        duration_s: options.duration.as_secs_f64(),
        calls_placed: 0,
        calls_connected: 0,
        calls_sustained: 0,
        calls_closed_by_server: 0,
        ws_errors: 0,
        calls_refused: 0,
        setup_errors: BTreeMap::new(),
        peak_live_calls: 0,
        webhook: Summary::default(),
        greeting: Summary::default(),
        calls_without_greeting: 0,
        calls_with_repeated_greeting: 0,
        turn_latency: Summary::default(),
        utterances_without_reply: 0,
        barge_in_latency: Summary::default(),
        barge_ins_missed: 0,
        agent_audio_after_clear_ms: 0,
        pacing: Summary::default(),
        frames_sent: 0,
        frames_late: 0,
        frames_dropped: 0,
        agent_frame_jitter: Summary::default(),
        playback_underruns: 0,
        agent_audio_s: 0.0,
        protocol_errors: 0,
        protocol_error_samples: Vec::new(),
        callback_errors: 0,
        steady_window_s: 0.0,
        server: None,
        standin: None,
        simulator: None,
        machine_busy_percent: None,
        other_processes_percent: None,
        server_backlog: ServerBacklog::default(),
        server_send_lateness: None,
    };
    for task in tasks {
        let outcomes = match task.await {
            Ok(outcomes) => outcomes,
            Err(join) => {
                *report
                    .setup_errors
                    .entry(format!("call task failed: {join}"))
                    .or_default() += 1;
                continue;
            }
        };
        for outcome in outcomes {
            report.calls_placed += 1;
            let call = match outcome {
                Ok(outcome) => outcome.report,
                Err(CallError::Twiml(TwimlError::Rejected { .. })) => {
                    report.calls_refused += 1;
                    continue;
                }
                Err(error) => {
                    let reason: String = error.to_string().chars().take(200).collect();
                    *report.setup_errors.entry(reason).or_default() += 1;
                    continue;
                }
            };
            report.calls_connected += 1;
            match &call.ended_by {
                Ending::Stopped => report.calls_sustained += 1,
                Ending::ServerClosed => report.calls_closed_by_server += 1,
                Ending::SocketError(_) => report.ws_errors += 1,
                Ending::HungUpWithoutStop => {}
            }
            match call.greetings {
                0 => report.calls_without_greeting += 1,
                1 => {}
                _ => report.calls_with_repeated_greeting += 1,
            }
            if let Some(ms) = call.time_to_greeting_ms {
                greeting.record(Duration::from_secs_f64(ms / 1e3));
            }
            if let Some(ms) = call.webhook_ms {
                webhook.record(Duration::from_secs_f64(ms / 1e3));
            }
            turn.merge(&call.histograms.turn_latency);
            barge.merge(&call.histograms.barge_in_latency);
            pacing.merge(&call.histograms.pacing);
            jitter.merge(&call.histograms.agent_frame_jitter);
            report.utterances_without_reply += u64::from(call.utterances_without_reply);
            report.barge_ins_missed += u64::from(call.barge_ins_missed);
            report.agent_audio_after_clear_ms += call.agent_audio_after_clear_ms;
            report.frames_sent += call.frames_sent;
            report.frames_late += call.frames_late;
            report.frames_dropped += call.frames_dropped;
            report.playback_underruns += u64::from(call.playback_underruns);
            report.agent_audio_s += call.agent_audio_ms as f64 / 1e3;
            report.protocol_errors += u64::from(call.protocol_errors);
            report.callback_errors += u64::from(call.callback_errors);
            for sample in call.protocol_error_samples {
                if report.protocol_error_samples.len() < 10 {
                    report.protocol_error_samples.push(sample);
                }
            }
        }
    }
    report.machine = Machine::detect();
    report.webhook = webhook.summary();
    report.greeting = greeting.summary();
    report.turn_latency = turn.summary();
    report.barge_in_latency = barge.summary();
    report.pacing = pacing.summary();
    report.agent_frame_jitter = jitter.summary();

    let _ = stop_sampler.send(());
    let samples = sampler.await.unwrap_or_default();
    report.peak_live_calls = samples.live.iter().map(|(_, n)| *n).max().unwrap_or(0);
    report.server_backlog = samples.backlog;
    // The steady window: all calls started (plus 2 s to settle) until the end of the run.
    let settle = Duration::from_secs(2).min(options.duration / 4);
    let mut window = (ramp_end + settle, run_end);
    let in_window = |window: (Instant, Instant)| {
        samples
            .simulator
            .iter()
            .filter(|s| s.at >= window.0 && s.at <= window.1)
            .count()
    };
    if in_window(window) < 2 {
        // The calls ended before the steady window (e.g. the server hung up on them): report
        // over the whole run instead.
        window = (run_start, Instant::now());
    }
    report.steady_window_s = window.1.saturating_duration_since(window.0).as_secs_f64();
    let lateness_in_window: Vec<_> = taken_in(&samples.send_lateness, window).collect();
    if let (Some((_, first)), Some((_, last))) =
        (lateness_in_window.first(), lateness_in_window.last())
    {
        report.server_send_lateness = last
            .since(first)
            .map(|w| ServerSendLateness::from_window(&w));
    }
    let live_in_window = taken_in(&samples.live, window)
        .map(|(_, n)| *n)
        .min()
        .unwrap_or(report.calls_connected);
    let calls = live_in_window.max(1);
    report.server = options.server_pid.and_then(|pid| {
        usage(
            pid,
            &samples.server,
            baseline_server,
            window,
            calls,
            ticks_per_second,
        )
    });
    report.standin = options.standin_pid.and_then(|pid| {
        usage(
            pid,
            &samples.standin,
            baseline_standin,
            window,
            calls,
            ticks_per_second,
        )
    });
    report.simulator = usage(
        self_pid,
        &samples.simulator,
        baseline_self,
        window,
        calls,
        ticks_per_second,
    );
    let machine: Vec<_> = taken_in(&samples.machine, window).collect();
    if let (Some(first), Some(last)) = (machine.first(), machine.last()) {
        let seconds = last.0.saturating_duration_since(first.0).as_secs_f64();
        if let Some(busy_percent) =
            procstat::busy_percent(&first.1, &last.1, seconds, ticks_per_second)
        {
            report.machine_busy_percent = Some(busy_percent);
            let ours: f64 = [&report.server, &report.standin, &report.simulator]
                .into_iter()
                .flatten()
                .map(|u| u.cpu_percent)
                .sum();
            report.other_processes_percent = Some((busy_percent - ours).max(0.0));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::{FRAME_PERIOD, ServerBacklog, start_offset};
    use std::time::Duration;

    #[test]
    fn calls_start_on_frame_phases_spread_over_the_period_whatever_the_ramp() {
        // 500 calls over 10 s are exactly one frame period apart: without a phase of their own
        // they would all send their frames in the same instant.
        for (calls, ramp_s) in [(500, 10), (1_000, 10), (2_000, 10), (500, 8), (7, 1)] {
            let ramp = Duration::from_secs(ramp_s);
            let mut per_ms = [0u32; 20];
            let mut previous = Duration::ZERO;
            for index in 0..calls {
                let offset = start_offset(index, calls, ramp);
                assert!(offset < ramp + FRAME_PERIOD, "{calls} calls, call {index}");
                assert!(
                    index == 0 || offset + FRAME_PERIOD > previous,
                    "order roughly kept"
                );
                previous = offset;
                let phase_ms = (offset.as_micros() % FRAME_PERIOD.as_micros()) / 1_000;
                per_ms[phase_ms as usize] += 1;
            }
            // Every millisecond of the period gets close to its share (calls / 20).
            let share = f64::from(calls) / 20.0;
            let most = f64::from(*per_ms.iter().max().unwrap());
            assert!(
                most <= (share * 1.5).ceil() + 1.0,
                "{calls} over {ramp_s} s: {per_ms:?}"
            );
        }
    }

    #[test]
    fn backlog_keeps_the_largest_gauge_values_seen() {
        let mut backlog = ServerBacklog::default();
        backlog.record(
            "# HELP crmd_db_queue_depth CRM writes waiting.\n\
             # TYPE crmd_db_queue_depth gauge\n\
             crmd_db_queue_depth 12\n\
             crmd_db_queue_depth_total 99\n\
             crmd_recordings_pending_encode 3\n",
        );
        backlog.record("crmd_db_queue_depth 4\ncrmd_recordings_pending_encode 30\n");
        backlog.record("not metrics at all");
        assert_eq!(backlog.samples, 3);
        assert_eq!(backlog.db_queue_depth_max, Some(12));
        assert_eq!(backlog.recordings_pending_encode_max, Some(30));

        let mut without = ServerBacklog::default();
        without.record("crmd_calls_live 5\n");
        assert_eq!(
            (
                without.db_queue_depth_max,
                without.recordings_pending_encode_max
            ),
            (None, None),
            "a server without the gauges reports none"
        );
    }
}
