//! `setup.organizations.dryrun`: checks everything onboarding needs, creating nothing.
//! Checks fail as results (the step itself succeeds); the step fails only if it cannot run.

use async_trait::async_trait;
use chrono::Utc;
use cloudact_core::{
    meta::{OrgStore, Plan, CENTRAL_DATASET},
    validate::{validate_email, validate_org_slug},
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use crate::{
    context::StepContext,
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryrunConfig {
    /// Central tables that must exist (bootstrap done).
    pub required_tables: Vec<String>,
}

pub struct DryrunProcessor {
    required_tables: Vec<String>,
}

impl ProcessorDef for DryrunProcessor {
    const PS_TYPE: &'static str = "setup.organizations.dryrun";
    type Config = DryrunConfig;

    fn build(config: DryrunConfig) -> Result<Self, String> {
        if config.required_tables.is_empty() {
            return Err("required_tables must name at least one table".to_string());
        }
        Ok(DryrunProcessor {
            required_tables: config.required_tables,
        })
    }
}

struct Checks(Vec<serde_json::Value>);

impl Checks {
    fn add(&mut self, name: &str, passed: bool, message: impl Into<String>, details: serde_json::Value) {
        self.0.push(json!({
            "check_name": name,
            "passed": passed,
            "message": message.into(),
            "details": details,
            "timestamp": Utc::now().to_rfc3339(),
        }));
    }
}

#[async_trait]
impl Processor for DryrunProcessor {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let slug = ctx.param_str("org_slug").unwrap_or_default().to_string();
        let email = ctx.param_str("admin_email").unwrap_or_default();
        let plan = ctx.param_str("subscription_plan").unwrap_or("STARTER");
        let wh = ctx.warehouse();
        let mut checks = Checks(Vec::new());

        match validate_org_slug(&slug) {
            Ok(()) => checks.add(
                "org_slug_format",
                true,
                "org_slug format is valid",
                json!({"org_slug": slug}),
            ),
            Err(e) => checks.add("org_slug_format", false, e.to_string(), json!({"org_slug": slug})),
        }
        match validate_email(email) {
            Ok(()) => checks.add("email_format", true, "admin_email format is valid", json!({})),
            Err(e) => checks.add("email_format", false, e, json!({})),
        }
        match Plan::parse(plan).filter(|p| p.self_service()) {
            Some(p) => checks.add(
                "subscription_plan",
                true,
                format!("plan {} is available", p.as_str()),
                json!(p.limits()),
            ),
            None => checks.add(
                "subscription_plan",
                false,
                "plan must be STARTER, PROFESSIONAL or SCALE",
                json!({"plan": plan}),
            ),
        }
        let reachable = match wh.ping().await {
            Ok(()) => {
                checks.add(
                    "warehouse_connectivity",
                    true,
                    format!("{} warehouse answers", wh.backend_name()),
                    json!({}),
                );
                true
            }
            Err(e) => {
                checks.add(
                    "warehouse_connectivity",
                    false,
                    format!("warehouse unreachable: {e}"),
                    json!({}),
                );
                false
            }
        };
        let kms = &ctx.services.kms;
        let kms_ok = match kms.encrypt(b"dryrun-probe", b"dryrun").await {
            Ok(ct) => {
                matches!(kms.decrypt(&ct, b"dryrun").await, Ok(p) if p.expose_secret().as_slice() == b"dryrun-probe")
            }
            Err(_) => false,
        };
        checks.add(
            "kms_round_trip",
            kms_ok,
            if kms_ok {
                "key service encrypts and decrypts"
            } else {
                "key service failed an encrypt/decrypt round trip"
            },
            json!({"backend": kms.backend_name()}),
        );
        if reachable {
            let store = OrgStore::new(wh.clone());
            let wanted: Vec<&str> = self.required_tables.iter().map(String::as_str).collect();
            let missing = store.bootstrapped(&wanted).await?;
            let bootstrapped = missing.is_empty();
            checks.add(
                "central_tables",
                bootstrapped,
                if bootstrapped {
                    "central tables exist".to_string()
                } else {
                    format!(
                        "central tables missing in {CENTRAL_DATASET}: {}; run POST /api/v1/admin/bootstrap first",
                        missing.join(", ")
                    )
                },
                json!({"missing": missing}),
            );
            if bootstrapped && validate_org_slug(&slug).is_ok() {
                let existing = store.profile(&slug).await?;
                match existing {
                    None => checks.add(
                        "org_existence",
                        true,
                        format!("organization '{slug}' does not exist yet"),
                        json!({}),
                    ),
                    Some(p) => checks.add(
                        "org_existence",
                        false,
                        format!("organization '{slug}' already exists with status {}", p.status),
                        json!({"status": p.status}),
                    ),
                }
                let dataset = ctx.services.settings.org_dataset(&slug);
                let taken = wh.dataset_exists(&dataset).await?;
                checks.add(
                    "org_dataset_available",
                    !taken,
                    if taken {
                        format!("dataset {dataset} already exists")
                    } else {
                        format!("dataset {dataset} is free")
                    },
                    json!({"dataset": dataset}),
                );
            }
        }
        let all_passed = checks.0.iter().all(|c| c["passed"] == json!(true));
        Ok(StepOutput {
            rows_processed: 0,
            output: json!({"validation_results": checks.0, "all_passed": all_passed}),
        })
    }
}
