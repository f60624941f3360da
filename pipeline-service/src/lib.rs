//! pipeline-service: the customer side of CloudAct. The route table is `routes/mod.rs`.

pub mod routes;

pub use routes::{router, ApiDoc};
