//! Typed operations on the central `organizations` dataset: profiles, API keys,
//! subscriptions, usage quotas, idempotency records and the audit log. Every query here is
//! filtered by the org it is given; SQL stays in the subset both warehouse backends share.

pub mod integrations;
pub mod plans;
pub mod runs;
pub mod schedules;

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, NaiveDate, Utc};

use crate::warehouse::{Params, Row, Statement, Value, Warehouse, WarehouseError};
pub use plans::{Plan, PlanLimits, SubscriptionStatus};

/// Name of the central dataset.
pub const CENTRAL_DATASET: &str = "organizations";

/// Org profile statuses.
pub const ORG_ACTIVE: &str = "ACTIVE";
pub const ORG_PROVISIONING: &str = "PROVISIONING";

/// Scopes every org key carries.
pub const DEFAULT_SCOPES: [&str; 3] = ["pipelines:read", "pipelines:write", "pipelines:execute"];
/// Every scope a key may carry: `pipelines:read` (GET routes), `pipelines:write` (changes to
/// the org's integrations, prices, plans, schedules, subscription and keys),
/// `pipelines:execute` (submitting, cancelling and retrying runs).
pub const KNOWN_SCOPES: [&str; 3] = DEFAULT_SCOPES;

/// Failures of meta-table operations.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl MetaError {
    /// The central dataset or one of its tables does not exist yet: the platform has not
    /// been bootstrapped (an expected state right after a fresh deploy, not a fault).
    pub fn is_not_bootstrapped(&self) -> bool {
        match self {
            MetaError::Warehouse(WarehouseError::DatasetNotFound(d)) => d == CENTRAL_DATASET,
            MetaError::Warehouse(WarehouseError::TableNotFound { dataset, .. }) => dataset == CENTRAL_DATASET,
            _ => false,
        }
    }
}

/// One row of `org_profiles`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgProfile {
    pub org_slug: String,
    pub company_name: String,
    pub admin_email: String,
    pub org_dataset_id: String,
    pub status: String,
    pub subscription_plan: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What an org key resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyOwner {
    pub org_slug: String,
    pub org_api_key_id: String,
    pub org_dataset_id: String,
    pub org_status: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The org's subscription as of the lookup (cached with the key).
    pub plan_name: Option<String>,
    pub subscription_status: Option<String>,
    pub trial_end_date: Option<NaiveDate>,
    pub subscription_end_date: Option<NaiveDate>,
    /// The key's fingerprint (shown in audit rows; never the key).
    pub key_fingerprint: Option<String>,
    /// What the key may do ([`KNOWN_SCOPES`]); a key stored without scopes has the defaults.
    pub scopes: Vec<String>,
}

/// Public facts about an org's active key (never the key).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyInfo {
    pub org_api_key_id: String,
    pub fingerprint: String,
    pub is_active: bool,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A key to store: its hash, ciphertext and fingerprint (the plaintext never gets here).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub org_api_key_id: String,
    pub hash: String,
    pub ciphertext: Vec<u8>,
    pub fingerprint: String,
}

impl NewApiKey {
    /// Mints a key for `org_slug`: returns the plaintext (to show once) and what to store —
    /// its SHA-256, its KMS ciphertext bound to the org (`org_api_key:{org}`), its fingerprint.
    pub async fn mint(
        kms: &dyn crate::kms::Kms,
        org_slug: &str,
    ) -> Result<(secrecy::SecretString, NewApiKey), crate::kms::KmsError> {
        use secrecy::ExposeSecret;
        let key = crate::auth::generate_org_api_key(org_slug);
        let ciphertext = kms
            .encrypt(
                key.expose_secret().as_bytes(),
                format!("org_api_key:{org_slug}").as_bytes(),
            )
            .await?;
        let stored = NewApiKey {
            org_api_key_id: uuid::Uuid::new_v4().to_string(),
            hash: crate::auth::hash_key(key.expose_secret()),
            ciphertext,
            fingerprint: crate::auth::key_fingerprint(key.expose_secret()),
        };
        Ok((key, stored))
    }
}

/// One row of `org_subscriptions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub subscription_id: String,
    pub org_slug: String,
    pub plan_name: String,
    pub status: String,
    pub limits: PlanLimits,
    pub trial_end_date: Option<NaiveDate>,
    pub subscription_end_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A new org, written all at once.
