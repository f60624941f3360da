//! api-service: the admin side of CloudAct. The route table is `routes/mod.rs`.

pub mod routes;

pub use routes::{openapi, router, ApiDoc};
