//! Integrations (org key; path org must match): store, validate, describe and remove the
//! org's provider credentials. A credential is KMS-encrypted with associated data binding it
//! to the org and provider, validated live against the provider, and never returned — only
//! its status and a fingerprint (last 4 characters).

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    Json,
};
use chrono::Utc;
use cloudact_core::{auth::key_fingerprint, config::ProviderEntry, meta::integrations::NewCredential, warehouse::Row};
use cloudact_pipeline::{
    context::credential_aad,
    providers::validate::{discover_billing_export, validate_api_key, validate_service_account, Validation},
};
use cloudact_web::{ApiError, ApiJson, AppContext, OrgAuth, OrgPath};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    /// The API key, or the service-account JSON for `gcp` (10 to 50 000 characters);
    /// `api_key` is accepted as another name for it.
    #[schema(value_type = String)]
    #[serde(alias = "api_key")]
    pub credential: SecretString,
    /// 3 to 200 characters.
    pub credential_name: Option<String>,
    /// Free-form object (≤ 16 KiB); for `gcp`, `billing_export_table` = `project.dataset.table`.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Store as PENDING without calling the provider.
    #[serde(default)]
    pub skip_validation: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[schema(value_type = Option<String>)]
    pub credential: Option<SecretString>,
    pub credential_name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub skip_validation: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetupResponse {
    pub success: bool,
    pub provider: String,
    pub credential_id: String,
    pub validation_status: String,
    pub validation_error: Option<String>,
    pub credential_fingerprint: String,
    pub message: String,
    /// Schedules created or reactivated for the provider's scheduled pipelines (VALID only).
    pub schedules_activated: usize,
    /// The org has prices for this provider in `llm_model_pricing` (its own, or the defaults
    /// seeded now on the first successful setup).
    pub pricing_initialized: bool,
    /// The org has plans for this provider in `llm_subscriptions` (likewise).
    pub subscriptions_initialized: bool,
    /// Default price and plan rows seeded by this call.
    pub pricing_rows_seeded: u64,
    pub subscription_rows_seeded: u64,
    /// GCP: the billing export table read by the billing pipeline (given, or discovered in the
    /// service account's project; null when none was found — set it with `PUT`).
    pub billing_export_table: Option<String>,
}

fn provider<'a>(ctx: &'a AppContext, alias: &str) -> Result<&'a ProviderEntry, ApiError> {
    ctx.providers.by_alias(alias).ok_or_else(|| {
        ApiError::not_found(
            "UNKNOWN_PROVIDER",
            format!(
                "unknown provider {alias:?}; use one of {}",
                ctx.providers.aliases().join(", ")
            ),
        )
    })
}

fn user_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128 && !v.chars().any(char::is_control))
        .map(str::to_string)
}

fn bounded_metadata(m: Option<serde_json::Map<String, Value>>) -> Result<serde_json::Map<String, Value>, ApiError> {
    let m = m.unwrap_or_default();
    if serde_json::to_vec(&m).map(|v| v.len()).unwrap_or(usize::MAX) > 16_384 {
        return Err(ApiError::unprocessable(
            "METADATA_TOO_LARGE",
            "metadata must be at most 16 KiB of JSON",
        ));
    }
    Ok(m)
}

/// Checks a billing-export table name: `project.dataset.table`.
fn check_billing_table(name: &str) -> Result<(), ApiError> {
    if cloudact_pipeline::providers::validate::is_billing_table(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "INVALID_BILLING_TABLE",
            "metadata.billing_export_table must be project.dataset.table (e.g. my-proj.billing.gcp_billing_export_v1_0123)",
        ))
    }
}

