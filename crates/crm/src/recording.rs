//! Call recordings: caller on the left channel, agent on the right, placed on Twilio's media
//! timestamps.
//!
//! A live call only spools: [`CallRecorder`] writes the two sides as a stereo 8 kHz mu-law
//! WAV (`mulaw::stereo::StereoWavRecorder`, no encoding, 16 KB per second of call) into
//! `<dir>/<CallSid>.wav.part`, renamed to `<CallSid>.wav` when the call ends. The WAV is then
//! encoded to Ogg Opus (about a fifth of the size) after the call, off the live path:
//! [`encode_spool`] writes `<CallSid>.ogg` beside it, byte for byte what encoding live would
//! have written. So a live call holds no Opus encoder (48.5 KiB each), a CPU shortage delays
//! encoding instead of dropping recorded audio, and a crash leaves a playable WAV.
//!
//! Two ways to use it:
//! - [`CallRecorder`] and [`encode_spool`]: synchronous; the caller decides where they run.
//! - [`RecordingTask`]: the recorder handed to a [`RecordingPool`], a fixed set of spool
//!   threads (one per core by default) each owning many calls' recorders. A call's chunks
//!   always go to the same worker, in order, in batches of [`RECORDING_BATCH_CHUNKS`]; the
//!   audio loop only copies the frame and, once per batch, does a non-blocking send.
//!   Each call and each worker has a bounded backlog: when the writer falls behind, chunks
//!   are dropped and counted (a gap in the recording) rather than delaying the call's audio
//!   or growing memory. A call costs no thread of its own, so 5,000 calls record on 2 threads.
//!   The pool's encoder threads ([`RecordingPool::encode_later`]) run at a lower priority
//!   ([`ENCODER_THREAD_NICE`]) so live calls always come first; their backlog is files on
//!   disk, never memory, and is never dropped.
//!
//! A finished name always means a complete file: `.wav.part` and `.ogg.part` are renamed only
//! once written and synced. While a call records, its process holds an exclusive lock on the
//! `.wav.part` (the kernel drops it when the process dies), so [`recover_cut_spools`] can tell
//! the spool of a call cut by a crash from one still being written, and finish it. The spool is deleted only after the store references the Ogg
//! ([`crate::WriteOp::RecordingEncoded`]), so a recording is never unreferenced on disk.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use mulaw::stereo::StereoWavRecorder;
use tokio::sync::oneshot;

use crate::CrmError;
use crate::model::NewRecording;
use crate::store::check_sid;

/// How far one side of a call may run ahead of the other in a recording before the lagging
/// side is written as silence. The agent's side only has audio while the agent speaks, so the
/// caller's samples wait this long for it. The call driver pushes agent audio as it plays,
/// within a few tens of milliseconds of the caller's frames, so 1 s is ample.
pub const RECORDING_MAX_SKEW_MS: u64 = 1_000;

/// What a finished call's recording is kept as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RecordingFormat {
    /// Ogg Opus, encoded after the call from the spool (about 5 KB per second of call; costs
    /// about 1.1-1.3 ms of CPU per second of call on the encoder threads).
    #[default]
    Opus,
    /// The spool itself: stereo mu-law WAV, the call's audio exactly as it crossed the line
    /// (16 KB per second of call; no encoding CPU).
    Wav,
}

impl RecordingFormat {
    /// Parses `opus` or `wav` (ASCII case-insensitive).
    #[must_use]
    pub fn parse(value: &str) -> Option<RecordingFormat> {
        match value.trim().to_ascii_lowercase().as_str() {
            "opus" => Some(RecordingFormat::Opus),
            "wav" => Some(RecordingFormat::Wav),
            _ => None,
        }
    }

    /// `opus` or `wav`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingFormat::Opus => "opus",
            RecordingFormat::Wav => "wav",
        }
    }
}

/// Codec name stored with encoded recordings (Ogg Opus).
pub const RECORDING_CODEC: &str = "opus";
/// Codec name stored with a spooled recording not yet encoded (stereo mu-law WAV).
pub const RECORDING_SPOOL_CODEC: &str = "pcm_mulaw";
/// Bytes of the spool's header before its audio (RIFF, `fmt ` with `cbSize`, `fact`, `data`).
const SPOOL_HEADER_BYTES: u64 = 58;
/// Spool bytes per millisecond of call (8 kHz, two sides, one byte per sample).
const SPOOL_BYTES_PER_MS: u64 = 16;

