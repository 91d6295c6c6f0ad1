#![allow(clippy::unwrap_used)]
//! Public base URL joining and TwiML generation.

use proptest::prelude::*;
use twilio_stream::twiml::{self, connect_stream, hangup, reject_busy, say_and_hangup};
use twilio_stream::url::{PublicBaseUrl, UrlError};

#[test]
fn base_urls_join_without_double_slashes() {
    for base in [
        "https://voice.example.com",
        "https://voice.example.com/",
        "https://voice.example.com//",
    ] {
        let base = PublicBaseUrl::parse(base).unwrap();
        assert_eq!(
            base.wss("/ws/twilio-media"),
            "wss://voice.example.com/ws/twilio-media"
        );
        assert_eq!(
            base.wss("ws/twilio-media"),
            "wss://voice.example.com/ws/twilio-media"
        );
        assert_eq!(
            base.https("/webhook/stream_status"),
            "https://voice.example.com/webhook/stream_status"
        );
        assert_eq!(base.to_string(), "https://voice.example.com/");
    }
    let prefixed = PublicBaseUrl::parse("https://Example.com:8443/crmd/").unwrap();
    assert_eq!(
        prefixed.https("//webhook//voice"),
        "https://example.com:8443/crmd/webhook/voice"
    );
    assert_eq!(prefixed.https(""), "https://example.com:8443/crmd/");
    assert_eq!(prefixed.authority(), "example.com:8443");
}

#[test]
fn default_ports_are_dropped_and_http_maps_to_ws() {
    let base = PublicBaseUrl::parse("https://example.com:443/").unwrap();
    assert_eq!(base.https("/a"), "https://example.com/a");
    let local = PublicBaseUrl::parse("http://127.0.0.1:8080").unwrap();
    assert!(!local.is_https());
    assert_eq!(
        local.wss("/ws/twilio-media"),
        "ws://127.0.0.1:8080/ws/twilio-media"
    );
}

#[test]
fn stream_urls_never_carry_a_query_string() {
    let base = PublicBaseUrl::parse("https://example.com").unwrap();
    assert_eq!(
        base.wss("/ws/media?call=CA1#x"),
        "wss://example.com/ws/media%3Fcall=CA1%23x"
    );
}

#[test]
fn request_url_keeps_the_query_verbatim() {
    let base = PublicBaseUrl::parse("https://example.com/").unwrap();
    assert_eq!(
        base.request_url("/webhook/voice?foo=1&bar=2"),
        "https://example.com/webhook/voice?foo=1&bar=2"
    );
    assert_eq!(
        base.request_url("/webhook/voice"),
        "https://example.com/webhook/voice"
    );
}

