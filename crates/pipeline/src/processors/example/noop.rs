//! `example.noop`: does nothing and succeeds. For benchmarks of the executor and run
//! bookkeeping, and for smoke tests.

use async_trait::async_trait;
use serde::Deserialize;

use crate::{
    context::StepContext,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopConfig {}

pub struct NoopProcessor;

impl ProcessorDef for NoopProcessor {
    const PS_TYPE: &'static str = "example.noop";
    type Config = NoopConfig;

    fn build(_: NoopConfig) -> Result<Self, String> {
        Ok(NoopProcessor)
    }
}

#[async_trait]
impl Processor for NoopProcessor {
    async fn run(&self, _ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        Ok(StepOutput::default())
    }
}
