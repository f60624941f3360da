//! axum glue shared by both services: the app context, JSON errors, request ids, JSON and
//! path extractors, auth extractors with the key cache, rate limits, health, API docs,
//! logging and graceful shutdown. Route tables live in each service's `routes/mod.rs`.

pub mod audit;
pub mod auth;
pub mod config_check;
pub mod context;
pub mod docs;
pub mod error;
pub mod extract;
pub mod health;
pub mod layers;
pub mod logging;
pub mod metrics;
pub mod rate_limit;
pub mod reload;
pub mod route_table;
pub mod server;

pub use auth::{Caller, CallerPath, OrgAuth, OrgPath, RootAuth};
pub use context::AppContext;
pub use error::ApiError;
pub use extract::{ApiJson, OptionalJson};
