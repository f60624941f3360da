//! Google Cloud: the org's own Cloud Billing export.

pub mod bq_etl;