#[test]
fn bad_base_urls_are_refused_with_a_reason() {
    assert!(matches!(
        PublicBaseUrl::parse("example.com"),
        Err(UrlError::Invalid { .. })
    ));
    assert!(matches!(
        PublicBaseUrl::parse("ftp://example.com"),
        Err(UrlError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        PublicBaseUrl::parse("https://example.com/?a=1"),
        Err(UrlError::QueryOrFragment { .. })
    ));
    assert!(matches!(
        PublicBaseUrl::parse("https://example.com/?"),
        Err(UrlError::QueryOrFragment { .. })
    ));
    assert!(matches!(
        PublicBaseUrl::parse("https://example.com/#top"),
        Err(UrlError::QueryOrFragment { .. })
    ));
    let err = PublicBaseUrl::parse("https://user:hunter2@example.com/").unwrap_err();
    assert_eq!(err, UrlError::Credentials);
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn forwarded_headers_rebuild_the_base() {
    let base = PublicBaseUrl::from_forwarded(Some("https"), "voice.example.com").unwrap();
    assert_eq!(
        base.https("/webhook/voice"),
        "https://voice.example.com/webhook/voice"
    );
    let chained = PublicBaseUrl::from_forwarded(Some("http, https"), "127.0.0.1:3000").unwrap();
    assert_eq!(chained.https("/x"), "http://127.0.0.1:3000/x");
    let defaulted = PublicBaseUrl::from_forwarded(None, "example.com:443").unwrap();
    assert_eq!(defaulted.https("/x"), "https://example.com/x");
    for host in ["", "evil.com/path", "a@b", "host:notaport", "a b"] {
        assert!(
            matches!(
                PublicBaseUrl::from_forwarded(Some("https"), host),
                Err(UrlError::InvalidHost { .. })
            ),
            "{host:?}"
        );
    }
    assert!(matches!(
        PublicBaseUrl::from_forwarded(Some("gopher"), "example.com"),
        Err(UrlError::UnsupportedScheme { .. })
    ));
}

#[test]
fn connect_stream_twiml_has_the_expected_shape() {
    let base = PublicBaseUrl::parse("https://voice.example.com/").unwrap();
    let xml = connect_stream(&base, "CA123");
    assert_eq!(
        xml,
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#,
            r#"<Connect action="https://voice.example.com/webhook/stream_ended" method="POST">"#,
            r#"<Stream url="wss://voice.example.com/ws/twilio-media" "#,
            r#"statusCallback="https://voice.example.com/webhook/stream_status" statusCallbackMethod="POST">"#,
            r#"<Parameter name="call_sid" value="CA123"/></Stream></Connect></Response>"#
        )
    );
}

#[test]
fn every_attribute_and_text_is_escaped() {
    let base = PublicBaseUrl::parse("https://voice.example.com/a&b").unwrap();
    let xml = connect_stream(&base, "CA\"<&>'\n\u{1}");
    assert!(
        xml.contains(r#"value="CA&quot;&lt;&amp;&gt;&apos;&#10;""#),
        "{xml}"
    );
    assert!(
        xml.contains("https://voice.example.com/a&amp;b/webhook/stream_ended"),
        "{xml}"
    );
    assert_eq!(
        say_and_hangup("Tom & Jerry <3", Some("es-ES\"")),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="es-ES&quot;">Tom &amp; Jerry &lt;3</Say><Hangup/></Response>"#
    );
    assert_eq!(
        say_and_hangup("hola", None),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say>hola</Say><Hangup/></Response>"#
    );
    assert_eq!(
        hangup(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#
    );
    assert_eq!(
        reject_busy(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>"#
    );
}

/// Undo the five entities and the numeric references `push_escaped` emits.
fn unescape(text: &str) -> String {
    text.replace("&#9;", "\t")
        .replace("&#10;", "\n")
        .replace("&#13;", "\r")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

proptest! {
    #[test]
    fn joined_urls_never_contain_a_double_slash(
        base in "https://[a-z]{1,8}\\.example(:[1-9][0-9]{0,3})?(/[a-z]{0,4}){0,3}/?",
        path in "[/a-z?#%]{0,24}",
    ) {
        let base = PublicBaseUrl::parse(&base).unwrap();
        for url in [base.https(&path), base.wss(&path)] {
            let (_, rest) = url.split_once("://").unwrap();
            prop_assert!(!rest.contains("//"), "{url}");
            prop_assert!(!rest.contains('?') && !rest.contains('#'), "{url}");
        }
    }

    #[test]
    fn escaped_text_has_no_markup_and_round_trips(value in any::<String>()) {
        let escaped = twiml::escape(&value);
        prop_assert!(!escaped.contains(['<', '>', '"', '\'']));
        let all_legal = escaped.chars().all(|c| c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}');
        prop_assert!(all_legal, "illegal XML character in {:?}", escaped);
        let allowed: String = value
            .chars()
            .filter(|c| matches!(c, '\t' | '\n' | '\r') || (*c >= ' ' && *c != '\u{fffe}' && *c != '\u{ffff}'))
            .collect();
        prop_assert_eq!(unescape(&escaped), allowed);
    }
}

#[test]
fn base_url_reads_from_configuration_text() {
    let base: PublicBaseUrl = serde_json::from_str(r#""https://voice.example.com/crmd""#).unwrap();
    assert_eq!(
        serde_json::to_string(&base).unwrap(),
        r#""https://voice.example.com/crmd/""#
    );
    assert_eq!(
        format!("{base:?}"),
        r#"PublicBaseUrl("https://voice.example.com/crmd/")"#
    );
    let err =
        serde_json::from_str::<PublicBaseUrl>(r#""https://voice.example.com/?x=1""#).unwrap_err();
    assert!(err.to_string().contains("query string"));
    assert_eq!(
        "https://a.example"
            .parse::<PublicBaseUrl>()
            .unwrap()
            .https("/b"),
        "https://a.example/b"
    );
}
