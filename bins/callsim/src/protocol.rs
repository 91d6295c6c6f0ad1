//! The Media Streams protocol from Twilio's side: the messages Twilio sends (written here) and
//! the messages a server sends back (`media`, `mark`, `clear`, parsed and checked here).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// `{"event":"connected","protocol":"Call","version":"1.0.0"}`.
#[must_use]
pub fn connected_json() -> String {
    r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned()
}

/// The `start` message (sequence number 1 on a Twilio socket).
#[must_use]
pub fn start_json(
    sequence_number: u64,
    account_sid: &str,
    call_sid: &str,
    stream_sid: &str,
    custom_parameters: &BTreeMap<String, String>,
) -> String {
    serde_json::json!({
        "event": "start",
        "sequenceNumber": sequence_number.to_string(),
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": custom_parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": stream_sid,
    })
    .to_string()
}

/// Appends one inbound `media` message (counters as JSON strings, as Twilio sends them).
/// `payload_base64` is the already-encoded 160-byte frame.
pub fn write_media_json(
    out: &mut String,
    sequence_number: u64,
    stream_sid: &str,
    chunk: u64,
    timestamp_ms: u64,
    payload_base64: &str,
) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        r#"{{"event":"media","sequenceNumber":"{sequence_number}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload_base64}"}},"streamSid":"{stream_sid}"}}"#
    );
}

/// A `dtmf` message for one digit.
#[must_use]
pub fn dtmf_json(sequence_number: u64, stream_sid: &str, digit: char) -> String {
    serde_json::json!({
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": sequence_number.to_string(),
        "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
    })
    .to_string()
}

/// The echo of a `mark` the server sent.
#[must_use]
pub fn mark_echo_json(sequence_number: u64, stream_sid: &str, name: &str) -> String {
    serde_json::json!({
        "event": "mark",
        "sequenceNumber": sequence_number.to_string(),
        "streamSid": stream_sid,
        "mark": {"name": name},
    })
    .to_string()
}

/// The `stop` message that ends the stream.
#[must_use]
pub fn stop_json(
    sequence_number: u64,
    stream_sid: &str,
    account_sid: &str,
    call_sid: &str,
) -> String {
    serde_json::json!({
        "event": "stop",
        "sequenceNumber": sequence_number.to_string(),
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    })
    .to_string()
}

/// A message the server sent, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentMessage {
    /// Agent audio: raw mu-law bytes.
    Media {
        /// Decoded payload.
        payload: Vec<u8>,
    },
    /// Echo this name once the audio queued before it has played.
    Mark {
        /// The mark's name.
        name: String,
    },
    /// Drop the queued audio.
    Clear,
}

/// A server message Twilio would refuse or ignore (warning 31951 / error 31924), or that is
/// audibly wrong (a WAV header inside a media payload).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// Binary frames are not part of the protocol (31950).
    #[error("binary WebSocket frame ({len} bytes); Twilio accepts text frames only (31950)")]
    BinaryFrame {
        /// Frame size.
        len: usize,
    },
    /// Not a JSON object with an `event` (31951).
    #[error("message is not a JSON object with an `event` (31951): {reason}")]
    InvalidJson {
        /// What was wrong.
        reason: String,
    },
    /// An event Twilio does not know (31951).
    #[error("unknown event {event:?} (31951)")]
    UnknownEvent {
        /// The event name.
        event: String,
    },
    /// Missing or foreign `streamSid` (31951).
    #[error("`{event}` with streamSid {received:?}, expected {expected:?} (31951)")]
    WrongStreamSid {
        /// The event name.
        event: String,
        /// What the message carried.
        received: Option<String>,
        /// The stream's id.
        expected: String,
    },
    /// A required field is absent (31951).
    #[error("`{event}` lacks `{field}` (31951)")]
    MissingField {
        /// The event name.
        event: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The media payload is not base64.
    #[error("media payload is not valid base64 (31951): {reason}")]
    InvalidBase64 {
        /// The decoder's message.
        reason: String,
    },
    /// The media payload starts with a RIFF/WAV header: an audible click, never valid.
    #[error("media payload starts with a RIFF/WAV header ({len} bytes); send headerless mu-law")]
    WavHeaderInPayload {
        /// Payload size.
        len: usize,
    },
}

#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    media: Option<WireMedia<'a>>,
    mark: Option<WireMark>,
}

#[derive(Debug, Deserialize)]
struct WireMedia<'a> {
    #[serde(borrow)]
    payload: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct WireMark {
    name: Option<String>,
}

