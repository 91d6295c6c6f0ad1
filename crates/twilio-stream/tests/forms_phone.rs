#![allow(clippy::unwrap_used)]
//! Webhook forms and phone numbers, from real-shaped form bodies in tests/data.

use std::path::PathBuf;

use twilio_stream::forms::{
    FormError, IncomingCall, MessageStatus, MessageStatusCallback, StreamEvent, StreamStatus,
    WhatsAppInbound, parse_pairs,
};
use twilio_stream::phone::{PhoneError, normalize_e164};
use twilio_stream::signature::{sign_form, validate_form};

fn form(name: &str) -> Vec<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    parse_pairs(std::fs::read_to_string(path).unwrap().trim_end().as_bytes()).unwrap()
}

#[test]
fn incoming_call_form_is_typed_and_tolerates_extra_fields() {
    let pairs = form("incoming_call.form");
    let call = IncomingCall::from_pairs(&pairs).unwrap();
    assert_eq!(call.call_sid, "CA5f4a4b8cde2d4f1e9a7b3c6d8e9f0a1b");
    assert_eq!(call.from.as_deref(), Some("+34600111222"));
    assert_eq!(call.to.as_deref(), Some("+34910000000"));
    assert_eq!(call.call_status.as_deref(), Some("ringing"));
    assert_eq!(call.direction.as_deref(), Some("inbound"));
    assert_eq!(call.from_e164().unwrap().as_str(), "+34600111222");
    // The body carries fields the struct does not name (StirVerstat, geo...), still parses.
    assert!(pairs.iter().any(|(n, _)| n == "StirVerstat"));
    assert_eq!(
        IncomingCall::from_pairs(&[("From".to_owned(), "+1".to_owned())]),
        Err(FormError::MissingField { field: "CallSid" })
    );
}

#[test]
fn signature_over_a_parsed_form_uses_every_field() {
    let pairs = form("incoming_call.form");
    let url = "https://voice.example.com/webhook/voice";
    let header = sign_form("token", url, &pairs);
    validate_form("token", url, &pairs, &header).unwrap();
    let fewer: Vec<_> = pairs
        .iter()
        .filter(|(n, _)| n != "StirVerstat")
        .cloned()
        .collect();
    assert!(validate_form("token", url, &fewer, &header).is_err());
}

#[test]
fn stream_status_events_are_typed() {
    let status = StreamStatus::from_pairs(&form("stream_status_error.form")).unwrap();
    assert_eq!(status.stream_event, Some(StreamEvent::Error));
    assert_eq!(
        status.stream_error.as_deref(),
        Some("Stream - WebSocket - Connection Refused")
    );
    assert_eq!(
        status.stream_sid.as_deref(),
        Some("MZ18ad3ab5a668481ce02b83e7395059f0")
    );
    let other = StreamStatus::from_pairs(&[("StreamEvent".to_owned(), "stream-paused".to_owned())])
        .unwrap();
    assert_eq!(
        other.stream_event,
        Some(StreamEvent::Other("stream-paused".to_owned()))
    );
    assert_eq!(StreamEvent::from("stream-started"), StreamEvent::Started);
    assert_eq!(StreamEvent::Stopped.as_str(), "stream-stopped");
}

#[test]
fn whatsapp_inbound_with_media_profile_and_wa_id() {
    let message = WhatsAppInbound::from_pairs(&form("whatsapp_inbound.form")).unwrap();
    assert_eq!(message.message_sid, "MM0a1b2c3d4e5f60718293a4b5c6d7e8f9");
    assert_eq!(message.from, "whatsapp:+34600111222");
    assert_eq!(message.from_e164().unwrap().as_str(), "+34600111222");
    assert_eq!(message.body, "Hola, ¿tenéis cita el jueves? & gracias");
    assert_eq!(message.num_media, 2);
    assert_eq!(message.media.len(), 2);
    assert_eq!(message.media[0].content_type, "image/jpeg");
    assert!(message.media[0].url.ends_with("/Media/ME111"));
    assert_eq!(message.media[1].content_type, "audio/ogg");
    assert_eq!(message.profile_name.as_deref(), Some("Lucía"));
    assert_eq!(message.wa_id.as_deref(), Some("34600111222"));
    assert_eq!(message.message_type.as_deref(), Some("image"));

    let bad = [
        ("MessageSid".to_owned(), "MM1".to_owned()),
        ("From".to_owned(), "whatsapp:+34600111222".to_owned()),
        ("To".to_owned(), "whatsapp:+34910000000".to_owned()),
        ("NumMedia".to_owned(), "two".to_owned()),
    ];
    assert!(matches!(
        WhatsAppInbound::from_pairs(&bad),
        Err(FormError::InvalidField { .. })
    ));
    assert_eq!(
        WhatsAppInbound::from_pairs(&bad[1..]),
        Err(FormError::MissingField {
            field: "MessageSid"
        })
    );
}

