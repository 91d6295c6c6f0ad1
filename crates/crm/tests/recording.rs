//! Recordings: a real stereo WAV spool written during the call, encoded to a real Ogg Opus
//! file after it, each referenced from the call in the store in turn.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use crm::recording::{
    CallRecorder, RecordingPool, RecordingTask, encode_spool, pending_spools, recover_cut_spools,
};
use crm::{CrmWriter, NewRecording, WriteOp};

/// 20 ms of a 440 Hz tone (mu-law), starting at sample `offset`.
fn tone_frame(offset: usize, freq: f64) -> Vec<u8> {
    let samples: Vec<i16> = (0..160)
        .map(|i| {
            let t = (offset + i) as f64 / 8000.0;
            (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect();
    mulaw::encode(&samples)
}

fn assert_ogg_opus(bytes: &[u8]) {
    assert_eq!(&bytes[..4], b"OggS");
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"OpusHead") && has(b"OpusTags"));
    // OpusHead channel count (byte 9 after the magic) is 2: caller left, agent right.
    let head = bytes.windows(8).position(|w| w == b"OpusHead").unwrap();
    assert_eq!(bytes[head + 9], 2);
    // The last page carries the end-of-stream flag (header_type bit 0x04).
    let last_page = bytes.windows(4).rposition(|w| w == b"OggS").unwrap();
    assert_eq!(bytes[last_page + 5] & 0x04, 0x04, "EOS page");
}

/// A finished spool: a stereo 8 kHz mu-law WAV of `duration_ms`, its header lengths exact.
fn assert_spool(new: &NewRecording, duration_ms: i64) -> Vec<u8> {
    assert_eq!(new.codec, "pcm_mulaw");
    assert!(new.path.ends_with(".wav"), "{new:?}");
    let bytes = std::fs::read(&new.path).unwrap();
    assert_eq!(new.size_bytes, Some(bytes.len() as i64));
    assert_eq!(new.duration_ms, Some(duration_ms));
    let (info, data) = mulaw::wav::parse(&bytes).unwrap();
    assert_eq!(
        (info.format, info.sample_rate, info.channels),
        (mulaw::wav::WavFormat::MuLaw, 8000, 2)
    );
    assert_eq!(
        data.len() as i64,
        duration_ms * 16,
        "exact length in the header"
    );
    bytes
}

#[tokio::test]
async fn call_recorder_spools_then_the_encoded_file_replaces_the_spool_in_the_store() {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rec = CallRecorder::create(&dir.path().join("recordings"), "CA80").unwrap();
    assert!(
        dir.path().join("recordings/CA80.wav.part").exists(),
        "written as the call goes"
    );
    for frame in 0..150u64 {
        rec.push_caller(frame * 20, &tone_frame(frame as usize * 160, 440.0))
            .unwrap();
    }
    // The agent speaks from 1 s to 2 s.
    for frame in 50..100u64 {
        rec.push_agent(frame * 20, &tone_frame(frame as usize * 160, 660.0))
            .unwrap();
    }
    let spool = rec.finish(99_000).unwrap();
    assert!(!dir.path().join("recordings/CA80.wav.part").exists());
    let wav = assert_spool(&spool, 3_000);
    let (_, data) = mulaw::wav::parse(&wav).unwrap();
    assert_eq!(data[0], tone_frame(0, 440.0)[0], "caller on the left");
    assert_eq!(data[1], 0xFF, "agent silent on the right before it speaks");

    // The call ends: the spool is referenced at once, so the recording plays right away.
    let (writer, writer_task) = CrmWriter::spawn(db.store.clone(), 16);
    writer.submit(WriteOp::Recording(spool.clone())).unwrap();
    writer.flush().await;
    assert_eq!(
        db.store.get_recording("CA80").await.unwrap().path,
        spool.path
    );

    let encoded = encode_spool(&spool).unwrap();
    assert_eq!(encoded.codec, "opus");
    assert_eq!(encoded.duration_ms, Some(3_000));
    assert_eq!(encoded.at_ms, 99_000);
    assert!(encoded.path.ends_with("recordings/CA80.ogg"), "{encoded:?}");
    let bytes = std::fs::read(&encoded.path).unwrap();
    assert_eq!(encoded.size_bytes, Some(bytes.len() as i64));
    assert!(
        bytes.len() * 3 < wav.len(),
        "Ogg Opus is far smaller than the spool"
    );
    assert_eq!(
        files_starting_with(&dir.path().join("recordings"), "CA80.ogg"),
        ["CA80.ogg"],
        "no part file left"
    );
    assert_ogg_opus(&bytes);
    assert!(
        std::path::Path::new(&spool.path).exists(),
        "the spool stays until the store points at the Ogg"
    );

    writer
        .submit(WriteOp::RecordingEncoded {
            recording: encoded.clone(),
            replaces: spool.path.clone(),
        })
        .unwrap();
    writer.flush().await;
    let stored = db.store.get_recording("CA80").await.unwrap();
    assert_eq!(
        (stored.path, stored.codec),
        (encoded.path, "opus".to_owned())
    );
    assert!(!std::path::Path::new(&spool.path).exists(), "spool deleted");
    drop(writer);
    writer_task.await.unwrap();
    db.finish().await;
}

#[tokio::test]
async fn a_spool_the_store_refuses_to_replace_is_kept() {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rec = CallRecorder::create(dir.path(), "CA83").unwrap();
    rec.push_caller(0, &tone_frame(0, 440.0)).unwrap();
    let spool = rec.finish(1).unwrap();
    let mut encoded = encode_spool(&spool).unwrap();
    encoded.call_sid = "not a sid".to_owned(); // the store refuses it for good
    let (writer, writer_task) = CrmWriter::spawn(db.store.clone(), 16);
    writer
        .submit(WriteOp::RecordingEncoded {
            recording: encoded,
            replaces: spool.path.clone(),
        })
        .unwrap();
    writer.flush().await;
    assert_eq!(writer.stats().rejected, 1);
    assert!(
        std::path::Path::new(&spool.path).exists(),
        "no reference moved, so the spool is not deleted"
    );
    drop(writer);
    writer_task.await.unwrap();
    db.finish().await;
}

/// Names of the files in `dir` starting with `prefix`.
fn files_starting_with(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

#[test]
fn spools_left_by_a_stopped_server_are_found_and_bad_ones_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::SystemTime::now();
    assert!(
        pending_spools(&dir.path().join("missing"), start)
            .unwrap()
            .is_empty()
    );
    // Two calls finished before this process started, one after (its own call queues it).
    for (sid, finished) in [
        ("CA_LEFT1", start - Duration::from_secs(60)),
        ("CA_LEFT2", start - Duration::from_secs(30)),
        ("CA_LATER", start + Duration::from_secs(1)),
    ] {
        let mut rec = CallRecorder::create(dir.path(), sid).unwrap();
        for frame in 0..10u64 {
            rec.push_caller(frame * 20, &tone_frame(frame as usize * 160, 440.0))
                .unwrap();
        }
        let spool = rec.finish(1).unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(&spool.path)
            .unwrap();
        file.set_modified(finished).unwrap();
    }
    // A call still being spooled (or cut by a crash), an encoded file, and junk.
    let _live = CallRecorder::create(dir.path(), "CA_LIVE").unwrap();
    std::fs::write(dir.path().join("CA_DONE.ogg"), b"OggS").unwrap();
    std::fs::write(dir.path().join("bad name.wav"), b"RIFF").unwrap();
    std::fs::create_dir(dir.path().join("CA_DIR.wav")).unwrap();
    let found = pending_spools(dir.path(), start).unwrap();
    let sids: Vec<&str> = found.iter().map(|r| r.call_sid.as_str()).collect();
    assert_eq!(sids, ["CA_LEFT1", "CA_LEFT2"]);
    assert!(
        found
            .iter()
            .all(|r| r.duration_ms == Some(200) && r.at_ms > 0)
    );
    assert!(encode_spool(&found[0]).is_ok());

    // Not a spool: typed errors, and no half-written Ogg left behind.
    let mut not_wav = found[1].clone();
    not_wav.path = dir.path().join("CA_DONE.ogg").display().to_string();
    assert_eq!(encode_spool(&not_wav).unwrap_err().http_status(), 400);
    std::fs::write(&found[1].path, b"RIFF\0\0\0\0WAVEjunk").unwrap();
    let err = encode_spool(&found[1]).unwrap_err();
    assert!(err.to_string().contains("WAV"), "{err}");
    assert!(files_starting_with(dir.path(), "CA_LEFT2.ogg").is_empty());
    let mut gone = found[1].clone();
    gone.path = dir.path().join("CA_GONE.wav").display().to_string();
    assert!(matches!(
        encode_spool(&gone),
        Err(crm::CrmError::RecordingIo { .. })
    ));
}

#[tokio::test]
async fn recording_task_keeps_audio_off_the_call_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = RecordingTask::start(dir.path(), "CA81", 1_000).unwrap();
    for frame in 0..100u64 {
        task.push_caller(frame * 20, &tone_frame(frame as usize * 160, 300.0));
        task.push_agent(frame * 20 + 5, &tone_frame(frame as usize * 160, 500.0));
    }
    assert_eq!(task.stats().dropped_chunks, 0);
    let new = task.finish(5).await.unwrap();
    // The agent's last frame ends at 2,005 ms: padded to a whole 20 ms frame.
    assert_spool(&new, 2_020);
}