/// Parses and checks one text frame from the server for stream `stream_sid`.
///
/// A media payload that begins with a WAV header is returned as a violation *and* the audio
/// is still usable: the caller records both (see [`parse_agent_message`]'s second value).
///
/// # Errors
/// [`ProtocolViolation`] for anything Twilio would refuse or ignore.
pub fn parse_agent_message(
    text: &str,
    stream_sid: &str,
) -> Result<(AgentMessage, Option<ProtocolViolation>), ProtocolViolation> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| ProtocolViolation::InvalidJson {
            reason: e.to_string(),
        })?;
    let event = envelope.event.as_ref();
    if !matches!(event, "media" | "mark" | "clear") {
        return Err(ProtocolViolation::UnknownEvent {
            event: event.to_owned(),
        });
    }
    if envelope.stream_sid.as_deref() != Some(stream_sid) {
        return Err(ProtocolViolation::WrongStreamSid {
            event: event.to_owned(),
            received: envelope.stream_sid.map(Cow::into_owned),
            expected: stream_sid.to_owned(),
        });
    }
    match event {
        "media" => {
            let payload = envelope.media.and_then(|media| media.payload).ok_or(
                ProtocolViolation::MissingField {
                    event: "media",
                    field: "media.payload",
                },
            )?;
            let payload = STANDARD.decode(payload.as_bytes()).map_err(|e| {
                ProtocolViolation::InvalidBase64 {
                    reason: e.to_string(),
                }
            })?;
            let warning = payload
                .starts_with(b"RIFF")
                .then_some(ProtocolViolation::WavHeaderInPayload { len: payload.len() });
            Ok((AgentMessage::Media { payload }, warning))
        }
        "mark" => {
            let name = envelope.mark.and_then(|mark| mark.name).ok_or(
                ProtocolViolation::MissingField {
                    event: "mark",
                    field: "mark.name",
                },
            )?;
            Ok((AgentMessage::Mark { name }, None))
        }
        _ => Ok((AgentMessage::Clear, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twilio_stream::media::{InboundMessage, parse_inbound};

    #[test]
    fn messages_we_send_parse_as_twilio_messages() {
        let mut params = BTreeMap::new();
        params.insert("call_sid".to_owned(), "CA1".to_owned());
        let start = start_json(1, "AC1", "CA1", "MZ1", &params);
        let InboundMessage::Start(start) = parse_inbound(&start).unwrap() else {
            panic!("not a start");
        };
        assert_eq!(start.stream_sid, "MZ1");
        assert_eq!(start.sequence_number, Some(1));
        assert_eq!(start.custom_parameters, params);
        assert_eq!(start.media_format.sample_rate, 8000);

        let mut media = String::new();
        let payload = STANDARD.encode([0xFFu8; 160]);
        write_media_json(&mut media, 2, "MZ1", 1, 0, &payload);
        let InboundMessage::Media(media) = parse_inbound(&media).unwrap() else {
            panic!("not media");
        };
        assert_eq!((media.chunk, media.timestamp_ms), (1, 0));
        assert_eq!(media.payload.len(), 160);

        assert!(matches!(
            parse_inbound(&dtmf_json(3, "MZ1", '#')).unwrap(),
            InboundMessage::Dtmf(d) if d.digit == '#'
        ));
        assert!(matches!(
            parse_inbound(&mark_echo_json(4, "MZ1", "m1")).unwrap(),
            InboundMessage::Mark(m) if m.name == "m1"
        ));
        assert!(matches!(
            parse_inbound(&stop_json(5, "MZ1", "AC1", "CA1")).unwrap(),
            InboundMessage::Stop(s) if s.call_sid == "CA1"
        ));
        assert!(matches!(
            parse_inbound(&connected_json()).unwrap(),
            InboundMessage::Connected(_)
        ));
    }

    #[test]
    fn server_messages_from_twilio_stream_writers_are_accepted() {
        let media = twilio_stream::media::media_json("MZ1", &[1, 2, 3]);
        assert_eq!(
            parse_agent_message(&media, "MZ1").unwrap(),
            (
                AgentMessage::Media {
                    payload: vec![1, 2, 3]
                },
                None
            )
        );
        let mark = twilio_stream::media::mark_json("MZ1", "end");
        assert_eq!(
            parse_agent_message(&mark, "MZ1").unwrap().0,
            AgentMessage::Mark {
                name: "end".to_owned()
            }
        );
        let clear = twilio_stream::media::clear_json("MZ1");
        assert_eq!(
            parse_agent_message(&clear, "MZ1").unwrap().0,
            AgentMessage::Clear
        );
    }

    #[test]
    fn violations_are_named() {
        let media = twilio_stream::media::media_json("MZ2", &[1]);
        assert!(matches!(
            parse_agent_message(&media, "MZ1"),
            Err(ProtocolViolation::WrongStreamSid { .. })
        ));
        assert!(matches!(
            parse_agent_message(r#"{"event":"play","streamSid":"MZ1"}"#, "MZ1"),
            Err(ProtocolViolation::UnknownEvent { .. })
        ));
        assert!(matches!(
            parse_agent_message("{", "MZ1"),
            Err(ProtocolViolation::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_agent_message(
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"!!"}}"#,
                "MZ1"
            ),
            Err(ProtocolViolation::InvalidBase64 { .. })
        ));
        let wav = mulaw::wav::write_mulaw(&[0xFF; 16], 8000, 1);
        let media = twilio_stream::media::media_json("MZ1", &wav);
        assert!(matches!(
            parse_agent_message(&media, "MZ1").unwrap().1,
            Some(ProtocolViolation::WavHeaderInPayload { .. })
        ));
    }
}
