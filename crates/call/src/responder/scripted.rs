//! The offline responder: keyword/intent rules from a TOML script.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::text_match::{
    detect_language, normalize_for_matching, normalize_keyword, phrase_matches,
};
use super::{
    AwaitedInput, CallContext, CallerInput, FixedLines, Reply, ReplyMeta, Responder,
    ResponderConfigError, ResponderEffect,
};

/// The script compiled into the binary (`crates/call/scripts/default.toml`).
pub const BUILT_IN_SCRIPT: &str = include_str!("../../scripts/default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    default_language: String,
    lines: BTreeMap<String, LinesFile>,
    #[serde(default)]
    intents: Vec<IntentFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesFile {
    greeting: String,
    reprompts: Vec<String>,
    goodbye: String,
    apology: String,
    fallback: String,
}

#[derive(Debug, Deserialize)]
struct IntentFile {
    name: String,
    #[serde(default)]
    dtmf: Option<String>,
    #[serde(default)]
    action: Option<IntentAction>,
    #[serde(flatten)]
    languages: BTreeMap<String, IntentLanguageFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentLanguageFile {
    #[serde(default)]
    keywords: Vec<String>,
    reply: String,
    #[serde(default)]
    done: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum IntentAction {
    LeaveMessage,
    BookCallback,
    EndCall,
}

#[derive(Debug, Clone)]
struct IntentLanguage {
    keywords: Vec<Vec<String>>,
    reply: String,
    done: Option<String>,
}

#[derive(Debug, Clone)]
struct Intent {
    name: String,
    dtmf: Option<char>,
    action: Option<IntentAction>,
    languages: BTreeMap<String, IntentLanguage>,
}

/// A validated conversation script: per-language fixed lines and intents.
#[derive(Debug, Clone)]
pub struct Script {
    default_language: String,
    lines: BTreeMap<String, LinesFile>,
    fixed: FixedLines,
    intents: Vec<Intent>,
}

impl Script {
    /// The script compiled into the binary.
    pub fn built_in() -> Result<Script, ResponderConfigError> {
        Script::parse(BUILT_IN_SCRIPT, "built-in default")
    }

    /// Read and validate a script file.
    pub fn load(path: &Path) -> Result<Script, ResponderConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ResponderConfigError::ScriptRead {
                path: path.display().to_string(),
                source,
            })?;
        Script::parse(&text, &path.display().to_string())
    }

    /// Parse and validate script text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Script, ResponderConfigError> {
        let invalid = |detail: String| ResponderConfigError::ScriptInvalid {
            origin: origin.to_string(),
            detail,
        };
        let file: ScriptFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let Some(default_lines) = file.lines.get(&file.default_language) else {
            return Err(invalid(format!(
                "default_language = {:?} has no [lines.{}] table",
                file.default_language, file.default_language
            )));
        };
        for (language, lines) in &file.lines {
            if lines.greeting.trim().is_empty() {
                return Err(invalid(format!("[lines.{language}] greeting is empty")));
            }
            if lines.reprompts.iter().all(|r| r.trim().is_empty()) {
                return Err(invalid(format!(
                    "[lines.{language}] needs at least one non-empty reprompt"
                )));
            }
        }
        let fixed = FixedLines {
            greeting: default_lines.greeting.clone(),
            reprompts: default_lines.reprompts.clone(),
            goodbye: default_lines.goodbye.clone(),
            apology: default_lines.apology.clone(),
            fallback: default_lines.fallback.clone(),
        };
        let mut intents = Vec::with_capacity(file.intents.len());
        for intent in file.intents {
            let dtmf = match intent.dtmf.as_deref() {
                None => None,
                Some(d) => {
                    let mut chars = d.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) if c.is_ascii_digit() || c == '*' || c == '#' => Some(c),
                        _ => {
                            return Err(invalid(format!(
                                "intent {:?}: dtmf must be one key 0-9, * or #, not {d:?}",
                                intent.name
                            )));
                        }
                    }
                }
            };
            if intent.languages.is_empty() {
                return Err(invalid(format!(
                    "intent {:?} has no language table such as [intents.{}]",
                    intent.name, file.default_language
                )));
            }
            let mut languages = BTreeMap::new();
            for (language, spec) in intent.languages {
                let needs_done = matches!(
                    intent.action,
                    Some(IntentAction::LeaveMessage | IntentAction::BookCallback)
                );
                if needs_done && spec.done.is_none() {
                    return Err(invalid(format!(
                        "intent {:?} [{language}]: action needs a `done` line said after the caller answers",
                        intent.name
                    )));
                }
                let keywords: Vec<Vec<String>> = spec
                    .keywords
                    .iter()
                    .map(|k| normalize_keyword(k))
                    .filter(|k| !k.is_empty())
                    .collect();
                languages.insert(
                    language,
                    IntentLanguage {
                        keywords,
                        reply: spec.reply,
                        done: spec.done,
                    },
                );
            }
            intents.push(Intent {
                name: intent.name,
                dtmf,
                action: intent.action,
                languages,
            });
        }
        Ok(Script {
            default_language: file.default_language,
            lines: file.lines,
            fixed,
            intents,
        })
    }

    /// The fixed lines in the default language.
    pub fn fixed_lines(&self) -> &FixedLines {
        &self.fixed
    }

    /// Names of the intents, in priority order.
    pub fn intent_names(&self) -> impl Iterator<Item = &str> {
        self.intents.iter().map(|i| i.name.as_str())
    }

    fn lines_for(&self, language: &str) -> &LinesFile {
        self.lines
            .get(language)
            .or_else(|| self.lines.get(&self.default_language))
            .unwrap_or_else(|| {
                // Unreachable in practice: parse() checked the default language has lines; fall
                // back to any table rather than panic.
                self.lines.values().next().unwrap_or(&EMPTY_LINES)
            })
    }

    /// The language to answer in: the caller's, when the script speaks it.
    fn reply_language<'a>(&'a self, input_text: Option<&str>) -> &'a str {
        match input_text.and_then(detect_language) {
            Some(lang) if self.lines.contains_key(lang) => {
                // Return the script's own key so the lifetime ties to self.
                self.lines
                    .get_key_value(lang)
                    .map_or(self.default_language.as_str(), |(k, _)| k.as_str())
            }
            _ => self.default_language.as_str(),
        }
    }

    fn best_intent(&self, text: &str) -> Option<&Intent> {
        let words = normalize_for_matching(text);
        let mut best: Option<(&Intent, usize)> = None;
        for intent in &self.intents {
            let score: usize = intent
                .languages
                .values()
                .flat_map(|l| l.keywords.iter())
                .filter(|k| phrase_matches(&words, k))
                .map(Vec::len)
                .sum();
            if score > 0 && best.is_none_or(|(_, s)| score > s) {
                best = Some((intent, score));
            }
        }
        best.map(|(intent, _)| intent)
    }
}

