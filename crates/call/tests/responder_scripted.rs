//! The scripted responder against the built-in script and scripts loaded from files.
#![allow(clippy::unwrap_used)]

use call::responder::{
    AwaitedInput, CallContext, CallerInput, HistorySpeaker, HistoryTurn, Responder,
    ResponderConfigError, ResponderEffect, Script, ScriptedResponder,
};
use futures::StreamExt;

fn responder() -> ScriptedResponder {
    ScriptedResponder::built_in().unwrap()
}

async fn text_of(reply: call::responder::Reply) -> Vec<String> {
    reply
        .chunks
        .map(|chunk| chunk.unwrap())
        .collect::<Vec<_>>()
        .await
}

fn say(text: &str) -> CallerInput {
    CallerInput::Text(text.to_string())
}

#[tokio::test]
async fn hebrew_question_with_prefixes_gets_opening_hours_in_hebrew() {
    let r = responder();
    let reply = r.respond(
        &say("ובאיזה שעות אתם פתוחים מחר?"),
        &CallContext::voice("CA1"),
    );
    assert_eq!(reply.meta.intent, "opening_hours");
    assert!(reply.effects.is_empty());
    let sentences = text_of(reply).await;
    assert_eq!(sentences.len(), 2, "{sentences:?}");
    assert!(sentences[0].starts_with("אנחנו פתוחים"), "{sentences:?}");
}

#[tokio::test]
async fn english_question_gets_english_reply() {
    let r = responder();
    let reply = r.respond(
        &say("Hi, what are your opening hours?"),
        &CallContext::voice("CA1"),
    );
    assert_eq!(reply.meta.intent, "opening_hours");
    assert!(
        reply.meta.fixed_text,
        "a script line without a name is the same for every caller: its audio may be shared"
    );
    let sentences = text_of(reply).await;
    assert!(
        sentences[0].starts_with("We're open Sunday"),
        "{sentences:?}"
    );
}

#[tokio::test]
async fn leaving_a_message_takes_two_turns_and_yields_the_message_effect() {
    let r = responder();
    let mut ctx = CallContext::voice("CA1");
    let ask = r.respond(&say("אני רוצה להשאיר הודעה לדני"), &ctx);
    assert_eq!(ask.meta.intent, "leave_message");
    assert_eq!(ask.awaiting, Some(AwaitedInput::MessageBody));
    assert!(
        ask.effects.is_empty(),
        "nothing stored before the message is said"
    );
    let prompt = text_of(ask).await.join(" ");
    ctx.history.push(HistoryTurn {
        speaker: HistorySpeaker::Agent,
        text: prompt,
    });
    ctx.awaiting = Some(AwaitedInput::MessageBody);

    let message = "המזגן במשרד מטפטף, תחזרו אליי בבקשה";
    let done = r.respond(&say(message), &ctx);
    assert_eq!(done.meta.intent, "leave_message_done");
    assert_eq!(
        done.effects,
        vec![ResponderEffect::LeaveMessage {
            text: message.to_string()
        }],
        "the whole utterance is the message, even though it contains callback keywords"
    );
    assert_eq!(done.awaiting, None);
    assert!(text_of(done).await[0].starts_with("תודה, ההודעה נשמרה"));
}

#[tokio::test]
async fn booking_a_callback_records_phone_and_time_and_uses_the_name() {
    let r = responder();
    let mut ctx = CallContext::voice("CA2");
    ctx.contact_name = Some("Dana".to_string());
    ctx.contact_phone = Some("+972501234567".to_string());
    let ask = r.respond(&say("Can you call me back later?"), &ctx);
    assert_eq!(ask.meta.intent, "book_callback");
    assert!(
        !ask.meta.fixed_text,
        "a line with the caller's name is this caller's own: not shared through the TTS cache"
    );
    assert_eq!(ask.awaiting, Some(AwaitedInput::CallbackTime));
    assert_eq!(
        text_of(ask).await,
        vec!["Gladly, Dana.", "When would suit you for us to call back?"]
    );

    ctx.awaiting = Some(AwaitedInput::CallbackTime);
    let done = r.respond(&say("tomorrow morning"), &ctx);
    assert_eq!(
        done.effects,
        vec![ResponderEffect::BookCallback {
            phone: Some("+972501234567".to_string()),
            preferred_time: Some("tomorrow morning".to_string()),
        }]
    );
}