#[derive(Debug, Clone)]
pub struct NewOrg {
    pub org_slug: String,
    pub company_name: String,
    pub admin_email: String,
    pub org_dataset_id: String,
    pub plan: Plan,
    pub status: SubscriptionStatus,
    pub trial_end_date: Option<NaiveDate>,
    pub key: NewApiKey,
    pub idempotency: Option<IdempotencyRecord>,
}

/// A stored response for an `Idempotency-Key` (never containing a secret).
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub key: String,
    pub org_slug: String,
    pub request_fingerprint: String,
    pub response: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Changes to a subscription; `None` leaves a value as is.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionChange {
    pub plan: Option<Plan>,
    pub status: Option<SubscriptionStatus>,
    pub limits: PlanLimits,
    pub trial_end_date: Option<NaiveDate>,
    pub subscription_end_date: Option<NaiveDate>,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Plan::Starter.limits()
    }
}

/// An audit-log row as written before its action ([`OrgStore::audit_begin`]).
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub org_slug: &'a str,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<&'a str>,
    pub status: &'a str,
    /// The actor: `root`, or `key:{fingerprint}` of the org key.
    pub api_key_id: Option<&'a str>,
    /// `X-User-ID` as sent (unverified).
    pub user_id: Option<&'a str>,
    pub ip_address: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub details: serde_json::Value,
}

/// How an audited action ended ([`OrgStore::audit_finish`]).
#[derive(Debug, Clone)]
pub struct AuditOutcome<'a> {
    /// SUCCESS, FAILURE or DENIED.
    pub status: &'a str,
    pub org_slug: &'a str,
    pub actor: Option<&'a str>,
    pub details: serde_json::Value,
    pub error_message: Option<&'a str>,
}

/// A page of an org's audit rows.
#[derive(Debug, Clone)]
pub struct AuditQuery<'a> {
    pub org_slug: &'a str,
    pub action: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
    pub offset: u32,
}

/// Typed access to the central meta tables.
#[derive(Clone)]
pub struct OrgStore {
    wh: Arc<dyn Warehouse>,
}

fn text(row: &Row, col: &str) -> Result<String, MetaError> {
    row.string(col)
        .ok_or_else(|| MetaError::Corrupt(format!("column {col} is missing")))
}

fn ts(row: &Row, col: &str) -> Result<DateTime<Utc>, MetaError> {
    row.timestamp(col)
        .ok_or_else(|| MetaError::Corrupt(format!("column {col} is not a timestamp")))
}

impl OrgStore {
    pub fn new(wh: Arc<dyn Warehouse>) -> Self {
        OrgStore { wh }
    }

    pub fn warehouse(&self) -> &Arc<dyn Warehouse> {
        &self.wh
    }

    async fn query(&self, sql: &str, params: &Params) -> Result<Vec<Row>, MetaError> {
        Ok(self.wh.query(CENTRAL_DATASET, sql, params).await?)
    }

    /// Whether bootstrap has created the central tables this service needs.
    pub async fn bootstrapped(&self, tables: &[&str]) -> Result<Vec<String>, MetaError> {
        let mut missing = Vec::new();
        for t in tables {
            if !self.wh.table_exists(CENTRAL_DATASET, t).await? {
                missing.push((*t).to_string());
            }
        }
        Ok(missing)
    }

    pub async fn profile(&self, org_slug: &str) -> Result<Option<OrgProfile>, MetaError> {
        let rows = self
            .query(
                "SELECT org_slug, company_name, admin_email, org_dataset_id, status, subscription_plan, created_at \
                 FROM {{org_profiles}} WHERE org_slug = @org",
                &Params::new().with("org", org_slug),
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(OrgProfile {
            org_slug: text(r, "org_slug")?,
            company_name: text(r, "company_name")?,
            admin_email: text(r, "admin_email")?,
            org_dataset_id: text(r, "org_dataset_id")?,
            status: text(r, "status")?,
            subscription_plan: r.string("subscription_plan"),
            created_at: ts(r, "created_at")?,
        }))
    }

    /// Resolves a key hash to its org, if the key is active.
    pub async fn key_owner(&self, key_hash: &str) -> Result<Option<KeyOwner>, MetaError> {
        let mut owners = self.key_owners(&[key_hash.to_string()]).await?;
        Ok(owners.remove(key_hash))
    }

