//! Ogg Opus output is structurally valid (parsed back page by page, CRCs recomputed), decodes
//! to the audio that went in, and passes `opusinfo` when it is installed.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::Command;

use mulaw::ogg::{self, OggOpusWriter, StereoCallRecorder, ogg_crc32};
use mulaw::opus::OpusFrameDecoder;
use mulaw::stereo::StereoWavRecorder;
use mulaw::wav;

#[derive(Debug)]
struct Page {
    header_type: u8,
    granule_position: u64,
    serial: u32,
    sequence: u32,
    /// Packets completed on this page (no packet in this writer spans pages).
    packets: Vec<Vec<u8>>,
}

fn parse_pages(bytes: &[u8]) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let header = &bytes[offset..offset + 27];
        assert_eq!(&header[0..4], b"OggS", "capture pattern at {offset}");
        assert_eq!(header[4], 0, "stream structure version");
        let segments = usize::from(header[26]);
        let lacing = &bytes[offset + 27..offset + 27 + segments];
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let page_len = 27 + segments + body_len;
        let mut page = bytes[offset..offset + page_len].to_vec();
        let stored_crc = u32::from_le_bytes(page[22..26].try_into().unwrap());
        page[22..26].fill(0);
        assert_eq!(ogg_crc32(&page), stored_crc, "CRC of page at {offset}");

        let mut packets = Vec::new();
        let mut current = Vec::new();
        let mut body = &bytes[offset + 27 + segments..offset + page_len];
        for &value in lacing {
            current.extend_from_slice(&body[..usize::from(value)]);
            body = &body[usize::from(value)..];
            if value < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        assert!(
            current.is_empty(),
            "this writer never continues a packet on the next page"
        );
        pages.push(Page {
            header_type: header[5],
            granule_position: u64::from_le_bytes(header[6..14].try_into().unwrap()),
            serial: u32::from_le_bytes(header[14..18].try_into().unwrap()),
            sequence: u32::from_le_bytes(header[18..22].try_into().unwrap()),
            packets,
        });
        offset += page_len;
    }
    pages
}

struct Stream {
    channels: u8,
    pre_skip: u64,
    input_rate: u32,
    final_granule: u64,
    audio_packets: Vec<Vec<u8>>,
}

/// Checks RFC 7845 structure and returns the header fields and audio packets.
fn check_structure(bytes: &[u8]) -> Stream {
    let pages = parse_pages(bytes);
    assert!(pages.len() >= 3, "head, tags and at least one audio page");
    for (index, page) in pages.iter().enumerate() {
        assert_eq!(
            page.sequence as usize, index,
            "page sequence numbers are consecutive"
        );
        assert_eq!(page.serial, pages[0].serial, "one logical stream");
        let bos = page.header_type & 0x02 != 0;
        let eos = page.header_type & 0x04 != 0;
        assert_eq!(bos, index == 0, "BOS exactly on the first page");
        assert_eq!(
            eos,
            index == pages.len() - 1,
            "EOS exactly on the last page"
        );
        assert_eq!(page.header_type & 0x01, 0, "no continued packets");
    }
    let head = &pages[0].packets;
    assert_eq!(head.len(), 1, "OpusHead alone on the first page");
    let head = &head[0];
    assert_eq!(head.len(), 19);
    assert_eq!(&head[0..8], b"OpusHead");
    assert_eq!(head[8], 1, "version");
    assert_eq!(head[18], 0, "mapping family 0");
    assert_eq!(pages[0].granule_position, 0);
    assert_eq!(
        pages[1].packets.len(),
        1,
        "OpusTags alone on the second page"
    );
    let tags = &pages[1].packets[0];
    assert_eq!(&tags[0..8], b"OpusTags");
    let vendor_len = u32::from_le_bytes(tags[8..12].try_into().unwrap()) as usize;
    assert!(
        std::str::from_utf8(&tags[12..12 + vendor_len])
            .unwrap()
            .starts_with("crmd")
    );
    assert_eq!(pages[1].granule_position, 0);

    // Every 20 ms packet adds 960 to the 48 kHz granule; intermediate pages carry the running
    // total, the last one may be end-trimmed below it.
    let mut running = 0_u64;
    let audio_pages = &pages[2..];
    for (index, page) in audio_pages.iter().enumerate() {
        assert!(!page.packets.is_empty());
        running += 960 * page.packets.len() as u64;
        if index + 1 < audio_pages.len() {
            assert_eq!(
                page.granule_position, running,
                "granule of audio page {index}"
            );
        } else {
            assert!(
                page.granule_position <= running,
                "end trimming only shortens"
            );
            assert!(
                page.granule_position > running.saturating_sub(960 * 2),
                "trims less than the padding"
            );
        }
    }
    Stream {
        channels: head[9],
        pre_skip: u64::from(u16::from_le_bytes([head[10], head[11]])),
        input_rate: u32::from_le_bytes(head[12..16].try_into().unwrap()),
        final_granule: pages.last().unwrap().granule_position,
        audio_packets: audio_pages
            .iter()
            .flat_map(|page| page.packets.clone())
            .collect(),
    }
}