#[tokio::test]
async fn unknown_name_is_removed_from_the_hebrew_callback_prompt() {
    let r = responder();
    let reply = r.respond(&say("אפשר שתחזרו אליי?"), &CallContext::voice("CA3"));
    assert_eq!(reply.meta.intent, "book_callback");
    assert!(
        reply.meta.fixed_text,
        "with no name known the line is what every nameless caller hears"
    );
    assert_eq!(text_of(reply).await[0], "בשמחה.");
}

#[tokio::test]
async fn goodbye_ends_the_call_and_dtmf_selects_intents() {
    let r = responder();
    let ctx = CallContext::voice("CA4");
    let bye = r.respond(&say("תודה, להתראות"), &ctx);
    assert_eq!(bye.effects, vec![ResponderEffect::EndCall]);
    assert_eq!(
        r.respond(&CallerInput::Dtmf('1'), &ctx).meta.intent,
        "opening_hours"
    );
    assert_eq!(
        r.respond(&CallerInput::Dtmf('3'), &ctx).awaiting,
        Some(AwaitedInput::MessageBody)
    );
    assert_eq!(
        r.respond(&CallerInput::Dtmf('7'), &ctx).meta.intent,
        "fallback"
    );
}

#[tokio::test]
async fn unmatched_input_gets_the_fallback_in_the_callers_language() {
    let r = responder();
    let ctx = CallContext::voice("CA5");
    let he = r.respond(&say("מה מזג האוויר?"), &ctx);
    assert_eq!(he.meta.intent, "fallback");
    assert!(text_of(he).await[0].starts_with("לא בטוחה"));
    let en = r.respond(&say("Is it raining?"), &ctx);
    assert!(text_of(en).await[0].starts_with("I'm not sure"));
}

#[test]
fn fixed_lines_come_from_the_default_language() {
    let r = responder();
    let lines = r.fixed_lines();
    assert!(lines.greeting.starts_with("שלום"));
    assert_eq!(lines.reprompts.len(), 2);
    assert_eq!(lines.goodbye, "תודה שהתקשרתם, להתראות!");
}

#[tokio::test]
async fn a_script_file_overrides_the_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bakery.toml");
    std::fs::write(
        &path,
        r#"
default_language = "en"
[lines.en]
greeting = "Bakery, hello!"
reprompts = ["Still there?"]
goodbye = "Bye!"
apology = "Sorry."
fallback = "Pardon?"

[[intents]]
name = "bread"
[intents.en]
keywords = ["bread*", "loaf"]
reply = "Fresh bread every day at 7."
"#,
    )
    .unwrap();
    let r = ScriptedResponder::new(Script::load(&path).unwrap());
    assert_eq!(r.fixed_lines().greeting, "Bakery, hello!");
    let reply = r.respond(&say("Do you have breadsticks?"), &CallContext::voice("CA6"));
    assert_eq!(reply.meta.intent, "bread");
    assert_eq!(text_of(reply).await, vec!["Fresh bread every day at 7."]);
    // Hebrew input to an English-only script: answered in the default language.
    let reply = r.respond(&say("יש לחם?"), &CallContext::voice("CA6"));
    assert_eq!(text_of(reply).await, vec!["Pardon?"]);
}

#[test]
fn invalid_scripts_are_rejected_with_a_pointed_message() {
    let missing_lines = "default_language = \"he\"\n[lines.en]\ngreeting = \"x\"\nreprompts = [\"y\"]\ngoodbye = \"g\"\napology = \"a\"\nfallback = \"f\"\n";
    let err = Script::parse(missing_lines, "test.toml").unwrap_err();
    assert!(matches!(err, ResponderConfigError::ScriptInvalid { .. }));
    assert!(err.to_string().contains("[lines.he]"), "{err}");

    let bad_dtmf = format!(
        "{}[[intents]]\nname = \"x\"\ndtmf = \"12\"\n[intents.en]\nreply = \"r\"\n",
        missing_lines.replace("\"he\"", "\"en\"")
    );
    let err = Script::parse(&bad_dtmf, "test.toml").unwrap_err();
    assert!(err.to_string().contains("dtmf must be one key"), "{err}");

    let no_done = format!(
        "{}[[intents]]\nname = \"msg\"\naction = \"leave_message\"\n[intents.en]\nreply = \"r\"\n",
        missing_lines.replace("\"he\"", "\"en\"")
    );
    let err = Script::parse(&no_done, "test.toml").unwrap_err();
    assert!(err.to_string().contains("`done` line"), "{err}");

    let err = Script::load(std::path::Path::new("/nonexistent/script.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/script.toml"),
        "{err}"
    );
}