static EMPTY_LINES: LinesFile = LinesFile {
    greeting: String::new(),
    reprompts: Vec::new(),
    goodbye: String::new(),
    apology: String::new(),
    fallback: String::new(),
};

/// Replace `{name}` with the contact's name, or remove it and tidy the punctuation around it.
fn fill_name(template: &str, name: Option<&str>) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => template.replace("{name}", name),
        None => {
            let mut text = template.replace("{name}", "");
            for (from, to) in [
                (",.", "."),
                (",?", "?"),
                (",!", "!"),
                (" .", "."),
                (" ,", ","),
                (" ?", "?"),
                (" !", "!"),
                ("  ", " "),
            ] {
                while text.contains(from) {
                    text = text.replace(from, to);
                }
            }
            // A second pass: removing a space can expose ",." again.
            for (from, to) in [(",.", "."), (",?", "?"), (",!", "!")] {
                text = text.replace(from, to);
            }
            text.trim().to_string()
        }
    }
}

/// Answers from a [`Script`]: DTMF keys and keyword intents, with two-step intents for leaving a
/// message and booking a callback. Works offline; replies are immediate.
#[derive(Debug, Clone)]
pub struct ScriptedResponder {
    script: Script,
}

impl ScriptedResponder {
    /// A responder over a loaded script.
    pub fn new(script: Script) -> Self {
        ScriptedResponder { script }
    }

    /// A responder over the built-in script.
    pub fn built_in() -> Result<Self, ResponderConfigError> {
        Ok(ScriptedResponder::new(Script::built_in()?))
    }

    /// The script it answers from.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// A reply from a script line; `template` may hold `{name}`. It counts as fixed text (its
    /// audio cacheable across calls) when it is what a caller with no known name hears.
    fn reply(
        template: &str,
        ctx: &CallContext,
        intent: &str,
        effects: Vec<ResponderEffect>,
    ) -> Reply {
        let text = fill_name(template, ctx.contact_name.as_deref());
        let fixed_text = text == fill_name(template, None);
        let mut reply = Reply::from_text(
            &text,
            ReplyMeta {
                intent: intent.to_string(),
                fixed_text,
            },
        );
        reply.effects = effects;
        reply
    }

