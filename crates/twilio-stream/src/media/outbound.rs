//! Outbound messages (server -> Twilio), written as JSON text without intermediate values.
//!
//! The `write_*` variants append to a caller-owned `String` so a per-call buffer can be reused
//! for the 50 media messages a second of a talking agent. The base64 payload is written straight
//! into the output (its alphabet never needs JSON escaping); the stream id is copied as is unless
//! it holds a byte that needs escaping.

use super::b64;
use super::fast::{has_byte, has_quote_backslash_or_control};

/// `{"event":"media","streamSid":S,"media":{"payload":B64}}` for raw mu-law bytes (no WAV header).
#[must_use]
pub fn media_json(stream_sid: &str, mulaw: &[u8]) -> String {
    let mut out = String::with_capacity(media_json_len(stream_sid, mulaw));
    write_media_json(&mut out, stream_sid, mulaw);
    out
}

const MEDIA_OPEN: &str = r#"{"event":"media","streamSid":"#;
const MEDIA_MIDDLE: &str = r#","media":{"payload":""#;
const MEDIA_CLOSE: &str = r#""}}"#;

/// Length of the `media` message, exact when `stream_sid` needs no escaping.
fn media_json_len(stream_sid: &str, mulaw: &[u8]) -> usize {
    MEDIA_OPEN.len()
        + stream_sid.len()
        + 2
        + MEDIA_MIDDLE.len()
        + b64::encoded_len(mulaw.len())
        + MEDIA_CLOSE.len()
}

/// Append the `media` message for `mulaw` to `out` (see [`media_json`]).
pub fn write_media_json(out: &mut String, stream_sid: &str, mulaw: &[u8]) {
    out.reserve(media_json_len(stream_sid, mulaw));
    out.push_str(MEDIA_OPEN);
    push_json_string(out, stream_sid);
    out.push_str(MEDIA_MIDDLE);
    b64::encode_into(out, mulaw);
    out.push_str(MEDIA_CLOSE);
}

/// The `media` messages of one stream, with everything before the payload (the escaped
/// `streamSid` included) built once: for a call that sends 50 of them a second.
///
/// Writes exactly what [`media_json`] / [`write_media_json`] write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaJsonWriter {
    /// `{"event":"media","streamSid":"…","media":{"payload":"`.
    prefix: String,
}

impl MediaJsonWriter {
    /// A writer for the stream `stream_sid`.
    #[must_use]
    pub fn new(stream_sid: &str) -> Self {
        let mut prefix =
            String::with_capacity(MEDIA_OPEN.len() + stream_sid.len() + 2 + MEDIA_MIDDLE.len());
        prefix.push_str(MEDIA_OPEN);
        push_json_string(&mut prefix, stream_sid);
        prefix.push_str(MEDIA_MIDDLE);
        Self { prefix }
    }

    /// Length of the message for `mulaw_len` bytes of audio.
    #[must_use]
    pub fn message_len(&self, mulaw_len: usize) -> usize {
        self.prefix.len() + b64::encoded_len(mulaw_len) + MEDIA_CLOSE.len()
    }

    /// The `media` message for `mulaw` in a new `String` of exactly its length.
    #[must_use]
    pub fn to_json(&self, mulaw: &[u8]) -> String {
        let mut out = String::with_capacity(self.message_len(mulaw.len()));
        self.write(&mut out, mulaw);
        out
    }

    /// Append the `media` message for `mulaw` to `out`.
    pub fn write(&self, out: &mut String, mulaw: &[u8]) {
        out.reserve(self.message_len(mulaw.len()));
        out.push_str(&self.prefix);
        b64::encode_into(out, mulaw);
        out.push_str(MEDIA_CLOSE);
    }
}

/// `{"event":"mark","streamSid":S,"mark":{"name":N}}`: Twilio echoes it once all audio queued
/// before it has played (or was cleared).
#[must_use]
pub fn mark_json(stream_sid: &str, name: &str) -> String {
    let mut out = String::new();
    write_mark_json(&mut out, stream_sid, name);
    out
}

/// Append the `mark` message to `out` (see [`mark_json`]).
pub fn write_mark_json(out: &mut String, stream_sid: &str, name: &str) {
    out.push_str(r#"{"event":"mark","streamSid":"#);
    push_json_string(out, stream_sid);
    out.push_str(r#","mark":{"name":"#);
    push_json_string(out, name);
    out.push_str("}}");
}

/// `{"event":"clear","streamSid":S}`: drop the audio Twilio has queued for this stream.
#[must_use]
pub fn clear_json(stream_sid: &str) -> String {
    let mut out = String::new();
    write_clear_json(&mut out, stream_sid);
    out
}

/// Append the `clear` message to `out` (see [`clear_json`]).
pub fn write_clear_json(out: &mut String, stream_sid: &str) {
    out.push_str(r#"{"event":"clear","streamSid":"#);
    push_json_string(out, stream_sid);
    out.push('}');
}

/// Append `value` as a quoted JSON string, escaping `"`, `\` and control characters.
pub(crate) fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    if !needs_escaping(value.as_bytes()) {
        out.push_str(value);
        out.push('"');
        return;
    }
    let mut clean_from = 0;
    for (index, byte) in value.bytes().enumerate() {
        let escape: Option<&str> = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f | 0x7f => None,
            _ => continue,
        };
        // `index` is at an ASCII byte, so both slices end on char boundaries.
        out.push_str(&value[clean_from..index]);
        match escape {
            Some(text) => out.push_str(text),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
        clean_from = index + 1;
    }
    out.push_str(&value[clean_from..]);
    out.push('"');
}

/// Whether `bytes` holds a byte [`push_json_string`] escapes (`"`, `\`, 0x00-0x1f, 0x7f),
/// eight bytes at a time.
fn needs_escaping(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.as_chunks::<8>();
    words.iter().any(|word| {
        let word = u64::from_le_bytes(*word);
        has_quote_backslash_or_control(word) || has_byte(word, 0x7f)
    }) || rest
        .iter()
        .any(|&byte| matches!(byte, b'"' | b'\\' | 0x00..=0x1f | 0x7f))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{MediaJsonWriter, media_json, needs_escaping, write_media_json};

    proptest! {
        #[test]
        fn the_writer_writes_what_the_functions_write(
            stream_sid in any::<String>(),
            audio in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            let writer = MediaJsonWriter::new(&stream_sid);
            let expected = media_json(&stream_sid, &audio);
            let fresh = writer.to_json(&audio);
            prop_assert_eq!(&fresh, &expected);
            prop_assert_eq!(fresh.len(), writer.message_len(audio.len()));
            prop_assert_eq!(fresh.capacity(), fresh.len(), "one exact allocation");
            let mut reused = String::from("before");
            writer.write(&mut reused, &audio);
            prop_assert_eq!(&reused[6..], &expected[..]);
            let mut appended = String::from("before");
            write_media_json(&mut appended, &stream_sid, &audio);
            prop_assert_eq!(appended, reused);
        }
    }

    #[test]
    fn escaping_is_detected_for_every_byte_at_every_position() {
        for len in 1..=17 {
            for position in 0..len {
                for byte in 0..=0x7fu8 {
                    let mut bytes = vec![b'M'; len];
                    bytes[position] = byte;
                    let expected = matches!(byte, b'"' | b'\\' | 0x00..=0x1f | 0x7f);
                    assert_eq!(
                        needs_escaping(&bytes),
                        expected,
                        "{byte:#x} at {position} of {len}"
                    );
                }
            }
        }
        assert!(!needs_escaping(
            "MZ18ad3ab5a668481ce02b83e7395059f0 é".as_bytes()
        ));
    }
}
