//! The HTTP edge of crmd: configuration, health and version endpoints, Twilio voice webhooks
//! (TwiML, stream status, stream end), `X-Twilio-Signature` checks, the `/ws/twilio-media`
//! WebSocket upgrade, the offline fallback call handler, start-up logging and graceful shutdown.
//!
//! What it does:
//! - [`Config::from_vars`] turns `(name, value)` pairs into one validated, typed [`Config`]
//!   (secrets redacted in `Debug` and in [`Config::summary_line`]).
//! - [`router`] / [`serve`] run the routes with a body limit, request ids, panic catching and an
//!   `X-App-Signature` header naming the build on every response; [`serve`] drains live calls for
//!   `SHUTDOWN_GRACE_S` and closes the database when the shutdown future completes.
//! - WhatsApp ([`whatsapp_routes`]): Twilio's inbound and status webhooks (signature-checked like
//!   the voice ones), the bridge's inbound webhook and `POST /api/whatsapp/send`, served through a
//!   [`WhatsAppChannel`] built from the configuration ([`EdgeState::set_whatsapp`]).
//! - The CRM read API ([`api`]): contacts, calls with transcripts, messages and recordings as
//!   JSON pages, behind the bearer check of [`auth`] (`CRMD_API_TOKEN`; unset = `503`, never open).
//! - Admission control ([`admission`]): over `MAX_CALLS`, or while the binary's overload probe
//!   says so, a new call is refused unanswered with a busy signal and recorded as `busy`.
//! - The WebSocket upgrade echoes `Sec-WebSocket-Protocol: audio.twilio.com` when it is offered
//!   and hands the socket to a [`MediaStreamHandler`]; [`OfflineFallbackHandler`] is the one used
//!   when there are no speech credentials.
//!
//! What it deliberately does not do: run a conversation (the call session crate does, plugged in
//! through [`MediaStreamHandler`]), parse Twilio wire formats or compute signatures (the
//! `twilio-stream` crate), or talk SQL and decide message lifecycles (the `crm` crate). It never reads the process environment;
//! the binary collects the variables and passes them in.

pub mod admission;
pub mod api;
pub mod auth;
pub mod build_info;
pub mod config;
pub mod error;
pub mod handlers;
pub mod media;
pub mod offline;
pub mod server;
pub mod twilio_form;
pub mod whatsapp_routes;

pub use admission::{Admission, OverloadProbe, RefusalObserver, Verdict};
pub use api::ApiError;
pub use auth::{ApiToken, require_api_token};
pub use build_info::BuildInfo;
pub use config::{Config, ConfigError, LogFormat, Secret};
pub use error::{RequestError, StartupError};
pub use media::{MediaStreamContext, MediaStreamHandler, SessionTracker, TWILIO_SUBPROTOCOL};
pub use offline::{FallbackOutcome, FallbackPacing, OFFLINE_FALLBACK_CLIP, OfflineFallbackHandler};
pub use server::{
    APP_SIGNATURE_HEADER, EdgeState, Prepared, ShutdownReport, bind, prepare, router, routes,
    serve, serve_router, shutdown_signal, with_layers,
};
pub use twilio_form::TwilioForm;
pub use whatsapp_routes::{WhatsAppChannel, spawn_bridge_supervisor};
