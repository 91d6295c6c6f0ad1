//! What a call needs from the rest of the server.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use speech::{SpeechError, SttClient, TtsClient};
use tokio::sync::broadcast;
use turn::TurnConfig;

use super::lateness::MediaLateness;
use super::report::CallEvent;
use crate::responder::{Responder, SentenceSplitter};
use crate::rest::TwilioRest;

/// Timings of the driver itself (the turn-taking timings are in [`TurnConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSettings {
    /// Agent audio kept queued at Twilio ahead of playback (60-100 ms): bounds how much a
    /// `clear` has to drop and how late a barge-in silences us.
    pub playout_lead: Duration,
    /// Agent audio per outbound `media` message (a multiple of 20 ms; 20 ms by default). Longer
    /// messages mean fewer socket writes; a `clear` still drops everything Twilio has queued.
    pub media_chunk: Duration,
    /// Agent audio written to the socket at once (100 ms by default): the messages due within
    /// it leave together, one write and one wake-up per burst; Twilio then holds at most
    /// `playout_lead + media_burst`, all dropped by a `clear`. Zero or 20 ms: every message on
    /// its own deadline.
    pub media_burst: Duration,
    /// WebSocket ping interval (keeps proxies from closing an idle socket; pongs are logged).
    pub keepalive_interval: Duration,
    /// Longest wait for the responder's first text; then the script's fallback line is said.
    pub responder_timeout: Duration,
    /// Conversation lines given to the responder as history.
    pub history_turns: usize,
    /// After our REST hang-up, how long to wait for Twilio's `stop` before closing the socket.
    pub hangup_grace: Duration,
    /// First delay before reopening STT after the speech client gave up; doubles up to
    /// `stt_reopen_max`.
    pub stt_reopen_initial: Duration,
    /// Cap of the STT reopen delay.
    pub stt_reopen_max: Duration,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            playout_lead: Duration::from_millis(80),
            media_chunk: Duration::from_millis(20),
            media_burst: Duration::from_millis(100),
            keepalive_interval: Duration::from_secs(20),
            responder_timeout: Duration::from_secs(5),
            history_turns: 12,
            hangup_grace: Duration::from_secs(5),
            stt_reopen_initial: Duration::from_millis(250),
            stt_reopen_max: Duration::from_secs(5),
        }
    }
}

/// Everything a call uses, shared by all calls (`Arc<CallDeps>`). Optional parts degrade
/// gracefully: no STT -> only DTMF is understood; no TTS -> turns fail quietly (the engine
/// does not loop); no CRM -> nothing is stored; no REST client -> we end calls by closing the
/// socket; no recordings directory -> calls are not recorded.
pub struct CallDeps {
    /// Decides what to say; its fixed lines become the engine's greeting/reprompt/goodbye/apology.
    pub responder: Arc<dyn Responder>,
    /// Google Speech-to-Text.
    pub stt: Option<SttClient>,
    /// Google Text-to-Speech (with the phrase cache the greeting plays from).
    pub tts: Option<TtsClient>,
    /// Queued CRM writes (stream start, transcript turns, call end).
    pub crm: Option<crm::CrmWriter>,
    /// CRM reads (the caller's contact at `start`).
    pub store: Option<crm::Store>,
    /// Twilio REST client for hanging up.
    pub twilio_rest: Option<TwilioRest>,
    /// Turn-taking timings; the texts are replaced by the responder's fixed lines.
    pub turn_config: TurnConfig,
    /// Live events for a console.
    pub events: Option<broadcast::Sender<CallEvent>>,
    /// Driver timings.
    pub settings: CallSettings,
    /// Where each call is recorded (stereo: caller left, agent right), spooled as
    /// `<CallSid>.wav` during the call; `None` = calls are not recorded.
    pub recordings_dir: Option<PathBuf>,
    /// What the spool becomes after the call: encoded to `<CallSid>.ogg` (the default) or kept.
    pub recording_format: crm::recording::RecordingFormat,
    /// Where every call adds how late it sent the agent audio it had to wait for (for
    /// `/metrics`); `None` = not measured.
    pub media_lateness: Option<Arc<MediaLateness>>,
}

impl fmt::Debug for CallDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallDeps")
            .field("responder", &self.responder)
            .field("stt", &self.stt.is_some())
            .field("tts", &self.tts.is_some())
            .field("crm", &self.crm.is_some())
            .field("store", &self.store.is_some())
            .field("twilio_rest", &self.twilio_rest)
            .field("turn_config", &self.turn_config)
            .field("events", &self.events.is_some())
            .field("settings", &self.settings)
            .field("recordings_dir", &self.recordings_dir)
            .field("recording_format", &self.recording_format)
            .field("media_lateness", &self.media_lateness.is_some())
            .finish()
    }
}

impl CallDeps {
    /// Dependencies with only a responder (no STT/TTS/CRM/REST, no recordings), default timings.
    pub fn new(responder: Arc<dyn Responder>) -> Self {
        CallDeps {
            responder,
            stt: None,
            tts: None,
            crm: None,
            store: None,
            twilio_rest: None,
            turn_config: TurnConfig::default(),
            events: None,
            settings: CallSettings::default(),
            recordings_dir: None,
            recording_format: crm::recording::RecordingFormat::default(),
            media_lateness: None,
        }
    }

    /// The engine configuration: [`CallDeps::turn_config`] with the responder's fixed lines.
    pub fn engine_config(&self) -> TurnConfig {
        let lines = self.responder.fixed_lines();
        let mut config = self.turn_config.clone();
        config.greeting_text = lines.greeting.clone();
        if !lines.reprompts.is_empty() {
            config.reprompt_texts = lines.reprompts.clone();
        }
        if !lines.goodbye.trim().is_empty() {
            config.goodbye_text = lines.goodbye.clone();
        }
        if !lines.apology.trim().is_empty() {
            config.apology_text = lines.apology.clone();
        }
        config
    }

    /// Synthesize the fixed lines into the TTS cache, pinned (never evicted by other phrases),
    /// so the greeting plays the instant a call starts (and reprompts/apology/goodbye need no
    /// network). Call once at startup; returns
    /// how many lines are cached. Without TTS, does nothing.
    pub async fn warm_tts_cache(&self) -> Result<usize, SpeechError> {
        let Some(tts) = &self.tts else {
            return Ok(0);
        };
        let lines = self.responder.fixed_lines();
        // Greeting, reprompts, goodbye and apology are synthesized whole by the engine; the
        // fallback line is spoken as a reply, which the engine synthesizes sentence by sentence.
        let mut texts: Vec<String> = vec![
            lines.greeting.clone(),
            lines.goodbye.clone(),
            lines.apology.clone(),
        ];
        texts.extend(lines.reprompts.iter().cloned());
        texts.extend(SentenceSplitter::split_all(&lines.fallback));
        let mut cached = 0;
        for text in texts.iter().filter(|t| !t.trim().is_empty()) {
            tts.synthesize_pinned(text).await?;
            cached += 1;
        }
        Ok(cached)
    }
}