#[tokio::test]
async fn recording_task_dropped_without_finish_still_closes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = RecordingTask::start(dir.path(), "CA82", 10).unwrap();
    task.push_caller(0, &tone_frame(0, 300.0));
    drop(task);
    // The blocking thread finishes on its own; wait (bounded) for the rename.
    let done = dir.path().join("CA82.wav");
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !done.exists() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
}

#[test]
fn bad_call_sid_cannot_escape_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../etc/passwd", "", "CA/1", "CA 1"] {
        let err = CallRecorder::create(dir.path(), bad).unwrap_err();
        assert_eq!(err.http_status(), 400, "{bad:?}");
    }
}

#[tokio::test]
async fn many_calls_share_a_small_pool_and_are_encoded_after_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let pool = RecordingPool::new(2).unwrap();
    assert_eq!(pool.workers(), 2);
    let calls = 40;
    let mut tasks: Vec<_> = (0..calls)
        .map(|n| {
            pool.start(dir.path(), &format!("CA_POOL{n}"), 1_000)
                .unwrap()
        })
        .collect();
    assert_eq!(pool.open_recordings(), calls);
    // One second of every call, frames of all calls interleaved as live calls would send them.
    for frame in 0..50u64 {
        for (n, task) in tasks.iter_mut().enumerate() {
            let caller_hz = 200.0 + 10.0 * n as f64;
            task.push_caller(frame * 20, &tone_frame(frame as usize * 160, caller_hz));
            task.push_agent(frame * 20, &tone_frame(frame as usize * 160, 900.0));
        }
    }
    let mut finished = Vec::new();
    for task in tasks {
        assert_eq!(task.stats().dropped_chunks, 0);
        finished.push(task.finish(7).await.unwrap());
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for (n, new) in finished.iter().enumerate() {
        assert_eq!(new.call_sid, format!("CA_POOL{n}"));
        assert_eq!(new.at_ms, 7);
        assert_spool(new, 1_000);
        let done_tx = done_tx.clone();
        pool.encode_later(
            new.clone(),
            Box::new(move |encoded| done_tx.send(encoded).unwrap()),
        )
        .unwrap();
    }
    assert_eq!(pool.open_recordings(), 0, "every recorder released");
    let mut encoded: Vec<NewRecording> = (0..calls)
        .map(|_| {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap()
                .unwrap()
        })
        .collect();
    encoded.sort_by_key(|r| r.call_sid[7..].parse::<usize>().unwrap());
    for (n, ogg) in encoded.iter().enumerate() {
        assert_eq!(ogg.call_sid, format!("CA_POOL{n}"));
        assert_eq!((ogg.duration_ms, ogg.at_ms), (Some(1_000), 7));
        assert_ogg_opus(&std::fs::read(&ogg.path).unwrap());
    }
    assert_eq!(pool.pending_encodes(), 0);
}

