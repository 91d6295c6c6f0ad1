//! The offline fallback: what a caller hears when crmd cannot run a real conversation (no Google
//! speech credentials). Never silence: after Twilio's `start`, a short pre-recorded Hebrew +
//! English apology (mu-law 8 kHz, embedded in the binary) is played in paced 20 ms frames, a mark
//! follows it, and once the mark is echoed (or the clip's duration plus a margin has passed,
//! since some peers never echo) the socket is closed, which ends `<Connect>` cleanly.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;
use twilio_stream::media::{InboundMessage, mark_json, media_json, parse_inbound};

use crate::media::{MediaStreamContext, MediaStreamHandler};

/// The embedded clip: raw G.711 mu-law, 8000 Hz, mono, no header. Regenerate with
/// `crates/edge/assets/make-offline-clip.sh` (espeak-ng + sox).
pub const OFFLINE_FALLBACK_CLIP: &[u8] = include_bytes!("../assets/offline-fallback.ulaw");

/// Name of the mark sent after the clip.
pub const OFFLINE_FALLBACK_MARK: &str = "offline-fallback-end";

/// Timing of the fallback playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackPacing {
    /// Interval between frames after the lead (20 ms: real time).
    pub frame_interval: Duration,
    /// Frames sent at once before pacing starts, so Twilio has a small buffer.
    pub lead_frames: u32,
    /// How long to wait for `start` before giving up on the socket.
    pub start_timeout: Duration,
    /// Extra wait for the mark echo beyond the clip's expected end.
    pub mark_margin: Duration,
}

impl Default for FallbackPacing {
    fn default() -> Self {
        Self {
            frame_interval: Duration::from_millis(u64::from(mulaw::FRAME_MS)),
            lead_frames: 4,
            start_timeout: Duration::from_secs(10),
            mark_margin: Duration::from_secs(2),
        }
    }
}

/// How a fallback session ended (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackOutcome {
    /// The clip played and the mark came back.
    MarkEchoed,
    /// The clip was sent; no echo before the deadline.
    MarkTimedOut,
    /// The caller hung up (stop or close) before the end.
    CallerHungUp,
    /// No `start` arrived in time, or the socket failed.
    NoStart,
}

/// [`MediaStreamHandler`] that plays [`OFFLINE_FALLBACK_CLIP`] and hangs up.
#[derive(Debug, Clone)]
pub struct OfflineFallbackHandler {
    clip: &'static [u8],
    pacing: FallbackPacing,
}

impl Default for OfflineFallbackHandler {
    fn default() -> Self {
        Self::new(OFFLINE_FALLBACK_CLIP, FallbackPacing::default())
    }
}

impl OfflineFallbackHandler {
    /// A handler playing `clip` (headerless mu-law 8 kHz) with `pacing`.
    pub fn new(clip: &'static [u8], pacing: FallbackPacing) -> Self {
        Self { clip, pacing }
    }

    /// Number of 20 ms frames the clip is sent as (the last one padded with silence).
    pub fn frame_count(&self) -> usize {
        self.clip.len().div_ceil(mulaw::FRAME_BYTES)
    }

    /// Runs one session to its end.
    pub async fn run(&self, socket: WebSocket, ctx: MediaStreamContext) -> FallbackOutcome {
        let span = tracing::info_span!(
            "media_stream",
            handler = "offline_fallback",
            request_id = %ctx.request_id,
            call_sid = tracing::field::Empty,
            stream_sid = tracing::field::Empty,
        );
        let outcome = play_and_hang_up(self.clip, self.pacing, socket, &span)
            .instrument(span.clone())
            .await;
        span.in_scope(|| tracing::info!(?outcome, "offline fallback finished; socket closed"));
        outcome
    }
}

impl MediaStreamHandler for OfflineFallbackHandler {
    fn handle(&self, socket: WebSocket, ctx: MediaStreamContext) -> BoxFuture<'static, ()> {
        let handler = self.clone();
        Box::pin(async move {
            handler.run(socket, ctx).await;
        })
    }
}

enum Inbound {
    Start {
        stream_sid: String,
        call_sid: String,
    },
    MarkEcho(String),
    HungUp,
    Other,
}

fn classify(message: Option<Result<Message, axum::Error>>) -> Inbound {
    match message {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Inbound::HungUp,
        Some(Ok(Message::Text(text))) => match parse_inbound(text.as_str()) {
            Ok(InboundMessage::Start(start)) => Inbound::Start {
                stream_sid: start.stream_sid,
                call_sid: start.call_sid,
            },
            Ok(InboundMessage::Mark(mark)) => Inbound::MarkEcho(mark.name),
            Ok(InboundMessage::Stop(_)) => Inbound::HungUp,
            Ok(_) => Inbound::Other,
            Err(e) => {
                tracing::warn!("ignoring an unreadable Media Streams message: {e}");
                Inbound::Other
            }
        },
        Some(Ok(_)) => Inbound::Other,
    }
}

