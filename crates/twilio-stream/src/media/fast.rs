//! A hand-written parser for the one inbound message that arrives 50 times a second per call:
//!
//! `{"event":"media","sequenceNumber":"N","media":{"track":"inbound","chunk":"N","timestamp":"N","payload":"B64"},"streamSid":"MZ..."}`
//!
//! Two tiers, both decoding the payload while they pass over it:
//! - [`twilio_layout`]: exactly the layout above (Twilio's key order, no whitespace, counters as
//!   digit strings), matched as fixed literals between the values;
//! - [`any_layout`]: keys in any order, JSON whitespace between tokens, counters as digit
//!   strings or plain JSON integers, `sequenceNumber` and `media.track` optional.
//!
//! Either only ever answers for messages the reference (serde) path in `wire` parses
//! successfully, and then with exactly the same [`Media`]; for anything else [`parse_media`]
//! returns `None` and the caller runs the reference path, so errors and tolerance are exactly
//! the reference path's. They decline on: another event, an unknown, duplicate or `null`
//! member, any `\` escape or raw control character in a string, a counter that is not a plain
//! digit string or a plain non-negative JSON integer (leading zeros, signs, fractions, exponents,
//! overflow), base64 the `b64` decoder does not take (see there), and trailing text after the
//! object.

use bytes::Bytes;

use super::{Media, b64};

/// Messages up to this length decode their payload into a stack buffer first (a 20 ms Twilio
/// frame is about 330 bytes); longer ones into a heap buffer.
const STACK_TEXT_LEN: usize = 512;

/// Decoded bytes of base64 text shorter than `text_len`, plus the decoder's slack.
const fn decode_capacity(text_len: usize) -> usize {
    text_len / 4 * 3 + 3 + 4
}

/// Parse `text` if it is a `media` message of the common shape; `None` means "use the
/// reference parser" (not necessarily that the text is invalid).
pub(super) fn parse_media(text: &str) -> Option<Media> {
    let mut stack = [0u8; decode_capacity(STACK_TEXT_LEN)];
    let mut heap = Vec::new();
    let decoded: &mut [u8] = if text.len() <= STACK_TEXT_LEN {
        &mut stack
    } else {
        heap.resize(decode_capacity(text.len()), 0);
        &mut heap
    };
    twilio_layout(text, decoded).or_else(|| any_layout(text, decoded))
}