    fn answer_intent(&self, intent: &Intent, language: &str, ctx: &CallContext) -> Reply {
        let spec = intent
            .languages
            .get(language)
            .or_else(|| intent.languages.get(&self.script.default_language))
            .or_else(|| intent.languages.values().next());
        let Some(spec) = spec else {
            return self.fallback(language, ctx);
        };
        let mut effects = Vec::new();
        let mut awaiting = None;
        match intent.action {
            Some(IntentAction::LeaveMessage) => awaiting = Some(AwaitedInput::MessageBody),
            Some(IntentAction::BookCallback) => awaiting = Some(AwaitedInput::CallbackTime),
            Some(IntentAction::EndCall) => effects.push(ResponderEffect::EndCall),
            None => {}
        }
        let mut reply = Self::reply(&spec.reply, ctx, &intent.name, effects);
        reply.awaiting = awaiting;
        reply
    }

    fn fallback(&self, language: &str, ctx: &CallContext) -> Reply {
        Self::reply(
            &self.script.lines_for(language).fallback,
            ctx,
            "fallback",
            Vec::new(),
        )
    }

    fn intent_with_action(&self, action: IntentAction) -> Option<&Intent> {
        self.script
            .intents
            .iter()
            .find(|i| i.action == Some(action))
    }

    /// The caller answered a two-step intent's question: store it and say the `done` line.
    fn complete_awaited(
        &self,
        awaited: &AwaitedInput,
        text: &str,
        language: &str,
        ctx: &CallContext,
    ) -> Option<Reply> {
        let (action, effect) = match awaited {
            AwaitedInput::MessageBody => (
                IntentAction::LeaveMessage,
                ResponderEffect::LeaveMessage {
                    text: text.to_string(),
                },
            ),
            AwaitedInput::CallbackTime => (
                IntentAction::BookCallback,
                ResponderEffect::BookCallback {
                    phone: ctx.contact_phone.clone(),
                    preferred_time: Some(text.to_string()),
                },
            ),
        };
        let intent = self.intent_with_action(action)?;
        let spec = intent
            .languages
            .get(language)
            .or_else(|| intent.languages.get(&self.script.default_language))?;
        let done = spec.done.as_deref()?;
        Some(Self::reply(
            done,
            ctx,
            &format!("{}_done", intent.name),
            vec![effect],
        ))
    }
}

impl Responder for ScriptedResponder {
    fn respond(&self, input: &CallerInput, ctx: &CallContext) -> Reply {
        match input {
            CallerInput::Dtmf(digit) => {
                let language = self.script.reply_language(None);
                match self.script.intents.iter().find(|i| i.dtmf == Some(*digit)) {
                    Some(intent) => self.answer_intent(intent, language, ctx),
                    None => self.fallback(language, ctx),
                }
            }
            CallerInput::Text(text) => {
                let language = self.script.reply_language(Some(text));
                let text = text.trim();
                if let Some(awaited) = &ctx.awaiting
                    && !text.is_empty()
                    && let Some(reply) = self.complete_awaited(awaited, text, language, ctx)
                {
                    return reply;
                }
                match self.script.best_intent(text) {
                    Some(intent) => self.answer_intent(intent, language, ctx),
                    None => self.fallback(language, ctx),
                }
            }
        }
    }

    fn fixed_lines(&self) -> &FixedLines {
        self.script.fixed_lines()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_placeholder_filled_or_removed_cleanly() {
        assert_eq!(
            fill_name("Gladly, {name}. When?", Some("Dana")),
            "Gladly, Dana. When?"
        );
        assert_eq!(fill_name("Gladly, {name}. When?", None), "Gladly. When?");
        assert_eq!(fill_name("בשמחה {name}. מתי?", None), "בשמחה. מתי?");
        assert_eq!(fill_name("Hi {name}!", Some("  ")), "Hi!");
    }

    #[test]
    fn built_in_replies_never_repeat_a_greeting_sentence() {
        // The turn engine drops reply sentences equal to a greeting sentence (loop guard).
        let script = Script::built_in().unwrap();
        let words = |s: &str| normalize_for_matching(s).join(" ");
        let greeting: Vec<String> =
            crate::responder::SentenceSplitter::split_all(&script.fixed.greeting)
                .iter()
                .map(|s| words(s))
                .collect();
        let mut replies: Vec<&str> = script.lines.values().map(|l| l.fallback.as_str()).collect();
        for intent in &script.intents {
            for language in intent.languages.values() {
                replies.push(&language.reply);
                replies.extend(language.done.as_deref());
            }
        }
        for reply in replies {
            for sentence in crate::responder::SentenceSplitter::split_all(reply) {
                assert!(
                    !greeting.contains(&words(&sentence)),
                    "{sentence:?} repeats the greeting"
                );
            }
        }
    }

    #[test]
    fn built_in_script_is_valid_and_bilingual() {
        let script = Script::built_in().unwrap();
        assert!(script.lines.contains_key("he") && script.lines.contains_key("en"));
        assert_eq!(
            script.intent_names().collect::<Vec<_>>(),
            vec!["opening_hours", "book_callback", "leave_message", "goodbye"]
        );
    }
}
