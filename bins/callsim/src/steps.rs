//! What the simulated caller does, step by step, and the TOML file that describes it.
//!
//! ```toml
//! [[step]]
//! listen_ms = 10000          # silence until the agent's reply has played out (at most 10 s)
//! [[step]]
//! say = "caller.wav"         # a WAV file, relative to the steps file ...
//! [[step]]
//! say_text = "What are your opening hours?"   # ... or speech-like tone audio for a text
//! [[step]]
//! wait_ms = 500              # silence frames
//! [[step]]
//! dtmf = "1#"                # keypad digits
//! [[step]]
//! interrupt_after_ms = 800   # barge in once 800 ms of the agent's reply has played ...
//! say_text = "Sorry, one more thing"   # ... by saying this
//! [[step]]
//! hangup_without_stop = true # drop the socket without `stop` (a lost line)
//! ```
//! After the last step the caller sends `stop` and closes the socket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::audio::{AudioError, CallerClip};

/// Longest wait for an agent that never speaks in an `interrupt_after_ms` step.
pub const INTERRUPT_WAIT_LIMIT: Duration = Duration::from_secs(15);

/// One thing the caller does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Stream the clip in real time.
    Say(Arc<CallerClip>),
    /// Send silence for this long.
    Wait(Duration),
    /// Send silence until the agent has spoken and its audio has finished playing, at most this
    /// long.
    Listen(Duration),
    /// Send these keypad digits (one `dtmf` message each, 100 ms apart).
    Dtmf(String),
    /// Send silence until `after` of the agent's current reply has played, then say the clip
    /// (a barge-in). Says it anyway after [`INTERRUPT_WAIT_LIMIT`].
    Interrupt {
        /// Agent audio to let play first.
        after: Duration,
        /// What to say over it.
        clip: Arc<CallerClip>,
    },
    /// Close the socket without sending `stop`.
    HangUpWithoutStop,
}

/// Why a steps file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepsError {
    /// The file could not be read.
    #[error("cannot read the steps file {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("the steps file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The TOML error.
        reason: String,
    },
    /// A step names no action or several.
    #[error("step {number} of {path}: {problem}")]
    BadStep {
        /// The file.
        path: String,
        /// 1-based step number.
        number: usize,
        /// What is wrong.
        problem: String,
    },
    /// A `say` clip could not be loaded.
    #[error("step {number} of {path}: {source}")]
    Audio {
        /// The file.
        path: String,
        /// 1-based step number.
        number: usize,
        /// The audio error.
        source: AudioError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepsFile {
    #[serde(default)]
    step: Vec<StepSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    say: Option<String>,
    say_text: Option<String>,
    wait_ms: Option<u64>,
    listen_ms: Option<u64>,
    dtmf: Option<String>,
    interrupt_after_ms: Option<u64>,
    hangup_without_stop: Option<bool>,
}

/// Reads a steps file; `say` paths are relative to the file's directory.
///
/// # Errors
/// [`StepsError`] naming the file, the step and the problem.
pub fn load_steps(path: &Path) -> Result<Vec<Step>, StepsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| StepsError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_steps(&text, &shown, base)
}