#[tokio::test]
async fn recording_on_the_pool_keeps_caller_and_agent_on_their_channels() {
    let dir = tempfile::tempdir().unwrap();
    let pool = RecordingPool::new(1).unwrap();
    let mut task = pool.start(dir.path(), "CA_CHANNELS", 1_000).unwrap();
    // Caller speaks during the first second, the agent during the second.
    for frame in 0..100u64 {
        let tone = tone_frame(frame as usize * 160, 440.0);
        let silence = vec![0xFF_u8; 160];
        let (caller, agent) = if frame < 50 {
            (&tone, &silence)
        } else {
            (&silence, &tone)
        };
        task.push_caller(frame * 20, caller);
        task.push_agent(frame * 20, agent);
    }
    let new = encode_spool(&task.finish(1).await.unwrap()).unwrap();
    let pcm = decode_stereo(&std::fs::read(&new.path).unwrap());
    let energy = |range: std::ops::Range<usize>, channel: usize| -> f64 {
        range
            .map(|i| f64::from(pcm[2 * i + channel]).powi(2))
            .sum::<f64>()
    };
    // 8 kHz frames; skip 100 ms around the switch for the codec's smoothing.
    let (first, second) = (800..7_200, 8_800..15_200);
    assert!(energy(first.clone(), 0) > 100.0 * energy(first.clone(), 1).max(1.0));
    assert!(energy(second.clone(), 1) > 100.0 * energy(second, 0).max(1.0));
}

