//! Opus 20 ms frames round-trip through libopus with the signal intact.
#![allow(clippy::unwrap_used)]

use mulaw::opus::{OpusApplication, OpusFrameDecoder, OpusFrameEncoder, frame_samples};

/// Interleaved linear chirps (aperiodic, so the codec delay is unambiguous):
/// channel c sweeps `sweeps_hz[c].0` -> `sweeps_hz[c].1` over the signal.
fn chirps(sweeps_hz: &[(f64, f64)], rate_hz: u32, frames: usize) -> Vec<i16> {
    let per_channel = frames * frame_samples(rate_hz, 1);
    let seconds = per_channel as f64 / f64::from(rate_hz);
    let mut out = Vec::with_capacity(per_channel * sweeps_hz.len());
    for n in 0..per_channel {
        let t = n as f64 / f64::from(rate_hz);
        for &(start, end) in sweeps_hz {
            let phase =
                2.0 * std::f64::consts::PI * (start * t + (end - start) * t * t / (2.0 * seconds));
            out.push((9_000.0 * phase.sin()) as i16);
        }
    }
    out
}

fn channel(interleaved: &[i16], channels: usize, index: usize) -> Vec<f64> {
    interleaved
        .iter()
        .skip(index)
        .step_by(channels)
        .map(|&s| f64::from(s))
        .collect()
}

/// Best normalised cross-correlation of `decoded` against `original` over lags 0..max_lag.
fn best_correlation(original: &[f64], decoded: &[f64], max_lag: usize) -> (f64, usize) {
    let window = original.len() - max_lag - 200;
    let reference = &original[100..100 + window];
    (0..max_lag)
        .map(|lag| {
            let candidate = &decoded[100 + lag..100 + lag + window];
            let dot: f64 = reference.iter().zip(candidate).map(|(a, b)| a * b).sum();
            let norm_a: f64 = reference.iter().map(|a| a * a).sum::<f64>().sqrt();
            let norm_b: f64 = candidate.iter().map(|b| b * b).sum::<f64>().sqrt();
            (dot / (norm_a * norm_b), lag)
        })
        .fold((f64::MIN, 0), |best, current| {
            if current.0 > best.0 { current } else { best }
        })
}

fn round_trip(rate_hz: u32, sweeps_hz: &[(f64, f64)]) {
    let encoder = OpusFrameEncoder::new(rate_hz, sweeps_hz.len() as u16).unwrap();
    round_trip_with(encoder, sweeps_hz, 0.3);
}

/// Encodes chirps with `encoder`, decodes them and checks each channel against its input (and,
/// in stereo, that it holds less than `max_crosstalk` correlation with the other channel).
fn round_trip_with(mut encoder: OpusFrameEncoder, sweeps_hz: &[(f64, f64)], max_crosstalk: f64) {
    let rate_hz = encoder.sample_rate_hz();
    let channels = encoder.channels();
    let mut decoder = OpusFrameDecoder::new(rate_hz, channels).unwrap();
    let lookahead = encoder.lookahead_samples().unwrap() as usize;
    let input = chirps(sweeps_hz, rate_hz, 50);
    let mut output = Vec::with_capacity(input.len());
    let mut compressed_bytes = 0;
    for frame in input.chunks_exact(encoder.frame_samples()) {
        let packet = encoder.encode_frame(frame).unwrap();
        assert!(!packet.is_empty());
        compressed_bytes += packet.len();
        let packet = packet.to_vec();
        let pcm = decoder.decode_frame(&packet).unwrap();
        assert_eq!(
            pcm.len(),
            frame.len(),
            "one packet decodes to one 20 ms frame"
        );
        output.extend_from_slice(pcm);
    }
    assert!(
        compressed_bytes < input.len() * 2 / 4,
        "Opus actually compresses"
    );
    for index in 0..sweeps_hz.len() {
        let original = channel(&input, channels.into(), index);
        let decoded = channel(&output, channels.into(), index);
        let (correlation, lag) = best_correlation(&original, &decoded, lookahead + 20);
        assert!(
            correlation > 0.9,
            "{rate_hz} Hz ch{index}: correlation {correlation} at {lag}"
        );
        assert!(
            lag.abs_diff(lookahead) <= 2,
            "{rate_hz} Hz: delay {lag} vs lookahead {lookahead}"
        );
        let energy = |s: &[f64]| s.iter().map(|x| x * x).sum::<f64>() / s.len() as f64;
        let ratio = energy(&decoded[lag + 100..]) / energy(&original[100..original.len() - lag]);
        assert!(
            (0.7..1.3).contains(&ratio),
            "{rate_hz} Hz ch{index}: energy ratio {ratio}"
        );
        if sweeps_hz.len() == 2 {
            let other = channel(&input, 2, 1 - index);
            let (crosstalk, _) = best_correlation(&other, &decoded, lookahead + 20);
            assert!(
                crosstalk < max_crosstalk,
                "{rate_hz} Hz ch{index} leaks the other channel: {crosstalk}"
            );
        }
    }
}