    /// Resolves many key hashes at once (the auth cache revalidates with this): hash →
    /// owner, for the hashes whose key is still active. One query per 200 hashes.
    pub async fn key_owners(&self, key_hashes: &[String]) -> Result<HashMap<String, KeyOwner>, MetaError> {
        let mut owners = HashMap::new();
        for chunk in key_hashes.chunks(200) {
            let mut params = Params::new().with("active", true);
            let mut names = Vec::with_capacity(chunk.len());
            for (i, hash) in chunk.iter().enumerate() {
                let name = format!("h{i}");
                params = params.with(&name, hash.as_str());
                names.push(format!("@{name}"));
            }
            let rows = self
                .query(
                    &format!(
                        "SELECT k.org_api_key_hash, k.org_api_key_id, k.org_slug, k.expires_at, k.key_fingerprint, k.scopes, \
                         p.status AS org_status, \
                         p.org_dataset_id, s.plan_name, s.status AS subscription_status, s.trial_end_date, \
                         s.subscription_end_date \
                         FROM {{{{org_api_keys}}}} k JOIN {{{{org_profiles}}}} p ON p.org_slug = k.org_slug \
                         LEFT JOIN {{{{org_subscriptions}}}} s ON s.org_slug = k.org_slug \
                         WHERE k.org_api_key_hash IN ({}) AND k.is_active = @active",
                        names.join(", ")
                    ),
                    &params,
                )
                .await?;
            for r in &rows {
                owners.insert(
                    text(r, "org_api_key_hash")?,
                    KeyOwner {
                        org_slug: text(r, "org_slug")?,
                        org_api_key_id: text(r, "org_api_key_id")?,
                        org_dataset_id: text(r, "org_dataset_id")?,
                        org_status: text(r, "org_status")?,
                        expires_at: r.timestamp("expires_at"),
                        plan_name: r.string("plan_name"),
                        subscription_status: r.string("subscription_status"),
                        trial_end_date: r.date("trial_end_date"),
                        subscription_end_date: r.date("subscription_end_date"),
                        key_fingerprint: r.string("key_fingerprint"),
                        scopes: r
                            .json("scopes")
                            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
                            .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()),
                    },
                );
            }
        }
        Ok(owners)
    }

    pub async fn active_key(&self, org_slug: &str) -> Result<Option<ApiKeyInfo>, MetaError> {
        let rows = self
            .query(
                "SELECT org_api_key_id, key_fingerprint, is_active, scopes, created_at FROM {{org_api_keys}} \
                 WHERE org_slug = @org AND is_active = @active ORDER BY created_at DESC LIMIT 1",
                &Params::new().with("org", org_slug).with("active", true),
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let scopes = r
            .json("scopes")
            .and_then(|j| serde_json::from_value::<Vec<String>>(j).ok())
            .unwrap_or_default();
        Ok(Some(ApiKeyInfo {
            org_api_key_id: text(r, "org_api_key_id")?,
            fingerprint: text(r, "key_fingerprint")?,
            is_active: r.boolean("is_active").unwrap_or(false),
            scopes,
            created_at: ts(r, "created_at")?,
        }))
    }

    fn key_insert(org_slug: &str, key: &NewApiKey, now: DateTime<Utc>) -> Statement {
        Self::key_insert_scoped(org_slug, key, &DEFAULT_SCOPES.map(String::from), now)
    }

    fn key_insert_scoped(org_slug: &str, key: &NewApiKey, scopes: &[String], now: DateTime<Utc>) -> Statement {
        Statement::new(
            "INSERT INTO {{org_api_keys}} (org_api_key_id, org_slug, org_api_key_hash, encrypted_org_api_key, \
             key_fingerprint, scopes, is_active, created_at) \
             VALUES (@id, @org, @hash, @ct, @fp, @scopes, @active, @now)",
            Params::new()
                .with("id", &key.org_api_key_id)
                .with("org", org_slug)
                .with("hash", &key.hash)
                .with("ct", key.ciphertext.clone())
                .with("fp", &key.fingerprint)
                .with("scopes", serde_json::json!(scopes))
                .with("active", true)
                .with("now", now),
        )
        .expecting(1)
    }

    pub(crate) fn quota_insert(org_slug: &str, date: NaiveDate, limits: &PlanLimits, now: DateTime<Utc>) -> Statement {
        Statement::new(
            "INSERT INTO {{org_usage_quotas}} (usage_id, org_slug, usage_date, pipelines_run_today, \
             pipelines_succeeded_today, pipelines_failed_today, pipelines_run_month, concurrent_pipelines_running, \
             daily_limit, monthly_limit, concurrent_limit, seat_limit, providers_limit, max_concurrent_reached, \
             last_updated, created_at) \
             SELECT @id, @org, @date, 0, 0, 0, 0, 0, @daily, @monthly, @concurrent, @seats, @providers, 0, @now, @now \
             FROM (SELECT 1 AS one) AS single_row WHERE NOT EXISTS (SELECT 1 FROM {{org_usage_quotas}} WHERE org_slug = @org AND usage_date = @date)",
            Params::new()
                .with("id", format!("{org_slug}_{}", date.format("%Y%m%d")))
                .with("org", org_slug)
                .with("date", date)
                .with("daily", limits.daily_limit)
                .with("monthly", limits.monthly_limit)
                .with("concurrent", limits.concurrent_limit)
                .with("seats", limits.seat_limit)
                .with("providers", limits.providers_limit)
                .with("now", now),
        )
    }

    /// Writes a new org (status PROVISIONING), its key, subscription, today's quota row and
    /// the idempotency record in one transaction. `Conflict` if the org already exists.
    pub async fn create_org(&self, org: &NewOrg, now: DateTime<Utc>) -> Result<(), MetaError> {
        let limits = org.plan.limits();
        let mut statements = vec![
            Statement::new(
                "INSERT INTO {{org_profiles}} (org_slug, company_name, admin_email, org_dataset_id, status, \
                 subscription_plan, created_at, updated_at) \
                 SELECT @org, @company, @email, @dataset, @status, @plan, @now, @now \
                 FROM (SELECT 1 AS one) AS single_row WHERE NOT EXISTS (SELECT 1 FROM {{org_profiles}} WHERE org_slug = @org)",
                Params::new()
                    .with("org", &org.org_slug)
                    .with("company", &org.company_name)
                    .with("email", &org.admin_email)
                    .with("dataset", &org.org_dataset_id)
                    .with("status", ORG_PROVISIONING)
                    .with("plan", org.plan.as_str())
                    .with("now", now),
            )
            .expecting(1),
            Self::key_insert(&org.org_slug, &org.key, now),
            Statement::new(
                "INSERT INTO {{org_subscriptions}} (subscription_id, org_slug, plan_name, status, daily_limit, \
                 monthly_limit, concurrent_limit, seat_limit, providers_limit, max_pipelines_per_day, trial_end_date, \
                 created_at, updated_at) \
                 VALUES (@id, @org, @plan, @status, @daily, @monthly, @concurrent, @seats, @providers, @daily, \
                 @trial_end, @now, @now)",
                Params::new()
                    .with("id", uuid::Uuid::new_v4().to_string())
                    .with("org", &org.org_slug)
                    .with("plan", org.plan.as_str())
                    .with("status", org.status.as_str())
                    .with("daily", limits.daily_limit)
                    .with("monthly", limits.monthly_limit)
                    .with("concurrent", limits.concurrent_limit)
                    .with("seats", limits.seat_limit)
                    .with("providers", limits.providers_limit)
                    .with("trial_end", org.trial_end_date)
                    .with("now", now),
            )
            .expecting(1),
            Self::quota_insert(&org.org_slug, now.date_naive(), &limits, now).expecting(1),
        ];
        if let Some(idem) = &org.idempotency {
            statements.push(Self::idempotency_insert(idem));
        }
        match self.wh.execute_atomic(CENTRAL_DATASET, &statements).await {
            Ok(_) => Ok(()),
            Err(WarehouseError::Conflict { index: 0, .. }) => Err(MetaError::Conflict(format!(
                "organization '{}' already exists",
                org.org_slug
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a provisioned org ACTIVE.
    pub async fn activate_org(&self, org_slug: &str, now: DateTime<Utc>) -> Result<(), MetaError> {
        self.wh
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_profiles}} SET status = @active, updated_at = @now WHERE org_slug = @org",
                &Params::new()
                    .with("active", ORG_ACTIVE)
                    .with("now", now)
                    .with("org", org_slug),
            )
            .await?;
        Ok(())
    }

    /// Deletes every row of the org from the given central tables in one transaction;
    /// returns the rows removed per table.
    pub async fn purge_org_rows(&self, org_slug: &str, tables: &[String]) -> Result<Vec<(String, u64)>, MetaError> {
        let statements: Vec<Statement> = tables
            .iter()
            .map(|t| {
                Statement::new(
                    format!("DELETE FROM {{{{{t}}}}} WHERE org_slug = @org"),
                    Params::new().with("org", org_slug),
                )
            })
            .collect();
        let counts = self.wh.execute_atomic(CENTRAL_DATASET, &statements).await?;
        Ok(tables.iter().cloned().zip(counts).collect())
    }

    /// Revokes every active key of the org and stores the new one, atomically.
    pub async fn replace_key(&self, org_slug: &str, key: &NewApiKey, now: DateTime<Utc>) -> Result<u64, MetaError> {
        self.replace_key_scoped(org_slug, key, &DEFAULT_SCOPES.map(String::from), now)
            .await
    }

    /// Revokes the org's active key without issuing another; how many were revoked.
    pub async fn revoke_key(&self, org_slug: &str, now: DateTime<Utc>) -> Result<u64, MetaError> {
        Ok(self
            .wh
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_api_keys}} SET is_active = @inactive, revoked_at = @now \
                 WHERE org_slug = @org AND is_active = @active",
                &Params::new()
                    .with("inactive", false)
                    .with("active", true)
                    .with("now", now)
                    .with("org", org_slug),
            )
            .await?)
    }

    /// Records when keys were last used (one statement for the batch).
    pub async fn touch_keys(&self, uses: &[(String, DateTime<Utc>)]) -> Result<(), MetaError> {
        for chunk in uses.chunks(200) {
            let mut params = Params::new();
            let (mut cases, mut ids) = (Vec::new(), Vec::new());
            for (i, (id, at)) in chunk.iter().enumerate() {
                params = params.with(&format!("k{i}"), id.as_str()).with(&format!("t{i}"), *at);
                cases.push(format!("WHEN @k{i} THEN @t{i}"));
                ids.push(format!("@k{i}"));
            }
            self.wh
                .execute(
                    CENTRAL_DATASET,
                    &format!(
                        "UPDATE {{{{org_api_keys}}}} SET last_used_at = CASE org_api_key_id {} END \
                         WHERE org_api_key_id IN ({})",
                        cases.join(" "),
                        ids.join(", ")
                    ),
                    &params,
                )
                .await?;
        }
        Ok(())
    }

    /// As [`OrgStore::replace_key`], the new key limited to `scopes`.
    pub async fn replace_key_scoped(
        &self,
        org_slug: &str,
        key: &NewApiKey,
        scopes: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, MetaError> {
        let counts = self
            .wh
            .execute_atomic(
                CENTRAL_DATASET,
                &[
                    Statement::new(
                        "UPDATE {{org_api_keys}} SET is_active = @inactive, revoked_at = @now \
                         WHERE org_slug = @org AND is_active = @active",
                        Params::new()
                            .with("inactive", false)
                            .with("active", true)
                            .with("now", now)
                            .with("org", org_slug),
                    ),
                    Self::key_insert_scoped(org_slug, key, scopes, now),
                ],
            )
            .await?;
        Ok(counts.first().copied().unwrap_or(0))
    }

    pub async fn subscription(&self, org_slug: &str) -> Result<Option<Subscription>, MetaError> {
        let rows = self
            .query(
                "SELECT * FROM {{org_subscriptions}} WHERE org_slug = @org ORDER BY created_at DESC LIMIT 1",
                &Params::new().with("org", org_slug),
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let plan_name = text(r, "plan_name")?;
        let defaults = Plan::parse(&plan_name).unwrap_or(Plan::Starter).limits();
        Ok(Some(Subscription {
            subscription_id: text(r, "subscription_id")?,
            org_slug: text(r, "org_slug")?,
            status: text(r, "status")?,
            limits: PlanLimits {
                daily_limit: r.int("daily_limit").unwrap_or(defaults.daily_limit),
                monthly_limit: r.int("monthly_limit").unwrap_or(defaults.monthly_limit),
                concurrent_limit: r.int("concurrent_limit").unwrap_or(defaults.concurrent_limit),
                seat_limit: r.int("seat_limit").unwrap_or(defaults.seat_limit),
                providers_limit: r.int("providers_limit").unwrap_or(defaults.providers_limit),
            },
            plan_name,
            trial_end_date: r.date("trial_end_date"),
            subscription_end_date: r.date("subscription_end_date"),
            created_at: ts(r, "created_at")?,
            updated_at: r.timestamp("updated_at"),
        }))
    }

    /// Applies a subscription change to the subscription, today's quota row (created if
    /// missing) and the profile's plan, in one transaction.
    pub async fn update_subscription(
        &self,
        org_slug: &str,
        current: &Subscription,
        change: &SubscriptionChange,
        now: DateTime<Utc>,
    ) -> Result<(), MetaError> {
        let plan = change
            .plan
            .map(Plan::as_str)
            .unwrap_or(current.plan_name.as_str())
            .to_string();
        let status = change
            .status
            .map(SubscriptionStatus::as_str)
            .unwrap_or(current.status.as_str())
            .to_string();
        let l = &change.limits;
        let today = now.date_naive();
        let statements = vec![
            Statement::new(
                "UPDATE {{org_subscriptions}} SET plan_name = @plan, status = @status, daily_limit = @daily, \
                 monthly_limit = @monthly, concurrent_limit = @concurrent, seat_limit = @seats, \
                 providers_limit = @providers, max_pipelines_per_day = @daily, trial_end_date = @trial_end, \
                 subscription_end_date = @sub_end, updated_at = @now WHERE subscription_id = @id",
                Params::new()
                    .with("plan", &plan)
                    .with("status", &status)
                    .with("daily", l.daily_limit)
                    .with("monthly", l.monthly_limit)
                    .with("concurrent", l.concurrent_limit)
                    .with("seats", l.seat_limit)
                    .with("providers", l.providers_limit)
                    .with("trial_end", change.trial_end_date.or(current.trial_end_date))
                    .with("sub_end", change.subscription_end_date.or(current.subscription_end_date))
                    .with("now", now)
                    .with("id", &current.subscription_id),
            )
            .expecting(1),
            Self::quota_insert(org_slug, today, l, now),
            Statement::new(
                "UPDATE {{org_usage_quotas}} SET daily_limit = @daily, monthly_limit = @monthly, \
                 concurrent_limit = @concurrent, seat_limit = @seats, providers_limit = @providers, last_updated = @now \
                 WHERE org_slug = @org AND usage_date = @date",
                Params::new()
                    .with("daily", l.daily_limit)
                    .with("monthly", l.monthly_limit)
                    .with("concurrent", l.concurrent_limit)
                    .with("seats", l.seat_limit)
                    .with("providers", l.providers_limit)
                    .with("now", now)
                    .with("org", org_slug)
                    .with("date", today),
            ),
            Statement::new(
                "UPDATE {{org_profiles}} SET subscription_plan = @plan, updated_at = @now WHERE org_slug = @org",
                Params::new().with("plan", &plan).with("now", now).with("org", org_slug),
            ),
        ];
        self.wh.execute_atomic(CENTRAL_DATASET, &statements).await?;
        Ok(())
    }

    /// Today's quota row for the org, if any: (run today, run this month, running now).
    pub async fn quota_row(&self, org_slug: &str, date: NaiveDate) -> Result<Option<Row>, MetaError> {
        let rows = self
            .query(
                "SELECT * FROM {{org_usage_quotas}} WHERE org_slug = @org AND usage_date = @date",
                &Params::new().with("org", org_slug).with("date", date),
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    fn idempotency_insert(record: &IdempotencyRecord) -> Statement {
        Statement::new(
            "INSERT INTO {{org_idempotency_keys}} (idempotency_key, org_slug, request_fingerprint, response_data, created_at) \
             VALUES (@key, @org, @fp, @response, @now)",
            Params::new()
                .with("key", &record.key)
                .with("org", &record.org_slug)
                .with("fp", &record.request_fingerprint)
                .with("response", record.response.to_string())
                .with("now", record.created_at),
        )
    }

    /// Stores the response of a completed request under its `Idempotency-Key`.
    pub async fn put_idempotency(&self, record: &IdempotencyRecord) -> Result<(), MetaError> {
        let stmt = Self::idempotency_insert(record);
        self.wh.execute(CENTRAL_DATASET, &stmt.sql, &stmt.params).await?;
        Ok(())
    }

    /// A stored idempotency record newer than `since`.
    pub async fn idempotency(&self, key: &str, since: DateTime<Utc>) -> Result<Option<IdempotencyRecord>, MetaError> {
        let rows = self
            .query(
                "SELECT * FROM {{org_idempotency_keys}} WHERE idempotency_key = @key AND created_at >= @since \
                 ORDER BY created_at DESC LIMIT 1",
                &Params::new().with("key", key).with("since", since),
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(IdempotencyRecord {
            key: text(r, "idempotency_key")?,
            org_slug: text(r, "org_slug")?,
            request_fingerprint: r.string("request_fingerprint").unwrap_or_default(),
            response: r
                .string("response_data")
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            created_at: ts(r, "created_at")?,
        }))
    }

    /// Writes an audit row before the action it records (status `PENDING`): an action whose
    /// row cannot be written is refused. A DML insert (not a streaming one), so that
    /// [`OrgStore::audit_finish`] can update it at once on BigQuery.
    pub async fn audit_begin(&self, entry: &AuditEntry<'_>, now: DateTime<Utc>) -> Result<String, MetaError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.wh
            .execute(
                CENTRAL_DATASET,
                "INSERT INTO {{org_audit_logs}} (audit_id, org_slug, user_id, api_key_id, action, resource_type, \
                 resource_id, details, ip_address, user_agent, request_id, status, created_at) \
                 VALUES (@id, @org, @user, @actor, @action, @rtype, @rid, @details, @ip, @ua, @req, @status, @now)",
                &Params::new()
                    .with("id", id.as_str())
                    .with("org", entry.org_slug)
                    .with("user", entry.user_id)
                    .with("actor", entry.api_key_id)
                    .with("action", entry.action)
                    .with("rtype", entry.resource_type)
                    .with("rid", entry.resource_id)
                    .with("details", Value::Json(entry.details.clone()))
                    .with("ip", entry.ip_address)
                    .with("ua", entry.user_agent)
                    .with("req", entry.request_id)
                    .with("status", entry.status)
                    .with("now", now),
            )
            .await?;
        Ok(id)
    }

    /// Completes an audit row: outcome, who (once authenticated), the org it concerned, the
    /// details and the error a person saw.
    pub async fn audit_finish(&self, id: &str, done: &AuditOutcome<'_>) -> Result<(), MetaError> {
        self.wh
            .execute(
                CENTRAL_DATASET,
                "UPDATE {{org_audit_logs}} SET status = @status, org_slug = @org, api_key_id = @actor, \
                 details = @details, error_message = @error WHERE audit_id = @id",
                &Params::new()
                    .with("id", id)
                    .with("status", done.status)
                    .with("org", done.org_slug)
                    .with("actor", done.actor)
                    .with("details", Value::Json(done.details.clone()))
                    .with("error", done.error_message),
            )
            .await?;
        Ok(())
    }

    /// An org's audit rows, newest first.
    pub async fn audit_list(&self, q: &AuditQuery<'_>) -> Result<(Vec<Row>, i64), MetaError> {
        let mut filter = String::from("org_slug = @org");
        let mut params = Params::new().with("org", q.org_slug);
        if let Some(a) = q.action {
            filter.push_str(" AND action = @action");
            params = params.with("action", a);
        }
        if let Some(t) = q.since {
            filter.push_str(" AND created_at >= @since");
            params = params.with("since", t);
        }
        let total = self
            .query(
                &format!("SELECT COUNT(*) AS n FROM {{{{org_audit_logs}}}} WHERE {filter}"),
                &params,
            )
            .await?
            .first()
            .and_then(|r| r.int("n"))
            .unwrap_or(0);
        let rows = self
            .query(
                &format!(
                    "SELECT * FROM {{{{org_audit_logs}}}} WHERE {filter} ORDER BY created_at DESC, audit_id \
                     LIMIT {} OFFSET {}",
                    q.limit, q.offset
                ),
                &params,
            )
            .await?;
        Ok((rows, total))
    }
}
