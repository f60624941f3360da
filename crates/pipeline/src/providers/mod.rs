//! Provider HTTP clients. `validate.rs`: the cheap live check of a credential.

pub mod http;
pub mod redact;
pub mod validate;
