//! The crate's single error type.

/// Everything that can go wrong in this crate. Every variant is bad input or a bad
/// configuration that the caller can act on; nothing here panics on untrusted audio.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A batch codec call got an output slice of a different length than its input.
    #[error(
        "output buffer holds {output_len} samples but the input has {input_len}: \
         size the output slice to exactly the input length"
    )]
    LengthMismatch {
        /// Number of input samples.
        input_len: usize,
        /// Number of output slots provided.
        output_len: usize,
    },

    /// Raw 16-bit PCM arrived with an odd number of bytes.
    #[error(
        "16-bit PCM needs an even number of bytes but got {byte_len}: the producer sent a \
         truncated or misaligned chunk (check the audio encoding it was asked for)"
    )]
    OddPcmByteCount {
        /// The offending byte count.
        byte_len: usize,
    },

    /// The bytes do not start with a RIFF/WAVE header.
    #[error("not a WAV file: {reason}")]
    NotWav {
        /// What was found instead.
        reason: &'static str,
    },

    /// The WAV file ends before a header or chunk it announces.
    #[error(
        "WAV is truncated: {what} needs {needed} bytes at offset {offset} but the file has \
         {available}; the download or TTS response was cut short"
    )]
    WavTruncated {
        /// Which part of the file was being read.
        what: &'static str,
        /// Bytes required from `offset`.
        needed: usize,
        /// Where the read started.
        offset: usize,
        /// Total bytes in the file.
        available: usize,
    },

    /// A required chunk (`fmt ` or `data`) never appears.
    #[error("WAV has no `{chunk}` chunk; the file is incomplete or not audio")]
    WavMissingChunk {
        /// The missing chunk id.
        chunk: &'static str,
    },

    /// The WAV's `fmt ` chunk is malformed.
    #[error("WAV `fmt ` chunk is invalid: {reason}")]
    WavBadFormatChunk {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The WAV is valid but not the format the caller asked for.
    #[error(
        "WAV holds {found} but {expected} was required: ask the TTS/voice for that encoding \
         (e.g. Google TTS `audioEncoding: MULAW`, `sampleRateHertz: 8000`)"
    )]
    WavFormatMismatch {
        /// The required format, human readable.
        expected: &'static str,
        /// What the file actually holds, human readable.
        found: String,
    },

    /// The resampler only converts between the telephony/Opus rates.
    #[error(
        "cannot resample {from_hz} Hz -> {to_hz} Hz: supported rates are 8000, 16000, 24000 \
         and 48000 Hz"
    )]
    UnsupportedResampleRates {
        /// Requested input rate.
        from_hz: u32,
        /// Requested output rate.
        to_hz: u32,
    },

    /// Opus (or the Ogg Opus writer) was configured with a rate/channel count it cannot take.
    #[error(
        "unsupported Opus configuration {sample_rate_hz} Hz x {channels} channel(s): use \
         8000, 16000, 24000 or 48000 Hz with 1 or 2 channels"
    )]
    UnsupportedOpusConfig {
        /// Requested sample rate.
        sample_rate_hz: u32,
        /// Requested channel count.
        channels: u16,
    },

    /// A PCM buffer handed to the Opus encoder is not exactly one 20 ms frame.
    #[error(
        "an Opus frame must be exactly 20 ms = {expected} interleaved samples, got {got}; \
         buffer the audio (e.g. with a framer) before encoding"
    )]
    OpusFrameLength {
        /// Interleaved samples in one 20 ms frame.
        expected: usize,
        /// Samples provided.
        got: usize,
    },

    /// libopus rejected an operation (corrupt packet, bad state).
    #[error("libopus failed to {operation}: {source}")]
    Opus {
        /// What was being attempted.
        operation: &'static str,
        /// The libopus error.
        #[source]
        source: audiopus::Error,
    },

    /// A call-recording chunk carries a timestamp implausibly far beyond the audio so far.
    #[error(
        "recording chunk timestamp {timestamp_ms} ms is more than 10 minutes beyond the audio \
         recorded so far ({recorded_until_ms} ms): timestamps must be milliseconds since the \
         start of the call"
    )]
    RecordingTimestampTooFarAhead {
        /// The rejected timestamp.
        timestamp_ms: u64,
        /// End of the audio recorded so far.
        recorded_until_ms: u64,
    },

    /// Reading or writing a recording stream (Ogg, or a WAV spool) failed.
    #[error("recording file I/O failed: {0} (check disk space and permissions)")]
    Io(#[from] std::io::Error),
}