/// A recording being spooled.
pub struct CallRecorder {
    call_sid: String,
    part_path: PathBuf,
    final_path: PathBuf,
    /// Writes straight to the file: the spool hands it whole 20 ms frames, which the page
    /// cache absorbs; a `BufWriter` would only add 8 KB per recorded call.
    recorder: StereoWavRecorder<File>,
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

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CrmError + use<> {
    let path = path.display().to_string();
    move |source| CrmError::RecordingIo { path, source }
}

/// Syncs `file`, renames `part` to `final_path` and returns the file's size.
fn seal(file: File, part: &Path, final_path: &Path) -> Result<u64, CrmError> {
    file.sync_all().map_err(io_error(part))?;
    let size = file.metadata().map_err(io_error(part))?.len();
    drop(file);
    std::fs::rename(part, final_path).map_err(io_error(final_path))?;
    Ok(size)
}

impl CallRecorder {
    /// Starts `<dir>/<call_sid>.wav.part` (creating `dir`). The call sid must be a Twilio-style
    /// id (letters, digits, `_`, `-`), which also keeps the path inside `dir`.
    pub fn create(dir: &Path, call_sid: &str) -> Result<CallRecorder, CrmError> {
        // A Twilio-style id also keeps the path built from it inside `dir`.
        check_sid("call_sid", call_sid)?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let final_path = dir.join(format!("{call_sid}.wav"));
        let part_path = dir.join(format!("{call_sid}.wav.part"));
        // Locked before it is emptied: a `.part` locked by a live process is that process's
        // recording of the same call (never ours to truncate).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)
            .map_err(io_error(&part_path))?;
        if !try_lock_spool(&file, &part_path)? {
            return Err(CrmError::RecordingIo {
                path: part_path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another live process is writing this recording",
                ),
            });
        }
        file.set_len(0).map_err(io_error(&part_path))?;
        let recorder = StereoWavRecorder::new(file, RECORDING_MAX_SKEW_MS).map_err(encode_error)?;
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

    /// Where the finished spool will be.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Finishes the WAV, syncs and renames the file, and describes it for
    /// [`crate::Store::attach_recording`] (or [`crate::WriteOp::Recording`]); hand it to
    /// [`encode_spool`] or [`RecordingPool::encode_later`] for the Ogg Opus file.
    pub fn finish(self, at_ms: i64) -> Result<NewRecording, CrmError> {
        let file = self.recorder.finish().map_err(encode_error)?;
        let size = seal(file, &self.part_path, &self.final_path)?;
        Ok(spool_recording(
            self.call_sid,
            &self.final_path,
            size,
            at_ms,
        ))
    }
}

/// Takes the exclusive lock a spool's writer holds while the call records; `false` when a
/// live process holds it already.
fn try_lock_spool(file: &File, path: &Path) -> Result<bool, CrmError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(path)(e)),
    }
}

/// Finishes the spools of calls cut short by a crash: every `<CallSid>.wav.part` in `dir` that
/// no live process holds (a recording call keeps its spool locked, see the module docs) gets
/// the real lengths in its header, is synced and renamed to `<CallSid>.wav`, and is described
/// as [`CallRecorder::finish`] would have (`at_ms` from the file's last write). Hand each to
/// [`crate::Store::attach_recording`] (the call never did) and then to encoding as usual.
///
/// A spool that cannot be finished (its header was cut too, or a `<CallSid>.wav` is already
/// there) is logged and left as it is; one being written is skipped silently.
///
/// # Errors
/// [`CrmError::RecordingIo`] if `dir` cannot be listed (a missing `dir` is an empty list).
pub fn recover_cut_spools(dir: &Path) -> Result<Vec<NewRecording>, CrmError> {
    let mut recovered = Vec::new();
    for (call_sid, _) in call_files(dir, ".wav.part")? {
        match finish_cut_spool(dir, &call_sid) {
            Ok(Some(spool)) => recovered.push(spool),
            Ok(None) => {}
            Err(error) => tracing::warn!(%call_sid, %error,
                "the recording of a call cut by a crash could not be finished; its .wav.part is left as it is"),
        }
    }
    recovered.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(recovered)
}

/// [`recover_cut_spools`] for one spool; `None` when a live process is still writing it.
fn finish_cut_spool(dir: &Path, call_sid: &str) -> Result<Option<NewRecording>, CrmError> {
    let part_path = dir.join(format!("{call_sid}.wav.part"));
    let final_path = dir.join(format!("{call_sid}.wav"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part_path)
        .map_err(io_error(&part_path))?;
    if !try_lock_spool(&file, &part_path)? {
        return Ok(None);
    }
    if final_path.exists() {
        return Err(CrmError::RecordingIo {
            path: final_path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a finished recording of this call is already there",
            ),
        });
    }
    let at_ms = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .map_or(0, unix_ms);
    let writer = mulaw::wav::MulawWavWriter::resume(file).map_err(|e| match e {
        mulaw::Error::Io(source) => io_error(&part_path)(source),
        other => encode_error(other),
    })?;
    let file = writer.finish().map_err(encode_error)?;
    let size = seal(file, &part_path, &final_path)?;
    Ok(Some(spool_recording(
        call_sid.to_owned(),
        &final_path,
        size,
        at_ms,
    )))
}

/// The entries of `dir` named `<CallSid><suffix>` with a valid call sid, with that sid (a
/// missing `dir` has none).
fn call_files(dir: &Path, suffix: &str) -> Result<Vec<(String, std::fs::DirEntry)>, CrmError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        if let Some(call_sid) = name.to_str().and_then(|n| n.strip_suffix(suffix))
            && check_sid("call_sid", call_sid).is_ok()
        {
            found.push((call_sid.to_owned(), entry));
        }
    }
    Ok(found)
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// Describes a spool file of `size` bytes.
fn spool_recording(call_sid: String, path: &Path, size: u64, at_ms: i64) -> NewRecording {
    let duration_ms = size.saturating_sub(SPOOL_HEADER_BYTES) / SPOOL_BYTES_PER_MS;
    NewRecording {
        call_sid,
        path: path.display().to_string(),
        codec: RECORDING_SPOOL_CODEC.to_owned(),
        duration_ms: i64::try_from(duration_ms).ok(),
        size_bytes: i64::try_from(size).ok(),
        at_ms,
    }
}