/// Tier 1: Twilio's own layout, byte for byte apart from the values.
fn twilio_layout(text: &str, decoded: &mut [u8]) -> Option<Media> {
    let b = text.as_bytes();
    // Two literals of at most 32 bytes compile to inline compares; one of 35 to a `bcmp` call.
    let at = literal(b, 0, br#"{"event":"media","#)?;
    let at = literal(b, at, br#""sequenceNumber":""#)?;
    let (sequence_number, at) = quoted_digits(b, at)?;
    let at = literal(b, at, br#","media":{"track":""#)?;
    let (track, at) = match literal(b, at, b"inbound\"") {
        Some(after) => ("inbound", after),
        None => string_rest(text, at)?,
    };
    let at = literal(b, at, br#","chunk":""#)?;
    let (chunk, at) = quoted_digits(b, at)?;
    let at = literal(b, at, br#","timestamp":""#)?;
    let (timestamp_ms, at) = quoted_digits(b, at)?;
    let at = literal(b, at, br#","payload":""#)?;
    let (at, payload_len) = b64::decode_until_quote(b, at, decoded)?;
    let at = literal(b, at, br#"},"streamSid":""#)?;
    let (stream_sid, at) = string_rest(text, at)?;
    if b.get(at..)? != b"}" {
        return None;
    }
    Some(Media {
        sequence_number: Some(sequence_number),
        stream_sid: stream_sid.to_owned(),
        track: track.to_owned(),
        chunk,
        timestamp_ms,
        payload: Bytes::copy_from_slice(decoded.get(..payload_len)?),
    })
}

/// The index after `expected` when `b[at..]` starts with it.
fn literal<const N: usize>(b: &[u8], at: usize, expected: &[u8; N]) -> Option<usize> {
    (b.get(at..)?.first_chunk::<N>()? == expected).then_some(at + N)
}

/// Digits closed by `"` at `b[at]`, the opening quote already passed: the value and the index
/// after the closing quote.
fn quoted_digits(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let (value, end) = digits(b, at)?;
    (end > at && b.get(end) == Some(&b'"')).then_some((value, end + 1))
}

/// Tier 2: any key order, whitespace, counters as strings or numbers.
fn any_layout(text: &str, decoded: &mut [u8]) -> Option<Media> {
    let b = text.as_bytes();
    let start = skip_ws(b, 0);
    if b.get(start) != Some(&b'{') {
        return None;
    }
    let mut event = false;
    let mut sequence_number: Option<u64> = None;
    let mut stream_sid: Option<&str> = None;
    let mut media: Option<MediaFields<'_>> = None;
    let end = walk_object(b, start, top_key, |key, at| match key {
        TopKey::Event => {
            if event || !b.get(at..)?.starts_with(b"\"media\"") {
                return None;
            }
            event = true;
            Some(at + 7)
        }
        TopKey::SequenceNumber => {
            if sequence_number.is_some() {
                return None;
            }
            let (value, end) = counter(b, at)?;
            sequence_number = Some(value);
            Some(end)
        }
        TopKey::StreamSid => {
            if stream_sid.is_some() {
                return None;
            }
            let (value, end) = string(text, at)?;
            stream_sid = Some(value);
            Some(end)
        }
        TopKey::Media => {
            if media.is_some() || b.get(at) != Some(&b'{') {
                return None;
            }
            let mut fields = MediaFields::default();
            let end = walk_object(b, at, media_key, |key, at| match key {
                MediaKey::Track => {
                    if fields.track.is_some() {
                        return None;
                    }
                    let (value, end) = string(text, at)?;
                    fields.track = Some(value);
                    Some(end)
                }
                MediaKey::Chunk => {
                    if fields.chunk.is_some() {
                        return None;
                    }
                    let (value, end) = counter(b, at)?;
                    fields.chunk = Some(value);
                    Some(end)
                }
                MediaKey::Timestamp => {
                    if fields.timestamp.is_some() {
                        return None;
                    }
                    let (value, end) = counter(b, at)?;
                    fields.timestamp = Some(value);
                    Some(end)
                }
                MediaKey::Payload => {
                    if fields.payload_len.is_some() || b.get(at) != Some(&b'"') {
                        return None;
                    }
                    let (end, len) = b64::decode_until_quote(b, at + 1, decoded)?;
                    fields.payload_len = Some(len);
                    Some(end)
                }
            })?;
            media = Some(fields);
            Some(end)
        }
    })?;
    if skip_ws(b, end) != b.len() || !event {
        return None;
    }
    let media = media?;
    let payload = decoded.get(..media.payload_len?)?;
    Some(Media {
        sequence_number,
        stream_sid: stream_sid?.to_owned(),
        track: media.track.map(str::to_owned).unwrap_or_default(),
        chunk: media.chunk?,
        timestamp_ms: media.timestamp?,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// The members of the `media` object seen so far.
#[derive(Debug, Default)]
struct MediaFields<'a> {
    track: Option<&'a str>,
    chunk: Option<u64>,
    timestamp: Option<u64>,
    payload_len: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum TopKey {
    Event,
    SequenceNumber,
    StreamSid,
    Media,
}

/// The top-level key at the start of `rest` (just after its opening quote), with the length
/// of the key including its closing quote.
fn top_key(rest: &[u8]) -> Option<(TopKey, usize)> {
    match rest.first()? {
        b'e' if rest.starts_with(b"event\"") => Some((TopKey::Event, 6)),
        b's' if rest.starts_with(b"streamSid\"") => Some((TopKey::StreamSid, 10)),
        b's' if rest.starts_with(b"sequenceNumber\"") => Some((TopKey::SequenceNumber, 15)),
        b'm' if rest.starts_with(b"media\"") => Some((TopKey::Media, 6)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum MediaKey {
    Track,
    Chunk,
    Timestamp,
    Payload,
}

/// Like [`top_key`], for the members of `media`.
fn media_key(rest: &[u8]) -> Option<(MediaKey, usize)> {
    match rest.first()? {
        b'p' if rest.starts_with(b"payload\"") => Some((MediaKey::Payload, 8)),
        b't' if rest.starts_with(b"track\"") => Some((MediaKey::Track, 6)),
        b't' if rest.starts_with(b"timestamp\"") => Some((MediaKey::Timestamp, 10)),
        b'c' if rest.starts_with(b"chunk\"") => Some((MediaKey::Chunk, 6)),
        _ => None,
    }
}

/// Walk the object whose `{` is at `b[open]`: for each member, `key` names it and `value`
/// parses its value (starting at the given index, whitespace skipped) and returns the index
/// after it. Returns the index after the closing `}`. Empty objects are declined.
fn walk_object<K>(
    b: &[u8],
    open: usize,
    key: impl Fn(&[u8]) -> Option<(K, usize)>,
    mut value: impl FnMut(K, usize) -> Option<usize>,
) -> Option<usize> {
    let mut at = open + 1;
    loop {
        at = expect(b, at, b'"')?;
        let (name, len) = key(b.get(at..)?)?;
        at = expect(b, at + len, b':')?;
        at = value(name, skip_ws(b, at))?;
        match b.get(at)? {
            b',' => at += 1,
            b'}' => return Some(at + 1),
            _ => match b.get(skip_ws(b, at))? {
                b',' => at = skip_ws(b, at) + 1,
                b'}' => return Some(skip_ws(b, at) + 1),
                _ => return None,
            },
        }
    }
}

/// The index after `byte` when it is the next byte at `b[at]`, after any JSON whitespace.
fn expect(b: &[u8], at: usize, byte: u8) -> Option<usize> {
    if b.get(at) == Some(&byte) {
        return Some(at + 1);
    }
    let at = skip_ws(b, at);
    (b.get(at) == Some(&byte)).then_some(at + 1)
}

/// Index of the first byte at or after `at` that is not JSON whitespace.
fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(at) {
        at += 1;
    }
    at
}

/// A counter at `b[at]`: `"digits"` (any number of leading zeros, as `str::parse` takes them)
/// or a JSON integer without sign, fraction or exponent. Returns the value and the index after
/// it.
fn counter(b: &[u8], at: usize) -> Option<(u64, usize)> {
    if b.get(at) == Some(&b'"') {
        quoted_digits(b, at + 1)
    } else {
        let (value, end) = digits(b, at)?;
        let len = end - at;
        let leading_zero = len > 1 && b.get(at) == Some(&b'0');
        let not_integer = matches!(b.get(end), Some(b'.' | b'e' | b'E'));
        (len > 0 && !leading_zero && !not_integer).then_some((value, end))
    }
}

/// The run of ASCII digits at `b[at]` as a number (`None` on overflow) and the index after it.
fn digits(b: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    while let Some(&c) = b.get(at)
        && c.is_ascii_digit()
    {
        value = value.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        at += 1;
    }
    Some((value, at))
}

/// A JSON string at `text[at]` without escapes or control characters: its content and the
/// index after the closing quote.
fn string(text: &str, at: usize) -> Option<(&str, usize)> {
    if text.as_bytes().get(at) != Some(&b'"') {
        return None;
    }
    string_rest(text, at + 1)
}

/// Like [`string`], the opening quote already passed.
fn string_rest(text: &str, at: usize) -> Option<(&str, usize)> {
    let end = plain_string_end(text.as_bytes(), at)?;
    Some((text.get(at..end)?, end + 1))
}

/// Index of the closing quote of a string whose content starts at `b[at]`; `None` at a `\`, a
/// control character or the end of the input.
fn plain_string_end(b: &[u8], mut at: usize) -> Option<usize> {
    while let Some(word) = b.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let found = quote_backslash_or_control(u64::from_le_bytes(*word));
        if found != 0 {
            // The lowest flagged byte is a real match (see `bytes_below`).
            let index = at + (found.trailing_zeros() / 8) as usize;
            return (b.get(index) == Some(&b'"')).then_some(index);
        }
        at += 8;
    }
    loop {
        match *b.get(at)? {
            b'"' => return Some(at),
            b'\\' | 0x00..=0x1f => return None,
            _ => at += 1,
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of bytes of `word` that are below `n` (`n <= 0x80`). Zero exactly when no byte
/// is below `n`, and the lowest set bit always marks a byte below `n`: the subtraction only
/// borrows out of a byte below `n`, so only bytes above such a byte can be flagged wrongly.
const fn bytes_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * n as u64) & !word & HIGH_BITS
}

/// The high bit of bytes of `word` equal to `byte` (same guarantees as [`bytes_below`]).
const fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ (ONES * byte as u64), 1)
}

/// Whether any byte of `word` equals `byte`.
pub(super) const fn has_byte(word: u64, byte: u8) -> bool {
    bytes_equal(word, byte) != 0
}

/// The high bit of bytes of `word` (little-endian) that are `"`, `\` or below 0x20: a JSON
/// string cannot carry them unescaped. Zero when there is none; the lowest set bit is exact.
const fn quote_backslash_or_control(word: u64) -> u64 {
    bytes_equal(word, b'"') | bytes_equal(word, b'\\') | bytes_below(word, 0x20)
}

/// Whether any byte of `word` is `"`, `\` or below 0x20.
pub(super) const fn has_quote_backslash_or_control(word: u64) -> bool {
    quote_backslash_or_control(word) != 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::{
        STACK_TEXT_LEN, any_layout, decode_capacity, has_quote_backslash_or_control, parse_media,
        quote_backslash_or_control, twilio_layout,
    };
    use crate::media::wire::parse_reference;
    use crate::media::{InboundMessage, Media};

    const TWILIO: &str = r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"/7mrpKCgpKq36DssJSAgIyo2XL2tpaGgo6m01D8tJiEgIigyTsKupqGgoqiwykYvJyIgIicvRsqwqKKgoaauwk4yKCIgISYtP9S0qaOgoaWtvVw2KiMgICUsO+i3qqSgoKSruf85KyQgICQqN2i7rKWgoKOqttw9LSUhICMpNFS/raahoKKoss5CLiYhICIoMErGr6eioKKnr8ZKMCgiIA=="},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;

    /// Each tier on its own.
    fn tiers(text: &str) -> (Option<Media>, Option<Media>) {
        let mut buffer = vec![0u8; decode_capacity(text.len())];
        (
            twilio_layout(text, &mut buffer),
            any_layout(text, &mut buffer),
        )
    }

    /// The fast path either declines or agrees with the reference parser; tier 1 takes a subset
    /// of what tier 2 takes. Returns whether the fast path took the text.
    fn check(text: &str) -> bool {
        let (exact, any) = tiers(text);
        if let Some(exact) = &exact {
            assert_eq!(
                any.as_ref(),
                Some(exact),
                "tier 2 disagrees with tier 1 on {text}"
            );
        }
        let fast = parse_media(text);
        assert_eq!(fast, exact.or(any), "{text}");
        match fast {
            None => false,
            Some(fast) => {
                assert_eq!(
                    parse_reference(text),
                    Ok(InboundMessage::Media(fast)),
                    "fast path disagrees on {text}"
                );
                true
            }
        }
    }

    #[test]
    fn takes_the_twilio_shape_and_agrees_with_the_reference() {
        assert!(check(TWILIO));
        assert!(tiers(TWILIO).0.is_some(), "Twilio's layout is tier 1");
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/media_frame.json"
        ))
        .unwrap();
        assert!(check(&fixture), "pretty-printed fixture");
        for line in std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/call_session.jsonl"
        ))
        .unwrap()
        .lines()
        {
            let media = line.contains(r#""event":"media""#);
            assert_eq!(check(line), media, "{line}");
            assert_eq!(tiers(line).0.is_some(), media, "{line}");
        }
    }

    #[test]
    fn takes_common_variants() {
        for text in [
            // Numbers as JSON integers, no sequenceNumber, no track, empty payload.
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":5,"timestamp":80,"payload":""}}"#,
            r#"{"streamSid":"MZ1","media":{"payload":"//8","timestamp":"0","chunk":"1"},"event":"media","sequenceNumber":0}"#,
            // Leading zeros are fine inside strings (str::parse takes them).
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"007","timestamp":"0","payload":"AA=="}}"#,
            " \r\n\t{ \"event\" : \"media\" , \"streamSid\" : \"MZ é\" , \"media\" : { \"chunk\" : 18446744073709551615 , \"timestamp\" : \"18446744073709551615\" , \"payload\" : \"AAA=\" } } \n",
        ] {
            assert!(check(text), "declined {text}");
        }
    }

    #[test]
    fn declines_everything_odd() {
        let cases = [
            "",
            "{}",
            "null",
            r#"{"event":"start"}"#,
            r#"{"event":"mediax","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            // Escapes anywhere.
            r#"{"event":"media","streamSid":"MZ\u0031","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"\/\/8="}}"#,
            r#"{"ev\u0065nt":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            // Missing required members (the reference path reports which).
            r#"{"event":"media","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0"}}"#,
            r#"{"streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            // Unknown, duplicate, null members.
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""},"x":1}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"","x":1}}"#,
            r#"{"event":"media","event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","chunk":"1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","sequenceNumber":null,"streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"track":null,"chunk":"1","timestamp":"0","payload":""}}"#,
            // Counters the reference path treats specially or rejects.
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":" 1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"+1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"-1","timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":-1,"timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":01,"timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":1.0,"timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":1e1,"timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":18446744073709551616,"timestamp":"0","payload":""}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"18446744073709551616","timestamp":"0","payload":""}}"#,
            // Payloads the base64 decoder would reject (or the fast one cannot vouch for).
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"***"}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"A"}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"AB=="}}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":1}}"#,
            // Structure.
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}} x"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""},}"#,
            r#"{"event":"media","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":""}"#,
            r#"{"event":"media","streamSid":"MZ1","media":[]}"#,
            "{\"event\":\"media\",\"streamSid\":\"MZ\t1\",\"media\":{\"chunk\":\"1\",\"timestamp\":\"0\",\"payload\":\"\"}}",
            "\u{feff}{\"event\":\"media\",\"streamSid\":\"MZ1\",\"media\":{\"chunk\":\"1\",\"timestamp\":\"0\",\"payload\":\"\"}}",
        ];
        for text in cases {
            assert!(parse_media(text).is_none(), "took {text}");
        }
    }

    #[test]
    fn payloads_of_any_length_around_the_stack_buffer_are_taken() {
        let message = |len: usize| {
            let payload = STANDARD.encode(vec![0x55; len]);
            format!(
                r#"{{"event":"media","streamSid":"MZ1","media":{{"chunk":"1","timestamp":"0","payload":"{payload}"}}}}"#
            )
        };
        for len in (0..500).chain([8000, 16_000]) {
            let text = message(len);
            assert!(check(&text), "{len} bytes declined");
            let stack = text.len() <= STACK_TEXT_LEN;
            assert!(
                stack || len > 300,
                "{len} bytes: stack buffer unexpectedly small"
            );
        }
    }

    #[test]
    fn word_scan_finds_every_special_byte_at_every_position() {
        for position in 0..8 {
            for byte in 0..=255u8 {
                let mut word = [b'a'; 8];
                word[position] = byte;
                let special = byte == b'"' || byte == b'\\' || byte < 0x20;
                let word = u64::from_le_bytes(word);
                assert_eq!(
                    has_quote_backslash_or_control(word),
                    special,
                    "byte {byte:#x} at {position}"
                );
                if special {
                    assert_eq!(
                        quote_backslash_or_control(word).trailing_zeros() / 8,
                        position as u32
                    );
                }
            }
        }
    }

    /// One member of a generated `media` message, as JSON text.
    fn counter_text() -> impl Strategy<Value = String> {
        prop_oneof![
            60 => any::<u64>().prop_map(|n| format!("\"{n}\"")),
            10 => any::<u64>().prop_map(|n| n.to_string()),
            1 => (0u64..100).prop_map(|n| format!("\"00{n}\"")),
            1 => (0u64..100).prop_map(|n| format!("0{n}")),
            1 => (0u64..100).prop_map(|n| format!("{n}.0")),
            1 => (0u64..100).prop_map(|n| format!("\" {n}\"")),
            1 => (0u64..100).prop_map(|n| format!("-{n}")),
            1 => Just("null".to_owned()),
            1 => Just("\"\"".to_owned()),
            1 => Just("\"18446744073709551616\"".to_owned()),
            1 => Just("18446744073709551616".to_owned()),
        ]
    }

    fn payload_text() -> impl Strategy<Value = String> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            12 => bytes.clone().prop_map(|b| format!("\"{}\"", STANDARD.encode(b))),
            3 => bytes.clone().prop_map(|b| format!("\"{}\"", STANDARD.encode(b).trim_end_matches('='))),
            1 => bytes.prop_map(|b| format!("\"{}\"", STANDARD.encode(b).replace('/', "\\/"))),
            1 => "\"[A-Za-z0-9+/=]{0,12}\"",
            1 => "\"[A-Za-z0-9+/=\\\\ ]{0,12}\"",
            1 => Just("null".to_owned()),
        ]
    }

    fn string_text() -> impl Strategy<Value = String> {
        prop_oneof![
            12 => "MZ[0-9a-f]{32}".prop_map(|s| format!("\"{s}\"")),
            2 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            3 => Just("\"inbound\"".to_owned()),
            1 => Just("null".to_owned()),
            1 => Just("7".to_owned()),
        ]
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\n  "), 1 => Just("\t\r\n")]
    }

    /// Members joined in the given order, with optional whitespace around every token.
    fn object(members: Vec<(String, String)>, spaces: Vec<&'static str>) -> String {
        let mut out = String::from("{");
        for (index, (key, value)) in members.iter().enumerate() {
            let pad = |k: usize| {
                spaces
                    .get((index * 4 + k) % spaces.len().max(1))
                    .copied()
                    .unwrap_or("")
            };
            if index > 0 {
                out.push(',');
            }
            out.push_str(pad(0));
            out.push_str(key);
            out.push_str(pad(1));
            out.push(':');
            out.push_str(pad(2));
            out.push_str(value);
            out.push_str(pad(3));
        }
        out.push('}');
        out
    }

    /// Reorders `members`: unchanged (Twilio's order) for `0`, otherwise rotated and possibly
    /// with the first and last swapped.
    fn reorder(members: &mut [(String, String)], how: usize) {
        if members.is_empty() || how == 0 {
            return;
        }
        members.rotate_left(how % members.len());
        if how % 2 == 1 {
            let last = members.len() - 1;
            members.swap(0, last);
        }
    }

    /// `media` messages: mostly well formed (Twilio's order, or any order, with or without
    /// whitespace), with odd members, values and structure mixed in.
    fn message() -> impl Strategy<Value = String> {
        let present = proptest::collection::vec(prop::bool::weighted(0.93), 7);
        let extra = proptest::collection::vec(prop::bool::weighted(0.05), 3);
        let order = prop_oneof![2 => Just(0usize), 1 => 1usize..16];
        let spaces = prop_oneof![
            2 => Just(vec![""]),
            1 => proptest::collection::vec(ws(), 1..12),
        ];
        (
            (
                prop_oneof![
                    8 => Just("\"media\"".to_owned()),
                    1 => Just("\"start\"".to_owned()),
                    1 => Just("\"med\\u0069a\"".to_owned()),
                ],
                counter_text(),
                string_text(),
                string_text(),
            ),
            (counter_text(), counter_text(), payload_text()),
            (present, extra),
            (order.clone(), order, spaces),
        )
            .prop_map(
                |(
                    (event, sequence, sid, track),
                    (chunk, timestamp, payload),
                    (present, extra),
                    (top_order, media_order, spaces),
                )| {
                    let mut media: Vec<(String, String)> = Vec::new();
                    for (present, key, value) in [
                        (present[0], "\"track\"", track),
                        (present[1], "\"chunk\"", chunk),
                        (present[2], "\"timestamp\"", timestamp),
                        (true, "\"payload\"", payload),
                    ] {
                        if present {
                            media.push((key.to_owned(), value));
                        }
                    }
                    if extra[0] {
                        media.push(("\"extra\"".to_owned(), "true".to_owned()));
                    }
                    reorder(&mut media, media_order);
                    let mut top: Vec<(String, String)> = Vec::new();
                    for (present, key, value) in [
                        (present[3], "\"event\"", event),
                        (present[4], "\"sequenceNumber\"", sequence),
                        (present[5], "\"media\"", object(media, spaces.clone())),
                        (present[6], "\"streamSid\"", sid),
                    ] {
                        if present {
                            top.push((key.to_owned(), value));
                        }
                    }
                    if extra[1] {
                        top.push(("\"future\"".to_owned(), "{\"a\":[1]}".to_owned()));
                    }
                    if extra[2] && !top.is_empty() {
                        let first = top[0].clone();
                        top.push(first);
                    }
                    reorder(&mut top, top_order);
                    object(top, spaces)
                },
            )
    }

    #[test]
    fn the_generator_exercises_both_tiers_and_the_fallback() {
        use proptest::strategy::ValueTree as _;
        use proptest::test_runner::TestRunner;

        let mut runner = TestRunner::deterministic();
        let strategy = message();
        let (mut exact, mut any, mut declined) = (0, 0, 0);
        for _ in 0..4000 {
            let text = strategy.new_tree(&mut runner).unwrap().current();
            match tiers(&text) {
                (Some(_), _) => exact += 1,
                (None, Some(_)) => any += 1,
                (None, None) => declined += 1,
            }
            check(&text);
        }
        for (what, count) in [("tier 1", exact), ("tier 2", any), ("declined", declined)] {
            assert!(
                count >= 100,
                "{what}: only {count} of 4000 generated messages"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn generated_messages_agree_with_the_reference_or_are_declined(text in message()) {
            check(&text);
        }

        #[test]
        fn well_formed_twilio_messages_are_taken(
            sequence in any::<u64>(),
            chunk in any::<u64>(),
            timestamp in any::<u64>(),
            audio in proptest::collection::vec(any::<u8>(), 0..=1200),
            sid in "MZ[0-9a-f]{32}",
        ) {
            let text = format!(
                r#"{{"event":"media","sequenceNumber":"{sequence}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp}","payload":"{}"}},"streamSid":"{sid}"}}"#,
                STANDARD.encode(&audio)
            );
            prop_assert!(check(&text));
        }

        #[test]
        fn mutated_twilio_messages_agree_or_are_declined(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = TWILIO.as_bytes().to_vec();
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                check(text);
            }
        }

        #[test]
        fn truncated_twilio_messages_are_declined(len in 0..TWILIO.len()) {
            prop_assert!(parse_media(&TWILIO[..len]).is_none());
        }
    }
}
