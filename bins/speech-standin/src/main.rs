//! speech-standin: Google Speech-to-Text / Text-to-Speech stand-in on plaintext gRPC.
//! Point crmd at it with `GOOGLE_SPEECH_ENDPOINT=http://ADDR GOOGLE_TTS_ENDPOINT=http://ADDR`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use speech_standin::{SegmenterConfig, StandinOptions, StandinStats, ToneVoice};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Local stand-in for Google Speech-to-Text and Text-to-Speech (h2c gRPC)"
)]
struct Args {
    /// Address to listen on (loopback recommended; the stand-in has no authentication).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Final transcripts, one per line (cycled per stream); a built-in list when absent.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Mean absolute amplitude (0..32768) of a voiced 20 ms window.
    #[arg(long, default_value_t = SegmenterConfig::default().voiced_threshold)]
    voiced_threshold: u32,
    /// Quiet after speech that ends an utterance, in milliseconds.
    #[arg(long, default_value_t = 300)]
    end_silence_ms: u64,
    /// Speech between interim results, in milliseconds.
    #[arg(long, default_value_t = 300)]
    partial_every_ms: u64,
    /// Synthetic voice speed in characters per second.
    #[arg(long, default_value_t = ToneVoice::default().chars_per_second)]
    chars_per_second: f32,
    /// Seconds of audio after which a recognition stream ends with OUT_OF_RANGE (Google: 305).
    #[arg(long, default_value_t = 305)]
    stream_limit_s: u64,
    /// Also serve an OpenAI-compatible Chat Completions stand-in here (for `RESPONDER=llm`:
    /// `LLM_BASE_URL=http://ADDR/v1 LLM_MODEL=standin`).
    #[arg(long)]
    llm_listen: Option<SocketAddr>,
    /// The Chat Completions stand-in's time to first token, in milliseconds.
    #[arg(long, default_value_t = 300)]
    llm_first_token_ms: u64,
    /// Log a line of counters this often (seconds; 0 = never).
    #[arg(long, default_value_t = 10)]
    stats_every_s: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut options = StandinOptions::default();
    if let Some(path) = &args.script {
        match speech_standin::load_transcripts(path) {
            Ok(lines) => options.transcripts = lines,
            Err(e) => {
                eprintln!("speech-standin: {e}");
                return ExitCode::from(2);
            }
        }
    }
    options.segmenter = SegmenterConfig {
        voiced_threshold: args.voiced_threshold,
        end_silence: Duration::from_millis(args.end_silence_ms),
        partial_every: Duration::from_millis(args.partial_every_ms),
        ..SegmenterConfig::default()
    };
    options.voice = ToneVoice {
        chars_per_second: args.chars_per_second,
    };
    options.stream_limit = Duration::from_secs(args.stream_limit_s);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("speech-standin: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let llm = args.llm_listen.map(|addr| {
        (
            addr,
            speech_standin::llm::LlmStandinOptions {
                first_token: Duration::from_millis(args.llm_first_token_ms),
                ..speech_standin::llm::LlmStandinOptions::default()
            },
        )
    });
    match runtime.block_on(run(args.listen, options, llm, args.stats_every_s)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("speech-standin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    listen: SocketAddr,
    options: StandinOptions,
    llm: Option<(SocketAddr, speech_standin::llm::LlmStandinOptions)>,
    stats_every_s: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some((addr, llm_options)) = llm {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for the LLM stand-in: {e}"))?;
        tracing::info!(
            "LLM stand-in listening: set RESPONDER=llm LLM_BASE_URL=http://{}/v1 LLM_MODEL=standin",
            listener.local_addr()?
        );
        let stats = Arc::default();
        tokio::spawn(async move {
            if let Err(e) = speech_standin::llm::serve_llm(listener, llm_options, stats).await {
                tracing::error!("the LLM stand-in stopped: {e}");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        "speech stand-in listening on http://{}: set GOOGLE_SPEECH_ENDPOINT and GOOGLE_TTS_ENDPOINT to it ({} scripted transcripts)",
        listener.local_addr()?,
        options.transcripts.len()
    );
    let stats = Arc::new(StandinStats::default());
    if stats_every_s > 0 {
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(stats_every_s));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                tracing::info!("{}", stats.summary());
            }
        });
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    speech_standin::serve_with_shutdown(listener, options, stats, shutdown).await?;
    Ok(())
}