/// Format checks before anything is stored; returns (fingerprint, metadata to store).
fn check_format(
    p: &ProviderEntry,
    credential: &str,
    mut metadata: serde_json::Map<String, Value>,
) -> Result<(String, serde_json::Map<String, Value>), ApiError> {
    let len = credential.chars().count();
    if !(10..=50_000).contains(&len) {
        return Err(ApiError::unprocessable(
            "INVALID_CREDENTIAL",
            "credential must be 10 to 50 000 characters",
        ));
    }
    if p.credential_type == "SERVICE_ACCOUNT_JSON" {
        let sa: Value = serde_json::from_str(credential).map_err(|e| {
            ApiError::bad_request("INVALID_SERVICE_ACCOUNT", format!("credential is not valid JSON: {e}"))
        })?;
        if sa["type"] != "service_account" {
            return Err(ApiError::bad_request(
                "INVALID_SERVICE_ACCOUNT",
                "credential.type must be \"service_account\"",
            ));
        }
        let missing: Vec<&str> = ["project_id", "private_key", "client_email"]
            .into_iter()
            .filter(|f| sa[*f].as_str().is_none_or(str::is_empty))
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::bad_request(
                "INVALID_SERVICE_ACCOUNT",
                format!("service-account JSON is missing: {}", missing.join(", ")),
            ));
        }
        // Optional: without it, setup discovers the export in the account's project.
        match metadata.get("billing_export_table") {
            None | Some(Value::Null) => {}
            Some(Value::String(table)) => check_billing_table(table)?,
            Some(_) => check_billing_table("")?,
        }
        metadata.insert("project_id".into(), sa["project_id"].clone());
        metadata.insert("client_email".into(), sa["client_email"].clone());
        let fp = key_fingerprint(
            sa["private_key_id"]
                .as_str()
                .unwrap_or(sa["client_email"].as_str().unwrap_or("")),
        );
        return Ok((fp, metadata));
    }
    if !p.key_prefixes.iter().any(|pre| credential.starts_with(pre.as_str()))
        || credential.chars().any(char::is_whitespace)
    {
        return Err(ApiError::bad_request(
            "INVALID_CREDENTIAL_FORMAT",
            format!("{} keys start with {}", p.name, p.key_prefixes.join(" or ")),
        ));
    }
    Ok((key_fingerprint(credential), metadata))
}

/// Checks a credential live. For a service account without a known billing table the export
/// is searched for again; a table found is returned with the discovery's message (to store).
async fn validate(
    ctx: &AppContext,
    p: &ProviderEntry,
    credential: &str,
    metadata: &serde_json::Map<String, Value>,
) -> (Validation, Option<(String, String)>) {
    let http = &ctx.executor.services().http;
    if p.credential_type == "SERVICE_ACCOUNT_JSON" {
        let token_url = &ctx.settings.gcp_token_url;
        return match metadata.get("billing_export_table").and_then(Value::as_str) {
            Some(table) => (
                validate_service_account(http, p, token_url, credential, table).await,
                None,
            ),
            // No table known (none was found at setup): the account is checked by searching
            // again; finding none is still a valid account.
            None => match discover_billing_export(http, p, token_url, credential).await {
                Ok(found) => match found.chosen {
                    Some(t) => {
                        let v = validate_service_account(http, p, token_url, credential, &t).await;
                        (v, Some((t, found.message)))
                    }
                    None => (Validation::Valid, None),
                },
                Err(v) => (v, None),
            },
        };
    }
    (validate_api_key(http, p, credential).await, None)
}

/// What a setup or a credential replacement stores.
struct Incoming<'a> {
    credential: &'a SecretString,
    name: Option<String>,
    metadata: Option<serde_json::Map<String, Value>>,
    skip_validation: bool,
    user: Option<String>,
}

