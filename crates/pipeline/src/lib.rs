//! CloudAct pipelines: "everything is a pipeline". A YAML spec under `configs/` lists steps;
//! each step's `ps_type` names a processor in the registry ([`registry::Registry`],
//! filled by [`processors::register_all`]); the [`executor::Executor`] runs the steps.

pub mod catalog;
pub mod context;
pub mod executor;
pub mod focus;
pub mod load;
pub mod processors;
pub mod providers;
pub mod registry;
pub mod runs;
pub mod scheduler;
pub mod spec;
pub mod variables;

pub use catalog::{Catalog, CatalogEntry};
pub use context::{Services, StepContext};
pub use executor::{Executor, RunReport, RunRequest, RunStatus, StepReport, StepStatus};
pub use registry::{Processor, ProcessorDef, ProcessorError, Registry};
pub use spec::PipelineSpec;
pub use tokio_util::sync::CancellationToken;
