//! Reading the TwiML a voice webhook answers with: a small attribute scan, enough for
//! `<Connect action><Stream url statusCallback><Parameter name value/></Stream></Connect>`.
//! Not a general XML parser: no namespaces, CDATA or DTDs (Twilio's TwiML uses none of them).

use std::collections::BTreeMap;

/// Twilio refuses TwiML documents larger than this (error 11750).
pub const MAX_TWIML_BYTES: usize = 64 * 1024;

/// What `<Connect><Stream>` asks Twilio to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectStream {
    /// `<Stream url>`: the Media Streams WebSocket URL.
    pub stream_url: String,
    /// `<Stream name>`, when given.
    pub stream_name: Option<String>,
    /// `<Stream statusCallback>`, when given.
    pub status_callback: Option<String>,
    /// `<Connect action>`: requested after the server closes the stream.
    pub action: Option<String>,
    /// `<Parameter name value>` pairs, delivered in `start.customParameters`.
    pub parameters: BTreeMap<String, String>,
}

/// Why a TwiML answer cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TwimlError {
    /// Larger than Twilio accepts.
    #[error("the TwiML is {len} bytes; Twilio refuses documents over 64 kB (error 11750)")]
    TooLarge {
        /// Document size.
        len: usize,
    },
    /// No `<Response>` root.
    #[error("the answer is not TwiML (no <Response> element): {excerpt:?}")]
    NotTwiml {
        /// The first characters of the body.
        excerpt: String,
    },
    /// The server refused the call unanswered (`<Reject>`, e.g. busy: it is at capacity).
    #[error("the server refused the call with <Reject reason=\"{reason}\">")]
    Rejected {
        /// The `reason` attribute (`rejected` when absent).
        reason: String,
    },
    /// A `<Response>` without `<Connect><Stream>` (e.g. `<Say>` + `<Hangup>`).
    #[error(
        "the TwiML has no <Connect><Stream url=...>; the server answered with verbs {verbs:?} \
         (an offline or error answer?)"
    )]
    NoConnectStream {
        /// Top-level verbs found.
        verbs: Vec<String>,
    },
}

#[derive(Debug)]
struct Tag<'a> {
    name: &'a str,
    attributes: Vec<(&'a str, String)>,
    closing: bool,
}

impl Tag<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every tag in document order (declarations, comments and text skipped).
fn tags(xml: &str) -> Vec<Tag<'_>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(close) = rest.find('>') else { break };
        let body = &rest[..close];
        rest = &rest[close + 1..];
        if body.starts_with('?') || body.starts_with('!') {
            continue;
        }
        let closing = body.starts_with('/');
        let body = body.trim_start_matches('/').trim_end_matches('/');
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        out.push(Tag {
            name: &body[..name_end],
            attributes: attributes(&body[name_end..]),
            closing,
        });
    }
    out
}