#[test]
fn message_status_never_moves_backwards() {
    let callback = MessageStatusCallback::from_pairs(&form("message_status_failed.form")).unwrap();
    assert_eq!(callback.message_status, MessageStatus::Undelivered);
    assert_eq!(callback.error_code.as_deref(), Some("63016"));

    use MessageStatus::*;
    let lifecycle = [Accepted, Queued, Sending, Sent, Delivered, Read];
    for pair in lifecycle.windows(2) {
        assert!(pair[0] < pair[1]);
        assert!(pair[0].can_advance_to(&pair[1]));
        assert!(
            !pair[1].can_advance_to(&pair[0]),
            "{} -> {}",
            pair[1],
            pair[0]
        );
    }
    // Duplicates and late arrivals are refused.
    assert!(!Delivered.can_advance_to(&Delivered));
    assert!(!Delivered.can_advance_to(&Sent));
    // Failures are final; delivered and undelivered are alternatives.
    assert!(Sent.can_advance_to(&Failed));
    assert!(!Failed.can_advance_to(&Read));
    assert!(!Delivered.can_advance_to(&Undelivered));
    assert!(!Undelivered.can_advance_to(&Delivered));
    // Unknown statuses never replace a known one, and the order stays total.
    assert!(!Queued.can_advance_to(&MessageStatus::from("partially_delivered")));
    let mut all: Vec<MessageStatus> = [
        "read",
        "queued",
        "failed",
        "sent",
        "weird",
        "scheduled",
        "received",
    ]
    .into_iter()
    .map(MessageStatus::from)
    .collect();
    all.sort();
    let names: Vec<&str> = all.iter().map(MessageStatus::as_str).collect();
    assert_eq!(
        names,
        [
            "weird",
            "scheduled",
            "queued",
            "sent",
            "received",
            "failed",
            "read"
        ]
    );
}

#[test]
fn phone_numbers_normalise_to_e164() {
    for (input, expected) in [
        ("+34 600 111 222", "+34600111222"),
        ("whatsapp:+34600111222", "+34600111222"),
        ("WhatsApp: +1 (415) 867-5309", "+14158675309"),
        ("0034 600.111.222", "+34600111222"),
        ("tel:+447911123456", "+447911123456"),
    ] {
        let number = normalize_e164(input).unwrap();
        assert_eq!(number.as_str(), expected, "{input}");
    }
    let number = normalize_e164("+34600111222").unwrap();
    assert_eq!(number.whatsapp(), "whatsapp:+34600111222");
    assert_eq!(number.digits(), "34600111222");
    assert_eq!(serde_json::to_string(&number).unwrap(), r#""+34600111222""#);
    assert_eq!(
        serde_json::from_str::<twilio_stream::phone::E164>(r#""+34 600 111 222""#).unwrap(),
        number
    );

    assert_eq!(normalize_e164(" - "), Err(PhoneError::Empty));
    assert_eq!(
        normalize_e164("600111222"),
        Err(PhoneError::MissingCountryCode)
    );
    assert_eq!(
        normalize_e164("+34 600 CALL ME"),
        Err(PhoneError::InvalidCharacter { character: 'C' })
    );
    assert_eq!(
        normalize_e164("anonymous"),
        Err(PhoneError::InvalidCharacter { character: 'a' })
    );
    assert_eq!(
        normalize_e164("+1234"),
        Err(PhoneError::WrongLength { digits: 4 })
    );
    assert_eq!(
        normalize_e164("+1234567890123456"),
        Err(PhoneError::WrongLength { digits: 16 })
    );
    assert_eq!(
        normalize_e164("+0034600111222"),
        Err(PhoneError::LeadingZero)
    );
    assert_eq!(
        normalize_e164("+34+600111222"),
        Err(PhoneError::InvalidCharacter { character: '+' })
    );
    assert!(normalize_e164("whatsapé+34600111222").is_err());
    assert!(!PhoneError::WrongLength { digits: 4 }.to_string().is_empty());
}