/// Decodes the stream at 48 kHz as a player would: drop pre-skip, stop at the final granule.
fn decode_like_a_player(stream: &Stream) -> Vec<i16> {
    let mut decoder = OpusFrameDecoder::new(48_000, u16::from(stream.channels)).unwrap();
    let mut pcm = Vec::new();
    for packet in &stream.audio_packets {
        pcm.extend_from_slice(decoder.decode_frame(packet).unwrap());
    }
    let channels = usize::from(stream.channels);
    let start = stream.pre_skip as usize * channels;
    let end = stream.final_granule as usize * channels;
    pcm[start..end].to_vec()
}

fn run_opusinfo(bytes: &[u8]) {
    let Ok(version) = Command::new("opusinfo").arg("-V").output() else {
        println!("opusinfo not installed (apt package opus-tools): skipping the external check");
        return;
    };
    assert!(version.status.success());
    let mut file = tempfile::Builder::new().suffix(".opus").tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    let output = Command::new("opusinfo").arg(file.path()).output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("opusinfo:\n{report}");
    assert!(output.status.success(), "opusinfo failed:\n{report}");
    assert!(!report.contains("WARNING"), "opusinfo warned:\n{report}");
    assert!(
        !report.contains("ERROR"),
        "opusinfo reported an error:\n{report}"
    );
    assert!(
        report.contains("Opus stream 1"),
        "opusinfo saw no stream:\n{report}"
    );
}

fn goertzel_amplitude(samples: &[i16], frequency_hz: f64, rate_hz: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * frequency_hz / rate_hz).cos();
    let (mut previous, mut before) = (0.0_f64, 0.0_f64);
    for &sample in samples {
        let current = f64::from(sample) + coefficient * previous - before;
        before = previous;
        previous = current;
    }
    let power = previous * previous + before * before - coefficient * previous * before;
    2.0 * power.sqrt() / samples.len() as f64
}

fn sine_frame(frame_index: usize, frequency_hz: f64, rate_hz: u32, channels: usize) -> Vec<i16> {
    let per_channel = rate_hz as usize / 50;
    (0..per_channel * channels)
        .map(|i| {
            let n = frame_index * per_channel + i / channels;
            let t = n as f64 / f64::from(rate_hz);
            (8_000.0 * (2.0 * std::f64::consts::PI * frequency_hz * t).sin()) as i16
        })
        .collect()
}

#[test]
fn a_mono_16k_stream_is_well_formed_and_decodes_to_its_input() {
    let mut writer = OggOpusWriter::new(Vec::new(), 1, 16_000).unwrap();
    assert_eq!(writer.frame_samples(), 320);
    let frames = 173; // 3.46 s: several full pages plus a partial one
    for index in 0..frames {
        writer
            .write_frame(&sine_frame(index, 1000.0, 16_000, 1))
            .unwrap();
    }
    assert_eq!(writer.duration_ms(), 3_460);
    let error = writer.write_frame(&[0; 100]).unwrap_err();
    assert!(matches!(
        error,
        mulaw::Error::OpusFrameLength {
            expected: 320,
            got: 100
        }
    ));
    let bytes = writer.finish().unwrap();

    let stream = check_structure(&bytes);
    assert_eq!(stream.channels, 1);
    assert_eq!(stream.input_rate, 16_000);
    assert!(stream.pre_skip > 0 && stream.pre_skip < 960);
    assert_eq!(stream.final_granule, stream.pre_skip + frames as u64 * 960);
    let pcm = decode_like_a_player(&stream);
    assert_eq!(
        pcm.len(),
        frames * 960,
        "exactly the input duration at 48 kHz"
    );
    let middle = &pcm[48_000..96_000];
    let amplitude = goertzel_amplitude(middle, 1000.0, 48_000.0);
    assert!(
        (amplitude - 8_000.0).abs() < 1_200.0,
        "1 kHz amplitude {amplitude}"
    );
    run_opusinfo(&bytes);
}