/// Decodes the Opus packets of an Ogg file (one logical stream) to interleaved 8 kHz stereo,
/// dropping the pre-skip.
fn decode_stereo(bytes: &[u8]) -> Vec<i16> {
    let mut decoder = mulaw::opus::OpusFrameDecoder::new(8000, 2).unwrap();
    let mut packets = Vec::new();
    let mut pos = 0;
    let mut partial = Vec::new();
    while pos + 27 <= bytes.len() {
        assert_eq!(&bytes[pos..pos + 4], b"OggS");
        let segments = usize::from(bytes[pos + 26]);
        let lacing = &bytes[pos + 27..pos + 27 + segments];
        let mut body = pos + 27 + segments;
        for &len in lacing {
            partial.extend_from_slice(&bytes[body..body + usize::from(len)]);
            body += usize::from(len);
            if len < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        pos = body;
    }
    let head = &packets[0];
    let pre_skip_48k = usize::from(u16::from_le_bytes([head[10], head[11]]));
    let mut pcm = Vec::new();
    for packet in &packets[2..] {
        pcm.extend_from_slice(decoder.decode_frame(packet).unwrap());
    }
    pcm.split_off(2 * (pre_skip_48k / 6))
}

/// 20 ms of a linear chirp (aperiodic, so a correlation peak is unambiguous) from `from_hz` to
/// `to_hz` over `total_frames` frames, frame `index` of it, as PCM.
fn chirp_frame(index: usize, total_frames: usize, from_hz: f64, to_hz: f64) -> Vec<i16> {
    let seconds = total_frames as f64 * 0.02;
    (0..160)
        .map(|i| {
            let t = (index * 160 + i) as f64 / 8000.0;
            let phase = 2.0
                * std::f64::consts::PI
                * (from_hz * t + (to_hz - from_hz) * t * t / (2.0 * seconds));
            (8000.0 * phase.sin()) as i16
        })
        .collect()
}

/// Normalised correlation of two equally long signals.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |s: &[f64]| s.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(1.0)
}

