//! What a processor gets to work with: the org, its dataset, the shared services, the run
//! id, variables and request parameters, a cancellation token, and a row counter.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use cloudact_core::{kms::Kms, settings::Settings, warehouse::Warehouse};
use tokio_util::sync::CancellationToken;

/// Long-lived services shared by every run.
#[derive(Clone)]
pub struct Services {
    pub warehouse: Arc<dyn Warehouse>,
    pub kms: Arc<dyn Kms>,
    pub settings: Arc<Settings>,
    /// Shared HTTP client for provider calls (rustls, connect and request timeouts set).
    pub http: reqwest::Client,
    /// Provider registry (base URLs, with test/demo overrides applied).
    pub providers: Arc<cloudact_core::config::ProviderRegistry>,
}

impl Services {
    pub fn configs_dir(&self) -> PathBuf {
        self.settings.configs_dir.clone()
    }
}

/// Per-step context.
pub struct StepContext {
    pub services: Services,
    /// The org the run belongs to (absent only for the platform bootstrap).
    pub org_slug: Option<String>,
    pub run_id: String,
    pub pipeline_id: String,
    pub step_id: String,
    /// Resolved variables (built-ins, spec variables, request overrides).
    pub variables: BTreeMap<String, String>,
    /// Typed request parameters (flags and values that are not placeholders).
    pub params: serde_json::Map<String, serde_json::Value>,
    pub cancel: CancellationToken,
    rows: AtomicU64,
}

impl StepContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        services: Services,
        org_slug: Option<String>,
        run_id: String,
        pipeline_id: String,
        step_id: String,
        variables: BTreeMap<String, String>,
        params: serde_json::Map<String, serde_json::Value>,
        cancel: CancellationToken,
    ) -> Self {
        StepContext {
            services,
            org_slug,
            run_id,
            pipeline_id,
            step_id,
            variables,
            params,
            cancel,
            rows: AtomicU64::new(0),
        }
    }

    pub fn warehouse(&self) -> &Arc<dyn Warehouse> {
        &self.services.warehouse
    }

    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    pub fn param_bool(&self, name: &str) -> bool {
        self.params
            .get(name)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }

    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(serde_json::Value::as_str)
    }

    /// The org's active credential for `provider`, decrypted (KMS, bound to org and
    /// provider by its associated data). Only on request; never logged.
    pub async fn credential(&self, provider: &str) -> Result<secrecy::SecretString, crate::registry::ProcessorError> {
        Ok(self.credential_with_metadata(provider).await?.0)
    }

    /// As [`StepContext::credential`], with the integration's stored metadata (for GCP: the
    /// billing export table).
    pub async fn credential_with_metadata(
        &self,
        provider: &str,
    ) -> Result<(secrecy::SecretString, serde_json::Value), crate::registry::ProcessorError> {
        use crate::registry::ProcessorError;
        use cloudact_core::{meta::CENTRAL_DATASET, warehouse::Params};
        let org = self
            .org_slug
            .as_deref()
            .ok_or_else(|| ProcessorError::Invalid("credentials need an org".into()))?;
        let provider = provider.to_ascii_uppercase();
        let rows = self
            .warehouse()
            .query(
                CENTRAL_DATASET,
                "SELECT encrypted_credential, metadata FROM {{org_integration_credentials}} WHERE org_slug = @org \
                 AND provider = @provider AND is_active = @active ORDER BY created_at DESC LIMIT 1",
                &Params::new()
                    .with("org", org)
                    .with("provider", provider.as_str())
                    .with("active", true),
            )
            .await?;
        let metadata = rows
            .first()
            .and_then(|r| r.json("metadata"))
            .unwrap_or(serde_json::Value::Null);
        let ciphertext = rows
            .first()
            .and_then(|r| r.bytes("encrypted_credential"))
            .ok_or_else(|| {
                ProcessorError::Invalid(format!("no active {provider} credential for organization {org}"))
            })?;
        let aad = credential_aad(org, &provider);
        let plain = self
            .services
            .kms
            .decrypt(&ciphertext, aad.as_bytes())
            .await
            .map_err(|e| ProcessorError::Failed(format!("cannot decrypt the {provider} credential: {e}")))?;
        let text = String::from_utf8(secrecy::ExposeSecret::expose_secret(&plain).clone())
            .map_err(|_| ProcessorError::Failed(format!("the {provider} credential is not UTF-8")))?;
        Ok((secrecy::SecretString::from(text), metadata))
    }

    /// The run's org (every org-scoped processor needs one).
    pub fn require_org(&self) -> Result<String, crate::registry::ProcessorError> {
        self.org_slug
            .clone()
            .ok_or_else(|| crate::registry::ProcessorError::Invalid("this pipeline needs an org".into()))
    }

    /// Base URL of a provider from the registry (with test/demo overrides applied).
    pub fn provider_base_url(&self, alias: &str) -> Result<String, crate::registry::ProcessorError> {
        self.services
            .providers
            .by_alias(alias)
            .map(|p| p.effective_base_url())
            .ok_or_else(|| {
                crate::registry::ProcessorError::Failed(format!(
                    "provider {alias} is not in configs/system/providers.yml"
                ))
            })
    }

    /// Replaces the org's rows of one day in `table` with `rows` (the idempotent day load)
    /// and counts the inserted rows.
    pub async fn load_day(
        &self,
        dataset: &str,
        table: &str,
        org_slug: String,
        date_column: &str,
        date: chrono::NaiveDate,
        rows: &[cloudact_core::warehouse::Row],
    ) -> Result<cloudact_core::warehouse::ReplaceOutcome, crate::registry::ProcessorError> {
        let key = cloudact_core::warehouse::PartitionKey {
            org_column: "org_slug".into(),
            org_slug,
            date_column: date_column.into(),
            date,
        };
        let outcome = self.warehouse().replace_partition(dataset, table, &key, rows).await?;
        self.add_rows(outcome.inserted);
        metrics::counter!("pipeline_rows_loaded_total", "table" => table.to_string()).increment(outcome.inserted);
        Ok(outcome)
    }

    /// Adds to the step's processed-row count.
    pub fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// Associated data binding a stored provider credential to its org and provider: a
/// ciphertext copied into another org's row does not decrypt.
pub fn credential_aad(org_slug: &str, provider: &str) -> String {
    format!("credential:{org_slug}:{}", provider.to_ascii_uppercase())
}
