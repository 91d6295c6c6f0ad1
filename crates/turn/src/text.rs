//! Text helpers for the loop guards: normalisation for comparisons and sentence splitting for
//! streaming replies into speech synthesis.

/// Lower-cases `text`, keeps letters and digits, and collapses everything else into single
/// spaces. Two transcripts that differ only in case, punctuation or spacing normalise equal.
/// An empty result means the text was empty or punctuation only.
pub(crate) fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(ch.to_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

/// Splits `text` after sentence-ending punctuation (`.`, `!`, `?`, `…` followed by white space)
/// and at line breaks. Returns the trimmed, non-empty sentences.
pub(crate) fn sentences(text: &str) -> Vec<String> {
    let mut rest = text;
    let mut out = Vec::new();
    while let Some(end) = sentence_end(rest) {
        let (head, tail) = rest.split_at(end);
        push_trimmed(&mut out, head);
        rest = tail;
    }
    push_trimmed(&mut out, rest);
    out
}

fn push_trimmed(out: &mut Vec<String>, piece: &str) {
    let piece = piece.trim();
    if !piece.is_empty() {
        out.push(piece.to_owned());
    }
}

/// Byte offset just past the first complete sentence in `buffer` (its terminator plus the white
/// space that proves the sentence is over), or `None` when no sentence is complete yet.
pub(crate) fn sentence_end(buffer: &str) -> Option<usize> {
    let mut chars = buffer.char_indices().peekable();
    while let Some((index, ch)) = chars.next() {
        if ch == '\n' {
            return Some(index + ch.len_utf8());
        }
        if matches!(ch, '.' | '!' | '?' | '…')
            && let Some(&(next_index, next)) = chars.peek()
            && next.is_whitespace()
        {
            return Some(next_index + next.len_utf8());
        }
    }
    None
}

/// Appends `piece` to `text` with one separating space.
pub(crate) fn append_words(text: &mut String, piece: &str) {
    let piece = piece.trim();
    if piece.is_empty() {
        return;
    }
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(piece);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_ignores_case_punctuation_and_spacing() {
        assert_eq!(normalize("  What are your HOURS?! "), "what are your hours");
        assert_eq!(normalize("what, are your   hours"), "what are your hours");
        assert_eq!(normalize("...?!"), "");
        assert_eq!(normalize("שלום, עולם"), "שלום עולם");
    }

    #[test]
    fn sentences_split_on_terminators_followed_by_space() {
        assert_eq!(
            sentences("We open at 9.30 today. Anything else? Bye\nnow"),
            vec!["We open at 9.30 today.", "Anything else?", "Bye", "now"]
        );
        assert_eq!(sentence_end("Hello there"), None);
        assert_eq!(sentence_end("Hello there."), None);
        assert_eq!(sentence_end("Hello there. Next"), Some(13));
    }
}