#[test]
fn pages_reach_the_sink_while_the_stream_is_still_open() {
    let mut writer = OggOpusWriter::new(Vec::new(), 2, 48_000).unwrap();
    for index in 0..120 {
        writer
            .write_frame(&sine_frame(index, 440.0, 48_000, 2))
            .unwrap();
    }
    // Debug shows progress without exposing the buffer; the sink already holds 2 s of pages.
    assert!(format!("{writer:?}").contains("input_frames: 120"));
    let bytes = writer.finish().unwrap();
    let stream = check_structure(&bytes);
    assert_eq!(stream.channels, 2);
    assert!(stream.audio_packets.len() >= 120);
    run_opusinfo(&bytes);
}

/// A sink that takes at most 7 bytes per call (vectored or not), like a pipe or a full disk
/// buffer: every page write is partial.
#[derive(Default)]
struct Trickle(Vec<u8>);

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(7 - written);
            self.0.extend_from_slice(&buf[..n]);
            written += n;
            if written == 7 {
                break;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn pages_written_in_pieces_are_byte_identical_to_pages_written_whole() {
    let frames: Vec<Vec<i16>> = (0..75).map(|i| sine_frame(i, 440.0, 8000, 2)).collect();
    let mut whole = OggOpusWriter::new(Vec::new(), 2, 8000).unwrap();
    let mut pieces = OggOpusWriter::new(Trickle::default(), 2, 8000).unwrap();
    for frame in &frames {
        whole.write_frame(frame).unwrap();
        pieces.write_frame(frame).unwrap();
    }
    let whole = whole.finish().unwrap();
    let pieces = pieces.finish().unwrap().0;
    assert_eq!(pieces, whole);
    check_structure(&pieces);
}

#[test]
fn an_empty_recording_is_still_a_valid_file() {
    let writer = OggOpusWriter::new(Vec::new(), 2, 8000).unwrap();
    let bytes = writer.finish().unwrap();
    let stream = check_structure(&bytes);
    assert_eq!(stream.final_granule, stream.pre_skip);
    assert!(decode_like_a_player(&stream).is_empty());
    run_opusinfo(&bytes);
}

fn mulaw_tone(frequency_hz: f64, start_sample: usize, samples: usize) -> Vec<u8> {
    let pcm: Vec<i16> = (start_sample..start_sample + samples)
        .map(|n| {
            let t = n as f64 / 8000.0;
            (8_000.0 * (2.0 * std::f64::consts::PI * frequency_hz * t).sin()) as i16
        })
        .collect();
    mulaw::encode(&pcm)
}

/// Per-channel 1 kHz (caller) / 600 Hz (agent) amplitude in the 48 kHz decode over [from, to) ms.
fn channel_tones(pcm: &[i16], from_ms: usize, to_ms: usize) -> (f64, f64) {
    let frames = &pcm[from_ms * 48 * 2..to_ms * 48 * 2];
    let left: Vec<i16> = frames.iter().step_by(2).copied().collect();
    let right: Vec<i16> = frames.iter().skip(1).step_by(2).copied().collect();
    (
        goertzel_amplitude(&left, 1000.0, 48_000.0),
        goertzel_amplitude(&right, 600.0, 48_000.0),
    )
}

#[test]
fn the_call_recorder_puts_caller_left_agent_right_at_their_timestamps() {
    let mut recorder = StereoCallRecorder::new(Vec::new()).unwrap();
    // Caller: 3 s of 1 kHz in Twilio-style 20 ms chunks. Agent: a 1 s TTS answer at 600 Hz,
    // handed over in one piece at t = 1000 ms, i.e. ahead of the caller's audio.
    for chunk in 0..50 {
        recorder
            .push_caller(chunk * 20, &mulaw_tone(1000.0, chunk as usize * 160, 160))
            .unwrap();
    }
    recorder
        .push_agent(1_000, &mulaw_tone(600.0, 0, 8000))
        .unwrap();
    for chunk in 50..150 {
        recorder
            .push_caller(chunk * 20, &mulaw_tone(1000.0, chunk as usize * 160, 160))
            .unwrap();
    }
    // A late agent chunk (timestamp inside audio already placed) is appended, not overlapped.
    recorder
        .push_agent(1_500, &mulaw_tone(600.0, 8000, 800))
        .unwrap();
    assert_eq!(recorder.duration_ms(), 3_000);
    let bytes = recorder.finish().unwrap();

    let stream = check_structure(&bytes);
    assert_eq!((stream.channels, stream.input_rate), (2, 8000));
    let pcm = decode_like_a_player(&stream);
    assert_eq!(pcm.len(), 3_000 * 48 * 2, "3 s of stereo at 48 kHz");

    let (caller, agent) = channel_tones(&pcm, 100, 900);
    assert!(
        caller > 5_000.0 && agent < 300.0,
        "before the agent speaks: {caller} / {agent}"
    );
    let (caller, agent) = channel_tones(&pcm, 1_100, 2_000);
    assert!(
        caller > 5_000.0 && agent > 5_000.0,
        "both talking: {caller} / {agent}"
    );
    let (_, agent) = channel_tones(&pcm, 2_010, 2_090);
    assert!(
        agent > 5_000.0,
        "the late chunk follows the answer: {agent}"
    );
    let (caller, agent) = channel_tones(&pcm, 2_200, 2_900);
    assert!(
        caller > 5_000.0 && agent < 300.0,
        "agent done: {caller} / {agent}"
    );
    run_opusinfo(&bytes);
}

#[test]
fn gaps_become_silence_and_one_sided_audio_is_written_within_the_skew_bound() {
    let sink: Vec<u8> = Vec::new();
    let mut recorder = StereoCallRecorder::with_max_skew_ms(sink, 1_000).unwrap();
    // Only the agent talks, at 0 ms and again at 2.5 s; the caller stays silent throughout.
    recorder
        .push_agent(0, &mulaw_tone(600.0, 0, 4_000))
        .unwrap();
    recorder
        .push_agent(2_500, &mulaw_tone(600.0, 0, 4_000))
        .unwrap();
    let too_far = recorder
        .push_caller(2_500 + 11 * 60 * 1000, &[0xFF; 160])
        .unwrap_err();
    assert!(matches!(
        too_far,
        mulaw::Error::RecordingTimestampTooFarAhead { .. }
    ));
    // Skew bound: everything but the last second has been encoded already.
    let debug = format!("{recorder:?}");
    assert!(debug.contains("buffered_agent_samples: 8000"), "{debug}");
    let bytes = recorder.finish().unwrap();
    let stream = check_structure(&bytes);
    let pcm = decode_like_a_player(&stream);
    assert_eq!(pcm.len(), 3_000 * 48 * 2);
    let level = |from_ms: usize, to_ms: usize, channel: usize| {
        let part = &pcm[from_ms * 96..to_ms * 96];
        let energy: f64 = part
            .iter()
            .skip(channel)
            .step_by(2)
            .map(|&s| f64::from(s).powi(2))
            .sum();
        (energy / (part.len() / 2) as f64).sqrt()
    };
    assert!(level(0, 3_000, 0) < 50.0, "the caller channel is silent");
    assert!(
        level(0, 400, 1) > 3_000.0,
        "the agent channel carries the answer"
    );
    assert!(
        level(1_000, 2_400, 1) < 50.0,
        "the gap on the agent channel is silent"
    );
}

/// RMS of one channel (0 = caller, 1 = agent) of the 48 kHz stereo decode over [from, to) ms.
fn channel_rms(pcm: &[i16], channel: usize, from_ms: usize, to_ms: usize) -> f64 {
    let part = &pcm[from_ms * 96..to_ms * 96];
    let energy: f64 = part
        .iter()
        .skip(channel)
        .step_by(2)
        .map(|&s| f64::from(s).powi(2))
        .sum();
    (energy / (part.len() / 2) as f64).sqrt()
}

#[test]
fn silence_on_both_sides_between_turns_costs_no_encoding_and_nothing_moves() {
    let mut recorder = StereoCallRecorder::new(Vec::new()).unwrap();
    // The caller talks for 1 s, then their line carries digital silence (Twilio keeps sending
    // frames). The agent answers at 3 s with a 1 s TTS chunk; before that its side is a gap.
    for chunk in 0..200_u64 {
        let audio = if chunk < 50 {
            mulaw_tone(1000.0, chunk as usize * 160, 160)
        } else {
            vec![0xFF; 160]
        };
        recorder.push_caller(chunk * 20, &audio).unwrap();
        if chunk == 150 {
            recorder
                .push_agent(3_000, &mulaw_tone(600.0, 0, 8000))
                .unwrap();
        }
    }
    // 2 s of silence on both sides = 100 frames; libopus' DC filter tail keeps the first
    // ~15 of them busy, 3 more prove the silent packet is steady.
    let reused = recorder.reused_silent_frames();
    assert!((70..=100).contains(&reused), "reused {reused} frames");
    assert!(format!("{recorder:?}").contains(&format!("reused_silent_frames: {reused}")));
    let bytes = recorder.finish().unwrap();

    let stream = check_structure(&bytes);
    let pcm = decode_like_a_player(&stream);
    assert_eq!(pcm.len(), 4_000 * 48 * 2, "4 s of stereo at 48 kHz");
    let (caller, agent) = channel_tones(&pcm, 100, 900);
    assert!(
        caller > 5_000.0 && agent < 300.0,
        "caller talking: {caller} / {agent}"
    );
    for channel in 0..2 {
        let level = channel_rms(&pcm, channel, 1_500, 2_950);
        assert!(level < 1.0, "both silent, ch{channel}: rms {level}");
    }
    // The answer starts at exactly 3 s, on the agent's side only.
    assert!(channel_rms(&pcm, 1, 2_900, 2_995) < 50.0);
    assert!(channel_rms(&pcm, 1, 3_005, 3_100) > 3_000.0);
    let (caller, agent) = channel_tones(&pcm, 3_100, 3_900);
    assert!(
        caller < 300.0 && agent > 5_000.0,
        "agent talking: {caller} / {agent}"
    );
    run_opusinfo(&bytes);
}

/// One call's audio as the call driver hands it over: Twilio-jittered caller frames (with a
/// dropped stretch), and agent replies pushed as they play, one ahead of the caller's frames,
/// one late, one inside audio already placed.
fn call_scenario(mut push: impl FnMut(bool, u64, &[u8])) {
    for chunk in 0..250_u64 {
        if (120..135).contains(&chunk) {
            continue; // a network gap: 300 ms the line never delivered
        }
        let jitter = [0, 1, 3, 0, 2][chunk as usize % 5];
        let audio = if chunk < 80 {
            mulaw_tone(1000.0, chunk as usize * 160, 160)
        } else {
            vec![0xFF; 160]
        };
        push(false, chunk * 20 + jitter, &audio);
        match chunk {
            60 => push(true, 1_650, &mulaw_tone(600.0, 0, 4_000)),
            200 => push(true, 3_900, &mulaw_tone(600.0, 0, 2_400)),
            210 => push(true, 3_950, &mulaw_tone(600.0, 2_400, 800)),
            _ => {}
        }
    }
}

#[test]
fn a_spooled_wav_encodes_to_the_bytes_the_live_recorder_writes() {
    let mut live = StereoCallRecorder::with_max_skew_ms(Vec::new(), 1_000).unwrap();
    let mut spool = StereoWavRecorder::new(std::io::Cursor::new(Vec::new()), 1_000).unwrap();
    call_scenario(|agent, at, audio| {
        if agent {
            live.push_agent(at, audio).unwrap();
            spool.push_agent(at, audio).unwrap();
        } else {
            live.push_caller(at, audio).unwrap();
            spool.push_caller(at, audio).unwrap();
        }
    });
    assert_eq!(spool.duration_ms(), live.duration_ms());
    let live_ogg = live.finish().unwrap();
    let wav = spool.finish().unwrap().into_inner();

    // The spool is a complete stereo mu-law WAV, caller left, agent right: the caller's last
    // frame (at 4,982 ms) ends at 5,002 ms, padded to a whole 20 ms frame.
    let (info, data) = wav::parse(&wav).unwrap();
    assert_eq!(
        (info.format, info.sample_rate, info.channels),
        (wav::WavFormat::MuLaw, 8000, 2)
    );
    assert_eq!(data.len(), 5_020 * 8 * 2);
    let left: Vec<u8> = data.iter().step_by(2).copied().collect();
    let right: Vec<u8> = data.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(
        &left[..160],
        &mulaw_tone(1000.0, 0, 160)[..],
        "caller at 0 ms"
    );
    assert_eq!(
        &right[1_650 * 8..1_650 * 8 + 4_000],
        &mulaw_tone(600.0, 0, 4_000)[..],
        "the agent's reply at its play time"
    );
    assert!(
        right[..1_650 * 8].iter().all(|&b| b == 0xFF),
        "agent silent before"
    );
    assert!(
        left[2_400 * 8..2_700 * 8].iter().all(|&b| b == 0xFF),
        "the network gap is silence"
    );

    let (encoded, duration_ms) =
        ogg::encode_stereo_mulaw_wav(std::io::Cursor::new(&wav), Vec::new()).unwrap();
    assert_eq!(duration_ms, 5_020);
    assert!(
        encoded == live_ogg,
        "encoding the spool after the call must give the live recorder's exact bytes \
         ({} vs {} bytes)",
        encoded.len(),
        live_ogg.len()
    );
    run_opusinfo(&encoded);
}

#[test]
fn a_spool_cut_short_still_plays_and_encodes_to_its_last_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("CA1.wav.part");
    let mut spool = StereoWavRecorder::new(std::fs::File::create(&path).unwrap(), 1_000).unwrap();
    // 2 s of caller audio, the agent silent: the skew bound has forced the first second out.
    for chunk in 0..100_u64 {
        spool
            .push_caller(chunk * 20, &mulaw_tone(1000.0, chunk as usize * 160, 160))
            .unwrap();
    }
    // No `finish`: the file is what a crash mid-call leaves (its header says "length unknown").
    let mut wav = std::fs::read(&path).unwrap();
    drop(spool);
    let (info, data) = wav::parse(&wav).unwrap();
    assert_eq!(
        (info.channels, data.len()),
        (2, 50 * 320),
        "one second released"
    );
    // A cut in the middle of a frame is padded with silence.
    wav.truncate(wav.len() - 7);
    let (ogg_bytes, duration_ms) =
        ogg::encode_stereo_mulaw_wav(std::io::Cursor::new(&wav), Vec::new()).unwrap();
    assert_eq!(duration_ms, 1_000, "49 whole frames and one padded");
    let stream = check_structure(&ogg_bytes);
    let pcm = decode_like_a_player(&stream);
    let (caller, _) = channel_tones(&pcm, 100, 900);
    assert!(caller > 5_000.0, "the caller's tone survives: {caller}");
}

