//! pipeline-service integration tests, in-process (the real app on a random port against a
//! DATA_DIR prepared by the real bootstrap and onboarding code paths), one module per
//! resource over the shared harness `cloudact_e2e::inproc`. One binary: one link.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

mod costs;
mod focus;
mod generic;
mod integrations;
mod pricing;
mod providers;
mod runs;
mod scheduler;
mod service;
mod units;

/// What every module of this binary imports.
mod prelude {
    pub use std::{collections::HashMap, sync::Arc};

    pub use chrono::{DateTime, Utc};
    pub use cloudact_core::{
        clock::{Clock, ManualClock},
        meta::{SubscriptionChange, SubscriptionStatus, CENTRAL_DATASET},
        warehouse::Params,
    };
    pub use cloudact_e2e::inproc::*;
    pub use cloudact_pipeline::{CancellationToken, RunRequest, RunStatus};
    pub use reqwest::{Method, StatusCode};
    pub use serde_json::{json, Value};
}
