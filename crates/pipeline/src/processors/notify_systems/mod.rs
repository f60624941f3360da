//! Notification processors, run by the executor from a spec's `notifications` (`on_failure`,
//! `on_success`, `always`); a notification failure is reported and never changes the run's
//! status. Their configs may use `{run_status}` and `{run_error}` besides the run's variables.

pub mod email_notification;
pub mod slack_notification;

use serde::Deserialize;

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The facts every notification carries, from the step context.
pub(crate) fn run_facts(ctx: &crate::context::StepContext) -> Vec<(&'static str, String)> {
    let v = |k: &str| ctx.variable(k).unwrap_or("-").to_string();
    vec![
        ("Pipeline", ctx.pipeline_id.clone()),
        ("Organization", ctx.org_slug.clone().unwrap_or_else(|| "-".into())),
        ("Status", v("run_status")),
        ("Run", ctx.run_id.clone()),
        ("Dates", format!("{} … {}", v("start_date"), v("end_date"))),
    ]
}
