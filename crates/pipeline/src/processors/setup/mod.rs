//! Setup processors: the platform bootstrap and org dryrun/onboarding.

pub mod bootstrap;
pub mod dryrun;
pub mod onboarding;

use cloudact_core::config::TableList;

use crate::{context::StepContext, registry::ProcessorError};

/// Checks a config path: relative to `configs/`, no `..`, a YAML file.
pub(crate) fn check_config_path(path: &str) -> Result<(), String> {
    let ok = !path.starts_with('/')
        && !path.split('/').any(|s| s == ".." || s.is_empty())
        && (path.ends_with(".yml") || path.ends_with(".yaml"));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path:?} must be a relative path to a .yml file inside configs/"
        ))
    }
}

pub(crate) fn load_tables(ctx: &StepContext, rel: &str) -> Result<TableList, ProcessorError> {
    TableList::load(&ctx.services.configs_dir(), rel)
        .map_err(|errors| ProcessorError::Failed(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
}
