//! The resampler is band-limited: in-band tones keep frequency and energy, out-of-band tones
//! and images are suppressed, and chunking does not change the output.
#![allow(clippy::unwrap_used)]

use mulaw::resample::Resampler;

fn sine(frequency_hz: f64, rate_hz: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
    let count = (f64::from(rate_hz) * seconds) as usize;
    (0..count)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * frequency_hz * n as f64 / f64::from(rate_hz);
            (amplitude * phase.sin()).round() as i16
        })
        .collect()
}

fn rms(samples: &[i16]) -> f64 {
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (energy / samples.len() as f64).sqrt()
}

/// Amplitude of the `frequency_hz` component (Goertzel), normalised to a sine's peak.
fn tone_amplitude(samples: &[i16], frequency_hz: f64, rate_hz: u32) -> f64 {
    let omega = 2.0 * std::f64::consts::PI * frequency_hz / f64::from(rate_hz);
    let coefficient = 2.0 * omega.cos();
    let (mut previous, mut before_previous) = (0.0_f64, 0.0_f64);
    for &sample in samples {
        let current = f64::from(sample) + coefficient * previous - before_previous;
        before_previous = previous;
        previous = current;
    }
    let power = previous * previous + before_previous * before_previous
        - coefficient * previous * before_previous;
    2.0 * power.sqrt() / samples.len() as f64
}

/// Zero crossings per second / 2.
fn zero_crossing_frequency(samples: &[i16], rate_hz: u32) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|pair| (pair[0] < 0) != (pair[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(rate_hz))
}

fn resample_all(from_hz: u32, to_hz: u32, input: &[i16]) -> Vec<i16> {
    let mut resampler = Resampler::new(from_hz, to_hz).unwrap();
    let mut out = Vec::new();
    resampler.process(input, &mut out);
    out
}

/// Drops the first and last 100 ms (filter transients).
fn steady(samples: &[i16], rate_hz: u32) -> &[i16] {
    let margin = rate_hz as usize / 10;
    &samples[margin..samples.len() - margin]
}

#[test]
fn a_1_khz_tone_survives_8k_to_48k_and_back() {
    let input = sine(1000.0, 8000, 1.0, 10_000.0);
    let up = resample_all(8000, 48_000, &input);
    assert!(
        (up.len() as i64 - 48_000).abs() < 400,
        "up length {}",
        up.len()
    );
    let up_steady = steady(&up, 48_000);
    assert!((zero_crossing_frequency(up_steady, 48_000) - 1000.0).abs() < 5.0);
    let input_rms = rms(steady(&input, 8000));
    assert!(
        (rms(up_steady) / input_rms - 1.0).abs() < 0.02,
        "energy kept at 48 kHz"
    );
    // Images at 8k +- 1k must be gone after up-sampling.
    assert!(tone_amplitude(up_steady, 7000.0, 48_000) < 10_000.0 * 1e-3);
    assert!(tone_amplitude(up_steady, 9000.0, 48_000) < 10_000.0 * 1e-3);

    let back = resample_all(48_000, 8000, &up);
    let back_steady = steady(&back, 8000);
    assert!((zero_crossing_frequency(back_steady, 8000) - 1000.0).abs() < 5.0);
    assert!(
        (rms(back_steady) / input_rms - 1.0).abs() < 0.02,
        "energy kept after round trip"
    );
    assert!((tone_amplitude(back_steady, 1000.0, 8000) - 10_000.0).abs() < 200.0);
}

#[test]
fn every_supported_pair_keeps_an_in_band_tone() {
    let rates = mulaw::resample::SUPPORTED_RATES_HZ;
    for &from in &rates {
        for &to in &rates {
            let input = sine(1000.0, from, 0.5, 8_000.0);
            let out = resample_all(from, to, &input);
            let expected_len = input.len() as f64 * f64::from(to) / f64::from(from);
            assert!(
                (out.len() as f64 - expected_len).abs() < 300.0,
                "{from}->{to}: {}",
                out.len()
            );
            let amplitude = tone_amplitude(steady(&out, to), 1000.0, to);
            assert!(
                (amplitude - 8_000.0).abs() < 160.0,
                "{from}->{to}: amplitude {amplitude}"
            );
        }
    }
}