#[test]
fn mono_round_trips_at_every_rate() {
    for rate in [8000, 16_000, 24_000, 48_000] {
        round_trip(rate, &[(200.0, 3000.0)]);
    }
}

#[test]
fn stereo_keeps_channels_apart() {
    round_trip(8000, &[(200.0, 3000.0), (3000.0, 200.0)]);
    round_trip(48_000, &[(300.0, 6000.0), (6000.0, 300.0)]);
}

/// The call recorder's settings (`mulaw::ogg::RECORDING_OPUS_*`): CELT at complexity 0.
fn recording_encoder() -> OpusFrameEncoder {
    let mut encoder =
        OpusFrameEncoder::with_application(8000, 2, mulaw::ogg::RECORDING_OPUS_APPLICATION)
            .unwrap();
    encoder
        .set_complexity(mulaw::ogg::RECORDING_OPUS_COMPLEXITY)
        .unwrap();
    encoder
        .set_bitrate_bps(mulaw::ogg::RECORDING_OPUS_BITRATE_BPS)
        .unwrap();
    encoder
}

#[test]
fn celt_at_the_recording_settings_keeps_stereo_channels_apart() {
    let encoder = recording_encoder();
    assert_eq!(encoder.application(), OpusApplication::RestrictedLowDelay);
    round_trip_with(encoder, &[(200.0, 3000.0), (3000.0, 200.0)], 0.1);
    // Mono and the other applications still round-trip.
    for application in [OpusApplication::Audio, OpusApplication::RestrictedLowDelay] {
        let encoder = OpusFrameEncoder::with_application(16_000, 1, application).unwrap();
        round_trip_with(encoder, &[(200.0, 6000.0)], 0.3);
    }
}

/// Stereo speech-like bursts (chirps) separated by digital silence on both channels:
/// `(sound, silence)` frame counts per burst. Returns the interleaved PCM.
fn bursts_with_silence(pattern: &[(usize, usize)]) -> Vec<i16> {
    let mut pcm = Vec::new();
    for (index, &(sound, silence)) in pattern.iter().enumerate() {
        let low = 300.0 + 100.0 * index as f64;
        pcm.extend(chirps(&[(low, 2500.0), (2800.0, low)], 8000, sound));
        pcm.resize(pcm.len() + silence * 320, 0);
    }
    pcm
}

fn encode_all(encoder: &mut OpusFrameEncoder, pcm: &[i16]) -> Vec<Vec<u8>> {
    pcm.chunks_exact(encoder.frame_samples())
        .map(|frame| encoder.encode_frame(frame).unwrap().to_vec())
        .collect()
}

fn decode_all(packets: &[Vec<u8>]) -> Vec<i16> {
    let mut decoder = OpusFrameDecoder::new(8000, 2).unwrap();
    let mut pcm = Vec::new();
    for packet in packets {
        pcm.extend_from_slice(decoder.decode_frame(packet).unwrap());
    }
    pcm
}

/// Root mean square of one channel of interleaved stereo over frames `[from, to)`.
fn frame_rms(pcm: &[i16], channel: usize, from: usize, to: usize) -> f64 {
    let samples = &pcm[from * 320..to * 320];
    let energy: f64 = samples
        .iter()
        .skip(channel)
        .step_by(2)
        .map(|&s| f64::from(s).powi(2))
        .sum();
    (energy / (samples.len() / 2) as f64).sqrt()
}

