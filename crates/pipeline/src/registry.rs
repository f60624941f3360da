//! The processor registry: `ps_type` → a builder that deserialises the step's `config`
//! (unknown keys refused) into a ready-to-run processor. All registrations live in
//! [`crate::processors::register_all`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::context::StepContext;

/// Why a step failed. The executor records the message; `retryable` lets it retry.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// Bad input from the request or the data (never retried).
    #[error("{0}")]
    Invalid(String),
    /// A dependency was unavailable; retrying may help.
    #[error("{0}")]
    Transient(String),
    /// Anything else; not retried.
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
}

impl ProcessorError {
    pub fn retryable(&self) -> bool {
        matches!(self, ProcessorError::Transient(_))
    }

    /// The same error with its message rewritten (to add where it happened).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            ProcessorError::Invalid(m) => ProcessorError::Invalid(f(m)),
            ProcessorError::Transient(m) => ProcessorError::Transient(f(m)),
            ProcessorError::Failed(m) => ProcessorError::Failed(f(m)),
            ProcessorError::Cancelled => ProcessorError::Cancelled,
        }
    }
}

impl From<cloudact_core::warehouse::WarehouseError> for ProcessorError {
    fn from(e: cloudact_core::warehouse::WarehouseError) -> Self {
        if e.is_transient() {
            ProcessorError::Transient(e.to_string())
        } else {
            ProcessorError::Failed(e.to_string())
        }
    }
}

impl From<cloudact_core::meta::MetaError> for ProcessorError {
    fn from(e: cloudact_core::meta::MetaError) -> Self {
        match e {
            cloudact_core::meta::MetaError::Warehouse(w) => w.into(),
            other => ProcessorError::Failed(other.to_string()),
        }
    }
}

/// What a step reports on success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    pub rows_processed: u64,
    /// Step-specific facts (tables created, checks run, ...), returned to callers and logged.
    pub output: serde_json::Value,
}

/// A configured, runnable step.
#[async_trait]
pub trait Processor: Send + Sync {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError>;
}

/// A processor type: its `ps_type`, its config struct, and how to build it.
pub trait ProcessorDef: Processor + Sized + 'static {
    const PS_TYPE: &'static str;
    type Config: DeserializeOwned;
    /// Builds the processor, checking config values beyond their shape.
    fn build(config: Self::Config) -> Result<Self, String>;
}

type Builder = Box<dyn Fn(&serde_json::Value) -> Result<Box<dyn Processor>, String> + Send + Sync>;

/// `ps_type` → processor builder.
#[derive(Default)]
pub struct Registry {
    builders: BTreeMap<&'static str, Builder>,
}

impl Registry {
    /// Registers a processor type. Registering one `ps_type` twice is a programming error.
    pub fn register<P: ProcessorDef>(&mut self) {
        let builder: Builder = Box::new(|config| {
            let cfg: P::Config = serde_json::from_value(config.clone())
                .map_err(|e| format!("invalid config for {}: {e}", P::PS_TYPE))?;
            let processor = P::build(cfg).map_err(|e| format!("invalid config for {}: {e}", P::PS_TYPE))?;
            Ok(Box::new(processor) as Box<dyn Processor>)
        });
        if self.builders.insert(P::PS_TYPE, builder).is_some() {
            panic!("processor {} registered twice", P::PS_TYPE);
        }
    }

    /// Builds a processor from a step's (substituted) config.
    pub fn build(&self, ps_type: &str, config: &serde_json::Value) -> Result<Box<dyn Processor>, String> {
        let builder = self
            .builders
            .get(ps_type)
            .ok_or_else(|| format!("unknown ps_type {ps_type:?}"))?;
        builder(config)
    }

    pub fn ps_types(&self) -> impl Iterator<Item = &&'static str> {
        self.builders.keys()
    }
}
