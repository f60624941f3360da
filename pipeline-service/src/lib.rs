//! pipeline-service: the customer side of CloudAct. The route table is `routes/mod.rs`.

pub mod routes;

pub use routes::{llm_data_routes, openapi, pricing::reset_org_pricing, router, ApiDoc, LlmDataDoc};
