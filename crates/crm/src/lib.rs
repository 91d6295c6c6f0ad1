//! crm: the CRM store of crmd and its WhatsApp messaging.
//!
//! What it does:
//! - [`Store`]: contacts, calls, stream events, transcript turns, follow-up tasks (messages
//!   left and callbacks booked during a call), messages and recordings in
//!   SQLite (embedded default, WAL, file and directory created on first start) or PostgreSQL
//!   (several crmd instances sharing one database). Same schema and same portable SQL for both;
//!   migrations are embedded and run by [`Store::connect`]. Timestamps are BIGINT unix ms.
//!   Every write that a retry can repeat (webhooks, the writer task) is idempotent.
//! - [`CrmWriter`]: a bounded queue and writer task so the call path never waits on the
//!   database; transient failures are retried with capped back-off, a full queue is logged.
//! - [`whatsapp`]: inbound WhatsApp messages stored exactly once, status callbacks that never
//!   move backwards, sends stored before they leave (Twilio Messages API or a WhatsApp Web
//!   bridge), and a supervisor that keeps a bridge process running apart from crmd.
//! - [`recording`]: a call's audio in stereo (caller left, agent right), spooled to a mu-law WAV
//!   file as the call goes and referenced from the call, then encoded to Ogg Opus after it.
//!
//! What it deliberately does not do: HTTP routing, authentication, signature checks and
//! request parsing (the edge crate does those and maps `http_status()` of [`CrmError`],
//! [`whatsapp::SendError`] and [`whatsapp::WhatsAppError`] to responses); talk to Twilio's
//! voice API; or decide call timing. Call-path timestamps come from the caller (`at_ms`); the
//! store reads the wall clock only to stamp contacts and messages it creates itself.

mod error;
mod model;
pub mod recording;
mod store;
pub mod whatsapp;
mod writer;

pub use error::CrmError;
pub use model::{
    Backend, Call, CallDetail, CallFilter, Contact, Message, MessageDirection, MessageMedia,
    NewCall, NewRecording, NewTask, NewTurn, Page, PageRequest, Recording, Speaker,
    StreamEventRecord, Task, TaskKind, TaskStatus, Turn, is_e164,
};
pub use store::{Store, StoreOptions};
pub use writer::{CrmWriter, RetryPolicy, SubmitError, WriteOp, WriterStats};