#[test]
fn steady_digital_silence_replays_libopus_own_packet_and_decodes_like_a_full_encode() {
    // 1 s of sound, 2 s of silence, 1 s, 1 s of silence, 0.5 s, a single silent frame, 0.5 s.
    let pattern = [(50, 100), (50, 50), (25, 1), (25, 0)];
    let input = bursts_with_silence(&pattern);
    let mut full = recording_encoder();
    let mut reusing = recording_encoder();
    reusing.set_reuse_steady_silence(true);

    let full_packets = encode_all(&mut full, &input);
    let mut reused_at = Vec::new();
    let reusing_packets: Vec<Vec<u8>> = input
        .chunks_exact(320)
        .enumerate()
        .map(|(index, frame)| {
            let before = reusing.reused_silent_frames();
            let packet = reusing.encode_frame(frame).unwrap().to_vec();
            if reusing.reused_silent_frames() > before {
                reused_at.push(index);
            }
            packet
        })
        .collect();
    assert_eq!(full.reused_silent_frames(), 0, "off by default");
    assert_eq!(reusing.reused_silent_frames(), reused_at.len() as u64);
    // Most of the two long silences (150 frames) cost no encoding; the libopus DC filter's
    // decaying tail right after the sound is still encoded, and so is the single silent frame.
    assert!(
        reused_at.len() >= 100,
        "only {} frames reused",
        reused_at.len()
    );
    let silent_frame = 50 + 100 + 50 + 50 + 25;
    assert!(!reused_at.contains(&silent_frame));
    for &index in &reused_at {
        assert!(
            input[index * 320..(index + 1) * 320]
                .iter()
                .all(|&s| s == 0)
        );
        assert_eq!(
            reusing_packets[index], full_packets[index],
            "frame {index}: the decoder gets exactly the bytes a full encode sends"
        );
    }

    // Both streams decode to the input: sound where there was sound, silence in between, and
    // the first frames after each silence (where the encoders' states may differ) intact.
    let full_pcm = decode_all(&full_packets);
    let reusing_pcm = decode_all(&reusing_packets);
    let delay = (full.lookahead_samples().unwrap() as usize) * 2;
    let aligned = |pcm: &[i16]| pcm[delay..].to_vec();
    let (full_pcm, reusing_pcm) = (aligned(&full_pcm), aligned(&reusing_pcm));
    let input = &input[..full_pcm.len()];
    for (from, to) in [
        (10, 50),
        (150, 153),
        (150, 200),
        (250, 253),
        (250, 275),
        (276, 290),
    ] {
        for channel in 0..2 {
            let expected = frame_rms(input, channel, from, to);
            for (name, pcm) in [("full", &full_pcm), ("reusing", &reusing_pcm)] {
                let level = frame_rms(pcm, channel, from, to);
                assert!(
                    (level / expected - 1.0).abs() < 0.1,
                    "{name} frames {from}..{to} ch{channel}: rms {level} vs input {expected}"
                );
                let error = frame_rms(
                    &pcm.iter()
                        .zip(input)
                        .map(|(&a, &b)| a.saturating_sub(b))
                        .collect::<Vec<_>>(),
                    channel,
                    from,
                    to,
                );
                assert!(
                    error < expected * 0.2,
                    "{name} frames {from}..{to} ch{channel}: error rms {error} vs {expected}"
                );
            }
        }
    }
    // Inside the replayed silence both decoders output exact digital silence.
    for &index in &reused_at {
        if reused_at.contains(&(index + 1)) {
            for pcm in [&full_pcm, &reusing_pcm] {
                assert!(pcm[index * 320..(index + 1) * 320].iter().all(|&s| s == 0));
            }
        }
    }
}

#[test]
fn silk_silent_packets_are_never_replayed() {
    let input = bursts_with_silence(&[(25, 100), (25, 0)]);
    let mut plain = OpusFrameEncoder::new(8000, 2).unwrap();
    let mut reusing = OpusFrameEncoder::new(8000, 2).unwrap();
    reusing.set_reuse_steady_silence(true);
    assert_eq!(
        encode_all(&mut plain, &input),
        encode_all(&mut reusing, &input)
    );
    assert_eq!(reusing.reused_silent_frames(), 0);
}

#[test]
fn wrong_frame_lengths_and_configs_are_typed_errors() {
    let mut encoder = OpusFrameEncoder::new(8000, 1).unwrap();
    assert_eq!(encoder.frame_samples(), 160);
    let error = encoder.encode_frame(&[0; 159]).unwrap_err();
    assert!(matches!(
        error,
        mulaw::Error::OpusFrameLength {
            expected: 160,
            got: 159
        }
    ));
    for (rate, channels) in [(44_100, 1), (8000, 0), (8000, 3), (12_345, 2)] {
        let error = OpusFrameEncoder::new(rate, channels).unwrap_err();
        assert!(matches!(error, mulaw::Error::UnsupportedOpusConfig { .. }));
        assert!(OpusFrameDecoder::new(rate, channels).is_err());
    }
    encoder.set_bitrate_bps(16_000).unwrap();
    assert!(encoder.set_bitrate_bps(-5).is_err());
}

#[test]
fn corrupt_and_empty_packets_are_errors_and_loss_is_concealed() {
    let mut decoder = OpusFrameDecoder::new(16_000, 1).unwrap();
    assert!(matches!(
        decoder.decode_frame(&[]).unwrap_err(),
        mulaw::Error::Opus { .. }
    ));
    // TOC byte announcing code 3 (arbitrary frame count) with no count byte: malformed.
    assert!(decoder.decode_frame(&[0x03]).is_err());
    assert_eq!(decoder.conceal_lost_frame().unwrap().len(), 320);
}
