//! Generic processors: any REST API into a raw table, and SQL transforms inside the org's
//! dataset.

pub mod api_extractor;
pub mod transformer;