async fn store(
    ctx: &AppContext,
    org: &OrgAuth,
    p: &ProviderEntry,
    input: Incoming<'_>,
) -> Result<SetupResponse, ApiError> {
    let Incoming {
        credential,
        name,
        metadata,
        skip_validation,
        user,
    } = input;
    let raw = credential.expose_secret();
    let (fingerprint, mut metadata) = check_format(p, raw, bounded_metadata(metadata)?)?;
    let name = name.unwrap_or_else(|| format!("{} credential", p.name));
    if !(3..=200).contains(&name.chars().count()) {
        return Err(ApiError::unprocessable(
            "INVALID_NAME",
            "credential_name must be 3 to 200 characters",
        ));
    }
    let mut discovery_note = None;
    let discover = p.credential_type == "SERVICE_ACCOUNT_JSON"
        && metadata.get("billing_export_table").and_then(Value::as_str).is_none();
    let validation = if skip_validation {
        Validation::Pending("validation skipped on request".to_string())
    } else if discover {
        // Only the credential: find the billing export with the account itself.
        let http = &ctx.executor.services().http;
        match discover_billing_export(http, p, &ctx.settings.gcp_token_url, raw).await {
            Err(v) => v,
            Ok(found) => {
                let table = found.chosen.clone();
                metadata.insert(
                    "billing_export_table".into(),
                    table.clone().map(Value::from).unwrap_or(Value::Null),
                );
                metadata.insert(
                    "billing_export_discovery".into(),
                    json!({"found": found.found, "message": found.message}),
                );
                discovery_note = Some(found.message);
                match table {
                    Some(t) => validate_service_account(http, p, &ctx.settings.gcp_token_url, raw, &t).await,
                    None => Validation::Valid,
                }
            }
        }
    } else {
        validate(ctx, p, raw, &metadata).await.0
    };
    let billing_export_table = (p.credential_type == "SERVICE_ACCOUNT_JSON")
        .then(|| {
            metadata
                .get("billing_export_table")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .flatten();
    let ciphertext = ctx
        .kms
        .encrypt(raw.as_bytes(), credential_aad(&org.org_slug, &p.name).as_bytes())
        .await?;
    let credential_id = uuid::Uuid::new_v4().to_string();
    let record = NewCredential {
        credential_id: credential_id.clone(),
        org_slug: org.org_slug.clone(),
        provider: p.name.clone(),
        credential_name: name,
        ciphertext,
        credential_type: p.credential_type.clone(),
        fingerprint: fingerprint.clone(),
        validation_status: validation.status().to_string(),
        last_error: validation.error().map(str::to_string),
        metadata: Value::Object(metadata),
        user_id: user,
    };
    ctx.store.store_credential(&record, Utc::now()).await?;
    let mut schedules_activated = 0;
    let valid = validation == Validation::Valid;
    // A GCP account with no billing table yet would fail its daily billing run every day:
    // its schedule waits until the table is set.
    let schedulable = !(p.credential_type == "SERVICE_ACCOUNT_JSON" && billing_export_table.is_none());
    if valid && schedulable {
        schedules_activated = ctx
            .scheduler
            .ensure_integration_schedules(&org.org_slug, &p.name)
            .await?
            .len();
    }
    let pricing_name = match p.name.as_str() {
        "OPENAI" => "openai",
        "ANTHROPIC" => "anthropic",
        "DEEPSEEK" => "deepseek",
        _ => "gemini",
    };
    // Defaults are seeded only on a VALID setup; whether the org has rows is said either way.
    let dataset = &org.org_dataset_id;
    let pricing =
        super::pricing::seed_provider_defaults(ctx, dataset, "llm_model_pricing", pricing_name, valid).await?;
    let plans = super::pricing::seed_provider_defaults(ctx, dataset, "llm_subscriptions", pricing_name, valid).await?;
    if pricing.1 + plans.1 > 0 {
        tracing::info!(org_slug = %org.org_slug, provider = pricing_name, prices = pricing.1, plans = plans.1,
            "defaults seeded on first successful setup");
    }
    tracing::info!(org_slug = %org.org_slug, provider = %p.name, status = validation.status(), "credential stored");
    Ok(SetupResponse {
        success: validation == Validation::Valid,
        provider: p.name.clone(),
        credential_id,
        validation_status: validation.status().to_string(),
        validation_error: validation.error().map(str::to_string),
        credential_fingerprint: fingerprint,
        schedules_activated,
        pricing_initialized: pricing.0,
        subscriptions_initialized: plans.0,
        pricing_rows_seeded: pricing.1,
        subscription_rows_seeded: plans.1,
        billing_export_table,
        message: {
            let outcome = match &validation {
                Validation::Valid => format!("{} credential stored and validated", p.name),
                Validation::Invalid(_) => format!("{} credential stored but the provider rejected it", p.name),
                Validation::Pending(_) => format!("{} credential stored; not validated yet", p.name),
            };
            match discovery_note {
                Some(note) => format!("{outcome}; {note}"),
                None => outcome,
            }
        },
    })
}

/// Stores (replacing) the org's credential for a provider, validated live.
#[utoipa::path(post, path = "/api/v1/integrations/{org_slug}/{provider}/setup", tag = "integrations",
    params(("org_slug" = String, Path), ("provider" = String, Path, description = "openai, anthropic (claude), deepseek, gcp (gcp_sa)")),
    request_body = SetupBody, security(("api_key" = [])),
    responses((status = 200, body = SetupResponse), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn setup(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    headers: HeaderMap,
    Path((_org_slug, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetupBody>,
) -> Result<Json<SetupResponse>, ApiError> {
    let p = provider(&ctx, &alias)?;
    store(
        &ctx,
        &org,
        p,
        Incoming {
            credential: &body.credential,
            name: body.credential_name,
            metadata: body.metadata,
            skip_validation: body.skip_validation,
            user: user_id(&headers),
        },
    )
    .await
    .map(Json)
}

/// Re-validates the active credential, whatever its current status.
#[utoipa::path(post, path = "/api/v1/integrations/{org_slug}/{provider}/validate", tag = "integrations",
    params(("org_slug" = String, Path), ("provider" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 401), (status = 403), (status = 404)))]
pub async fn revalidate(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = provider(&ctx, &alias)?;
    let Some(row) = ctx.store.active_credential(&org.org_slug, &p.name).await? else {
        return Ok(Json(
            json!({"success": false, "provider": p.name, "validation_status": "NOT_CONFIGURED",
                              "validation_error": "Integration not configured", "message": "set the integration up first"}),
        ));
    };
    let id = row.string("credential_id").unwrap_or_default();
    let ciphertext = row.bytes("encrypted_credential").unwrap_or_default();
    let plain = ctx
        .kms
        .decrypt(&ciphertext, credential_aad(&org.org_slug, &p.name).as_bytes())
        .await?;
    let credential = String::from_utf8(plain.expose_secret().clone()).map_err(ApiError::internal)?;
    let mut metadata = row
        .json("metadata")
        .and_then(|m| m.as_object().cloned())
        .unwrap_or_default();
    let (validation, discovered) = validate(&ctx, p, &credential, &metadata).await;
    // A billing export found now (none was at setup) is stored, so the billing pipeline and its
    // schedule can use it.
    let mut discovery_message = None;
    if let Some((table, message)) = discovered.filter(|_| validation == Validation::Valid) {
        metadata.insert("billing_export_table".into(), json!(table));
        let name = row.string("credential_name").unwrap_or_default();
        ctx.store
            .update_credential_info(
                &id,
                &org.org_slug,
                &name,
                Value::Object(metadata.clone()),
                None,
                Utc::now(),
            )
            .await?;
        discovery_message = Some(message);
    }
    ctx.store
        .record_validation(&id, &org.org_slug, validation.status(), validation.error(), Utc::now())
        .await?;
    let no_table = p.credential_type == "SERVICE_ACCOUNT_JSON" && !metadata["billing_export_table"].is_string();
    let schedules_activated = if validation == Validation::Valid && !no_table {
        ctx.scheduler
            .ensure_integration_schedules(&org.org_slug, &p.name)
            .await?
            .len()
    } else {
        0
    };
    Ok(Json(json!({
        "schedules_activated": schedules_activated,
        "success": validation == Validation::Valid,
        "provider": p.name,
        "credential_id": id,
        "validation_status": validation.status(),
        "validation_error": validation.error(),
        "billing_export_table": metadata.get("billing_export_table").cloned().filter(|_| p.credential_type == "SERVICE_ACCOUNT_JSON"),
        "message": match discovery_message {
            Some(m) => format!("{} credential re-validated; {m}", p.name),
            None => format!("{} credential re-validated", p.name),
        },
    })))
}

fn describe(provider: &str, row: Option<&Row>) -> Value {
    match row {
        None => json!({"provider": provider, "status": "NOT_CONFIGURED", "credential_name": null,
                       "credential_fingerprint": null, "last_validated_at": null, "last_error": null, "created_at": null}),
        Some(r) => {
            let pick = |c: &str| r.get(c).map(|v| v.to_json()).unwrap_or(Value::Null);
            json!({"provider": provider, "status": pick("validation_status"), "credential_name": pick("credential_name"),
                   "credential_fingerprint": pick("credential_fingerprint"), "credential_type": pick("credential_type"),
                   "metadata": pick("metadata"), "last_validated_at": pick("last_validated_at"),
                   "last_error": pick("last_error"), "created_at": pick("created_at"), "updated_at": pick("updated_at")})
        }
    }
}

/// Every provider's status for the org (NOT_CONFIGURED included).
#[utoipa::path(get, path = "/api/v1/integrations/{org_slug}", tag = "integrations", params(("org_slug" = String, Path)),
    security(("api_key" = [])), responses((status = 200), (status = 401), (status = 403)))]
pub async fn list(State(ctx): State<Arc<AppContext>>, OrgPath(org): OrgPath) -> Result<Json<Value>, ApiError> {
    let rows = ctx.store.active_credentials(&org.org_slug).await?;
    let mut integrations = BTreeMap::new();
    for p in &ctx.providers.providers {
        let row = rows
            .iter()
            .find(|r| r.string("provider").as_deref() == Some(p.name.as_str()));
        integrations.insert(p.name.clone(), describe(&p.name, row));
    }
    let configured: Vec<&String> = integrations
        .iter()
        .filter(|(_, v)| v["status"] != "NOT_CONFIGURED")
        .map(|(k, _)| k)
        .collect();
    let all_valid = !configured.is_empty()
        && integrations
            .values()
            .filter(|v| v["status"] != "NOT_CONFIGURED")
            .all(|v| v["status"] == "VALID");
    Ok(Json(
        json!({"org_slug": org.org_slug, "integrations": integrations, "providers_configured": configured, "all_valid": all_valid}),
    ))
}

/// One provider's status for the org.
#[utoipa::path(get, path = "/api/v1/integrations/{org_slug}/{provider}", tag = "integrations",
    params(("org_slug" = String, Path), ("provider" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 401), (status = 403), (status = 404)))]
