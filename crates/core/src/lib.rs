//! CloudAct core: settings, auth primitives, the warehouse and KMS traits with their
//! backends, and the loader for `configs/`. No HTTP here.

pub mod auth;
pub mod clock;
pub mod config;
pub mod kms;
pub mod meta;
pub mod settings;
pub mod validate;
pub mod warehouse;
