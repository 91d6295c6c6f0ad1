//! Opus 20 ms frames round-trip through libopus with the signal intact.
#![allow(clippy::unwrap_used)]

use mulaw::opus::{OpusFrameDecoder, OpusFrameEncoder, frame_samples};

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
    let channels = sweeps_hz.len() as u16;
    let mut encoder = OpusFrameEncoder::new(rate_hz, channels).unwrap();
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
                crosstalk < 0.3,
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