/// Encodes a finished spool (`<CallSid>.wav`, as [`CallRecorder::finish`] describes it) to
/// `<CallSid>.ogg` beside it (through `<CallSid>.ogg.<pid>-<n>.part`, synced before the rename;
/// concurrent encodes of one spool never share a file) and describes the
/// Ogg file. The spool is left in place: delete it once nothing references it (the CRM writer's
/// [`crate::WriteOp::RecordingEncoded`] does, after the store points at the Ogg).
///
/// # Errors
/// [`CrmError::InvalidInput`] if the spool's path does not end in `.wav`,
/// [`CrmError::RecordingIo`], [`CrmError::RecordingEncode`] (not a stereo mu-law WAV).
pub fn encode_spool(spool: &NewRecording) -> Result<NewRecording, CrmError> {
    let wav_path = Path::new(&spool.path);
    let Some(stem) = spool.path.strip_suffix(".wav") else {
        return Err(CrmError::invalid(
            "path",
            "a recording spool is a `.wav` file",
        ));
    };
    let final_path = PathBuf::from(format!("{stem}.ogg"));
    // A part name of its own per attempt: two processes sharing the directory (an old one
    // draining while its successor starts) may encode the same spool at once; each writes its
    // own file and the renames are atomic. The encoder is deterministic, so either result is
    // the same bytes.
    static ATTEMPT: AtomicU64 = AtomicU64::new(0);
    let attempt = ATTEMPT.fetch_add(1, Ordering::Relaxed);
    let part_path = PathBuf::from(format!("{stem}.ogg.{}-{attempt}.part", std::process::id()));
    let wav = File::open(wav_path).map_err(io_error(wav_path))?;
    let out = File::create(&part_path).map_err(io_error(&part_path))?;
    let encoded = mulaw::ogg::encode_stereo_mulaw_wav(std::io::BufReader::new(wav), out);
    let (file, duration_ms) = match encoded {
        Ok(done) => done,
        Err(e) => {
            // Best effort: a half-written `.ogg.part` is of no use to anyone.
            let _ = std::fs::remove_file(&part_path);
            return Err(match e {
                mulaw::Error::Io(source) => CrmError::RecordingIo {
                    path: spool.path.clone(),
                    source,
                },
                other => encode_error(other),
            });
        }
    };
    let size = seal(file, &part_path, &final_path)?;
    Ok(NewRecording {
        call_sid: spool.call_sid.clone(),
        path: final_path.display().to_string(),
        codec: RECORDING_CODEC.to_owned(),
        duration_ms: i64::try_from(duration_ms).ok(),
        size_bytes: i64::try_from(size).ok(),
        at_ms: spool.at_ms,
    })
}

/// Finished spools (`<CallSid>.wav`) in `dir` last written before `finished_before` that were
/// never encoded, e.g. because the server stopped first, described as [`CallRecorder::finish`]
/// did (`at_ms` from the file's mtime). Pass the process's start: spools of calls this process
/// (or one still draining beside it) finishes later are queued by their own call. Unfinished
/// `.wav.part` files are not listed: [`recover_cut_spools`] finishes those of calls cut by a
/// crash.
///
/// # Errors
/// [`CrmError::RecordingIo`] if `dir` cannot be listed (a missing `dir` is an empty list).
pub fn pending_spools(
    dir: &Path,
    finished_before: std::time::SystemTime,
) -> Result<Vec<NewRecording>, CrmError> {
    let mut spools = Vec::new();
    for (call_sid, entry) in call_files(dir, ".wav")? {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().ok();
        if modified.is_some_and(|t| t >= finished_before) {
            continue;
        }
        spools.push(spool_recording(
            call_sid,
            &entry.path(),
            meta.len(),
            modified.map_or(0, unix_ms),
        ));
    }
    spools.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(spools)
}

/// Deletes a spool once the store references its encoded file. A spool already gone is fine.
///
/// # Errors
/// [`CrmError::RecordingIo`] for anything but "not found".
pub fn remove_spool(path: &str) -> Result<(), CrmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(Path::new(path))(e)),
    }
}

