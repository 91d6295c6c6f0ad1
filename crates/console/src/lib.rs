//! The live operator console of crmd: what every call is doing, as it happens.
//!
//! What it does:
//! - [`Console::spawn`] subscribes to the calls' `tokio::sync::broadcast` of [`call::CallEvent`]
//!   (the `CallDeps::events` sender) and runs the registry task: it folds each event into the
//!   snapshot of calls in progress ([`live::LiveCalls`], so a browser opening mid-call sees them),
//!   counts it into the [`Metrics`], and republishes it, serialized once and numbered, to the
//!   browsers.
//! - [`Console::router`] serves `GET /console` (one page of plain HTML/CSS/JS embedded in the
//!   binary: live calls, live transcripts with partials, barge-ins and per-turn latency, recent
//!   calls with their recordings, WhatsApp conversations with a send box), `GET /api/events`
//!   (Server-Sent Events, `?call=CA…` to follow one call), `GET /api/console/live` and
//!   `GET /metrics` (Prometheus text format, written by hand).
//! - Data routes require `Authorization: Bearer $CRMD_API_TOKEN` ([`ApiToken`], compared in
//!   constant time); without a configured token they answer 503, never open.
//!
//! Invariants: a call never waits for a browser — the call driver's broadcast `send` does not
//! block, each browser reads from its own bounded buffer, and a browser that falls behind loses
//! events (counted in `crmd_console_sse_events_dropped_total`, announced to it as
//! `event: dropped`). Each browser sees each event exactly once, after its snapshot.
//!
//! What it deliberately does not do: read the CRM (the page uses the edge's read API:
//! `/api/calls`, `/api/contacts`, `/api/messages`, `POST /api/whatsapp/send`), accept the token
//! in a query string (the page streams events with `fetch`, which can send the header), depend
//! on the edge crate, or keep history beyond the last 200 lines of each live call.

mod auth;
mod error;
mod hub;
pub mod live;
mod metrics;
mod routes;

pub use auth::{ApiToken, require_bearer};
pub use error::ConsoleRejection;
pub use hub::{Console, ConsoleOptions, DepthProbe, PublishedEvent};
pub use live::{LineSpeaker, LiveCall, TranscriptLine};
pub use metrics::{Histogram, LATENCY_BUCKETS_SECONDS, MAX_LABEL_VALUES, Metrics, ScrapeGauges};
pub use routes::ROUTE_PATHS;
