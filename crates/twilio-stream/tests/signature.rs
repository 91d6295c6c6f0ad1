#![allow(clippy::unwrap_used)]
//! `X-Twilio-Signature`: Twilio's published vectors plus repeated names, port variants, JSON bodies.

use twilio_stream::signature::{
    SignatureError, body_sha256_hex, sign_form, sign_url, validate_form, validate_json,
};

const TOKEN: &str = "12345";

fn published_params() -> Vec<(String, String)> {
    [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
    .collect()
}

const JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
const JSON_BODY_SHA256: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

#[test]
fn published_form_vectors_validate() {
    let params = published_params();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        sign_form(TOKEN, url, &params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    validate_form(TOKEN, url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=").unwrap();

    let with_port = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
    assert_eq!(
        sign_form(TOKEN, with_port, &params),
        "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
    );
    validate_form(TOKEN, with_port, &params, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=").unwrap();
}

#[test]
fn published_json_vector_validates() {
    assert_eq!(body_sha256_hex(JSON_BODY.as_bytes()), JSON_BODY_SHA256);
    let url = format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={JSON_BODY_SHA256}");
    assert_eq!(sign_url(TOKEN, &url), "a9nBmqA0ju/hNViExpshrM61xv4=");
    validate_json(
        TOKEN,
        &url,
        JSON_BODY.as_bytes(),
        "a9nBmqA0ju/hNViExpshrM61xv4=",
    )
    .unwrap();
    // Same URL as a proxy might rebuild it, with the default port.
    let with_port = url.replace("mycompany.com/", "mycompany.com:443/");
    validate_json(
        TOKEN,
        &with_port,
        JSON_BODY.as_bytes(),
        "a9nBmqA0ju/hNViExpshrM61xv4=",
    )
    .unwrap();
}

#[test]
fn parameter_order_does_not_matter_but_every_field_does() {
    let mut params = published_params();
    params.reverse();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    validate_form(TOKEN, url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=").unwrap();
    params.push(("ApiVersion".to_owned(), "2010-04-01".to_owned()));
    assert!(matches!(
        validate_form(TOKEN, url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        Err(SignatureError::Mismatch { .. })
    ));
}

#[test]
fn repeated_names_contribute_each_value_sorted() {
    let url = "https://example.com/webhook/sms";
    let pairs = |values: &[&str]| -> Vec<(String, String)> {
        values
            .iter()
            .map(|v| ("MediaUrl".to_owned(), (*v).to_owned()))
            .chain([("Body".to_owned(), "hi".to_owned())])
            .collect()
    };
    let signature = sign_form(TOKEN, url, &pairs(&["b", "a", "c"]));
    // Independently computed: the signed string is url + "Bodyhi" + "MediaUrla" + "MediaUrlb" + "MediaUrlc".
    let by_hand = sign_form(
        TOKEN,
        &format!("{url}BodyhiMediaUrlaMediaUrlbMediaUrlc"),
        &[],
    );
    assert_eq!(signature, by_hand);
    validate_form(TOKEN, url, &pairs(&["c", "b", "a"]), &signature).unwrap();
    assert!(validate_form(TOKEN, url, &pairs(&["a", "b"]), &signature).is_err());
}

#[test]
fn default_port_is_added_or_removed_but_other_ports_are_not() {
    let params = published_params();
    let plain = "https://example.com/webhook/voice";
    let with_default = "https://example.com:443/webhook/voice";
    let signed_plain = sign_form(TOKEN, plain, &params);
    let signed_with_default = sign_form(TOKEN, with_default, &params);
    assert_ne!(signed_plain, signed_with_default);
    for url in [plain, with_default] {
        validate_form(TOKEN, url, &params, &signed_plain).unwrap();
        validate_form(TOKEN, url, &params, &signed_with_default).unwrap();
    }
    let http_plain = sign_form(TOKEN, "http://example.com/x", &params);
    validate_form(TOKEN, "http://example.com:80/x", &params, &http_plain).unwrap();
    // A signature for :8443 is not valid for the bare host, nor the other way round.
    let other_port = sign_form(TOKEN, "https://example.com:8443/webhook/voice", &params);
    assert!(validate_form(TOKEN, plain, &params, &other_port).is_err());
    assert!(
        validate_form(
            TOKEN,
            "https://example.com:8443/webhook/voice",
            &params,
            &signed_plain
        )
        .is_err()
    );
}

#[test]
fn wrong_token_url_or_header_is_refused_without_leaking_the_token() {
    let params = published_params();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let secret = "s3cr3t-auth-token-value";
    let err = validate_form(secret, url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=").unwrap_err();
    assert!(matches!(err, SignatureError::Mismatch { .. }));
    assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));
    assert!(
        validate_form(
            TOKEN,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        )
        .is_err()
    );
    assert_eq!(
        validate_form(TOKEN, url, &params, "  "),
        Err(SignatureError::MissingHeader)
    );
    // Whitespace around the header value is tolerated.
    validate_form(TOKEN, url, &params, " RSOYDt4T1cUTdK1PDd93/VVr8B8=\n").unwrap();
}

#[test]
fn json_body_must_match_its_hash() {
    let url = format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={JSON_BODY_SHA256}");
    let header = "a9nBmqA0ju/hNViExpshrM61xv4=";
    let tampered = br#"{"property": "value", "boolean": false}"#;
    assert_eq!(
        validate_json(TOKEN, &url, tampered, header),
        Err(SignatureError::BodyHashMismatch)
    );
    let no_hash = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert!(matches!(
        validate_json(TOKEN, no_hash, JSON_BODY.as_bytes(), header),
        Err(SignatureError::MissingBodyHash { .. })
    ));
    let upper = url.replace(JSON_BODY_SHA256, &JSON_BODY_SHA256.to_uppercase());
    // Upper-case hex still names the same body, but the URL (and so the signature) differs.
    assert!(matches!(
        validate_json(TOKEN, &upper, JSON_BODY.as_bytes(), header),
        Err(SignatureError::Mismatch { .. })
    ));
    validate_json(
        TOKEN,
        &upper,
        JSON_BODY.as_bytes(),
        &sign_url(TOKEN, &upper),
    )
    .unwrap();
}
