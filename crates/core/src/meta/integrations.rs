//! Provider credentials in `org_integration_credentials`: KMS ciphertext only, one active
//! row per org + provider (storing a new one deactivates the old in the same transaction).

use chrono::{DateTime, Utc};

use super::{MetaError, OrgStore, CENTRAL_DATASET};
use crate::warehouse::{Params, Row, Statement, Value};

/// A credential to store (already encrypted).
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub credential_id: String,
    pub org_slug: String,
    pub provider: String,
    pub credential_name: String,
    pub ciphertext: Vec<u8>,
    pub credential_type: String,
    pub fingerprint: String,
    pub validation_status: String,
    pub last_error: Option<String>,
    pub metadata: serde_json::Value,
    pub user_id: Option<String>,
}

impl OrgStore {
    /// Deactivates the org's active credential for the provider and stores the new one.
    pub async fn store_credential(&self, c: &NewCredential, now: DateTime<Utc>) -> Result<(), MetaError> {
        let row = Row::new()
            .with("credential_id", c.credential_id.as_str())
            .with("org_slug", c.org_slug.as_str())
            .with("provider", c.provider.as_str())
            .with("credential_name", c.credential_name.as_str())
            .with("encrypted_credential", c.ciphertext.clone())
            .with("credential_type", c.credential_type.as_str())
            .with("credential_fingerprint", c.fingerprint.as_str())
            .with("validation_status", c.validation_status.as_str())
            .with("last_validated_at", (c.validation_status != "PENDING").then_some(now))
            .with("last_error", c.last_error.clone())
            .with("metadata", Value::Json(c.metadata.clone()))
            .with("is_active", true)
            .with("created_by_user_id", c.user_id.clone())
            .with("created_at", now)
            .with("updated_at", now);
        let columns: Vec<String> = row.columns().cloned().collect();
        let marks: Vec<String> = columns.iter().map(|c| format!("@{c}")).collect();
        let mut params = Params::new();
        for (k, v) in &row.0 {
            params.0.insert(k.clone(), v.clone());
        }
        let statements = [
            Statement::new(
                "UPDATE {{org_integration_credentials}} SET is_active = @inactive, updated_at = @now \
                 WHERE org_slug = @org AND provider = @provider AND is_active = @active",
                Params::new()
                    .with("inactive", false)
                    .with("active", true)
                    .with("now", now)
                    .with("org", c.org_slug.as_str())
                    .with("provider", c.provider.as_str()),
            ),
            Statement::new(
                format!(
                    "INSERT INTO {{{{org_integration_credentials}}}} ({}) VALUES ({})",
                    columns.join(", "),
                    marks.join(", ")
                ),
                params,
            )
            .expecting(1),
        ];
        self.warehouse().execute_atomic(CENTRAL_DATASET, &statements).await?;
        Ok(())
    }

    /// The org's active credential row for a provider (whatever its validation status).
    pub async fn active_credential(&self, org: &str, provider: &str) -> Result<Option<Row>, MetaError> {
        let rows = self
            .warehouse()
            .query(
                CENTRAL_DATASET,
                "SELECT * FROM {{org_integration_credentials}} WHERE org_slug = @org AND provider = @provider \
                 AND is_active = @active ORDER BY created_at DESC LIMIT 1",
                &Params::new()
                    .with("org", org)
                    .with("provider", provider)
                    .with("active", true),
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// All active credential rows of the org.
    pub async fn active_credentials(&self, org: &str) -> Result<Vec<Row>, MetaError> {
        Ok(self
            .warehouse()
            .query(
                CENTRAL_DATASET,
                "SELECT * FROM {{org_integration_credentials}} WHERE org_slug = @org AND is_active = @active",
                &Params::new().with("org", org).with("active", true),
            )
            .await?)
    }

    /// Records a (re-)validation result on a credential row.
    pub async fn record_validation(
        &self,
        credential_id: &str,
        org: &str,
        status: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), MetaError> {
        self.warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_integration_credentials}} SET validation_status = @status, last_error = @error, \
                 last_validated_at = @now, updated_at = @now WHERE credential_id = @id AND org_slug = @org",
                &Params::new()
                    .with("status", status)
                    .with("error", error)
                    .with("now", now)
                    .with("id", credential_id)
                    .with("org", org),
            )
            .await?;
        Ok(())
    }

    /// Renames / re-describes the active credential.
    pub async fn update_credential_info(
        &self,
        credential_id: &str,
        org: &str,
        name: &str,
        metadata: serde_json::Value,
        user_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), MetaError> {
        self.warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_integration_credentials}} SET credential_name = @name, metadata = @meta, \
                 updated_by_user_id = @user, updated_at = @now WHERE credential_id = @id AND org_slug = @org",
                &Params::new()
                    .with("name", name)
                    .with("meta", Value::Json(metadata))
                    .with("user", user_id)
                    .with("now", now)
                    .with("id", credential_id)
                    .with("org", org),
            )
            .await?;
        Ok(())
    }

    /// Deactivates the org's credential for a provider; returns how many rows changed.
    pub async fn deactivate_credential(&self, org: &str, provider: &str, now: DateTime<Utc>) -> Result<u64, MetaError> {
        Ok(self
            .warehouse()
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_integration_credentials}} SET is_active = @inactive, updated_at = @now \
                 WHERE org_slug = @org AND provider = @provider AND is_active = @active",
                &Params::new()
                    .with("inactive", false)
                    .with("active", true)
                    .with("now", now)
                    .with("org", org)
                    .with("provider", provider),
            )
            .await?)
    }
}