/// The usual [`EncodeDone`] for a spool at `spool_path`. With a CRM writer, it queues
/// [`crate::WriteOp::RecordingEncoded`]: the store moves to the Ogg file, then the spool is
/// deleted. Without one (nothing references the spool), it deletes the spool now that the Ogg
/// exists. A failed encoding leaves the spool as it is (the encoder logged why).
#[must_use]
pub fn replace_spool_when_encoded(
    writer: Option<crate::CrmWriter>,
    spool_path: String,
) -> EncodeDone {
    Box::new(move |encoded| {
        let Ok(recording) = encoded else {
            return;
        };
        match writer {
            Some(writer) => {
                let call_sid = recording.call_sid.clone();
                let op = crate::WriteOp::RecordingEncoded {
                    recording,
                    replaces: spool_path,
                };
                if let Err(error) = writer.submit(op) {
                    tracing::error!(%call_sid, %error,
                        "encoded recording not queued to the CRM; the call keeps its WAV spool");
                }
            }
            None => {
                if let Err(error) = remove_spool(&spool_path) {
                    tracing::warn!(call_sid = %recording.call_sid, %error,
                        "recording encoded; its spool could not be deleted");
                }
            }
        }
    })
}

fn encode_error(err: mulaw::Error) -> CrmError {
    CrmError::RecordingEncode(err.to_string())
}

/// Chunks (20 ms frames of either side) one pool worker holds before it drops new ones:
/// about 2.6 s of backlog for 500 calls on that worker, 13 MB at most.
pub const WORKER_QUEUE_CHUNKS: usize = 65_536;

/// How long a spool thread that found more than one job waiting pauses before it looks again.
/// Bounds its wake-ups, not the audio: a call's backlog is capped by its queue
/// ([`RecordingTask::start`]), and 20 ms is one frame.
const SPOOL_BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Chunks a task collects before handing them to its worker in one message (200 ms of both
/// sides): one worker wake-up per batch instead of one per 20 ms frame.
pub const RECORDING_BATCH_CHUNKS: usize = 20;

/// One side's audio at its timestamp; the bytes are `audio` in its [`ChunkBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    agent: bool,
    timestamp_ms: u64,
    audio: std::ops::Range<usize>,
}

/// Chunks collected for one [`Job::Chunks`], their audio back to back in one buffer: two
/// allocations per batch instead of one per 20 ms frame.
#[derive(Debug, Default)]
struct ChunkBatch {
    chunks: Vec<Chunk>,
    audio: Vec<u8>,
}

impl ChunkBatch {
    fn push(&mut self, agent: bool, timestamp_ms: u64, mulaw: &[u8]) {
        if self.chunks.capacity() == 0 {
            self.chunks.reserve_exact(RECORDING_BATCH_CHUNKS);
            self.audio
                .reserve_exact(RECORDING_BATCH_CHUNKS * mulaw::FRAME_BYTES);
        }
        let start = self.audio.len();
        self.audio.extend_from_slice(mulaw);
        self.chunks.push(Chunk {
            agent,
            timestamp_ms,
            audio: start..self.audio.len(),
        });
    }

    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// `(agent, timestamp_ms, mulaw)` of each chunk, in the order they were pushed.
    fn iter(&self) -> impl Iterator<Item = (bool, u64, &[u8])> {
        self.chunks.iter().map(|chunk| {
            let mulaw = self.audio.get(chunk.audio.clone()).unwrap_or_default();
            (chunk.agent, chunk.timestamp_ms, mulaw)
        })
    }
}

/// One instruction for a pool worker.
enum Job {
    Start(u64, Box<CallRecorder>, Arc<AtomicUsize>),
    Chunks(u64, ChunkBatch),
    Finish(u64, i64, oneshot::Sender<Result<NewRecording, CrmError>>),
    /// The task was dropped without `finish`: close the file, report nothing.
    Abandon(u64),
}

/// The sending side of one spool worker.
#[derive(Debug)]
struct WorkerHandle {
    jobs: mpsc::Sender<Job>,
    /// Audio chunks sent and not yet encoded (the worker's backlog).
    queued_chunks: Arc<AtomicUsize>,
    /// Recordings open on this worker (new calls go to the least busy worker).
    open_recordings: Arc<AtomicUsize>,
}

/// What [`RecordingPool::encode_later`] calls with the Ogg file (or why there is none), on the
/// encoder thread.
pub type EncodeDone = Box<dyn FnOnce(Result<NewRecording, CrmError>) + Send>;

/// A spool waiting for an encoder thread.
struct EncodeJob {
    spool: NewRecording,
    done: EncodeDone,
}

/// A fixed set of spool threads and encoder threads shared by every call's recording.
///
/// Each spool worker is an OS thread (not one of tokio's blocking threads) owning the
/// recorders of the calls routed to it. Encoder threads take finished spools from one queue.
/// Dropping the pool lets the workers finish every open file and exit once the last
/// [`RecordingTask`] is gone, and the encoders finish the queue and exit.
#[derive(Debug)]
pub struct RecordingPool {
    workers: Vec<WorkerHandle>,
    next_recording_id: AtomicU64,
    encode_jobs: mpsc::Sender<EncodeJob>,
    /// Spools queued or being encoded.
    pending_encodes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for EncodeJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeJob")
            .field("spool", &self.spool.path)
            .finish_non_exhaustive()
    }
}