#[test]
fn only_a_stereo_mulaw_wav_is_accepted_for_encoding() {
    let encode = |bytes: &[u8]| {
        ogg::encode_stereo_mulaw_wav(std::io::Cursor::new(bytes), Vec::new()).map(|(_, ms)| ms)
    };
    let mono = wav::write_mulaw(&[0xFF; 1_600], 8000, 1);
    assert!(matches!(
        encode(&mono),
        Err(mulaw::Error::WavFormatMismatch { .. })
    ));
    let pcm = wav::write_pcm16(&[0; 3_200], 8000, 2);
    assert!(matches!(
        encode(&pcm),
        Err(mulaw::Error::WavFormatMismatch { .. })
    ));
    assert!(matches!(
        encode(b"OggS not a wav at all"),
        Err(mulaw::Error::NotWav { .. })
    ));
    let stereo = wav::write_mulaw(&[0xFF; 3_200], 8000, 2); // 200 ms
    for cut in [5, 20, 40, 57] {
        assert!(
            matches!(
                encode(&stereo[..cut]),
                Err(mulaw::Error::WavTruncated { .. } | mulaw::Error::WavMissingChunk { .. })
            ),
            "header cut at {cut}"
        );
    }
    assert_eq!(encode(&stereo).unwrap(), 200);
    // Chunks before `data` (a `LIST` with an odd size and its pad byte) are skipped.
    let mut with_list = stereo[..12].to_vec();
    with_list.extend_from_slice(b"LIST");
    with_list.extend_from_slice(&3_u32.to_le_bytes());
    with_list.extend_from_slice(b"abc\0");
    with_list.extend_from_slice(&stereo[12..]);
    assert_eq!(encode(&with_list).unwrap(), 200);
}
