//! Band-limited streaming resampling between the telephony and Opus rates.
//!
//! A rational polyphase FIR resampler (up by `L`, low-pass, down by `M`) with a Kaiser-windowed
//! sinc prototype: about 80 dB stop-band attenuation, pass band up to 42 % of the lower rate
//! (3.36 kHz when 8 kHz is involved, i.e. the whole telephone band), stop band from its Nyquist
//! frequency. Not sample dropping or linear interpolation: a 6 kHz tone resampled 48 -> 8 kHz
//! is removed, not folded onto 2 kHz.

use crate::Error;

/// Rates the resampler converts between (any pair, either direction).
pub const SUPPORTED_RATES_HZ: [u32; 4] = [8000, 16000, 24000, 48000];

const STOPBAND_ATTENUATION_DB: f64 = 80.0;
/// Transition band width as a fraction of the lower of the two rates.
const TRANSITION_FRACTION: f64 = 0.08;
/// Dot products run over lanes of this width so LLVM can vectorise them.
const LANES: usize = 8;

/// A streaming sample-rate converter for mono 16-bit PCM. Filter state carries over between
/// [`Resampler::process`] calls, so feeding a signal in arbitrary chunks gives the same output
/// as feeding it at once. The output lags the input by the filter's group delay
/// ([`Resampler::delay_input_samples`]).
#[derive(Clone)]
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    up: usize,
    down: u64,
    taps_per_phase: usize,
    /// `up` phases of `taps_per_phase` coefficients each, time-reversed so that every output
    /// is a forward dot product over the input history.
    phase_coefficients: Vec<f32>,
    /// Input samples not yet fully consumed; `history[0]` has virtual index `history_start`
    /// (virtual index = real input index + `taps_per_phase - 1`; the prefix is zeros).
    history: Vec<f32>,
    history_start: u64,
    /// Position of the next output on the up-sampled time axis (`output index * down`).
    next_output_position: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("up", &self.up)
            .field("down", &self.down)
            .field("taps_per_phase", &self.taps_per_phase)
            .field("buffered_input", &self.history.len())
            .finish_non_exhaustive()
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zeroth-order modified Bessel function of the first kind (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half_x = x / 2.0;
    for k in 1..64 {
        let factor = half_x / f64::from(k);
        term *= factor * factor;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// A resampler from `from_hz` to `to_hz`, both in [`SUPPORTED_RATES_HZ`]. Equal rates give
    /// a pass-through.
    ///
    /// # Errors
    /// [`Error::UnsupportedResampleRates`] for any other rate.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, Error> {
        if !SUPPORTED_RATES_HZ.contains(&from_hz) || !SUPPORTED_RATES_HZ.contains(&to_hz) {
            return Err(Error::UnsupportedResampleRates { from_hz, to_hz });
        }
        let common = gcd(from_hz, to_hz);
        let up = (to_hz / common) as usize;
        let down = u64::from(from_hz / common);
        let upsampled_hz = f64::from(from_hz) * up as f64;
        let lower_hz = f64::from(from_hz.min(to_hz));

        let (taps_per_phase, phase_coefficients) = if from_hz == to_hz {
            (1, vec![1.0])
        } else {
            design_polyphase_filter(up, upsampled_hz, lower_hz)
        };
        let mut resampler = Self {
            from_hz,
            to_hz,
            up,
            down,
            taps_per_phase,
            phase_coefficients,
            history: Vec::new(),
            history_start: 0,
            next_output_position: 0,
        };
        resampler.reset();
        Ok(resampler)
    }

    /// Input rate.
    #[must_use]
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate.
    #[must_use]
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Group delay of the filter, in input samples (output lags input by this much).
    #[must_use]
    pub fn delay_input_samples(&self) -> usize {
        (self.taps_per_phase * self.up - 1) / (2 * self.up)
    }

    /// Forgets all buffered input, as if freshly constructed.
    pub fn reset(&mut self) {
        self.history.clear();
        self.history.resize(self.taps_per_phase - 1, 0.0);
        self.history_start = 0;
        self.next_output_position = 0;
    }

    /// Resamples `input` and appends every output sample it makes available to `out`
    /// (roughly `input.len() * to_hz / from_hz`; the exact count depends on the phase carried
    /// over from earlier calls).
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.from_hz == self.to_hz {
            out.extend_from_slice(input);
            return;
        }
        self.history
            .extend(input.iter().map(|&sample| f32::from(sample)));
        let up = self.up as u64;
        let available_end = self.history_start + self.history.len() as u64;
        let expected = (input.len() as u64 * up / self.down) as usize + 1;
        out.reserve(expected);
        loop {
            let first_input = self.next_output_position / up;
            if first_input + self.taps_per_phase as u64 > available_end {
                break;
            }
            let phase = (self.next_output_position % up) as usize;
            let start = (first_input - self.history_start) as usize;
            let window = &self.history[start..start + self.taps_per_phase];
            let coefficients = &self.phase_coefficients
                [phase * self.taps_per_phase..(phase + 1) * self.taps_per_phase];
            let value = dot(window, coefficients);
            // `as` saturates, so loud overshoot clips instead of wrapping.
            out.push(value.round() as i16);
            self.next_output_position += self.down;
        }
        let keep_from = (self.next_output_position / up).min(available_end);
        let drop = (keep_from - self.history_start) as usize;
        self.history.drain(..drop);
        self.history_start = keep_from;
    }
}