impl RecordingPool {
    /// Starts `workers` spool threads and as many encoder threads (at least one each).
    ///
    /// # Errors
    /// [`CrmError::RecordingEncode`] if the OS refuses to start a thread.
    pub fn new(workers: usize) -> Result<RecordingPool, CrmError> {
        let workers = (0..workers.max(1))
            .map(|index| {
                let (jobs, rx) = mpsc::channel();
                let queued_chunks = Arc::new(AtomicUsize::new(0));
                let open_recordings = Arc::new(AtomicUsize::new(0));
                let worker = SpoolWorker {
                    recordings: HashMap::new(),
                    queued_chunks: queued_chunks.clone(),
                    open_recordings: open_recordings.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("recording-{index}"))
                    .spawn(move || worker.run(&rx))
                    .map_err(thread_error)?;
                Ok(WorkerHandle {
                    jobs,
                    queued_chunks,
                    open_recordings,
                })
            })
            .collect::<Result<Vec<_>, CrmError>>()?;
        let (encode_jobs, encode_rx) = mpsc::channel::<EncodeJob>();
        let encode_rx = Arc::new(Mutex::new(encode_rx));
        let pending_encodes = Arc::new(AtomicUsize::new(0));
        for index in 0..workers.len() {
            let jobs = encode_rx.clone();
            let pending = pending_encodes.clone();
            std::thread::Builder::new()
                .name(format!("rec-encoder-{index}"))
                .spawn(move || {
                    lower_this_thread_priority();
                    run_encoder(&jobs, &pending);
                })
                .map_err(thread_error)?;
        }
        Ok(RecordingPool {
            workers,
            next_recording_id: AtomicU64::new(0),
            encode_jobs,
            pending_encodes,
        })
    }

    /// Queues a finished spool ([`RecordingTask::finish`], [`CallRecorder::finish`] or
    /// [`pending_spools`]) for encoding to Ogg Opus on an encoder thread, which then calls
    /// `done` with the Ogg file's description ([`encode_spool`]). The spool stays on disk.
    ///
    /// # Errors
    /// [`CrmError::RecordingEncode`] if the encoder threads are gone (`done` is not called).
    pub fn encode_later(&self, spool: NewRecording, done: EncodeDone) -> Result<(), CrmError> {
        self.pending_encodes.fetch_add(1, Ordering::Relaxed);
        if self.encode_jobs.send(EncodeJob { spool, done }).is_err() {
            self.pending_encodes.fetch_sub(1, Ordering::Relaxed);
            return Err(CrmError::RecordingEncode(
                "the recording encoder threads are gone".to_owned(),
            ));
        }
        Ok(())
    }

    /// Spools queued or being encoded (the encoders' backlog).
    #[must_use]
    pub fn pending_encodes(&self) -> usize {
        self.pending_encodes.load(Ordering::Relaxed)
    }

    /// Encoder threads in the pool.
    #[must_use]
    pub fn encoders(&self) -> usize {
        // One encoder thread was started per spool worker.
        self.workers.len()
    }

    /// The process-wide pool [`RecordingTask::start`] uses: one spool worker and one encoder
    /// per available core, started on first use.
    ///
    /// # Errors
    /// [`CrmError::RecordingEncode`] if the threads could not be started (retried next call).
    pub fn shared() -> Result<&'static RecordingPool, CrmError> {
        if let Some(pool) = SHARED.get() {
            return Ok(pool);
        }
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let pool = RecordingPool::new(workers)?;
        // A racing first call may have won; its pool is used and ours is dropped (its idle
        // threads exit when their channels close).
        Ok(SHARED.get_or_init(|| pool))
    }

    /// The process-wide pool if something has started it (so shutdown can wait for its
    /// encoders without starting threads).
    #[must_use]
    pub fn shared_if_started() -> Option<&'static RecordingPool> {
        SHARED.get()
    }

    /// Waits (polling, without blocking the runtime) until the encoders' backlog is empty or
    /// `limit` has passed; returns the spools still pending. At shutdown: what is left stays a
    /// referenced, playable WAV, and [`pending_spools`] finds it at the next start.
    pub async fn wait_for_encodes(&self, limit: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending_encodes() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.pending_encodes()
    }

    /// Spool threads in the pool.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Recordings open across all workers.
    #[must_use]
    pub fn open_recordings(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.open_recordings.load(Ordering::Relaxed))
            .sum()
    }

    /// Creates `<dir>/<call_sid>.wav.part` and hands its recorder to the least busy worker.
    /// `queue_chunks` bounds this call's backlog (one 20 ms frame of one side is one chunk;
    /// 1,000 = 10 s of both sides).
    ///
    /// # Errors
    /// As [`CallRecorder::create`]; [`CrmError::RecordingEncode`] if the worker is gone.
    pub fn start(
        &self,
        dir: &Path,
        call_sid: &str,
        queue_chunks: usize,
    ) -> Result<RecordingTask, CrmError> {
        let recorder = CallRecorder::create(dir, call_sid)?;
        let (index, worker) = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.open_recordings.load(Ordering::Relaxed))
            .ok_or_else(worker_gone)?;
        let id = self.next_recording_id.fetch_add(1, Ordering::Relaxed);
        let call_queued = Arc::new(AtomicUsize::new(0));
        worker.open_recordings.fetch_add(1, Ordering::Relaxed);
        let start = Job::Start(id, Box::new(recorder), call_queued.clone());
        if worker.jobs.send(start).is_err() {
            worker.open_recordings.fetch_sub(1, Ordering::Relaxed);
            return Err(worker_gone());
        }
        tracing::debug!(
            call_sid,
            worker = index,
            "recording on the shared spool pool"
        );
        Ok(RecordingTask {
            id,
            jobs: worker.jobs.clone(),
            worker_queued: worker.queued_chunks.clone(),
            call_queued,
            batch: ChunkBatch::default(),
            queue_chunks: queue_chunks.max(1),
            stats: RecordingStats::default(),
            call_sid: call_sid.to_owned(),
            finished: false,
        })
    }
}

