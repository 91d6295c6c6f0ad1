//! Call recordings: caller on the left channel, agent on the right, placed on Twilio's media
//! timestamps, encoded as Ogg Opus by `mulaw::ogg::StereoCallRecorder` and written to a file as
//! the call goes (memory stays bounded by the recorder's skew window, not the call length).
//!
//! Two ways to use it:
//! - [`CallRecorder`]: synchronous; the caller owns it and decides where the encoding runs.
//! - [`RecordingTask`]: the recorder on a blocking thread fed by a bounded queue, so the audio
//!   loop only does a `try_send`. When the encoder falls behind, chunks are dropped and counted
//!   (a gap in the recording) rather than delaying the call's audio.
//!
//! Files are written as `<dir>/<CallSid>.ogg.part` and renamed to `<CallSid>.ogg` by `finish`,
//! so a finished name always means a complete Ogg stream; a crash leaves a playable `.part`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use mulaw::ogg::StereoCallRecorder;
use tokio::sync::{mpsc, oneshot};

use crate::CrmError;
use crate::model::NewRecording;

/// Codec name stored with recordings.
pub const RECORDING_CODEC: &str = "opus";

/// A recording being written.
pub struct CallRecorder {
    call_sid: String,
    part_path: PathBuf,
    final_path: PathBuf,
    recorder: StereoCallRecorder<BufWriter<File>>,
}

impl std::fmt::Debug for CallRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecorder")
            .field("call_sid", &self.call_sid)
            .field("path", &self.final_path)
            .field("recorder", &self.recorder)
            .finish()
    }
}

impl CallRecorder {
    /// Starts `<dir>/<call_sid>.ogg.part` (creating `dir`). The call sid must be a Twilio-style
    /// id (letters, digits, `_`, `-`), which also keeps the path inside `dir`.
    pub fn create(dir: &Path, call_sid: &str) -> Result<CallRecorder, CrmError> {
        let valid = !call_sid.is_empty()
            && call_sid.len() <= 64
            && call_sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(CrmError::invalid(
                "call_sid",
                "expected 1 to 64 letters, digits, `_` or `-`",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|source| CrmError::RecordingIo {
            path: dir.display().to_string(),
            source,
        })?;
        let final_path = dir.join(format!("{call_sid}.ogg"));
        let part_path = dir.join(format!("{call_sid}.ogg.part"));
        let file = File::create(&part_path).map_err(|source| CrmError::RecordingIo {
            path: part_path.display().to_string(),
            source,
        })?;
        let recorder = StereoCallRecorder::new(BufWriter::new(file)).map_err(encode_error)?;
        Ok(CallRecorder {
            call_sid: call_sid.to_owned(),
            part_path,
            final_path,
            recorder,
        })
    }

    /// Adds caller audio (8 kHz mu-law) received `timestamp_ms` after the stream started.
    pub fn push_caller(&mut self, timestamp_ms: u64, mulaw: &[u8]) -> Result<(), CrmError> {
        self.recorder
            .push_caller(timestamp_ms, mulaw)
            .map_err(encode_error)
    }

    /// Adds agent audio (8 kHz mu-law) that started playing `timestamp_ms` after the stream started.
    pub fn push_agent(&mut self, timestamp_ms: u64, mulaw: &[u8]) -> Result<(), CrmError> {
        self.recorder
            .push_agent(timestamp_ms, mulaw)
            .map_err(encode_error)
    }

    /// Length recorded so far.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.recorder.duration_ms()
    }

    /// Where the finished file will be.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Finishes the Ogg stream, syncs and renames the file, and describes it for
    /// [`crate::Store::attach_recording`] (or [`crate::WriteOp::Recording`]).
    pub fn finish(self, at_ms: i64) -> Result<NewRecording, CrmError> {
        let duration_ms = self.recorder.duration_ms();
        let io_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| CrmError::RecordingIo { path, source }
        };
        let mut sink = self.recorder.finish().map_err(encode_error)?;
        sink.flush().map_err(io_error(&self.part_path))?;
        let file = sink
            .into_inner()
            .map_err(|e| io_error(&self.part_path)(e.into_error()))?;
        file.sync_all().map_err(io_error(&self.part_path))?;
        let size = file.metadata().map_err(io_error(&self.part_path))?.len();
        drop(file);
        std::fs::rename(&self.part_path, &self.final_path).map_err(io_error(&self.final_path))?;
        Ok(NewRecording {
            call_sid: self.call_sid,
            path: self.final_path.display().to_string(),
            codec: RECORDING_CODEC.to_owned(),
            duration_ms: i64::try_from(duration_ms).ok(),
            size_bytes: i64::try_from(size).ok(),
            at_ms,
        })
    }
}

