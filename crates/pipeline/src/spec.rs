//! The pipeline spec model (what a YAML file under `configs/` deserialises into) and its
//! static validation. Validation collects every problem instead of stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{registry::Registry, variables};

/// A pipeline: metadata plus an ordered list of steps forming a DAG.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub pipeline_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// `daily`, `monthly`, `on_demand`, or a cron expression.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default = "default_pipeline_timeout")]
    pub timeout_minutes: u32,
    /// Provider integration that must be configured and VALID before a run.
    #[serde(default)]
    pub required_integration: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Spec variables, usable as `{name}` in step configs; requests may override them.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    pub steps: Vec<StepSpec>,
    /// Steps run after the pipeline, by outcome. A notification failure is logged and never
    /// changes the run's status.
    #[serde(default)]
    pub notifications: Notifications,
}

/// Notification steps by trigger.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    #[serde(default)]
    pub on_failure: Vec<NotificationSpec>,
    #[serde(default)]
    pub on_success: Vec<NotificationSpec>,
    #[serde(default)]
    pub always: Vec<NotificationSpec>,
}

impl Notifications {
    pub fn all(&self) -> impl Iterator<Item = &NotificationSpec> {
        self.on_failure.iter().chain(&self.on_success).chain(&self.always)
    }
}

/// One notification: a processor and its config (placeholders allowed, plus `{run_status}`
/// and `{run_error}`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    pub ps_type: String,
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

/// One step: which processor, its own config, dependencies, timeout, failure policy, retries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub step_id: String,
    pub ps_type: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Processor parameters; each processor deserialises (and checks) its own.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub timeout_minutes: Option<u32>,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub retries: u32,
}

/// What a failed step does to the rest of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop the run: later steps are skipped, the run FAILS.
    #[default]
    Stop,
    /// Keep going with steps that do not depend on this one; the run still ends FAILED.
    Continue,
}

