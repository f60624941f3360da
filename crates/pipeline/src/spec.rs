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
    /// Other run paths that resolve to this spec, relative to `configs/` without `.yml`
    /// (`gcp/billing`, `openai/usage_cost`): the paths the original system documented. A run
    /// through an alias records this spec's `pipeline_id`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Spec variables, usable as `{name}` in step configs. A plain string is fixed; only a
    /// typed declaration (`{type: int|date|enum|pattern, default: …}`) may be overridden by
    /// a request parameter of the same name, and only with a value of that type.
    #[serde(default)]
    pub variables: BTreeMap<String, VariableDef>,
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

/// A spec variable: fixed text, or a typed value a request may override.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum VariableDef {
    Fixed(String),
    Typed(TypedVariable),
}

/// A request-overridable variable: its type, bounds and default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TypedVariable {
    #[serde(rename = "type")]
    pub kind: VariableType,
    pub default: String,
    /// `int` bounds (inclusive).
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
    /// `enum` values.
    #[serde(default)]
    pub values: Vec<String>,
    /// `pattern`: a regex the whole value must match (at most 128 characters, no braces).
    #[serde(default)]
    pub pattern: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    Int,
    Date,
    Enum,
    Pattern,
}

impl VariableDef {
    pub fn default_value(&self) -> &str {
        match self {
            VariableDef::Fixed(v) => v,
            VariableDef::Typed(t) => &t.default,
        }
    }

    /// The problems of the declaration itself (an unusable type or a default that fails it).
    fn problems(&self) -> Vec<String> {
        let VariableDef::Typed(t) = self else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        match t.kind {
            VariableType::Enum if t.values.is_empty() => problems.push("type enum needs values".to_string()),
            VariableType::Pattern => match &t.pattern {
                None => problems.push("type pattern needs pattern".to_string()),
                Some(p) if regex::Regex::new(p).is_err() => {
                    problems.push(format!("pattern {p:?} is not a valid regex"))
                }
                Some(_) => {}
            },
            VariableType::Int if t.min.zip(t.max).is_some_and(|(a, b)| a > b) => {
                problems.push("min is above max".to_string())
            }
            _ => {}
        }
        if problems.is_empty() {
            if let Err(e) = t.check(&t.default) {
                problems.push(format!("default {:?}: {e}", t.default));
            }
        }
        problems
    }
}

impl TypedVariable {
    /// Checks a value against the declaration; the value is then safe to substitute.
    pub fn check(&self, value: &str) -> Result<(), String> {
        if value.len() > 128 || value.contains(['{', '}', '\'', '"', '`', ';', '\n', '\r']) {
            return Err("must be at most 128 characters without quotes, braces, ';' or line breaks".into());
        }
        match self.kind {
            VariableType::Int => {
                let n: i64 = value.parse().map_err(|_| "must be a whole number".to_string())?;
                if self.min.is_some_and(|m| n < m) || self.max.is_some_and(|m| n > m) {
                    return Err(format!(
                        "must be from {} to {}",
                        self.min.map(|m| m.to_string()).unwrap_or_else(|| "-∞".into()),
                        self.max.map(|m| m.to_string()).unwrap_or_else(|| "∞".into())
                    ));
                }
            }
            VariableType::Date => {
                chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
                    .map_err(|_| "must be a date YYYY-MM-DD".to_string())?;
            }
            VariableType::Enum => {
                if !self.values.iter().any(|v| v == value) {
                    return Err(format!("must be one of {}", self.values.join(", ")));
                }
            }
            VariableType::Pattern => {
                let pattern = self.pattern.as_deref().unwrap_or("$^");
                let anchored = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())?;
                if !anchored.is_match(value) {
                    return Err(format!("must match {pattern}"));
                }
            }
        }
        Ok(())
    }
}

/// Config keys whose strings are code or addresses: no `{placeholder}` may appear in them
/// (values go in as typed query parameters or typed config fields instead).
fn is_code_or_url_key(key: &str) -> bool {
    key == "sql" || key == "query" || key == "url" || key.ends_with("_url") || key.ends_with("_sql")
}

