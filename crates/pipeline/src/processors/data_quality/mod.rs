//! Data quality: declared expectations checked inside the warehouse.

pub mod expectations;