#[test]
fn each_channel_decodes_to_its_own_side_when_both_talk_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = CallRecorder::create(dir.path(), "CA_BOTH").unwrap();
    let frames = 100;
    let (mut caller_pcm, mut agent_pcm) = (Vec::new(), Vec::new());
    for frame in 0..frames {
        let caller = chirp_frame(frame, frames, 300.0, 3000.0);
        let agent = chirp_frame(frame, frames, 2800.0, 400.0);
        // What the file can hold is the mu-law audio, so compare against its decoding.
        let (caller, agent) = (mulaw::encode(&caller), mulaw::encode(&agent));
        caller_pcm.extend(mulaw::decode(&caller));
        agent_pcm.extend(mulaw::decode(&agent));
        rec.push_caller(frame as u64 * 20, &caller).unwrap();
        rec.push_agent(frame as u64 * 20, &agent).unwrap();
    }
    let new = encode_spool(&rec.finish(1).unwrap()).unwrap();
    let pcm = decode_stereo(&std::fs::read(&new.path).unwrap());
    assert!(pcm.len() >= 2 * caller_pcm.len());
    let channel = |index: usize| -> Vec<f64> {
        pcm.iter()
            .skip(index)
            .step_by(2)
            .take(caller_pcm.len())
            .map(|&s| f64::from(s))
            .collect()
    };
    let as_f64 = |s: &[i16]| -> Vec<f64> { s.iter().map(|&x| f64::from(x)).collect() };
    let (left, right) = (channel(0), channel(1));
    let (caller, agent) = (as_f64(&caller_pcm), as_f64(&agent_pcm));
    // Skip the first and last 50 ms (codec start-up and end padding).
    let mid = 400..caller.len() - 400;
    let own_left = correlation(&left[mid.clone()], &caller[mid.clone()]);
    let own_right = correlation(&right[mid.clone()], &agent[mid.clone()]);
    let cross_left = correlation(&left[mid.clone()], &agent[mid.clone()]).abs();
    let cross_right = correlation(&right[mid.clone()], &caller[mid.clone()]).abs();
    assert!(
        own_left > 0.95 && own_right > 0.95,
        "{own_left} / {own_right}"
    );
    assert!(
        cross_left < 0.05 && cross_right < 0.05,
        "{cross_left} / {cross_right}"
    );
    let energy = |s: &[f64]| s.iter().map(|x| x * x).sum::<f64>();
    for (decoded, input) in [(&left, &caller), (&right, &agent)] {
        let ratio = energy(&decoded[mid.clone()]) / energy(&input[mid.clone()]);
        assert!((0.8..1.25).contains(&ratio), "energy ratio {ratio}");
    }
}

/// Nice value of each thread of this process whose name is `prefix` and a number.
#[cfg(target_os = "linux")]
fn thread_nice_values(prefix: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let Some(index) = name.trim_end().strip_prefix(prefix) else {
            continue;
        };
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, nice is field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        nice.push(after_name.split(' ').nth(16).unwrap().parse().unwrap());
    }
    nice
}