/// Every (key path, placeholder) inside a code or URL field of a config.
fn placeholders_in_code(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if is_code_or_url_key(k) {
                    for p in variables::placeholders(v) {
                        out.push(format!("{at} uses {{{p}}}: placeholders are not allowed in SQL or URLs (use @parameters or typed config fields)"));
                    }
                } else {
                    placeholders_in_code(v, &at, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| placeholders_in_code(v, path, out)),
        _ => {}
    }
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
        for alias in &self.aliases {
            let segments: Vec<&str> = alias.split('/').collect();
            let segment_ok = |s: &&str| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            };
            if !(2..=3).contains(&segments.len()) || !segments.iter().all(segment_ok) || segments[0] == "setup" {
                problems.push(format!(
                    "alias {alias:?} must be {{provider}}/{{pipeline}} or {{provider}}/{{domain}}/{{pipeline}} of [a-z0-9_] segments"
                ));
            }
        }
        if self.timeout_minutes == 0 || self.timeout_minutes > MAX_PIPELINE_TIMEOUT_MINUTES {
            problems.push(format!("timeout_minutes must be 1..={MAX_PIPELINE_TIMEOUT_MINUTES}"));
        }
        let mut known: HashSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        known.extend(self.variables.keys().cloned());
        for (name, def) in &self.variables {
            if BUILTIN_VARIABLES.contains(&name.as_str()) {
                problems.push(format!("variable {name} is built in and cannot be redefined"));
            }
            for p in def.problems() {
                problems.push(format!("variable {name}: {p}"));
            }
            for p in variables::placeholders_in_str(def.default_value()) {
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
            let mut in_code = Vec::new();
            placeholders_in_code(&step.config, "", &mut in_code);
            problems.extend(in_code.into_iter().map(|p| format!("{at}: config.{p}")));
            if let Err(e) = registry.build(&step.ps_type, &step.config) {
                problems.push(format!("{at}: {e}"));
            }
        }
        for (i, n) in self.notifications.all().enumerate() {
            let mut in_code = Vec::new();
            placeholders_in_code(&n.config, "", &mut in_code);
            problems.extend(in_code.into_iter().map(|p| format!("notification {i}: config.{p}")));
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

    /// The spec's variables at their declared values (defaults for typed ones).
    pub fn variable_values(&self) -> BTreeMap<String, String> {
        self.variables
            .iter()
            .map(|(k, v)| (k.clone(), v.default_value().to_string()))
            .collect()
    }

    /// The variables a request's parameters override: each parameter named like a typed
    /// variable, checked against its type. A parameter naming a fixed variable is refused
    /// (it would silently do nothing); other parameters are the processors' own.
    pub fn overrides(
        &self,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, def) in &self.variables {
            let Some(v) = params.get(name) else { continue };
            let VariableDef::Typed(t) = def else {
                problems.push(format!(
                    "parameter {name}: the pipeline fixes this variable; it cannot be overridden"
                ));
                continue;
            };
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) if t.kind == VariableType::Int => n.to_string(),
                _ => {
                    problems.push(format!(
                        "parameter {name}: must be a string{}",
                        if t.kind == VariableType::Int {
                            " or a whole number"
                        } else {
                            ""
                        }
                    ));
                    continue;
                }
            };
            match t.check(&text) {
                Ok(()) => {
                    out.insert(name.clone(), text);
                }
                Err(e) => problems.push(format!("parameter {name}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems.join("; "))
        }
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
    fn placeholders_in_sql_or_urls_are_refused() {
        let spec = PipelineSpec::from_yaml(
            r#"
pipeline_id: p
variables: {region: us}
steps:
  - step_id: t
    ps_type: generic.transformer
    config:
      sql: "SELECT * FROM {{usage}} WHERE region = '{region}' AND org = '{org_slug}'"
      destination: {dataset: "{dataset}", table: x, schema: s.json}
  - step_id: e
    ps_type: generic.api_extractor
    config: {base_url: "https://{region}.example.com", dataset: "{dataset}", table: y}
"#,
        )
        .unwrap();
        let text = spec.validate(&registry()).join("\n");
        for needle in ["sql uses {region}", "sql uses {org_slug}", "base_url uses {region}"] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn only_typed_variables_are_overridable_and_only_with_their_type() {
        let spec = PipelineSpec::from_yaml(
            r#"
pipeline_id: p
variables:
  region: us
  seed: {type: int, default: "42", min: 0, max: 100}
  day: {type: date, default: "2026-01-01"}
  tier: {type: enum, default: standard, values: [standard, batch]}
  project: {type: pattern, default: demo-1, pattern: "[a-z][a-z0-9-]{0,29}"}
steps:
  - {step_id: a, ps_type: x, config: {echo: "{region} {seed} {day} {tier} {project}"}}
"#,
        )
        .unwrap();
        let params = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let ok = spec
            .overrides(&params(
                serde_json::json!({"seed": 7, "day": "2026-02-03", "tier": "batch", "project": "p-2", "other": true}),
            ))
            .unwrap();
        assert_eq!(ok["seed"], "7");
        assert_eq!(ok["project"], "p-2");
        assert!(
            !ok.contains_key("other"),
            "non-variable parameters are the processors' own"
        );
        for bad in [
            serde_json::json!({"region": "eu"}),
            serde_json::json!({"seed": 101}),
            serde_json::json!({"seed": "1 OR 1=1"}),
            serde_json::json!({"day": "2026-02-30"}),
            serde_json::json!({"tier": "flex"}),
            serde_json::json!({"project": "x' UNION SELECT"}),
            serde_json::json!({"project": "p-2\n"}),
            serde_json::json!({"seed": {"a": 1}}),
        ] {
            assert!(spec.overrides(&params(bad.clone())).is_err(), "{bad}");
        }
        let vars = spec.variable_values();
        assert_eq!((vars["region"].as_str(), vars["seed"].as_str()), ("us", "42"));
        let bad_decl = PipelineSpec::from_yaml(
            "pipeline_id: p\nvariables:\n  n: {type: int, default: x}\n  e: {type: enum, default: a}\nsteps: []\n",
        )
        .unwrap();
        let text = bad_decl.validate(&registry()).join("\n");
        assert!(text.contains("variable n") && text.contains("variable e"), "{text}");
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
