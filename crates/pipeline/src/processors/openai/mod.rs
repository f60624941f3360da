//! OpenAI processors: `openai.usage` (Admin Usage API → raw daily usage) and `openai.cost`
//! (raw usage × the org's effective-dated prices).

pub mod cost;
pub mod costs_api;
pub mod unit_cost;
pub mod usage;
