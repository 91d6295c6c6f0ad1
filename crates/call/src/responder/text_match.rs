//! Keyword matching that copes with Hebrew spelling: prefixes, final letters, niqqud.

/// Hebrew one-letter prefixes (and, the, in, to, that) that attach to the next word;
/// up to three may stack ("ובשעות" = and + in + hours).
const HEBREW_PREFIXES: &[char] = &['ו', 'ה', 'ב', 'ל', 'ש'];
const MAX_STACKED_PREFIXES: usize = 3;

fn is_hebrew_letter(c: char) -> bool {
    ('\u{05D0}'..='\u{05EA}').contains(&c)
}

/// Final forms map to the regular letter so a stem written either way matches.
fn unfinal(c: char) -> char {
    match c {
        'ך' => 'כ',
        'ם' => 'מ',
        'ן' => 'נ',
        'ף' => 'פ',
        'ץ' => 'צ',
        other => other,
    }
}

/// Niqqud and cantillation marks (dropped), except maqaf and sof pasuq (word separators).
fn is_hebrew_mark(c: char) -> bool {
    ('\u{0591}'..='\u{05C7}').contains(&c) && !matches!(c, '\u{05BE}' | '\u{05C3}' | '\u{05C0}')
}

/// Lower-cases, drops niqqud and in-word apostrophes/geresh/gershayim (`צה"ל` -> `צהל`,
/// `don't` -> `dont`), maps final letters to regular ones, and splits on everything that is
/// not a letter or digit.
pub fn normalize_for_matching(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if is_hebrew_mark(c) || matches!(c, '\'' | '’' | '"' | '\u{05F3}' | '\u{05F4}' | '`') {
            continue;
        }
        if c.is_alphanumeric() {
            for lower in c.to_lowercase() {
                current.push(unfinal(lower));
            }
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// One utterance word against one keyword word (both normalised). A keyword ending in `*` is a
/// stem and matches any word starting with it. Hebrew words may carry stacked prefixes; an
/// English word may carry a plural `s`.
fn word_matches(word: &str, keyword: &str) -> bool {
    let (stem, is_stem) = match keyword.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (keyword, false),
    };
    if stem.is_empty() {
        return false;
    }
    let body_matches = |body: &str| {
        if is_stem {
            body.starts_with(stem)
        } else {
            body == stem || (stem.is_ascii() && body.strip_suffix('s') == Some(stem))
        }
    };
    if body_matches(word) {
        return true;
    }
    if !stem.starts_with(is_hebrew_letter) || stem.chars().count() < 2 {
        return false;
    }
    // Strip up to three prefix letters and try again.
    let mut rest = word;
    for _ in 0..MAX_STACKED_PREFIXES {
        let Some(first) = rest.chars().next() else {
            return false;
        };
        if !HEBREW_PREFIXES.contains(&first) {
            return false;
        }
        rest = &rest[first.len_utf8()..];
        if body_matches(rest) {
            return true;
        }
    }
    false
}

/// Does the normalised utterance contain the keyword phrase (normalised, consecutive words)?
pub fn phrase_matches(utterance: &[String], phrase: &[String]) -> bool {
    if phrase.is_empty() || phrase.len() > utterance.len() {
        return false;
    }
    utterance.windows(phrase.len()).any(|window| {
        window
            .iter()
            .zip(phrase)
            .all(|(word, keyword)| word_matches(word, keyword))
    })
}

/// Normalise a keyword from a script; keeps a trailing `*` (stem marker) on the last word.
pub(crate) fn normalize_keyword(keyword: &str) -> Vec<String> {
    let mut words = normalize_for_matching(keyword);
    if keyword.trim_end().ends_with('*')
        && let Some(last) = words.last_mut()
    {
        last.push('*');
    }
    words
}

/// The language an utterance is in, by script: `"he"` for Hebrew letters, `"en"` for Latin ones.
pub(crate) fn detect_language(text: &str) -> Option<&'static str> {
    let hebrew = text.chars().filter(|&c| is_hebrew_letter(c)).count();
    let latin = text.chars().filter(char::is_ascii_alphabetic).count();
    if hebrew == 0 && latin == 0 {
        None
    } else if hebrew >= latin {
        Some("he")
    } else {
        Some("en")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(utterance: &str, keyword: &str) -> bool {
        phrase_matches(
            &normalize_for_matching(utterance),
            &normalize_keyword(keyword),
        )
    }

    #[test]
    fn hebrew_prefixes_are_stripped() {
        assert!(matches("מה שעות הפתיחה שלכם?", "שעות פתיחה"));
        assert!(matches("ובשעות הערב אתם פתוחים?", "שעות"));
        assert!(matches("אני רוצה להשאיר הודעה", "הודעה"));
        assert!(matches("שהודעה", "הודעה"));
        assert!(!matches("מספר", "ספר"), "מ is not a stripped prefix");
        assert!(
            !matches("וב", "ב"),
            "a one-letter keyword never matches through a prefix"
        );
    }

    #[test]
    fn final_letters_and_niqqud_are_normalised() {
        assert!(matches("שָׁלוֹם", "שלום"));
        assert!(matches("שלומכם", "שלום*"), "stem written with a final mem");
        assert!(matches("צה\"ל", "צהל"));
    }

    #[test]
    fn english_is_case_insensitive_with_plural_s() {
        assert!(matches("What are your Opening Hours?", "opening hour"));
        assert!(matches("I'd like a call back, please", "call back"));
        assert!(!matches("I'd like a callback", "call back"));
        assert!(matches("Don't worry", "dont"));
    }

    #[test]
    fn language_detection_by_script() {
        assert_eq!(detect_language("שלום לכם, hi"), Some("he"));
        assert_eq!(detect_language("hello"), Some("en"));
        assert_eq!(detect_language("123 ?"), None);
    }
}