/// The process-wide pool ([`RecordingPool::shared`]).
static SHARED: OnceLock<RecordingPool> = OnceLock::new();

fn thread_error(e: std::io::Error) -> CrmError {
    CrmError::RecordingEncode(format!(
        "could not start a recording thread ({e}); \
         raise the process thread limit or set RECORDINGS_DIR empty"
    ))
}

/// Nice value of the encoder threads: live calls come first. Encoding after the call has no
/// deadline and its backlog is files on disk, so under a CPU shortage it waits, and nothing is
/// lost (unlike encoding live, where a backlog had to be dropped).
pub const ENCODER_THREAD_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`ENCODER_THREAD_NICE`] (Linux: nice
/// values are per thread). Best effort: failure is logged and the thread runs as it is.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_this_thread_priority() {
    // SAFETY: setpriority reads no memory of ours; PRIO_PROCESS with id 0 names the calling
    // thread on Linux. The only effect is this thread's nice value.
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, ENCODER_THREAD_NICE) };
    if status != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the recording encoder's priority; it runs at normal priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_thread_priority() {}

/// An encoder thread: takes spools off the shared queue until the pool is dropped.
fn run_encoder(jobs: &Mutex<mpsc::Receiver<EncodeJob>>, pending: &AtomicUsize) {
    loop {
        // The lock is held only while waiting for the next job, not while encoding.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(EncodeJob { spool, done }) = job else {
            return;
        };
        let started = std::time::Instant::now();
        let encoded = encode_spool(&spool);
        match &encoded {
            Ok(ogg) => tracing::info!(call_sid = %spool.call_sid, path = %ogg.path,
                duration_ms = ?ogg.duration_ms, size_bytes = ?ogg.size_bytes,
                encode_ms = started.elapsed().as_millis() as u64, "call recording encoded"),
            Err(e) => tracing::error!(call_sid = %spool.call_sid, spool = %spool.path, error = %e,
                "call recording could not be encoded; its WAV spool stays referenced and playable"),
        }
        pending.fetch_sub(1, Ordering::Relaxed);
        done(encoded);
    }
}

fn worker_gone() -> CrmError {
    CrmError::RecordingEncode("recording spool thread ended unexpectedly".to_owned())
}

/// Counters of a [`RecordingTask`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingStats {
    /// Chunks dropped because the spool writer was behind (each is a gap in the file).
    pub dropped_chunks: u64,
}

/// One call's recording on a [`RecordingPool`] worker. Pushing never blocks. Dropping the
/// task without [`RecordingTask::finish`] still finishes the file (it is just not reported).
#[derive(Debug)]
pub struct RecordingTask {
    id: u64,
    jobs: mpsc::Sender<Job>,
    worker_queued: Arc<AtomicUsize>,
    /// This call's chunks admitted (collected or sent) and not yet written; the worker
    /// decrements it.
    call_queued: Arc<AtomicUsize>,
    /// Chunks collected for the next [`Job::Chunks`].
    batch: ChunkBatch,
    queue_chunks: usize,
    stats: RecordingStats,
    call_sid: String,
    finished: bool,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Start(id, ..) => write!(f, "Start({id})"),
            Job::Chunks(id, batch) => write!(f, "Chunks({id}, {} chunks)", batch.len()),
            Job::Finish(id, at_ms, _) => write!(f, "Finish({id}, {at_ms})"),
            Job::Abandon(id) => write!(f, "Abandon({id})"),
        }
    }
}

impl RecordingTask {
    /// Creates the file and hands it to the shared pool ([`RecordingPool::shared`]) with
    /// room for `queue_chunks` chunks of this call (one 20 ms media frame is one chunk).
    ///
    /// # Errors
    /// As [`RecordingPool::start`].
    pub fn start(
        dir: &Path,
        call_sid: &str,
        queue_chunks: usize,
    ) -> Result<RecordingTask, CrmError> {
        RecordingPool::shared()?.start(dir, call_sid, queue_chunks)
    }

    /// Queues caller audio without waiting; a full queue drops the chunk (counted).
    pub fn push_caller(&mut self, timestamp_ms: u64, mulaw: &[u8]) {
        self.push(false, timestamp_ms, mulaw);
    }

    /// Queues agent audio without waiting; a full queue drops the chunk (counted).
    pub fn push_agent(&mut self, timestamp_ms: u64, mulaw: &[u8]) {
        self.push(true, timestamp_ms, mulaw);
    }

    fn push(&mut self, agent: bool, timestamp_ms: u64, mulaw: &[u8]) {
        if !self.admit() {
            return;
        }
        self.batch.push(agent, timestamp_ms, mulaw);
        if self.batch.len() >= RECORDING_BATCH_CHUNKS {
            self.send_batch();
        }
    }

