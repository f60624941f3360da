//! Live credential validation against the provider's own API (base URL from
//! `configs/system/providers.yml`, overridable by environment for tests and demos):
//! OpenAI `GET /v1/models` (admin keys: a one-bucket usage call, since admin keys may lack the
//! model scope), Anthropic `GET /v1/organizations/me` (admin keys) or `GET /v1/models`,
//! DeepSeek `GET /models`. 2xx → VALID; 401/403 → INVALID with the provider's reason; a
//! timeout, 429 or 5xx cannot judge the key → PENDING with the reason (re-validate later).

use std::time::Duration;

use chrono::Utc;
use cloudact_core::config::ProviderEntry;

/// Outcome of a validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    Valid,
    Invalid(String),
    /// Not judged (skipped, or the provider could not answer).
    Pending(String),
}

impl Validation {
    pub fn status(&self) -> &'static str {
        match self {
            Validation::Valid => "VALID",
            Validation::Invalid(_) => "INVALID",
            Validation::Pending(_) => "PENDING",
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Validation::Valid => None,
            Validation::Invalid(e) | Validation::Pending(e) => Some(e),
        }
    }
}

/// The provider's own error message from a JSON error body (OpenAI and Anthropic shapes),
/// with anything shaped like a key redacted (OpenAI's 401 echoes the key it was sent).
fn provider_message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.chars().take(200).collect());
    super::redact::redact_secrets(&message)
}

/// Checks an API key against its provider.
pub async fn validate_api_key(http: &reqwest::Client, provider: &ProviderEntry, key: &str) -> Validation {
    let base = provider.effective_base_url();
    let is_admin = provider.admin_key_prefix.as_deref().is_some_and(|p| key.starts_with(p));
    let request = match provider.name.as_str() {
        "OPENAI" if is_admin => {
            let start = (Utc::now() - chrono::Duration::days(1)).timestamp();
            http.get(format!("{base}/v1/organization/usage/completions"))
                .query(&[("start_time", start.to_string()), ("limit", "1".to_string())])
                .bearer_auth(key)
        }
        "OPENAI" => http.get(format!("{base}/v1/models")).bearer_auth(key),
        "ANTHROPIC" => {
            let path = if is_admin { "/v1/organizations/me" } else { "/v1/models" };
            http.get(format!("{base}{path}"))
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
        }
        "DEEPSEEK" => http.get(format!("{base}/models")).bearer_auth(key),
        other => return Validation::Pending(format!("no live API-key check for provider {other}")),
    };
    let timeout = Duration::from_secs(provider.validation_timeout_seconds);
    let response = match request.timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Validation::Pending(format!(
                "{} did not answer within {} s; re-validate later",
                provider.name,
                timeout.as_secs()
            ))
        }
        Err(e) => {
            return Validation::Pending(format!(
                "{} could not be reached ({e}); re-validate later",
                provider.name
            ))
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    match status {
        200..=299 => {
            // A 200 whose body is not JSON is not a real answer.
            if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
                Validation::Valid
            } else {
                Validation::Pending(format!(
                    "{} answered with a malformed body; re-validate later",
                    provider.name
                ))
            }
        }
        401 => Validation::Invalid(format!(
            "{} rejected the key: {}",
            provider.name,
            provider_message(&body)
        )),
        403 => Validation::Invalid(format!(
            "the key lacks required permissions: {}",
            provider_message(&body)
        )),
        429 => Validation::Pending(format!("{} rate-limited the check; re-validate later", provider.name)),
        s if s >= 500 => Validation::Pending(format!("{} returned {s}; re-validate later", provider.name)),
        s => Validation::Invalid(format!("{} answered {s}: {}", provider.name, provider_message(&body))),
    }
}