#[test]
fn a_tone_above_the_target_nyquist_is_removed_not_aliased() {
    // 6 kHz at 48 kHz would alias to 2 kHz at 8 kHz if samples were simply dropped.
    let input = sine(6000.0, 48_000, 1.0, 10_000.0);
    let out = resample_all(48_000, 8000, &input);
    let out_steady = steady(&out, 8000);
    let alias = tone_amplitude(out_steady, 2000.0, 8000);
    assert!(
        alias < 10_000.0 * 1e-3,
        "alias at 2 kHz has amplitude {alias} (> -60 dB)"
    );
    assert!(rms(out_steady) < 10_000.0 * 1e-3);

    // Sample dropping, for contrast, keeps the full alias.
    let dropped: Vec<i16> = input.iter().step_by(6).copied().collect();
    assert!(tone_amplitude(steady(&dropped, 8000), 2000.0, 8000) > 9_000.0);

    // Just above the telephone band's Nyquist (4.4 kHz at 16 kHz -> 8 kHz) is also stopped.
    let near = sine(4400.0, 16_000, 1.0, 10_000.0);
    let out = resample_all(16_000, 8000, &near);
    assert!(rms(steady(&out, 8000)) < 10_000.0 * 1e-3);
}

#[test]
fn the_telephone_band_passes_flat() {
    for frequency in [300.0, 1000.0, 2000.0, 3000.0, 3300.0] {
        let input = sine(frequency, 8000, 0.5, 10_000.0);
        let out = resample_all(8000, 16_000, &input);
        let gain = tone_amplitude(steady(&out, 16_000), frequency, 16_000) / 10_000.0;
        assert!((gain - 1.0).abs() < 0.02, "{frequency} Hz gain {gain}");
    }
}

#[test]
fn chunked_processing_equals_one_shot() {
    let input = sine(700.0, 24_000, 0.3, 12_000.0);
    let whole = resample_all(24_000, 16_000, &input);
    let mut resampler = Resampler::new(24_000, 16_000).unwrap();
    let mut pieces = Vec::new();
    let mut rest = input.as_slice();
    let mut size = 1;
    while !rest.is_empty() {
        let take = size.min(rest.len());
        resampler.process(&rest[..take], &mut pieces);
        rest = &rest[take..];
        size = size * 3 % 997 + 1;
    }
    assert_eq!(pieces, whole);
}

#[test]
fn full_scale_input_clips_instead_of_wrapping() {
    let square: Vec<i16> = (0..8000)
        .map(|n| {
            if (n / 20) % 2 == 0 {
                i16::MAX
            } else {
                i16::MIN
            }
        })
        .collect();
    let out = resample_all(8000, 48_000, &square);
    // Gibbs overshoot goes past the rails and must saturate there...
    assert!(out.contains(&i16::MAX) && out.contains(&i16::MIN));
    // ...whereas a wrap would flip a sample from ~+32767 to ~-32768 (a 65,535 jump); the
    // band-limited signal never moves more than ~20,000 between adjacent 48 kHz samples.
    let largest_step = out
        .windows(2)
        .map(|pair| (i32::from(pair[1]) - i32::from(pair[0])).abs())
        .max()
        .unwrap();
    assert!(largest_step < 40_000, "step {largest_step}");
}

#[test]
fn unsupported_rates_are_typed_errors_and_equal_rates_pass_through() {
    for (from, to) in [(44_100, 8000), (8000, 11_025), (0, 8000), (8000, 12_000)] {
        let error = Resampler::new(from, to).unwrap_err();
        assert!(
            matches!(error, mulaw::Error::UnsupportedResampleRates { .. }),
            "{from}->{to}"
        );
        assert!(error.to_string().contains("supported rates"));
    }
    let input = [1_i16, -2, 3];
    assert_eq!(resample_all(16_000, 16_000, &input), input);
}
