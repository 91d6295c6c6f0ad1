//! Splitting streamed reply text into sentences so TTS can start on the first one early.

/// Characters that end a sentence (Latin, Hebrew sof pasuq, Arabic question mark, ellipsis).
fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '\u{05C3}' | '\u{061F}')
}

/// Characters that close a sentence after its terminator and belong to it (`He said "yes."`).
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»' | '\u{05F4}'
    )
}

/// Lower-cased words that take a period without ending a sentence (`Dr. Cohen`, `e.g. this`).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "e.g", "i.e", "approx", "ext", "tel",
    "mt", "no",
];

/// Splits text that arrives in arbitrary pieces into sentences.
///
/// A sentence ends at `.`, `!`, `?`, `…`, `׃` or `؟` (plus any closing quotes/brackets) followed
/// by whitespace, or at a line break. It does not end at a decimal point or inside a word
/// (`3.5`, `example.com`: no whitespace follows), after a known abbreviation or a single initial
/// (`Dr.`, `J.`), after a bare list number (`1. `), or when the next word starts with a
/// lower-case Latin letter (`a.m. tomorrow`). Hebrew has no letter case, so a Hebrew sentence
/// ends at every terminator followed by whitespace. When the next character is not known yet the
/// splitter waits for more text; [`finish`](Self::finish) releases the rest. A sentence longer
/// than `max_chars` without a terminator is cut at the last comma/semicolon/colon (or space).
#[derive(Debug, Clone)]
pub struct SentenceSplitter {
    pending: String,
    max_chars: usize,
}

impl Default for SentenceSplitter {
    fn default() -> Self {
        Self::new()
    }
}

enum Boundary {
    /// The first sentence is `pending[..end]`; the rest starts at `rest`.
    At { end: usize, rest: usize },
    /// Nothing complete yet.
    None,
}

impl SentenceSplitter {
    /// Default soft limit for one chunk handed to TTS.
    pub const DEFAULT_MAX_CHARS: usize = 220;

    /// A splitter with the default soft length limit.
    pub fn new() -> Self {
        Self::with_max_chars(Self::DEFAULT_MAX_CHARS)
    }

    /// A splitter that cuts sentences longer than `max_chars` (at least 20) at a pause.
    pub fn with_max_chars(max_chars: usize) -> Self {
        SentenceSplitter {
            pending: String::new(),
            max_chars: max_chars.max(20),
        }
    }

    /// Add streamed text; returns the sentences it completed (trimmed, non-empty), in order.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.pending.push_str(text);
        self.drain(false)
    }

    /// No more text will come: returns the remaining complete sentences and the unterminated tail.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = self.drain(true);
        let tail = self.pending.trim();
        if !tail.is_empty() {
            out.push(tail.to_string());
        }
        self.pending.clear();
        out
    }

    /// Text received but not yet returned as a sentence.
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// Split a whole text at once.
    pub fn split_all(text: &str) -> Vec<String> {
        let mut splitter = SentenceSplitter::new();
        let mut out = splitter.push(text);
        out.extend(splitter.finish());
        out
    }

    fn drain(&mut self, at_end: bool) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let boundary = match find_boundary(&self.pending, at_end) {
                Boundary::None => self.soft_cut(),
                found => found,
            };
            let Boundary::At { end, rest } = boundary else {
                break;
            };
            let sentence = self.pending[..end].trim().to_string();
            self.pending.drain(..rest);
            if !sentence.is_empty() {
                out.push(sentence);
            }
        }
        out
    }

    /// Cut an over-long run without a terminator at its last pause.
    fn soft_cut(&self) -> Boundary {
        if self.pending.chars().count() <= self.max_chars {
            return Boundary::None;
        }
        // Byte index of the char at position max_chars (the head we may cut within).
        let limit = self
            .pending
            .char_indices()
            .nth(self.max_chars)
            .map_or(self.pending.len(), |(i, _)| i);
        let head = &self.pending[..limit];
        let cut_after_pause = head
            .char_indices()
            .filter(|&(i, c)| {
                matches!(c, ',' | ';' | ':' | '،')
                    && head[i + c.len_utf8()..].starts_with(char::is_whitespace)
            })
            .map(|(i, c)| i + c.len_utf8())
            .next_back();
        let cut = cut_after_pause.or_else(|| {
            head.char_indices()
                .filter(|&(i, c)| c.is_whitespace() && i > 0)
                .map(|(i, _)| i)
                .next_back()
        });
        match cut {
            Some(end) => Boundary::At { end, rest: end },
            None => Boundary::At {
                end: limit,
                rest: limit,
            },
        }
    }
}

