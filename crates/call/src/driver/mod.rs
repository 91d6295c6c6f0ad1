//! The per-call driver: one task, one `select!` loop around the sans-IO [`turn::TurnEngine`].
//!
//! Each loop iteration takes exactly one input (a socket message, an STT event, a responder
//! chunk, a TTS result, the CRM contact lookup, a hang-up result or a timer), feeds it to the
//! engine, then drains every engine action and event, releases the audio the [`Pacer`] says is
//! due, and writes the resulting messages to the socket. Nothing on the media path takes a
//! lock or waits on the database: CRM writes are queued, the contact lookup runs in its own
//! task, TTS and the responder run as streams polled by the loop, and the recording is fed
//! through a bounded queue to its own encoder thread (a full queue drops and counts chunks).

mod deps;
mod lateness;
mod pacer;
mod report;
mod session;

pub use deps::{CallDeps, CallSettings};
pub use lateness::{MEDIA_LATENESS_BUCKETS_US, MediaLateness, MediaLatenessCounts};
pub use pacer::{Outgoing, Pacer};
pub use report::{CallEvent, CallSummary, EndReason, TurnLatency, TurnSummary};
pub use session::run_call;