/// An OAuth2 access token for a GCP service account: a JWT (RS256) for `scope` signed with the
/// account's key, exchanged at Google's token endpoint `token_url` (from the settings — never
/// the JSON's own `token_uri`). Returns (token, the account's project, checked as a GCP
/// project id). `Invalid` when Google (or the JSON) refuses the account, `Pending` when it
/// could not answer.
pub async fn service_account_token(
    http: &reqwest::Client,
    sa_json: &str,
    scope: &str,
    token_url: &str,
    timeout: Duration,
) -> Result<(String, String), Validation> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        scope: &'a str,
        aud: &'a str,
        iat: i64,
        exp: i64,
    }
    let sa: serde_json::Value =
        serde_json::from_str(sa_json).map_err(|e| Validation::Invalid(format!("service-account JSON: {e}")))?;
    let (Some(email), Some(key_pem), Some(project)) = (
        sa["client_email"].as_str(),
        sa["private_key"].as_str(),
        sa["project_id"].as_str(),
    ) else {
        return Err(Validation::Invalid(
            "service-account JSON lacks client_email, private_key or project_id".into(),
        ));
    };
    if !is_project_id(project) {
        return Err(Validation::Invalid(format!(
            "project_id {project:?} is not a GCP project id"
        )));
    }
    let token_uri = token_url;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes())
        .map_err(|e| Validation::Invalid(format!("private_key is not a usable RSA key: {e}")))?;
    let now = Utc::now().timestamp();
    let claims = Claims {
        iss: email,
        scope,
        aud: token_uri,
        iat: now,
        exp: now + 3600,
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = sa["private_key_id"].as_str().map(str::to_string);
    let assertion = jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| Validation::Invalid(format!("could not sign a token request: {e}")))?;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.as_str()),
    ];
    match http.post(token_uri).form(&form).timeout(timeout).send().await {
        Err(e) => Err(Validation::Pending(format!(
            "the token endpoint could not be reached ({}); re-validate later",
            e.without_url()
        ))),
        Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
            Ok(v) => match v["access_token"].as_str() {
                Some(t) => Ok((t.to_string(), project.to_string())),
                None => Err(Validation::Pending(
                    "the token endpoint answered without a token".into(),
                )),
            },
            Err(_) => Err(Validation::Pending(
                "the token endpoint answered with a malformed body".into(),
            )),
        },
        Ok(r) => {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let reason = body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("rejected");
            Err(Validation::Invalid(format!(
                "Google refused the service account: {reason}"
            )))
        }
    }
}