fn default_pipeline_timeout() -> u32 {
    30
}
fn default_true() -> bool {
    true
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Built-in variables every run defines.
pub const BUILTIN_VARIABLES: [&str; 8] = [
    "org_slug",
    "dataset",
    "date",
    "start_date",
    "end_date",
    "run_id",
    "pipeline_id",
    "env",
];

/// Variables only notification configs may use.
pub const NOTIFICATION_VARIABLES: [&str; 2] = ["run_status", "run_error"];

pub const MAX_PIPELINE_TIMEOUT_MINUTES: u32 = 1440;
pub const MAX_STEP_TIMEOUT_MINUTES: u32 = 720;
pub const MAX_STEP_RETRIES: u32 = 10;

impl PipelineSpec {
    /// Parses YAML (typed, unknown keys refused).
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Every problem with this spec: ids, DAG shape, timeouts, unknown processors, bad
    /// processor config and placeholders that no variable defines.
    pub fn validate(&self, registry: &Registry) -> Vec<String> {
        let mut problems = Vec::new();
        let id_ok = |s: &str| {
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !id_ok(&self.pipeline_id) {
            problems.push(format!(
                "pipeline_id {:?} must be 1-128 letters, digits, '_' or '-'",
                self.pipeline_id
            ));
        }
        if self.steps.is_empty() {
            problems.push("a pipeline needs at least one step".to_string());
        }
        if self.timeout_minutes == 0 || self.timeout_minutes > MAX_PIPELINE_TIMEOUT_MINUTES {
            problems.push(format!("timeout_minutes must be 1..={MAX_PIPELINE_TIMEOUT_MINUTES}"));
        }
        let mut known: HashSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        known.extend(self.variables.keys().cloned());
        for (name, value) in &self.variables {
            if BUILTIN_VARIABLES.contains(&name.as_str()) {
                problems.push(format!("variable {name} is built in and cannot be redefined"));
            }
            for p in variables::placeholders_in_str(value) {
                problems.push(format!(
                    "variable {name} uses placeholder {{{p}}}; variables cannot nest"
                ));
            }
        }
        let mut ids = HashSet::new();
        for step in &self.steps {
            let at = format!("step {}", step.step_id);
            if !id_ok(&step.step_id) {
                problems.push(format!(
                    "step_id {:?} must be letters, digits, '_' or '-'",
                    step.step_id
                ));
            }
            if !ids.insert(step.step_id.as_str()) {
                problems.push(format!("{at}: step_id is used twice"));
            }
            if let Some(t) = step.timeout_minutes {
                if t == 0 || t > MAX_STEP_TIMEOUT_MINUTES {
                    problems.push(format!("{at}: timeout_minutes must be 1..={MAX_STEP_TIMEOUT_MINUTES}"));
                }
            }
            if step.retries > MAX_STEP_RETRIES {
                problems.push(format!("{at}: retries must be at most {MAX_STEP_RETRIES}"));
            }
            for p in variables::placeholders(&step.config) {
                if !known.contains(&p) {
                    problems.push(format!("{at}: config uses {{{p}}}, which no variable defines"));
                }
            }
            if let Err(e) = registry.build(&step.ps_type, &step.config) {
                problems.push(format!("{at}: {e}"));
            }
        }
        for (i, n) in self.notifications.all().enumerate() {
            for p in variables::placeholders(&n.config) {
                if !known.contains(&p) && !NOTIFICATION_VARIABLES.contains(&p.as_str()) {
                    problems.push(format!(
                        "notification {i}: config uses {{{p}}}, which no variable defines"
                    ));
                }
            }
            if let Err(e) = registry.build(&n.ps_type, &n.config) {
                problems.push(format!("notification {i}: {e}"));
            }
        }
        for step in &self.steps {
            for dep in &step.depends_on {
                if !ids.contains(dep.as_str()) {
                    problems.push(format!("step {}: depends_on names unknown step {dep:?}", step.step_id));
                }
                if dep == &step.step_id {
                    problems.push(format!("step {}: depends on itself", step.step_id));
                }
            }
        }
        if problems.is_empty() {
            if let Err(cycle) = self.execution_order() {
                problems.push(cycle);
            }
        }
        problems
    }

    /// Steps in dependency order (stable: spec order among ready steps); fails on a cycle.
    pub fn execution_order(&self) -> Result<Vec<usize>, String> {
        let index: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.step_id.as_str(), i))
            .collect();
        let mut indegree = vec![0usize; self.steps.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for d in &s.depends_on {
                if let Some(&j) = index.get(d.as_str()) {
                    indegree[i] += 1;
                    dependents[j].push(i);
                }
            }
        }
        let mut order = Vec::with_capacity(self.steps.len());
        let mut ready: std::collections::BTreeSet<usize> =
            (0..self.steps.len()).filter(|&i| indegree[i] == 0).collect();
        while let Some(&i) = ready.iter().next() {
            ready.remove(&i);
            order.push(i);
            for &k in &dependents[i] {
                indegree[k] -= 1;
                if indegree[k] == 0 {
                    ready.insert(k);
                }
            }
        }
        if order.len() == self.steps.len() {
            Ok(order)
        } else {
            let stuck: Vec<&str> = (0..self.steps.len())
                .filter(|i| !order.contains(i))
                .map(|i| self.steps[i].step_id.as_str())
                .collect();
            Err(format!("depends_on forms a cycle among steps: {}", stuck.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processors::register_all;

    fn registry() -> Registry {
        let mut r = Registry::default();
        register_all(&mut r);
        r
    }

    #[test]
    fn every_problem_is_reported_together() {
        let spec = PipelineSpec::from_yaml(
            r#"
pipeline_id: "bad id!"
steps:
  - step_id: a
    ps_type: no.such.processor
  - step_id: a
    ps_type: setup.initial.onetime_bootstrap
    config: {tables: "x.yml", colour: red}
    depends_on: [ghost]
  - step_id: c
    ps_type: setup.initial.onetime_bootstrap
    config: {tables: "{nowhere}"}
"#,
        )
        .unwrap();
        let problems = spec.validate(&registry());
        let text = problems.join("\n");
        for needle in [
            "pipeline_id",
            "no.such.processor",
            "used twice",
            "colour",
            "ghost",
            "{nowhere}",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn cycles_are_found() {
        let spec = PipelineSpec::from_yaml(
            r#"
pipeline_id: p
steps:
  - {step_id: a, ps_type: setup.initial.onetime_bootstrap, config: {tables: t.yml}, depends_on: [b]}
  - {step_id: b, ps_type: setup.initial.onetime_bootstrap, config: {tables: t.yml}, depends_on: [a]}
"#,
        )
        .unwrap();
        let problems = spec.validate(&registry());
        assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");
    }

    #[test]
    fn unknown_keys_and_string_depends_on_are_refused() {
        assert!(PipelineSpec::from_yaml("pipeline_id: p\nstepz: []\n").is_err());
        let err = PipelineSpec::from_yaml("pipeline_id: p\nsteps:\n  - {step_id: a, ps_type: x, depends_on: b}\n");
        assert!(err.is_err(), "depends_on must be a list");
    }

    #[test]
    fn order_follows_dependencies() {
        let spec = PipelineSpec::from_yaml(
            r#"
pipeline_id: p
steps:
  - {step_id: c, ps_type: x, depends_on: [b]}
  - {step_id: a, ps_type: x}
  - {step_id: b, ps_type: x, depends_on: [a]}
"#,
        )
        .unwrap();
        let order: Vec<&str> = spec
            .execution_order()
            .unwrap()
            .into_iter()
            .map(|i| spec.steps[i].step_id.as_str())
            .collect();
        assert_eq!(order, vec!["a", "b", "c"]);
    }
}
