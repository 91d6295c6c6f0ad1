//! callsim: `call` places one simulated Twilio call; `load` runs many at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use callsim::audio::{CallerClip, silence_payload_base64};
use callsim::call::{CallOptions, Target, call_plan, new_identity, run_call};
use callsim::load::{LoadOptions, LoadReport, run_load};
use callsim::session::CallReport;
use callsim::steps::{default_call_steps, load_steps};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Twilio Media Streams simulator and load generator (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Place one call and report how it went.
    Call(CallArgs),
    /// Run many concurrent calls and report latency, jitter and the server's CPU and memory.
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// The server, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Twilio auth token: sign the webhooks with it (the server's TWILIO_AUTH_TOKEN).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// The server's PUBLIC_BASE_URL, if it has one (webhooks are signed for it).
    #[arg(long)]
    public_base_url: Option<String>,
    /// Caller audio: a WAV (16-bit PCM or mu-law, 8/16/24/48 kHz); tones are generated when absent.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Text whose speech-like tone audio the caller says when no --audio is given.
    #[arg(long, default_value = "What are your opening hours?")]
    tone_text: String,
    /// Do not send the stream status callbacks and the <Connect action> request.
    #[arg(long)]
    no_callbacks: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CallArgs {
    #[command(flatten)]
    common: Common,
    /// Steps file (TOML: say / say_text / wait_ms / listen_ms / dtmf / interrupt_after_ms /
    /// hangup_without_stop); without it: listen, say, listen, say, listen.
    #[arg(long, alias = "steps")]
    script: Option<PathBuf>,
    /// Write the agent's audio, as the caller heard it, to this WAV (8 kHz mu-law).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent calls.
    #[arg(long, default_value_t = 50)]
    calls: u32,
    /// Seconds over which the calls start.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// Seconds all calls then run together.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// The server's pid (CPU and RSS from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// The speech stand-in's pid (its CPU and RSS, reported separately).
    #[arg(long)]
    standin_pid: Option<u32>,
    /// Every this many turns the caller barges in over the reply (0: never).
    #[arg(long, default_value_t = 3)]
    barge_in_every: u32,
    /// Place a new call when one ends early (e.g. the server hangs up), keeping --calls live.
    #[arg(long)]
    redial: bool,
    /// Each call hangs up after this many seconds (with --redial a new one takes its place), so
    /// calls end and start all through the run. Default: calls last until the run ends.
    #[arg(long)]
    call_seconds: Option<f64>,
    /// The server's CRMD_API_TOKEN: with it, its `/metrics` backlogs (CRM writes queued,
    /// recordings waiting for encoding) are sampled into the report.
    #[arg(long, env = "CRMD_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
}

fn common_options(common: &Common) -> Result<(CallOptions, Vec<Arc<CallerClip>>), String> {
    let target = Target::parse(&common.url).map_err(|e| e.to_string())?;
    let mut options = CallOptions::new(target);
    options.auth_token = common.auth_token.clone().filter(|t| !t.is_empty());
    options.public_base_url = common.public_base_url.clone();
    options.callbacks = !common.no_callbacks;
    let clips = match &common.audio {
        Some(path) => vec![Arc::new(
            CallerClip::from_wav_file(path).map_err(|e| e.to_string())?,
        )],
        None => vec![
            Arc::new(CallerClip::tone(&common.tone_text)),
            Arc::new(CallerClip::tone("Can you call me back tomorrow morning?")),
            Arc::new(CallerClip::tone("Thanks, that is all I needed.")),
        ],
    };
    Ok((options, clips))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("callsim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Call(args) => runtime.block_on(call(args)),
        Command::Load(args) => runtime.block_on(load(args)),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("callsim: {message}");
            ExitCode::from(2)
        }
    }
}

