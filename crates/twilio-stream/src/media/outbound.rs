//! Outbound messages (server -> Twilio), written as JSON text without intermediate values.
//!
//! The `write_*` variants append to a caller-owned `String` so a per-call buffer can be reused
//! for the 50 media messages a second of a talking agent.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `{"event":"media","streamSid":S,"media":{"payload":B64}}` for raw mu-law bytes (no WAV header).
#[must_use]
pub fn media_json(stream_sid: &str, mulaw: &[u8]) -> String {
    let mut out = String::new();
    write_media_json(&mut out, stream_sid, mulaw);
    out
}

/// Append the `media` message for `mulaw` to `out` (see [`media_json`]).
pub fn write_media_json(out: &mut String, stream_sid: &str, mulaw: &[u8]) {
    const OPEN: &str = r#"{"event":"media","streamSid":"#;
    const MIDDLE: &str = r#","media":{"payload":""#;
    const CLOSE: &str = r#""}}"#;
    let encoded_len = mulaw.len().div_ceil(3) * 4;
    out.reserve(OPEN.len() + stream_sid.len() + 2 + MIDDLE.len() + encoded_len + CLOSE.len());
    out.push_str(OPEN);
    push_json_string(out, stream_sid);
    out.push_str(MIDDLE);
    STANDARD.encode_string(mulaw, out);
    out.push_str(CLOSE);
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
