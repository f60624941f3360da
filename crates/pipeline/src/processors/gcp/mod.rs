//! Google Cloud: the org's own Cloud Billing export, and any GCP REST list API.

pub mod api_extractor;
pub mod bq_etl;