/// A GCP project id: 6–30 of lower-case letters, digits and hyphens, starting with a letter.
pub fn is_project_id(id: &str) -> bool {
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A BigQuery table name `project.dataset.table` (the customer's billing export): checked
/// wherever it is stored or spliced into SQL as an identifier.
pub fn is_billing_table(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    let ident = |s: &str| !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    parts.len() == 3 && is_project_id(parts[0]) && ident(parts[1]) && ident(parts[2])
}

/// Scope for reading BigQuery.
pub const BIGQUERY_READONLY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery.readonly";

/// Checks a GCP service account: gets a token ([`service_account_token`]) for the BigQuery
/// read-only scope and reads zero rows of the customer's billing export table
/// (`SELECT * FROM \`project.dataset.table\` LIMIT 0`) in the account's project.
pub async fn validate_service_account(
    http: &reqwest::Client,
    bigquery: &ProviderEntry,
    token_url: &str,
    sa_json: &str,
    billing_table: &str,
) -> Validation {
    let timeout = Duration::from_secs(bigquery.validation_timeout_seconds);
    let (token, project) = match service_account_token(http, sa_json, BIGQUERY_READONLY_SCOPE, token_url, timeout).await
    {
        Ok(t) => t,
        Err(v) => return v,
    };
    let url = format!(
        "{}/bigquery/v2/projects/{project}/queries",
        bigquery.effective_base_url()
    );
    let query = serde_json::json!({"query": format!("SELECT * FROM `{billing_table}` LIMIT 0"), "useLegacySql": false, "timeoutMs": 10_000});
    match http
        .post(url)
        .bearer_auth(token)
        .json(&query)
        .timeout(timeout)
        .send()
        .await
    {
        Err(e) if e.is_timeout() => Validation::Pending("BigQuery did not answer in time; re-validate later".into()),
        Err(e) => Validation::Pending(format!("BigQuery could not be reached ({e}); re-validate later")),
        Ok(r) => {
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let error = body["error"]["message"]
                .as_str()
                .or(body["errors"][0]["message"].as_str())
                .map(str::to_string);
            match (status, error) {
                (200..=299, None) => Validation::Valid,
                (429 | 500..=599, e) => {
                    Validation::Pending(format!("BigQuery returned {status}: {}", e.unwrap_or_default()))
                }
                (_, e) => Validation::Invalid(format!(
                    "the billing export table {billing_table} cannot be read with this service account: {}",
                    e.unwrap_or_else(|| format!("HTTP {status}"))
                )),
            }
        }
    }
}

/// Billing export table name prefixes (Cloud Billing's standard and resource-level exports).
pub const STANDARD_EXPORT_PREFIX: &str = "gcp_billing_export_v1_";
pub const RESOURCE_EXPORT_PREFIX: &str = "gcp_billing_export_resource_v1_";

/// What the billing-export discovery found in the service account's project.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingDiscovery {
    /// The table to read (`project.dataset.table`), if any was found.
    pub chosen: Option<String>,
    /// Every export table found.
    pub found: Vec<String>,
    /// What was done, for the person setting it up.
    pub message: String,
}

/// The message given (at setup, and by the billing pipeline) when no export table is known.
pub fn no_billing_table_message(project: &str) -> String {
    format!(
        "no Cloud Billing export table (gcp_billing_export_v1_* or gcp_billing_export_resource_v1_*) is visible to \
         this service account in project {project}; enable the export to BigQuery, then set it with \
         PUT /api/v1/integrations/{{org_slug}}/gcp {{\"metadata\": {{\"billing_export_table\": \"project.dataset.table\"}}}} \
         (or POST /api/v1/integrations/{{org_slug}}/gcp/validate once the export exists, to find it again)"
    )
}

/// Picks the export to read among those found: the resource-level export when there is one
/// (it is the standard export plus resource names), else the standard one; several of a kind
/// → the first by name, and the message says so.
pub fn choose_billing_table(project: &str, found: &[String]) -> BillingDiscovery {
    let kind = |prefix: &str| {
        let mut v: Vec<&String> = found
            .iter()
            .filter(|t| t.rsplit('.').next().is_some_and(|n| n.starts_with(prefix)))
            .collect();
        v.sort();
        v
    };
    let (resource, standard) = (kind(RESOURCE_EXPORT_PREFIX), kind(STANDARD_EXPORT_PREFIX));
    let (pick, label) = match (resource.first(), standard.first()) {
        (Some(r), _) => (Some((*r).clone()), "resource-level"),
        (None, Some(s)) => (Some((*s).clone()), "standard"),
        (None, None) => (None, ""),
    };
    let message = match &pick {
        None => no_billing_table_message(project),
        Some(t) if found.len() == 1 => format!("found the billing export table {t}"),
        Some(t) => format!(
            "found {} billing export tables ({}); using the {label} export {t} — set another with PUT …/integrations/{{org_slug}}/gcp",
            found.len(),
            found.join(", ")
        ),
    };
    BillingDiscovery {
        chosen: pick,
        found: found.to_vec(),
        message,
    }
}

/// The `id`s of one BigQuery list API (`datasets` or `tables`), every page (at most 20).
async fn list_ids(
    http: &reqwest::Client,
    token: &str,
    url: String,
    items: &'static str,
    project: &str,
    timeout: Duration,
) -> Result<Vec<String>, Validation> {
    let mut ids = Vec::new();
    let mut page: Option<String> = None;
    for _ in 0..20 {
        let mut req = http
            .get(&url)
            .bearer_auth(token)
            .timeout(timeout)
            .query(&[("maxResults", "1000")]);
        if let Some(p) = &page {
            req = req.query(&[("pageToken", p.as_str())]);
        }
        let r = req.send().await.map_err(|e| {
            Validation::Pending(format!(
                "BigQuery could not be reached ({}); re-validate later",
                e.without_url()
            ))
        })?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        match status {
            200..=299 => {}
            429 | 500..=599 => {
                return Err(Validation::Pending(format!(
                    "BigQuery returned {status}; re-validate later"
                )))
            }
            _ => {
                return Err(Validation::Invalid(format!(
                    "the service account cannot list BigQuery {items} of project {project}: {}",
                    body["error"]["message"].as_str().unwrap_or("refused")
                )))
            }
        }
        for item in body[items].as_array().map(Vec::as_slice).unwrap_or_default() {
            if let Some(id) = item["id"].as_str() {
                ids.push(id.to_string());
            }
        }
        page = body["nextPageToken"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        if page.is_none() {
            break;
        }
    }
    Ok(ids)
}

/// Finds the Cloud Billing export tables in the service account's own project: every dataset
/// (`datasets.list`, at most 100) and its tables (`tables.list`), both paged by `pageToken`. `Invalid` when BigQuery refuses the account, `Pending` when it could not
/// answer.
pub async fn discover_billing_export(
    http: &reqwest::Client,
    bigquery: &ProviderEntry,
    token_url: &str,
    sa_json: &str,
) -> Result<BillingDiscovery, Validation> {
    let timeout = Duration::from_secs(bigquery.validation_timeout_seconds);
    let (token, project) = service_account_token(http, sa_json, BIGQUERY_READONLY_SCOPE, token_url, timeout).await?;
    let base = format!("{}/bigquery/v2/projects/{project}", bigquery.effective_base_url());
    let list = |url: String, items: &'static str| list_ids(http, &token, url, items, &project, timeout);
    let datasets: Vec<String> = list(format!("{base}/datasets"), "datasets")
        .await?
        .into_iter()
        .map(|id| id.rsplit(':').next().unwrap_or(&id).to_string())
        .collect();
    if datasets.len() > 100 {
        return Err(Validation::Pending(format!(
            "project {project} has {} datasets, too many to search; set metadata.billing_export_table",
            datasets.len()
        )));
    }
    let mut found = Vec::new();
    for ds in datasets {
        let ident_ok = !ds.is_empty() && ds.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ident_ok {
            continue;
        }
        for id in list(format!("{base}/datasets/{ds}/tables"), "tables").await? {
            // `project:dataset.table`
            let table = id.rsplit('.').next().unwrap_or(&id).to_string();
            if table.starts_with(STANDARD_EXPORT_PREFIX) || table.starts_with(RESOURCE_EXPORT_PREFIX) {
                let name = format!("{project}.{ds}.{table}");
                if is_billing_table(&name) {
                    found.push(name);
                }
            }
        }
    }
    Ok(choose_billing_table(&project, &found))
}

#[cfg(test)]
mod tests {
    use super::{choose_billing_table, provider_message};

    #[test]
    fn the_resource_level_export_is_preferred_and_the_choice_explained() {
        let found = vec![
            "p-123456.b.gcp_billing_export_v1_01".to_string(),
            "p-123456.b.gcp_billing_export_resource_v1_01".to_string(),
        ];
        let d = choose_billing_table("p-123456", &found);
        assert_eq!(
            d.chosen.as_deref(),
            Some("p-123456.b.gcp_billing_export_resource_v1_01")
        );
        assert!(
            d.message.contains("resource-level") && d.message.contains("found 2"),
            "{}",
            d.message
        );
        let one = choose_billing_table("p-123456", &found[..1]);
        assert_eq!(one.chosen.as_deref(), Some("p-123456.b.gcp_billing_export_v1_01"));
        let none = choose_billing_table("p-123456", &[]);
        assert_eq!(none.chosen, None);
        assert!(
            none.message.contains("PUT /api/v1/integrations/{org_slug}/gcp"),
            "{}",
            none.message
        );
    }

    #[test]
    fn a_provider_echo_of_the_key_never_reaches_the_stored_error() {
        let openai_401 = r#"{"error": {"message": "Incorrect API key provided: sk-admin-AbCd************************WxYz. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "code": "invalid_api_key"}}"#;
        let message = provider_message(openai_401);
        assert!(
            message.starts_with("Incorrect API key provided: [redacted]"),
            "{message}"
        );
        assert!(!message.contains("WxYz") && !message.contains("AbCd"), "{message}");
        let raw = provider_message("denied for key sk-ant-api03-secretsecretsecret");
        assert!(!raw.contains("secretsecret"), "{raw}");
    }
}
