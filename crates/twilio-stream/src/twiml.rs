//! TwiML documents the voice webhook answers with. Every attribute and text node is
//! XML-escaped; characters XML 1.0 cannot carry at all are dropped.

use crate::url::PublicBaseUrl;

/// Path of the Media Streams WebSocket endpoint, relative to the public base.
pub const STREAM_PATH: &str = "/ws/twilio-media";
/// Path Twilio requests (`<Connect action>`) after the stream ended.
pub const STREAM_ENDED_PATH: &str = "/webhook/stream_ended";
/// Path of the `<Stream statusCallback>` (stream-started / stopped / error).
pub const STREAM_STATUS_PATH: &str = "/webhook/stream_status";
/// Name of the `<Parameter>` that carries the call id into `start.customParameters`.
pub const CALL_SID_PARAMETER: &str = "call_sid";

const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Answer a call by connecting it to our bidirectional Media Stream:
///
/// ```xml
/// <Response><Connect action="https://HOST/webhook/stream_ended" method="POST">
///   <Stream url="wss://HOST/ws/twilio-media" statusCallback="https://HOST/webhook/stream_status"
///           statusCallbackMethod="POST"><Parameter name="call_sid" value="CA…"/></Stream>
/// </Connect></Response>
/// ```
///
/// The stream URL has no query string (Twilio strips it); the call id travels as a `<Parameter>`.
#[must_use]
pub fn connect_stream(base: &PublicBaseUrl, call_sid: &str) -> String {
    let mut xml = String::with_capacity(512);
    xml.push_str(XML_DECLARATION);
    xml.push_str("<Response><Connect action=\"");
    push_escaped(&mut xml, &base.https(STREAM_ENDED_PATH));
    xml.push_str("\" method=\"POST\"><Stream url=\"");
    push_escaped(&mut xml, &base.wss(STREAM_PATH));
    xml.push_str("\" statusCallback=\"");
    push_escaped(&mut xml, &base.https(STREAM_STATUS_PATH));
    xml.push_str("\" statusCallbackMethod=\"POST\"><Parameter name=\"");
    push_escaped(&mut xml, CALL_SID_PARAMETER);
    xml.push_str("\" value=\"");
    push_escaped(&mut xml, call_sid);
    xml.push_str("\"/></Stream></Connect></Response>");
    xml
}

/// Fallback: speak `text` (optionally in a BCP-47 `language` such as `es-ES`), then hang up.
#[must_use]
pub fn say_and_hangup(text: &str, language: Option<&str>) -> String {
    let mut xml = String::with_capacity(XML_DECLARATION.len() + text.len() + 64);
    xml.push_str(XML_DECLARATION);
    xml.push_str("<Response><Say");
    if let Some(language) = language {
        xml.push_str(" language=\"");
        push_escaped(&mut xml, language);
        xml.push('"');
    }
    xml.push('>');
    push_escaped(&mut xml, text);
    xml.push_str("</Say><Hangup/></Response>");
    xml
}

/// Hang up straight away.
#[must_use]
pub fn hangup() -> String {
    format!("{XML_DECLARATION}<Response><Hangup/></Response>")
}

/// Refuse the call unanswered with a busy signal (`<Reject reason="busy"/>`): Twilio does not
/// pick up, does not bill it, and the call ends with status `busy`.
#[must_use]
pub fn reject_busy() -> String {
    format!(r#"{XML_DECLARATION}<Response><Reject reason="busy"/></Response>"#)
}

/// An empty `<Response/>` (e.g. to acknowledge a messaging webhook without replying).
#[must_use]
pub fn empty_response() -> String {
    format!("{XML_DECLARATION}<Response/>")
}

/// Append `value` escaped for use in an XML attribute (double-quoted) or text node.
///
/// `& < > " '` become entities; tab, newline and carriage return become character references
/// (so attribute-value normalisation keeps them); other characters XML 1.0 forbids (C0 controls,
/// U+FFFE, U+FFFF) are dropped.
pub fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {}
            other => out.push(other),
        }
    }
}

/// `value` escaped as by [`push_escaped`].
#[must_use]
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_escaped(&mut out, value);
    out
}