fn encode_error(err: mulaw::Error) -> CrmError {
    CrmError::RecordingEncode(err.to_string())
}

/// One instruction for the recording thread.
#[derive(Debug)]
enum Command {
    Caller(u64, Vec<u8>),
    Agent(u64, Vec<u8>),
    Finish(i64, oneshot::Sender<Result<NewRecording, CrmError>>),
}

/// Counters of a [`RecordingTask`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingStats {
    /// Chunks dropped because the encoder was behind (each is a gap in the file).
    pub dropped_chunks: u64,
}

/// A [`CallRecorder`] running on a blocking thread, fed through a bounded queue. Dropping the
/// task without [`RecordingTask::finish`] still finishes the file (it is just not reported).
#[derive(Debug)]
pub struct RecordingTask {
    tx: mpsc::Sender<Command>,
    stats: RecordingStats,
    call_sid: String,
}

impl RecordingTask {
    /// Creates the file and starts the recording thread with room for `queue_chunks` chunks
    /// (one 20 ms media frame is one chunk; 500 = 10 s of slack). Needs a tokio runtime.
    pub fn start(
        dir: &Path,
        call_sid: &str,
        queue_chunks: usize,
    ) -> Result<RecordingTask, CrmError> {
        let recorder = CallRecorder::create(dir, call_sid)?;
        let (tx, rx) = mpsc::channel::<Command>(queue_chunks.max(1));
        tokio::task::spawn_blocking(move || run_recording(recorder, rx));
        Ok(RecordingTask {
            tx,
            stats: RecordingStats::default(),
            call_sid: call_sid.to_owned(),
        })
    }

    /// Queues caller audio without waiting; a full queue drops the chunk (counted).
    pub fn push_caller(&mut self, timestamp_ms: u64, mulaw: &[u8]) {
        self.push(Command::Caller(timestamp_ms, mulaw.to_vec()));
    }

    /// Queues agent audio without waiting; a full queue drops the chunk (counted).
    pub fn push_agent(&mut self, timestamp_ms: u64, mulaw: &[u8]) {
        self.push(Command::Agent(timestamp_ms, mulaw.to_vec()));
    }

    fn push(&mut self, command: Command) {
        if self.tx.try_send(command).is_err() {
            self.stats.dropped_chunks += 1;
            if self.stats.dropped_chunks.is_power_of_two() {
                tracing::warn!(call_sid = %self.call_sid, dropped = self.stats.dropped_chunks,
                    "call recording is behind; audio chunks dropped from the recording");
            }
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> RecordingStats {
        self.stats
    }

    /// Waits for the encoder to drain the queue, finishes the file and describes it.
    pub async fn finish(self, at_ms: i64) -> Result<NewRecording, CrmError> {
        let (reply, answer) = oneshot::channel();
        let gone = || CrmError::RecordingEncode("recording thread ended unexpectedly".to_owned());
        self.tx
            .send(Command::Finish(at_ms, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn run_recording(mut recorder: CallRecorder, mut rx: mpsc::Receiver<Command>) {
    let mut failure: Option<CrmError> = None;
    while let Some(command) = rx.blocking_recv() {
        let pushed = match command {
            // After a failure the rest of the audio is ignored; `finish` reports the failure.
            Command::Caller(..) | Command::Agent(..) if failure.is_some() => Ok(()),
            Command::Caller(ts, audio) => recorder.push_caller(ts, &audio),
            Command::Agent(ts, audio) => recorder.push_agent(ts, &audio),
            Command::Finish(at_ms, reply) => {
                let finished = recorder.finish(at_ms);
                let _ = reply.send(match failure {
                    Some(e) => Err(e),
                    None => finished,
                });
                return;
            }
        };
        if let Err(e) = pushed {
            tracing::error!(call_sid = %recorder.call_sid, error = %e, "call recording failed; rest of the call not recorded");
            failure = Some(e);
        }
    }
    // Every handle is gone without `finish`: close the file properly anyway.
    let call_sid = recorder.call_sid.clone();
    if let Err(e) = recorder.finish(0) {
        tracing::error!(call_sid = %call_sid, error = %e, "could not finish an abandoned call recording");
    }
}