    /// Reserves a place in this call's and its worker's backlog, or counts a drop.
    fn admit(&mut self) -> bool {
        let call_full = self.call_queued.load(Ordering::Relaxed) >= self.queue_chunks;
        let worker_full =
            !call_full && self.worker_queued.fetch_add(1, Ordering::Relaxed) >= WORKER_QUEUE_CHUNKS;
        if worker_full {
            self.worker_queued.fetch_sub(1, Ordering::Relaxed);
        }
        if call_full || worker_full {
            self.stats.dropped_chunks += 1;
            if self.stats.dropped_chunks.is_power_of_two() {
                tracing::warn!(call_sid = %self.call_sid, dropped = self.stats.dropped_chunks,
                    "call recording is behind; audio chunks dropped from the recording");
            }
            return false;
        }
        self.call_queued.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Hands the collected chunks to the worker.
    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let count = batch.len();
        // A send error means the worker is gone: undo the reservations and count the drops.
        if self.jobs.send(Job::Chunks(self.id, batch)).is_err() {
            self.call_queued.fetch_sub(count, Ordering::Relaxed);
            self.worker_queued.fetch_sub(count, Ordering::Relaxed);
            self.stats.dropped_chunks += count as u64;
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> RecordingStats {
        self.stats
    }

    /// Waits for the worker to write this call's backlog, finishes the spool and describes it
    /// (then [`RecordingPool::encode_later`] makes the Ogg Opus file).
    ///
    /// # Errors
    /// The first file error of the call, or [`CrmError::RecordingEncode`] if the
    /// worker is gone.
    pub async fn finish(mut self, at_ms: i64) -> Result<NewRecording, CrmError> {
        let (reply, answer) = oneshot::channel();
        self.send_batch();
        self.finished = true;
        self.jobs
            .send(Job::Finish(self.id, at_ms, reply))
            .map_err(|_| worker_gone())?;
        answer.await.map_err(|_| worker_gone())?
    }
}

impl Drop for RecordingTask {
    fn drop(&mut self) {
        if !self.finished {
            self.send_batch();
            // If the worker is gone there is nothing left to close.
            let _ = self.jobs.send(Job::Abandon(self.id));
        }
    }
}

/// A recorder and its call's backlog counter, owned by a worker.
struct OpenRecording {
    recorder: CallRecorder,
    call_queued: Arc<AtomicUsize>,
    failure: Option<CrmError>,
}

/// The state of one spool thread: every recording routed to it.
struct SpoolWorker {
    recordings: HashMap<u64, OpenRecording>,
    queued_chunks: Arc<AtomicUsize>,
    open_recordings: Arc<AtomicUsize>,
}

impl SpoolWorker {
    fn run(mut self, jobs: &mpsc::Receiver<Job>) {
        // Waits for work when idle; while busy, handles what has queued, then pauses, so a busy
        // spool thread wakes about 50 times a second instead of once per batch of every call
        // (and the calls' sends need not wake it: nobody waits on the channel meanwhile).
        while let Ok(job) = jobs.recv() {
            self.handle_job(job);
            let mut busy = false;
            while let Ok(job) = jobs.try_recv() {
                self.handle_job(job);
                busy = true;
            }
            if busy {
                std::thread::sleep(SPOOL_BUSY_PAUSE);
            }
        }
        // The pool and every task are gone: close whatever is still open.
        for (_, open) in self.recordings.drain() {
            close_abandoned(open.recorder);
        }
    }

    fn handle_job(&mut self, job: Job) {
        match job {
            Job::Start(id, recorder, call_queued) => {
                self.recordings.insert(
                    id,
                    OpenRecording {
                        recorder: *recorder,
                        call_queued,
                        failure: None,
                    },
                );
            }
            Job::Chunks(id, batch) => {
                for (agent, timestamp_ms, mulaw) in batch.iter() {
                    self.write_chunk(id, agent, timestamp_ms, mulaw);
                }
            }
            Job::Finish(id, at_ms, reply) => {
                let finished = match self.close(id) {
                    Some(OpenRecording {
                        failure: Some(e), ..
                    }) => Err(e),
                    Some(open) => open.recorder.finish(at_ms),
                    None => Err(worker_gone()),
                };
                // The caller may have stopped waiting (call torn down): nothing to report to.
                let _ = reply.send(finished);
            }
            Job::Abandon(id) => {
                if let Some(open) = self.close(id) {
                    close_abandoned(open.recorder);
                }
            }
        }
    }

    fn close(&mut self, id: u64) -> Option<OpenRecording> {
        let open = self.recordings.remove(&id)?;
        self.open_recordings.fetch_sub(1, Ordering::Relaxed);
        Some(open)
    }

    fn write_chunk(&mut self, id: u64, agent: bool, timestamp_ms: u64, mulaw: &[u8]) {
        self.queued_chunks.fetch_sub(1, Ordering::Relaxed);
        let Some(open) = self.recordings.get_mut(&id) else {
            return;
        };
        open.call_queued.fetch_sub(1, Ordering::Relaxed);
        // After a failure the rest of the audio is ignored; `finish` reports the failure.
        if open.failure.is_some() {
            return;
        }
        let written = if agent {
            open.recorder.push_agent(timestamp_ms, mulaw)
        } else {
            open.recorder.push_caller(timestamp_ms, mulaw)
        };
        if let Err(e) = written {
            tracing::error!(call_sid = %open.recorder.call_sid, error = %e,
                "call recording failed; rest of the call not recorded");
            open.failure = Some(e);
        }
    }
}

fn close_abandoned(recorder: CallRecorder) {
    let call_sid = recorder.call_sid.clone();
    if let Err(e) = recorder.finish(0) {
        tracing::error!(call_sid = %call_sid, error = %e, "could not finish an abandoned call recording");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task wired to a channel nobody serves: the spool writer is "stuck".
    fn stuck_task(queue_chunks: usize) -> (RecordingTask, mpsc::Receiver<Job>, Arc<AtomicUsize>) {
        let (jobs, rx) = mpsc::channel();
        let worker_queued = Arc::new(AtomicUsize::new(0));
        let task = RecordingTask {
            id: 1,
            jobs,
            worker_queued: worker_queued.clone(),
            call_queued: Arc::new(AtomicUsize::new(0)),
            batch: ChunkBatch::default(),
            queue_chunks,
            stats: RecordingStats::default(),
            call_sid: "CA_STUCK".to_owned(),
            finished: false,
        };
        (task, rx, worker_queued)
    }

    #[test]
    fn a_full_call_queue_drops_and_counts_without_blocking() {
        let (mut task, rx, worker_queued) = stuck_task(3);
        for n in 0..5 {
            task.push_caller(n * 20, &[0xFF; 160]);
        }
        assert_eq!(task.stats().dropped_chunks, 2);
        assert_eq!(worker_queued.load(Ordering::Relaxed), 3);
        assert!(rx.try_recv().is_err(), "collected until a batch is full");
        task.send_batch();
        match rx.try_recv() {
            Ok(Job::Chunks(1, batch)) => {
                let stamps: Vec<u64> = batch.iter().map(|(_, at, _)| at).collect();
                assert_eq!(stamps, [0, 20, 40], "only the admitted chunks, in order");
            }
            other => panic!("expected the admitted chunks, got {other:?}"),
        }
        // The writer catching up (the worker decrements the counters) makes room again.
        task.call_queued.store(0, Ordering::Relaxed);
        task.push_agent(100, &[0xFF; 160]);
        assert_eq!(task.stats().dropped_chunks, 2);
    }

    #[test]
    fn a_full_worker_queue_drops_every_call_on_it() {
        let (mut task, rx, worker_queued) = stuck_task(1_000);
        worker_queued.store(WORKER_QUEUE_CHUNKS, Ordering::Relaxed);
        task.push_caller(0, &[0xFF; 160]);
        assert_eq!(task.stats().dropped_chunks, 1);
        assert_eq!(worker_queued.load(Ordering::Relaxed), WORKER_QUEUE_CHUNKS);
        assert_eq!(task.call_queued.load(Ordering::Relaxed), 0);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_batch_hands_over_every_chunk_with_its_own_audio_in_one_buffer() {
        let (mut task, rx, _) = stuck_task(1_000);
        task.push_caller(0, &[1; 160]);
        task.push_agent(5, &[2; 80]);
        task.push_caller(20, &[3; 160]);
        task.push_agent(25, &[]);
        task.send_batch();
        let Ok(Job::Chunks(1, batch)) = rx.try_recv() else {
            panic!("expected one batch");
        };
        let chunks: Vec<(bool, u64, Vec<u8>)> = batch
            .iter()
            .map(|(agent, at, mulaw)| (agent, at, mulaw.to_vec()))
            .collect();
        assert_eq!(
            chunks,
            [
                (false, 0, vec![1; 160]),
                (true, 5, vec![2; 80]),
                (false, 20, vec![3; 160]),
                (true, 25, vec![]),
            ]
        );
        assert_eq!(batch.audio.len(), 400, "one contiguous buffer");
        assert!(batch.audio.capacity() >= RECORDING_BATCH_CHUNKS * 160);
    }

    #[test]
    fn a_full_batch_goes_to_the_worker_in_one_message() {
        let (mut task, rx, _) = stuck_task(1_000);
        for n in 0..RECORDING_BATCH_CHUNKS as u64 {
            task.push_caller(n * 20, &[0xFF; 160]);
        }
        assert!(
            matches!(rx.try_recv(), Ok(Job::Chunks(1, batch)) if batch.len() == RECORDING_BATCH_CHUNKS)
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_dropped_task_hands_over_its_audio_and_asks_to_close_the_file() {
        let (mut task, rx, _) = stuck_task(10);
        task.push_agent(0, &[0xFF; 160]);
        drop(task);
        assert!(
            matches!(rx.try_recv(), Ok(Job::Chunks(1, batch)) if batch.len() == 1 && batch.chunks[0].agent)
        );
        assert!(matches!(rx.try_recv(), Ok(Job::Abandon(1))));
    }
}
