//! Per-socket order checks: `start` before anything that needs it, one stream id, nothing after
//! `stop`, payloads that hold whole sample frames of the negotiated format.

use super::{InboundMessage, ParseError, parse_inbound};

/// Where a Media Streams socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPhase {
    /// No `start` yet (`connected` may or may not have arrived).
    AwaitingStart,
    /// `start` seen; media flows.
    Streaming,
    /// `stop` seen.
    Stopped,
}

/// Checks that the frames of one socket arrive in a usable order. Sans-IO: feed every parsed
/// message to [`StreamValidator::handle_message`] (or raw text to
/// [`StreamValidator::handle_text`]); an `Err` means "log it with the call id and drop this
/// frame", the stream itself can continue.
#[derive(Debug, Clone)]
pub struct StreamValidator {
    phase: StreamPhase,
    stream_sid: Option<String>,
    bytes_per_sample_frame: Option<usize>,
}

impl Default for StreamValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamValidator {
    /// A validator for a freshly accepted socket.
    #[must_use]
    pub fn new() -> Self {
        Self {
            phase: StreamPhase::AwaitingStart,
            stream_sid: None,
            bytes_per_sample_frame: None,
        }
    }

    /// Current phase.
    #[must_use]
    pub fn phase(&self) -> StreamPhase {
        self.phase
    }

    /// The `streamSid` announced by `start`, once seen.
    #[must_use]
    pub fn stream_sid(&self) -> Option<&str> {
        self.stream_sid.as_deref()
    }

    /// Parse one text frame and check it against the socket's state.
    ///
    /// # Errors
    /// Everything [`parse_inbound`] reports, plus the order errors of
    /// [`StreamValidator::handle_message`].
    pub fn handle_text(&mut self, text: &str) -> Result<InboundMessage, ParseError> {
        let message = parse_inbound(text)?;
        self.handle_message(&message)?;
        Ok(message)
    }

    /// Check one parsed message and advance the phase.
    ///
    /// # Errors
    /// [`ParseError::MediaBeforeStart`], [`ParseError::EventBeforeStart`],
    /// [`ParseError::DuplicateStart`], [`ParseError::StreamSidMismatch`],
    /// [`ParseError::AfterStop`], [`ParseError::PayloadNotWholeSamples`]. A rejected message does
    /// not change the phase.
    pub fn handle_message(&mut self, message: &InboundMessage) -> Result<(), ParseError> {
        match (self.phase, message) {
            (_, InboundMessage::Connected(_) | InboundMessage::Unknown { .. }) => Ok(()),
            (StreamPhase::Stopped, other) => Err(ParseError::AfterStop {
                event: other.event_name().to_owned(),
            }),
            (StreamPhase::AwaitingStart, InboundMessage::Start(start)) => {
                self.stream_sid = Some(start.stream_sid.clone());
                self.bytes_per_sample_frame = start.media_format.bytes_per_sample_frame();
                self.phase = StreamPhase::Streaming;
                Ok(())
            }
            (StreamPhase::AwaitingStart, InboundMessage::Media(media)) => {
                Err(ParseError::MediaBeforeStart {
                    sequence_number: media.sequence_number,
                })
            }
            (StreamPhase::AwaitingStart, InboundMessage::Dtmf(_)) => {
                Err(ParseError::EventBeforeStart { event: "dtmf" })
            }
            (StreamPhase::AwaitingStart, InboundMessage::Mark(_)) => {
                Err(ParseError::EventBeforeStart { event: "mark" })
            }
            (StreamPhase::AwaitingStart, InboundMessage::Stop(_)) => {
                Err(ParseError::EventBeforeStart { event: "stop" })
            }
            (StreamPhase::Streaming, InboundMessage::Start(start)) => {
                Err(ParseError::DuplicateStart {
                    stream_sid: start.stream_sid.clone(),
                })
            }
            (StreamPhase::Streaming, InboundMessage::Media(media)) => {
                self.check_stream_sid(&media.stream_sid)?;
                if let Some(frame) = self.bytes_per_sample_frame
                    && media.payload.len() % frame != 0
                {
                    return Err(ParseError::PayloadNotWholeSamples {
                        sequence_number: media.sequence_number,
                        payload_len: media.payload.len(),
                        bytes_per_sample_frame: frame,
                    });
                }
                Ok(())
            }
            (StreamPhase::Streaming, InboundMessage::Dtmf(dtmf)) => {
                self.check_stream_sid(&dtmf.stream_sid)
            }
            (StreamPhase::Streaming, InboundMessage::Mark(mark)) => {
                self.check_stream_sid(&mark.stream_sid)
            }
            (StreamPhase::Streaming, InboundMessage::Stop(stop)) => {
                self.check_stream_sid(&stop.stream_sid)?;
                self.phase = StreamPhase::Stopped;
                Ok(())
            }
        }
    }

    fn check_stream_sid(&self, received: &str) -> Result<(), ParseError> {
        match self.stream_sid.as_deref() {
            Some(expected) if expected != received => Err(ParseError::StreamSidMismatch {
                expected: expected.to_owned(),
                received: received.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}
