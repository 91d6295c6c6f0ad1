//! Phone numbers in E.164 form (`+` and 8 to 15 digits), from whatever Twilio or a person typed.

use std::fmt;

/// Shortest accepted number, country code included. E.164 itself allows up to 15 digits; no
/// country plan issues callable numbers shorter than this.
const MIN_DIGITS: usize = 8;
/// Longest number E.164 allows, country code included.
const MAX_DIGITS: usize = 15;

/// Why a string is not a phone number. Messages never repeat the whole input (it is personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// Nothing but whitespace or separators.
    #[error("phone number is empty")]
    Empty,
    /// No leading `+` (or `00`) country-code marker.
    #[error(
        "phone number has no country code; write it in international form, e.g. +34 600 000 000"
    )]
    MissingCountryCode,
    /// A character that is neither a digit nor a separator (space, `-`, `.`, `(`, `)`).
    #[error("phone number contains {character:?}, which is not a digit or a separator")]
    InvalidCharacter {
        /// The offending character.
        character: char,
    },
    /// Too few or too many digits.
    #[error(
        "phone number has {digits} digits; E.164 numbers have {MIN_DIGITS} to {MAX_DIGITS} including the country code"
    )]
    WrongLength {
        /// Digits found.
        digits: usize,
    },
    /// Country codes never start with 0.
    #[error("phone number country code starts with 0; write it as +<country code><number>")]
    LeadingZero,
}

/// A phone number in E.164 form, e.g. `+34600123456`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct E164(String);

impl E164 {
    /// `+` followed by the digits.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without `+` (WhatsApp's `WaId` form).
    #[must_use]
    pub fn digits(&self) -> &str {
        self.0.trim_start_matches('+')
    }

    /// `whatsapp:+…`, the address form Twilio's WhatsApp API uses.
    #[must_use]
    pub fn whatsapp(&self) -> String {
        format!("whatsapp:{}", self.0)
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for E164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for E164 {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        normalize_e164(s)
    }
}

impl<'de> serde::Deserialize<'de> for E164 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        normalize_e164(&text).map_err(serde::de::Error::custom)
    }
}

/// Normalise a phone number to E.164: strips a `whatsapp:` / `tel:` prefix, spaces, dashes,
/// dots and parentheses, turns a leading `00` into `+`.
///
/// # Errors
/// [`PhoneError`] when the input is empty, lacks a country code, contains letters or other
/// symbols, or has a digit count E.164 does not allow.
pub fn normalize_e164(input: &str) -> Result<E164, PhoneError> {
    let mut rest = input.trim();
    for prefix in ["whatsapp:", "tel:"] {
        if let Some(head) = rest.get(..prefix.len())
            && head.eq_ignore_ascii_case(prefix)
        {
            // `head` is ASCII, so `prefix.len()` is a char boundary.
            rest = rest[prefix.len()..].trim_start();
        }
    }
    let mut digits = String::with_capacity(MAX_DIGITS + 1);
    let mut has_plus = false;
    for (index, c) in rest.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if index == 0 => has_plus = true,
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
            other => return Err(PhoneError::InvalidCharacter { character: other }),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    if !has_plus {
        match digits.strip_prefix("00") {
            Some(international) => digits = international.to_owned(),
            None => return Err(PhoneError::MissingCountryCode),
        }
    }
    if digits.starts_with('0') {
        return Err(PhoneError::LeadingZero);
    }
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) {
        return Err(PhoneError::WrongLength {
            digits: digits.len(),
        });
    }
    digits.insert(0, '+');
    Ok(E164(digits))
}