async fn call(args: CallArgs) -> Result<ExitCode, String> {
    let (mut options, clips) = common_options(&args.common)?;
    options.record_agent_audio = args.out.is_some();
    let steps = match &args.script {
        Some(path) => load_steps(path).map_err(|e| e.to_string())?,
        None => default_call_steps(&clips[0]),
    };
    let client = callsim::call::http_client();
    let outcome = run_call(
        &client,
        &options,
        Arc::new(call_plan(steps)),
        new_identity(),
        silence_payload_base64().into(),
    )
    .await
    .map_err(|e| e.to_string())?;
    if let (Some(path), Some(audio)) = (&args.out, &outcome.agent_audio) {
        std::fs::write(
            path,
            mulaw::wav::write_mulaw(audio, mulaw::SAMPLE_RATE_HZ, 1),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let report = &outcome.report;
    if args.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).map_err(|e| e.to_string())?
        );
    } else {
        print_call_report(report);
        if let Some(path) = &args.out {
            println!("agent audio written to {}", path.display());
        }
    }
    Ok(if report.protocol_errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

fn print_call_report(r: &CallReport) {
    println!(
        "call {} (stream {}): ended by {:?} after {:.1} s",
        r.call_sid,
        r.stream_sid,
        r.ended_by,
        r.duration_ms / 1e3
    );
    println!(
        "  webhook {}, WebSocket handshake {}",
        show(r.webhook_ms),
        show(r.ws_connect_ms)
    );
    println!(
        "  time to greeting      {}   (greetings before the caller spoke: {})",
        show(r.time_to_greeting_ms),
        r.greetings
    );
    println!(
        "  turn latency          {}   {:?}",
        r.turn_latency, r.turn_latencies_ms
    );
    println!("  utterances w/o reply  {}", r.utterances_without_reply);
    println!(
        "  barge-in -> clear     {}   missed {}",
        r.barge_in_latency, r.barge_ins_missed
    );
    println!(
        "  agent audio after clear {} ms; cleared from queue {} ms",
        r.agent_audio_after_clear_ms, r.agent_audio_cleared_ms
    );
    println!(
        "  agent audio {} ms in {} messages, {} replies, {} playback underruns, frame jitter {}",
        r.agent_audio_ms,
        r.agent_media_messages,
        r.agent_replies,
        r.playback_underruns,
        r.agent_frame_jitter
    );
    println!(
        "  marks {} received / {} echoed, clears {}, dtmf sent {}",
        r.marks_received, r.marks_echoed, r.clears, r.dtmf_sent
    );
    println!(
        "  caller frames {} sent, {} late, {} dropped; pacing {}",
        r.frames_sent, r.frames_late, r.frames_dropped, r.pacing
    );
    println!("  protocol errors {}", r.protocol_errors);
    for sample in &r.protocol_error_samples {
        println!("    - {sample}");
    }
    if r.callback_errors > 0 {
        println!("  status callback / action errors {}", r.callback_errors);
    }
}

async fn load(args: LoadArgs) -> Result<ExitCode, String> {
    if args.calls == 0 {
        return Err("--calls must be at least 1".to_owned());
    }
    let seconds = |name: &str, value: f64| {
        if value.is_finite() && (0.0..=3600.0).contains(&value) {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(format!("--{name} must be between 0 and 3600 seconds"))
        }
    };
    let (call, clips) = common_options(&args.common)?;
    let options = LoadOptions {
        call,
        calls: args.calls,
        ramp: seconds("ramp", args.ramp)?,
        duration: seconds("duration", args.duration)?,
        server_pid: args.pid,
        standin_pid: args.standin_pid,
        clips,
        barge_in_every: args.barge_in_every,
        sample_every: Duration::from_secs(1),
        redial: args.redial,
        call_length: args
            .call_seconds
            .map(|s| seconds("call-seconds", s))
            .transpose()?,
        api_token: args.api_token.filter(|t| !t.is_empty()),
    };
    let report = run_load(options).await;
    if args.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_load_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_load_report(r: &LoadReport) {
    println!(
        "machine: {} CPUs, {} (kernel {})",
        r.machine.cpus, r.machine.cpu_model, r.machine.kernel
    );
    println!(
        "calls: {} requested over {:.0} s ramp + {:.0} s; {} connected, {} sustained, {} closed by server, {} WebSocket errors, peak live {}",
        r.calls_requested,
        r.ramp_s,
        r.duration_s,
        r.calls_connected,
        r.calls_sustained,
        r.calls_closed_by_server,
        r.ws_errors,
        r.peak_live_calls
    );
    if r.calls_refused > 0 {
        println!(
            "  refused by the server (busy, at capacity): {}",
            r.calls_refused
        );
    }
    for (reason, count) in &r.setup_errors {
        println!("  setup failed x{count}: {reason}");
    }
    println!(
        "greeting              {}  (no greeting {}, repeated {})",
        r.greeting, r.calls_without_greeting, r.calls_with_repeated_greeting
    );
    println!(
        "turn latency          {}  (utterances without reply {})",
        r.turn_latency, r.utterances_without_reply
    );
    println!(
        "barge-in -> clear     {}  (missed {}; agent audio after clear {} ms)",
        r.barge_in_latency, r.barge_ins_missed, r.agent_audio_after_clear_ms
    );
    println!(
        "caller frame pacing   {}  ({} frames, {} late > 20 ms, {} dropped)",
        r.pacing, r.frames_sent, r.frames_late, r.frames_dropped
    );
    println!(
        "agent frame jitter    {}  ({} playback underruns, {:.0} s agent audio)",
        r.agent_frame_jitter, r.playback_underruns, r.agent_audio_s
    );
    if let Some(l) = &r.server_send_lateness {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "server send lateness  p50 {} / p99 {} / mean {} ms over {} paced writes (the server's own share, from its /metrics)",
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.mean_ms),
            l.sends
        );
    }
    println!(
        "protocol errors {}, callback errors {}",
        r.protocol_errors, r.callback_errors
    );
    for sample in &r.protocol_error_samples {
        println!("  - {sample}");
    }
    let usage = |name: &str, u: &Option<callsim::load::ProcessUsage>| match u {
        Some(u) => println!(
            "{name:<10} pid {}: CPU {:.1} % of a core ({:.4} %/call), RSS {} -> {} KiB ({:.1} KiB/call)",
            u.pid,
            u.cpu_percent,
            u.cpu_percent_per_call,
            u.rss_baseline_kib,
            u.rss_peak_kib,
            u.rss_per_call_kib
        ),
        None => println!("{name:<10} (not sampled)"),
    };
    println!("over the steady window of {:.1} s:", r.steady_window_s);
    if let (Some(busy), Some(other)) = (r.machine_busy_percent, r.other_processes_percent) {
        println!(
            "machine    busy {busy:.1} % of a core ({} cores), of which other processes {other:.1} %",
            r.machine.cpus
        );
    }
    usage("server", &r.server);
    usage("stand-in", &r.standin);
    usage("simulator", &r.simulator);
}
