//! serde shapes of the inbound frames, and their conversion into the public types.
//!
//! [`parse`] first offers the text to the `media` fast path ([`super::fast`]), which only
//! answers for the common shape and otherwise declines; everything else goes through
//! [`parse_reference`], the serde path that defines what is accepted and which error is
//! reported.
//!
//! Reference path: one pass over the text; the envelope holds every known sub-object as an
//! optional typed struct. The base64 payload is borrowed from the input when it contains no JSON
//! escapes, and decoded straight into the buffer that becomes the `Bytes`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{
    Connected, Dtmf, InboundMessage, Mark, Media, MediaFormat, ParseError, Start, Stop, fast,
};

/// Standard alphabet; accepts payloads with or without `=` padding.
pub(super) const PAYLOAD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A string that borrows from the input when serde_json can hand out a borrowed slice.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A non-negative integer sent as a JSON string (`"42"`, Twilio's form) or a JSON number.
#[derive(Debug, Clone, Copy)]
struct Counter(u64);

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CounterVisitor;
        impl Visitor<'_> for CounterVisitor {
            type Value = Counter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, as a string or a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Counter, E> {
                Ok(Counter(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Counter, E> {
                u64::try_from(v)
                    .map(Counter)
                    .map_err(|_| E::custom(format_args!("negative counter {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Counter, E> {
                // Accept integral floats such as 20.0; reject fractions and out-of-range values.
                if v.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&v) {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Ok(Counter(v as u64))
                } else {
                    Err(E::custom(format_args!(
                        "counter {v} is not a non-negative integer"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Counter, E> {
                v.trim().parse::<u64>().map(Counter).map_err(|_| {
                    E::custom(format_args!("counter {v:?} is not a non-negative integer"))
                })
            }
        }
        deserializer.deserialize_any(CounterVisitor)
    }
}

#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Option<Text<'a>>,
    #[serde(rename = "sequenceNumber")]
    sequence_number: Option<Counter>,
    #[serde(rename = "streamSid")]
    stream_sid: Option<String>,
    protocol: Option<String>,
    version: Option<String>,
    start: Option<WireStart>,
    #[serde(borrow)]
    media: Option<WireMedia<'a>>,
    dtmf: Option<WireDtmf>,
    mark: Option<WireMark>,
    stop: Option<WireStop>,
}

/// Fallback shape used only to tell "unknown event with odd fields" from "broken known event".
#[derive(Debug, Deserialize)]
struct EventOnly<'a> {
    #[serde(borrow)]
    event: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStart {
    account_sid: Option<String>,
    stream_sid: Option<String>,
    call_sid: Option<String>,
    tracks: Option<Vec<String>>,
    custom_parameters: Option<BTreeMap<String, String>>,
    media_format: Option<WireMediaFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMediaFormat {
    encoding: Option<String>,
    sample_rate: Option<Counter>,
    channels: Option<Counter>,
}

#[derive(Debug, Deserialize)]
struct WireMedia<'a> {
    track: Option<String>,
    chunk: Option<Counter>,
    timestamp: Option<Counter>,
    #[serde(borrow)]
    payload: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct WireDtmf {
    track: Option<String>,
    digit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireMark {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStop {
    account_sid: Option<String>,
    call_sid: Option<String>,
}

const KNOWN_EVENTS: [&str; 6] = ["connected", "start", "media", "dtmf", "mark", "stop"];

pub(super) fn parse(text: &str) -> Result<InboundMessage, ParseError> {
    if let Some(media) = fast::parse_media(text) {
        return Ok(InboundMessage::Media(media));
    }
    parse_reference(text)
}

/// The serde parser: the definition of what [`parse`] accepts and reports.
pub(super) fn parse_reference(text: &str) -> Result<InboundMessage, ParseError> {
    let envelope: Envelope<'_> = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(err) => {
            // An unknown event may reuse a known sub-object name with another shape: that is
            // still an unknown event, not a broken frame.
            if let Ok(EventOnly {
                event: Some(Text(event)),
            }) = serde_json::from_str::<EventOnly<'_>>(text)
                && !KNOWN_EVENTS.contains(&event.as_ref())
            {
                return Ok(InboundMessage::Unknown {
                    event: event.into_owned(),
                });
            }
            return Err(ParseError::InvalidJson {
                reason: err.to_string(),
            });
        }
    };
    let Some(Text(event)) = envelope.event else {
        return Err(ParseError::MissingEvent);
    };
    let sequence_number = envelope.sequence_number.map(|c| c.0);
    match event.as_ref() {
        "connected" => Ok(InboundMessage::Connected(Connected {
            protocol: envelope.protocol,
            version: envelope.version,
        })),
        "start" => {
            let start = envelope.start.ok_or(missing("start", "start"))?;
            let stream_sid = envelope
                .stream_sid
                .or(start.stream_sid)
                .ok_or(missing("start", "streamSid"))?;
            let media_format = match start.media_format {
                None => MediaFormat::default(),
                Some(format) => convert_media_format(format)?,
            };
            Ok(InboundMessage::Start(Start {
                sequence_number,
                stream_sid,
                account_sid: start
                    .account_sid
                    .ok_or(missing("start", "start.accountSid"))?,
                call_sid: start.call_sid.ok_or(missing("start", "start.callSid"))?,
                tracks: start.tracks.unwrap_or_default(),
                custom_parameters: start.custom_parameters.unwrap_or_default(),
                media_format,
            }))
        }
        "media" => {
            let stream_sid = envelope.stream_sid.ok_or(missing("media", "streamSid"))?;
            let media = envelope.media.ok_or(missing("media", "media"))?;
            let chunk = media.chunk.ok_or(missing("media", "media.chunk"))?.0;
            let timestamp_ms = media
                .timestamp
                .ok_or(missing("media", "media.timestamp"))?
                .0;
            let Text(payload) = media.payload.ok_or(missing("media", "media.payload"))?;
            let payload = decode_payload(&payload, sequence_number)?;
            Ok(InboundMessage::Media(Media {
                sequence_number,
                stream_sid,
                track: media.track.unwrap_or_default(),
                chunk,
                timestamp_ms,
                payload,
            }))
        }
        "dtmf" => {
            let stream_sid = envelope.stream_sid.ok_or(missing("dtmf", "streamSid"))?;
            let dtmf = envelope.dtmf.ok_or(missing("dtmf", "dtmf"))?;
            let digit = dtmf.digit.ok_or(missing("dtmf", "dtmf.digit"))?;
            Ok(InboundMessage::Dtmf(Dtmf {
                sequence_number,
                stream_sid,
                track: dtmf.track.unwrap_or_default(),
                digit: parse_digit(&digit)?,
            }))
        }
        "mark" => {
            let stream_sid = envelope.stream_sid.ok_or(missing("mark", "streamSid"))?;
            let mark = envelope.mark.ok_or(missing("mark", "mark"))?;
            Ok(InboundMessage::Mark(Mark {
                sequence_number,
                stream_sid,
                name: mark.name.ok_or(missing("mark", "mark.name"))?,
            }))
        }
        "stop" => {
            let stream_sid = envelope.stream_sid.ok_or(missing("stop", "streamSid"))?;
            let stop = envelope.stop.ok_or(missing("stop", "stop"))?;
            Ok(InboundMessage::Stop(Stop {
                sequence_number,
                stream_sid,
                account_sid: stop.account_sid,
                call_sid: stop.call_sid.ok_or(missing("stop", "stop.callSid"))?,
            }))
        }
        _ => Ok(InboundMessage::Unknown {
            event: event.into_owned(),
        }),
    }
}

fn missing(event: &'static str, field: &'static str) -> ParseError {
    ParseError::MissingField { event, field }
}

fn convert_media_format(format: WireMediaFormat) -> Result<MediaFormat, ParseError> {
    let default = MediaFormat::default();
    let sample_rate = match format.sample_rate {
        None => default.sample_rate,
        Some(Counter(rate)) => {
            u32::try_from(rate)
                .ok()
                .filter(|r| *r > 0)
                .ok_or_else(|| ParseError::InvalidField {
                    event: "start",
                    field: "start.mediaFormat.sampleRate",
                    reason: format!("{rate} Hz is not a usable sample rate"),
                })?
        }
    };
    let channels = match format.channels {
        None => default.channels,
        Some(Counter(channels)) => {
            u16::try_from(channels)
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| ParseError::InvalidField {
                    event: "start",
                    field: "start.mediaFormat.channels",
                    reason: format!("{channels} is not a usable channel count"),
                })?
        }
    };
    Ok(MediaFormat {
        encoding: format.encoding.unwrap_or(default.encoding),
        sample_rate,
        channels,
    })
}

fn parse_digit(digit: &str) -> Result<char, ParseError> {
    let mut chars = digit.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D' | 'a'..='d') => {
            Ok(c.to_ascii_uppercase())
        }
        _ => Err(ParseError::InvalidField {
            event: "dtmf",
            field: "dtmf.digit",
            reason: format!("{digit:?} is not one of 0-9, *, #, A-D"),
        }),
    }
}

/// Decode base64 into a buffer of exactly the decoded length, handed to `Bytes` without another
/// copy or allocation (`Bytes::from` a `Vec` whose capacity exceeds its length allocates a
/// shared header).
pub(super) fn decode_payload(
    payload: &str,
    sequence_number: Option<u64>,
) -> Result<Bytes, ParseError> {
    let symbols = payload.trim_end_matches('=').len();
    let mut decoded = vec![0u8; symbols / 4 * 3 + (symbols % 4) * 3 / 4];
    match PAYLOAD_BASE64.decode_slice(payload.as_bytes(), &mut decoded) {
        Ok(len) if len == decoded.len() => Ok(Bytes::from(decoded)),
        // Invalid input (or a length this estimate got wrong): let `decode_vec` decide, so the
        // error text is the decoder's own.
        _ => {
            let mut decoded = Vec::with_capacity(base64::decoded_len_estimate(payload.len()));
            PAYLOAD_BASE64
                .decode_vec(payload.as_bytes(), &mut decoded)
                .map_err(|err| ParseError::InvalidBase64 {
                    sequence_number,
                    reason: err.to_string(),
                })?;
            Ok(Bytes::from(decoded))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::{PAYLOAD_BASE64, decode_payload};
    use crate::media::ParseError;

    #[test]
    fn the_exact_length_buffer_fits_every_valid_payload() {
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let padded = STANDARD.encode(&bytes);
            for text in [padded.as_str(), padded.trim_end_matches('=')] {
                // The exact buffer is taken (no fallback) ...
                let symbols = text.trim_end_matches('=').len();
                let mut exact = vec![0u8; symbols / 4 * 3 + (symbols % 4) * 3 / 4];
                assert_eq!(
                    PAYLOAD_BASE64.decode_slice(text, &mut exact),
                    Ok(len),
                    "{text}"
                );
                // ... and gives the bytes.
                assert_eq!(&decode_payload(text, None).unwrap()[..], &bytes[..]);
            }
        }
    }

    #[test]
    fn invalid_payloads_report_the_decoder_error_unchanged() {
        for text in [
            "***", "A", "AAAAA", "AB==", "AA=A", "=AAA", "AAAA=", "AA\\/", "AAA===",
        ] {
            let expected = PAYLOAD_BASE64.decode(text).unwrap_err().to_string();
            assert_eq!(
                decode_payload(text, Some(9)),
                Err(ParseError::InvalidBase64 {
                    sequence_number: Some(9),
                    reason: expected,
                }),
                "{text}"
            );
        }
    }
}