pub async fn get_one(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = provider(&ctx, &alias)?;
    let row = ctx.store.active_credential(&org.org_slug, &p.name).await?;
    Ok(Json(describe(&p.name, row.as_ref())))
}

/// Renames / re-describes the active credential, or replaces it when a new one is given.
#[utoipa::path(put, path = "/api/v1/integrations/{org_slug}/{provider}", tag = "integrations",
    params(("org_slug" = String, Path), ("provider" = String, Path)), request_body = UpdateBody, security(("api_key" = [])),
    responses((status = 200), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub async fn update(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    headers: HeaderMap,
    Path((_org_slug, alias)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let p = provider(&ctx, &alias)?;
    let current = ctx.store.active_credential(&org.org_slug, &p.name).await?;
    if let Some(credential) = &body.credential {
        let name = body
            .credential_name
            .clone()
            .or_else(|| current.as_ref().and_then(|r| r.string("credential_name")));
        let metadata = body.metadata.clone().or_else(|| {
            current
                .as_ref()
                .and_then(|r| r.json("metadata"))
                .and_then(|m| m.as_object().cloned())
        });
        let out = store(
            &ctx,
            &org,
            p,
            Incoming {
                credential,
                name,
                metadata,
                skip_validation: body.skip_validation,
                user: user_id(&headers),
            },
        )
        .await?;
        return Ok(Json(serde_json::to_value(out).map_err(ApiError::internal)?));
    }
    let row = current
        .ok_or_else(|| ApiError::not_found("INTEGRATION_NOT_CONFIGURED", format!("{} is not configured", p.name)))?;
    let name = body
        .credential_name
        .or_else(|| row.string("credential_name"))
        .unwrap_or_default();
    if !(3..=200).contains(&name.chars().count()) {
        return Err(ApiError::unprocessable(
            "INVALID_NAME",
            "credential_name must be 3 to 200 characters",
        ));
    }
    let mut metadata = match body.metadata {
        Some(m) => bounded_metadata(Some(m))?,
        None => row
            .json("metadata")
            .and_then(|m| m.as_object().cloned())
            .unwrap_or_default(),
    };
    if p.credential_type == "SERVICE_ACCOUNT_JSON" {
        match metadata.get("billing_export_table") {
            None | Some(Value::Null) => {}
            Some(Value::String(table)) => check_billing_table(table)?,
            Some(_) => check_billing_table("")?,
        }
        for keep in ["project_id", "client_email"] {
            if let Some(v) = row.json("metadata").and_then(|m| m.get(keep).cloned()) {
                metadata.insert(keep.into(), v);
            }
        }
    }
    let id = row.string("credential_id").unwrap_or_default();
    // A billing table named now is read once (`LIMIT 0`) with the org's service account before
    // it is stored: one it cannot read is refused, not discovered at the first nightly run.
    let old_table = row.json("metadata").and_then(|m| {
        m.get("billing_export_table")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let new_table = metadata
        .get("billing_export_table")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut table_check = None;
    if let Some(table) =
        new_table.filter(|t| p.credential_type == "SERVICE_ACCOUNT_JSON" && Some(t) != old_table.as_ref())
    {
        let ciphertext = row.bytes("encrypted_credential").unwrap_or_default();
        let plain = ctx
            .kms
            .decrypt(&ciphertext, credential_aad(&org.org_slug, &p.name).as_bytes())
            .await?;
        let credential = String::from_utf8(plain.expose_secret().clone()).map_err(ApiError::internal)?;
        let http = &ctx.executor.services().http;
        let v = validate_service_account(http, p, &ctx.settings.gcp_token_url, &credential, &table).await;
        if let Validation::Invalid(why) = &v {
            return Err(ApiError::unprocessable(
                "BILLING_TABLE_UNREADABLE",
                format!("the service account cannot read {table}, so it was not stored: {why}"),
            ));
        }
        table_check = Some(v);
    }
    ctx.store
        .update_credential_info(
            &id,
            &org.org_slug,
            &name,
            Value::Object(metadata),
            user_id(&headers).as_deref(),
            Utc::now(),
        )
        .await?;
    if let Some(v) = &table_check {
        ctx.store
            .record_validation(&id, &org.org_slug, v.status(), v.error(), Utc::now())
            .await?;
    }
    let updated = ctx.store.active_credential(&org.org_slug, &p.name).await?;
    // A GCP billing table set now on a VALID account: its daily billing schedule starts.
    let table_set = updated
        .as_ref()
        .and_then(|r| r.json("metadata"))
        .is_some_and(|m| m["billing_export_table"].is_string());
    let valid = updated.as_ref().and_then(|r| r.string("validation_status")).as_deref() == Some("VALID");
    if p.credential_type == "SERVICE_ACCOUNT_JSON" && table_set && valid {
        ctx.scheduler
            .ensure_integration_schedules(&org.org_slug, &p.name)
            .await?;
    }
    Ok(Json(describe(&p.name, updated.as_ref())))
}

/// Removes (deactivates) the org's credential for a provider.
#[utoipa::path(delete, path = "/api/v1/integrations/{org_slug}/{provider}", tag = "integrations",
    params(("org_slug" = String, Path), ("provider" = String, Path)), security(("api_key" = [])),
    responses((status = 200), (status = 401), (status = 403), (status = 404)))]
pub async fn remove(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    Path((_org_slug, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = provider(&ctx, &alias)?;
    let n = ctx
        .store
        .deactivate_credential(&org.org_slug, &p.name, Utc::now())
        .await?;
    let schedules_deactivated = ctx
        .scheduler
        .deactivate_integration_schedules(&org.org_slug, &p.name)
        .await?;
    Ok(Json(
        json!({"success": true, "provider": p.name, "removed": n > 0, "schedules_deactivated": schedules_deactivated,
                   "message": if n > 0 { "integration removed" } else { "nothing was configured" }}),
    ))
}