fn find_boundary(text: &str, at_end: bool) -> Boundary {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let mut i = 0;
    while i < n {
        let (idx, c) = chars[i];
        if c == '\n' {
            if !text[..idx].trim().is_empty() {
                return Boundary::At {
                    end: idx,
                    rest: idx + 1,
                };
            }
            i += 1;
            continue;
        }
        if !is_terminator(c) {
            i += 1;
            continue;
        }
        // The run of terminators and closers that ends here.
        let mut j = i + 1;
        while j < n && (is_terminator(chars[j].1) || is_closer(chars[j].1)) {
            j += 1;
        }
        if j == n {
            return if at_end {
                Boundary::At {
                    end: text.len(),
                    rest: text.len(),
                }
            } else {
                Boundary::None
            };
        }
        if !chars[j].1.is_whitespace() {
            // "3.5", "example.com", "?!x": not a boundary.
            i = j;
            continue;
        }
        let end = chars[j].0;
        let run = &text[idx..end];
        let period_like = run.contains('.') || run.contains('…');
        if run.starts_with('.') && run.trim_end_matches(is_closer) == "." {
            let word_start = text[..idx]
                .char_indices()
                .rev()
                .find(|&(_, ch)| ch.is_whitespace() || ch == '(')
                .map_or(0, |(k, ch)| k + ch.len_utf8());
            let word = &text[word_start..idx];
            if is_abbreviation(word) || is_bare_list_number(&text[..idx]) {
                i = j;
                continue;
            }
        }
        if period_like {
            let mut k = j;
            while k < n && chars[k].1.is_whitespace() {
                k += 1;
            }
            if k == n {
                if !at_end {
                    return Boundary::None;
                }
            } else if chars[k].1.is_ascii_lowercase() {
                i = j;
                continue;
            }
        }
        return Boundary::At { end, rest: end };
    }
    Boundary::None
}

fn is_abbreviation(word: &str) -> bool {
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    let mut letters = word.chars();
    matches!((letters.next(), letters.next()), (Some(c), None) if c.is_ascii_uppercase())
}

fn is_bare_list_number(before: &str) -> bool {
    let trimmed = before.trim();
    !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_streamed(pieces: &[&str]) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        for p in pieces {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn english_sentences_split_at_terminators() {
        assert_eq!(
            SentenceSplitter::split_all("Hello there! How are you? I am fine."),
            vec!["Hello there!", "How are you?", "I am fine."]
        );
    }

    #[test]
    fn decimals_urls_abbreviations_and_initials_do_not_split() {
        assert_eq!(
            SentenceSplitter::split_all(
                "It costs 3.5 shekels at example.com today. Dr. Cohen and J. Smith agree. Next."
            ),
            vec![
                "It costs 3.5 shekels at example.com today.",
                "Dr. Cohen and J. Smith agree.",
                "Next."
            ]
        );
        assert_eq!(
            SentenceSplitter::split_all("We open at 9 a.m. tomorrow. Bring e.g. a pen."),
            vec!["We open at 9 a.m. tomorrow.", "Bring e.g. a pen."]
        );
    }

    #[test]
    fn hebrew_sentences_split_and_keep_punctuation() {
        assert_eq!(
            SentenceSplitter::split_all("שלום! אנחנו פתוחים עד 18.30 בערב. מה עוד?"),
            vec!["שלום!", "אנחנו פתוחים עד 18.30 בערב.", "מה עוד?"]
        );
    }

    #[test]
    fn streamed_pieces_wait_for_the_next_character() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("It is 3.").is_empty(), "3. could be a decimal");
        assert!(s.push("5 now").is_empty());
        assert!(
            s.push(". ").is_empty(),
            "need the next word to rule out a.m. style"
        );
        assert_eq!(s.push("Then"), vec!["It is 3.5 now."]);
        assert_eq!(s.finish(), vec!["Then"]);
    }

    #[test]
    fn streaming_in_single_characters_equals_whole_text_split() {
        let text = "Hi Dana! We're open Sunday to Thursday, 9:00 to 17:30. שעות הפתיחה: א׳-ה׳. \"Quoted.\" Done?! Yes… ok then.";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split_streamed(&pieces), SentenceSplitter::split_all(text));
        assert_eq!(
            SentenceSplitter::split_all(text),
            vec![
                "Hi Dana!",
                "We're open Sunday to Thursday, 9:00 to 17:30.",
                "שעות הפתיחה: א׳-ה׳.",
                "\"Quoted.\"",
                "Done?!",
                "Yes… ok then."
            ]
        );
    }

    #[test]
    fn list_numbers_and_newlines() {
        assert_eq!(
            SentenceSplitter::split_all("Options:\n1. Hours\n2. Callback"),
            vec!["Options:", "1. Hours", "2. Callback"]
        );
    }

    #[test]
    fn long_runs_are_cut_at_a_pause() {
        let mut s = SentenceSplitter::with_max_chars(40);
        let out = s.push("one two three four five six, seven eight nine ten eleven twelve");
        assert_eq!(out, vec!["one two three four five six,"]);
        assert_eq!(s.finish(), vec!["seven eight nine ten eleven twelve"]);
    }
}