fn attributes(mut text: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    loop {
        text = text.trim_start();
        let Some(eq) = text.find('=') else { break };
        let name = text[..eq].trim();
        let after = text[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let value_text = &after[1..];
        let Some(end) = value_text.find(quote) else {
            break;
        };
        out.push((name, unescape(&value_text[..end])));
        text = &value_text[end + 1..];
    }
    out
}

/// Decodes the five named entities and numeric character references.
#[must_use]
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Finds the `<Connect><Stream>` in a webhook's TwiML answer.
///
/// # Errors
/// [`TwimlError`] when the document is too large, is not TwiML, or does not connect a stream.
pub fn parse_connect_stream(xml: &str) -> Result<ConnectStream, TwimlError> {
    if xml.len() > MAX_TWIML_BYTES {
        return Err(TwimlError::TooLarge { len: xml.len() });
    }
    let tags = tags(xml);
    if !tags
        .iter()
        .any(|tag| tag.name == "Response" && !tag.closing)
    {
        return Err(TwimlError::NotTwiml {
            excerpt: xml.chars().take(80).collect(),
        });
    }
    let mut action = None;
    let mut stream: Option<ConnectStream> = None;
    let mut in_connect = false;
    let mut in_stream = false;
    let mut verbs = Vec::new();
    for tag in &tags {
        match (tag.name, tag.closing) {
            ("Response", _) => {}
            ("Connect", false) => {
                in_connect = true;
                action = tag.attribute("action").map(str::to_owned);
            }
            ("Connect", true) => in_connect = false,
            ("Stream", false) if in_connect && stream.is_none() => {
                if let Some(url) = tag.attribute("url") {
                    in_stream = true;
                    stream = Some(ConnectStream {
                        stream_url: url.to_owned(),
                        stream_name: tag.attribute("name").map(str::to_owned),
                        status_callback: tag.attribute("statusCallback").map(str::to_owned),
                        action: action.clone(),
                        parameters: BTreeMap::new(),
                    });
                }
            }
            ("Stream", true) => in_stream = false,
            ("Parameter", false) if in_stream => {
                if let (Some(stream), Some(name)) = (stream.as_mut(), tag.attribute("name")) {
                    stream.parameters.insert(
                        name.to_owned(),
                        tag.attribute("value").unwrap_or_default().to_owned(),
                    );
                }
            }
            ("Reject", false) if !in_connect && verbs.is_empty() && stream.is_none() => {
                // Twilio obeys a <Reject> only as the first verb.
                return Err(TwimlError::Rejected {
                    reason: tag.attribute("reason").unwrap_or("rejected").to_owned(),
                });
            }
            (name, false) if !in_connect => verbs.push(name.to_owned()),
            _ => {}
        }
    }
    stream.ok_or(TwimlError::NoConnectStream { verbs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_crmds_connect_stream_answer() {
        let base = twilio_stream::url::PublicBaseUrl::parse("https://example.com/").unwrap();
        let xml = twilio_stream::twiml::connect_stream(&base, "CA&1");
        let connect = parse_connect_stream(&xml).unwrap();
        assert_eq!(connect.stream_url, "wss://example.com/ws/twilio-media");
        assert_eq!(
            connect.action.as_deref(),
            Some("https://example.com/webhook/stream_ended")
        );
        assert_eq!(
            connect.status_callback.as_deref(),
            Some("https://example.com/webhook/stream_status")
        );
        assert_eq!(
            connect.parameters.get("call_sid").map(String::as_str),
            Some("CA&1")
        );
    }

    #[test]
    fn handles_single_quotes_comments_and_entities() {
        let xml = "<?xml version='1.0'?><!-- hi <Stream url='x'/> --><Response>\n<Connect>\
                   <Stream url='wss://h/p' name=\"n\"><Parameter name='a' value='&lt;b&#62;&#x26;'/>\
                   <Parameter name=\"empty\"/></Stream></Connect></Response>";
        let connect = parse_connect_stream(xml).unwrap();
        assert_eq!(connect.stream_url, "wss://h/p");
        assert_eq!(connect.stream_name.as_deref(), Some("n"));
        assert_eq!(connect.parameters["a"], "<b>&");
        assert_eq!(connect.parameters["empty"], "");
        assert_eq!(connect.action, None);
    }

    #[test]
    fn a_reject_is_a_refusal_not_a_broken_answer() {
        assert_eq!(
            parse_connect_stream(&twilio_stream::twiml::reject_busy()),
            Err(TwimlError::Rejected {
                reason: "busy".to_owned()
            })
        );
        assert_eq!(
            parse_connect_stream("<Response><Reject/></Response>"),
            Err(TwimlError::Rejected {
                reason: "rejected".to_owned()
            })
        );
        // Not first: Twilio ignores it, so it is just another verb.
        assert_eq!(
            parse_connect_stream("<Response><Say>x</Say><Reject/></Response>"),
            Err(TwimlError::NoConnectStream {
                verbs: vec!["Say".to_owned(), "Reject".to_owned()]
            })
        );
    }

    #[test]
    fn say_and_hangup_is_not_a_stream() {
        let xml = twilio_stream::twiml::say_and_hangup("sorry", Some("en-US"));
        assert_eq!(
            parse_connect_stream(&xml),
            Err(TwimlError::NoConnectStream {
                verbs: vec!["Say".to_owned(), "Hangup".to_owned()]
            })
        );
        assert!(matches!(
            parse_connect_stream("not xml"),
            Err(TwimlError::NotTwiml { .. })
        ));
        let big = format!("<Response>{}</Response>", " ".repeat(MAX_TWIML_BYTES));
        assert!(matches!(
            parse_connect_stream(&big),
            Err(TwimlError::TooLarge { .. })
        ));
    }

    #[test]
    fn unescape_leaves_unknown_entities() {
        assert_eq!(unescape("a &bogus; b &amp; c &"), "a &bogus; b & c &");
    }
}
