//! Anthropic processors: `anthropic.usage` (Admin API Messages usage report → raw daily usage)
//! and `anthropic.cost` (raw usage × the org's effective-dated prices).

pub mod cost;
pub mod costs_api;
pub mod usage;