/// Parses steps from TOML text; `say` paths are relative to `base`.
///
/// # Errors
/// [`StepsError`].
pub fn parse_steps(text: &str, shown: &str, base: &Path) -> Result<Vec<Step>, StepsError> {
    let file: StepsFile = toml::from_str(text).map_err(|e| StepsError::Invalid {
        path: shown.to_owned(),
        reason: e.to_string(),
    })?;
    let mut steps = Vec::with_capacity(file.step.len());
    for (index, spec) in file.step.into_iter().enumerate() {
        let number = index + 1;
        let bad = |problem: &str| StepsError::BadStep {
            path: shown.to_owned(),
            number,
            problem: problem.to_owned(),
        };
        let clip = match (&spec.say, &spec.say_text) {
            (Some(_), Some(_)) => return Err(bad("give either `say` or `say_text`, not both")),
            (Some(file), None) => Some(Arc::new(
                CallerClip::from_wav_file(&base.join(file)).map_err(|source| {
                    StepsError::Audio {
                        path: shown.to_owned(),
                        number,
                        source,
                    }
                })?,
            )),
            (None, Some(text)) if text.trim().is_empty() => {
                return Err(bad("`say_text` is empty"));
            }
            (None, Some(text)) => Some(Arc::new(CallerClip::tone(text))),
            (None, None) => None,
        };
        let step = match (
            clip,
            spec.wait_ms,
            spec.listen_ms,
            spec.dtmf,
            spec.interrupt_after_ms,
            spec.hangup_without_stop,
        ) {
            (Some(clip), None, None, None, Some(after), None) => Step::Interrupt {
                after: Duration::from_millis(after),
                clip,
            },
            (None, None, None, None, Some(_), None) => {
                return Err(bad("`interrupt_after_ms` needs `say` or `say_text`"));
            }
            (Some(clip), None, None, None, None, None) => Step::Say(clip),
            (None, Some(ms), None, None, None, None) => Step::Wait(Duration::from_millis(ms)),
            (None, None, Some(ms), None, None, None) => Step::Listen(Duration::from_millis(ms)),
            (None, None, None, Some(digits), None, None) => {
                if digits.is_empty()
                    || !digits
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
                {
                    return Err(bad("`dtmf` must be one or more of 0-9, *, #, A-D"));
                }
                Step::Dtmf(digits)
            }
            (None, None, None, None, None, Some(true)) => Step::HangUpWithoutStop,
            (None, None, None, None, None, None | Some(false)) => {
                return Err(bad(
                    "no action: use say, say_text, wait_ms, listen_ms, dtmf, \
                     interrupt_after_ms (+ say/say_text) or hangup_without_stop = true",
                ));
            }
            _ => return Err(bad("one action per step (found several)")),
        };
        steps.push(step);
    }
    if steps.is_empty() {
        return Err(StepsError::Invalid {
            path: shown.to_owned(),
            reason: "no [[step]] entries".to_owned(),
        });
    }
    Ok(steps)
}

/// The conversation `callsim call` runs without a steps file: listen to the greeting, say
/// `clip`, listen to the reply, say it again, listen, hang up with `stop`.
#[must_use]
pub fn default_call_steps(clip: &Arc<CallerClip>) -> Vec<Step> {
    vec![
        Step::Listen(Duration::from_secs(10)),
        Step::Say(Arc::clone(clip)),
        Step::Listen(Duration::from_secs(10)),
        Step::Say(Arc::clone(clip)),
        Step::Listen(Duration::from_secs(10)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_kind_parses() {
        let text = r#"
            [[step]]
            listen_ms = 5000
            [[step]]
            say_text = "hello"
            [[step]]
            wait_ms = 200
            [[step]]
            dtmf = "1#"
            [[step]]
            interrupt_after_ms = 800
            say_text = "wait"
            [[step]]
            hangup_without_stop = true
        "#;
        let steps = parse_steps(text, "t.toml", Path::new(".")).unwrap();
        assert_eq!(steps.len(), 6);
        assert!(matches!(steps[0], Step::Listen(d) if d == Duration::from_secs(5)));
        assert!(matches!(&steps[1], Step::Say(clip) if clip.name() == "tone:hello"));
        assert!(matches!(steps[2], Step::Wait(d) if d == Duration::from_millis(200)));
        assert!(matches!(&steps[3], Step::Dtmf(d) if d == "1#"));
        assert!(
            matches!(&steps[4], Step::Interrupt { after, .. } if *after == Duration::from_millis(800))
        );
        assert!(matches!(steps[5], Step::HangUpWithoutStop));
    }

    #[test]
    fn the_shipped_example_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("steps");
        let conversation = load_steps(&dir.join("conversation.toml")).unwrap();
        assert_eq!(conversation.len(), 7);
        let barge_in = load_steps(&dir.join("barge-in.toml")).unwrap();
        assert!(matches!(barge_in[2], Step::Interrupt { .. }));
        assert!(matches!(barge_in.last(), Some(Step::HangUpWithoutStop)));
    }

    #[test]
    fn bad_steps_name_the_step_and_the_fix() {
        let two = "[[step]]\nwait_ms = 1\nlisten_ms = 2\n";
        let error = parse_steps(two, "t.toml", Path::new(".")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "step 1 of t.toml: one action per step (found several)"
        );
        let dtmf = "[[step]]\nwait_ms = 1\n[[step]]\ndtmf = \"x\"\n";
        let error = parse_steps(dtmf, "t.toml", Path::new(".")).unwrap_err();
        assert!(
            error.to_string().starts_with("step 2 of t.toml: `dtmf`"),
            "{error}"
        );
        let unknown = "[[step]]\nshout = 1\n";
        assert!(matches!(
            parse_steps(unknown, "t.toml", Path::new(".")),
            Err(StepsError::Invalid { .. })
        ));
        let missing = "[[step]]\nsay = \"missing.wav\"\n";
        assert!(matches!(
            parse_steps(missing, "t.toml", Path::new("/nonexistent")),
            Err(StepsError::Audio { number: 1, .. })
        ));
    }
}
