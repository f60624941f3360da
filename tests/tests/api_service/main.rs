//! api-service integration tests, in-process (the real app on a random port, real SQLite
//! files and the real local KMS in a temporary DATA_DIR, driven over HTTP), one module per
//! resource over the shared harness `cloudact_e2e::inproc`. One binary: one link.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

mod admin;
mod api_keys;
mod operating;
mod organizations;
mod service;
mod subscriptions;

/// What every module of this binary imports.
mod prelude {
    pub use std::collections::HashMap;

    pub use cloudact_core::settings::Settings;
    pub use cloudact_web::AppContext;

    pub use cloudact_e2e::inproc::*;
    pub use reqwest::{Method, StatusCode};
    pub use serde_json::{json, Value};
}