#[cfg(target_os = "linux")]
#[test]
fn encoder_threads_run_below_the_calls_priority() {
    let pool = RecordingPool::new(2).unwrap();
    assert_eq!(pool.encoders(), 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let nice = thread_nice_values("rec-encoder-");
        if nice.len() >= 2
            && nice
                .iter()
                .all(|&n| n == i64::from(crm::recording::ENCODER_THREAD_NICE))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "encoder threads' nice values: {nice:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn one_spool_encoded_by_several_encoders_at_once_ends_as_one_whole_file() {
    // Two processes sharing the directory (one draining while its successor starts) can both
    // encode a spool: each writes its own part file, and either rename leaves the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let mut rec = CallRecorder::create(dir.path(), "CA_TWICE").unwrap();
    for frame in 0..250u64 {
        rec.push_caller(frame * 20, &tone_frame(frame as usize * 160, 440.0))
            .unwrap();
        rec.push_agent(frame * 20, &tone_frame(frame as usize * 160, 660.0))
            .unwrap();
    }
    let spool = rec.finish(1).unwrap();
    let alone = std::fs::read(encode_spool(&spool).unwrap().path).unwrap();
    let results: Vec<NewRecording> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| encode_spool(&spool).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|pair| pair[0] == pair[1]));
    let file = std::fs::read(&results[0].path).unwrap();
    assert!(file == alone, "the encoder is deterministic");
    assert_eq!(
        files_starting_with(dir.path(), "CA_TWICE.ogg"),
        ["CA_TWICE.ogg"],
        "no part file left"
    );
}

/// A call cut by a crash leaves `<CallSid>.wav.part`, no longer locked once its process is
/// gone: it is finished (real lengths, renamed) and encodes like any spool. A spool still being
/// written (its recorder holds the lock) is left alone, and so is a file whose header was cut.
#[test]
fn spools_of_calls_cut_by_a_crash_are_finished_and_live_ones_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        recover_cut_spools(&dir.path().join("missing"))
            .unwrap()
            .is_empty()
    );
    let two_seconds = |sid: &str| {
        let mut rec = CallRecorder::create(dir.path(), sid).unwrap();
        for frame in 0..100u64 {
            let tone = tone_frame(frame as usize * 160, 440.0);
            rec.push_caller(frame * 20, &tone).unwrap();
            rec.push_agent(frame * 20, &tone).unwrap();
        }
        rec
    };
    // Dropped unfinished: the file is closed and its lock released, as when the process dies.
    drop(two_seconds("CA_CUT"));
    let live = two_seconds("CA_LIVE");
    assert!(
        CallRecorder::create(dir.path(), "CA_LIVE").is_err(),
        "a second recorder never truncates a spool a live one is writing"
    );
    std::fs::write(dir.path().join("CA_HEADLESS.wav.part"), b"RIFF\0\0").unwrap();

    let recovered = recover_cut_spools(dir.path()).unwrap();
    let sids: Vec<&str> = recovered.iter().map(|r| r.call_sid.as_str()).collect();
    assert_eq!(sids, ["CA_CUT"]);
    let cut = &recovered[0];
    assert_eq!(
        (cut.codec.as_str(), cut.duration_ms),
        ("pcm_mulaw", Some(2_000))
    );
    assert!(cut.at_ms > 0);
    assert!(cut.path.ends_with("CA_CUT.wav"));
    let bytes = std::fs::read(&cut.path).unwrap();
    let (info, data) = mulaw::wav::parse(&bytes).unwrap();
    assert_eq!((info.channels, data.len()), (2, 32_000), "{info}");
    assert_eq!(
        mulaw::wav::read_header(&mut bytes.as_slice()).unwrap().1,
        Some(32_000),
        "the real length is in the header"
    );
    assert_eq!(encode_spool(cut).unwrap().duration_ms, Some(2_000));
    assert!(!dir.path().join("CA_CUT.wav.part").exists());

    // Untouched: the live call's spool and the file with a cut header.
    assert!(dir.path().join("CA_LIVE.wav.part").exists());
    assert!(dir.path().join("CA_HEADLESS.wav.part").exists());
    assert_eq!(live.finish(1).unwrap().duration_ms, Some(2_000));
    assert!(recover_cut_spools(dir.path()).unwrap().is_empty());
}