async fn play_and_hang_up(
    clip: &'static [u8],
    pacing: FallbackPacing,
    socket: WebSocket,
    span: &tracing::Span,
) -> FallbackOutcome {
    let (mut sink, mut stream) = socket.split();

    // 1. Wait for `start` (connected comes first; anything else before it is ignored).
    let start_deadline = Instant::now() + pacing.start_timeout;
    let stream_sid = loop {
        match tokio::time::timeout_at(start_deadline, stream.next()).await {
            Err(_) => {
                tracing::warn!(
                    "no start message within {:?}; closing",
                    pacing.start_timeout
                );
                let _ = sink.send(Message::Close(None)).await;
                return FallbackOutcome::NoStart;
            }
            Ok(message) => match classify(message) {
                Inbound::Start {
                    stream_sid,
                    call_sid,
                } => {
                    span.record("call_sid", tracing::field::display(&call_sid));
                    span.record("stream_sid", tracing::field::display(&stream_sid));
                    tracing::info!("WS_START (offline fallback: no speech credentials)");
                    break stream_sid;
                }
                Inbound::HungUp => return FallbackOutcome::NoStart,
                Inbound::MarkEcho(_) | Inbound::Other => {}
            },
        }
    };

    // 2. Play the clip in 20 ms frames: `lead_frames` at once, then one per interval on a fixed
    //    schedule (frame k at t0 + (k - lead) * interval, so the pacing never drifts).
    let mut framer = mulaw::Framer::new();
    framer.push(clip);
    let mut frames: Vec<[u8; mulaw::FRAME_BYTES]> =
        std::iter::from_fn(|| framer.pop_frame()).collect();
    frames.extend(framer.flush());
    let audio_ms = mulaw::duration_ms(frames.len() * mulaw::FRAME_BYTES);
    tracing::info!(
        TTS_LEN_ms = audio_ms,
        frames = frames.len(),
        "playing the offline fallback message"
    );
    let t0 = Instant::now();
    let lead = pacing.lead_frames as usize;
    let mut sent_bytes = 0usize;
    for (k, frame) in frames.iter().enumerate() {
        if k >= lead {
            let due = t0 + pacing.frame_interval * u32::try_from(k - lead).unwrap_or(u32::MAX);
            // Read (and drop) inbound messages while waiting, so a hang-up stops playback at once.
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => break,
                    message = stream.next() => {
                        if let Inbound::HungUp = classify(message) {
                            tracing::info!(frames_sent = k, "caller hung up during the fallback message");
                            return FallbackOutcome::CallerHungUp;
                        }
                    }
                }
            }
        }
        if sink
            .send(Message::text(media_json(&stream_sid, frame)))
            .await
            .is_err()
        {
            return FallbackOutcome::CallerHungUp;
        }
        sent_bytes += frame.len();
    }
    tracing::info!(
        MEDIA_TX = frames.len(),
        bytes = sent_bytes,
        "fallback audio sent"
    );

    // 3. Mark, then wait for its echo, bounded by the clip's expected end plus a margin.
    if sink
        .send(Message::text(mark_json(&stream_sid, OFFLINE_FALLBACK_MARK)))
        .await
        .is_err()
    {
        return FallbackOutcome::CallerHungUp;
    }
    let playback_end = t0 + pacing.frame_interval * u32::try_from(frames.len()).unwrap_or(u32::MAX);
    let mark_deadline = playback_end + pacing.mark_margin;
    let outcome = loop {
        match tokio::time::timeout_at(mark_deadline, stream.next()).await {
            Err(_) => {
                tracing::warn!(
                    "mark {OFFLINE_FALLBACK_MARK} not echoed in time; hanging up anyway"
                );
                break FallbackOutcome::MarkTimedOut;
            }
            Ok(message) => match classify(message) {
                Inbound::MarkEcho(name) if name == OFFLINE_FALLBACK_MARK => {
                    break FallbackOutcome::MarkEchoed;
                }
                Inbound::HungUp => return FallbackOutcome::CallerHungUp,
                _ => {}
            },
        }
    };

    // 4. Closing the socket ends <Connect>; Twilio then requests the action URL.
    let _ = sink.send(Message::Close(None)).await;
    outcome
}