fn dot(samples: &[f32], coefficients: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; LANES];
    for (sample_chunk, coefficient_chunk) in samples
        .chunks_exact(LANES)
        .zip(coefficients.chunks_exact(LANES))
    {
        for lane in 0..LANES {
            lanes[lane] += sample_chunk[lane] * coefficient_chunk[lane];
        }
    }
    lanes.iter().sum()
}

/// Returns `(taps_per_phase, coefficients)` for an up-by-`up` polyphase bank whose prototype
/// runs at `upsampled_hz` and cuts off just below `lower_hz / 2`.
fn design_polyphase_filter(up: usize, upsampled_hz: f64, lower_hz: f64) -> (usize, Vec<f32>) {
    let transition_hz = TRANSITION_FRACTION * lower_hz;
    let cutoff_hz = lower_hz / 2.0 - transition_hz / 2.0;
    let normalized_transition = 2.0 * std::f64::consts::PI * transition_hz / upsampled_hz;
    let estimated_taps = ((STOPBAND_ATTENUATION_DB - 8.0) / (2.285 * normalized_transition)).ceil();
    let taps_per_phase = (estimated_taps as usize)
        .div_ceil(up)
        .next_multiple_of(LANES);
    let total_taps = taps_per_phase * up;
    let beta = 0.1102 * (STOPBAND_ATTENUATION_DB - 8.7);
    let center = (total_taps - 1) as f64 / 2.0;
    let normalized_cutoff = cutoff_hz / upsampled_hz;
    let window_norm = bessel_i0(beta);

    let mut prototype: Vec<f64> = (0..total_taps)
        .map(|n| {
            let offset = n as f64 - center;
            let sinc = if offset == 0.0 {
                2.0 * normalized_cutoff
            } else {
                (2.0 * std::f64::consts::PI * normalized_cutoff * offset).sin()
                    / (std::f64::consts::PI * offset)
            };
            let ratio = offset / (center + 1.0);
            let window = bessel_i0(beta * (1.0 - ratio * ratio).max(0.0).sqrt()) / window_norm;
            sinc * window
        })
        .collect();
    // Unity gain at DC, times `up` to make up for the zeros inserted by up-sampling.
    let dc_gain: f64 = prototype.iter().sum();
    for coefficient in &mut prototype {
        *coefficient *= up as f64 / dc_gain;
    }

    // Phase p uses prototype[p + t * up] on input x[i0 - t]; store it time-reversed so the
    // window x[i0 - taps + 1 ..= i0] is walked forwards.
    let mut bank = vec![0.0_f32; total_taps];
    for phase in 0..up {
        for tap in 0..taps_per_phase {
            bank[phase * taps_per_phase + (taps_per_phase - 1 - tap)] =
                prototype[phase + tap * up] as f32;
        }
    }
    (taps_per_phase, bank)
}
