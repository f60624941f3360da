//! BigQuery warehouse (`WAREHOUSE=bigquery`).
//!
//! Dataset and table management go through `gcp-bigquery-client`; queries and DML go through
//! the documented `jobs.query` / `jobs.getQueryResults` REST calls with the same authenticator,
//! because the crate's `QueryRequest` has no `createSession`/`sessionInfo`, which multi-statement
//! transactions need (BigQuery runs a transaction across several queries of one session; every
//! query keeps its own bound parameters).
//!
//! Write paths, by table: **every table is written with parameterised DML `INSERT`**, batched
//! (many rows per statement, several statements in one transaction when a batch is large).
//! Streaming inserts are not used anywhere: every table here may later see `UPDATE` or `DELETE`
//! (quota counters, run status, idempotent day loads, and org deletion purges even the audit
//! log), and BigQuery refuses DML on rows still in the streaming buffer.
//!
//! Errors: a 200 response with a non-empty `errors` is an error; 404/409/403/429/5xx map to
//! typed errors; transient ones (429, 5xx, `rateLimitExceeded`, `backendError`, and the
//! concurrent-DML serialisation failure) are retried with exponential backoff and jitter, each
//! logical call carrying one `requestId` so a retried request is not applied twice.

mod auth;
pub mod convert;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use gcp_bigquery_client::{
    auth::Authenticator,
    error::BQError,
    model::{dataset::Dataset, table::Table},
    Client,
};
use serde_json::{json, Value as J};

pub use auth::{FixedToken, GoogleToken};
use convert::{decode_cell, query_param, ApiField};

use super::{
    check_name, check_partition_load, qualify_tables, FieldMode, FieldSchema, FieldType, Params, PartitionKey,
    ReplaceOutcome, Row, Statement, TableDef, Warehouse, WarehouseError,
};

/// Most query parameters BigQuery accepts in one query is 10 000; stay below.
const MAX_PARAMS_PER_STATEMENT: usize = 9_000;
const SCHEMA_CACHE_TTL: Duration = Duration::from_secs(60);

/// Connection settings.
#[derive(Debug, Clone)]
pub struct BigQueryConfig {
    pub project: String,
    pub location: String,
    /// `…/bigquery/v2`; None = Google's.
    pub base_url: Option<String>,
}

/// BigQuery-backed [`Warehouse`].
pub struct BigQueryWarehouse {
    project: String,
    location: String,
    base_url: String,
    client: Client,
    http: reqwest::Client,
    auth: Arc<dyn Authenticator>,
    schemas: RwLock<HashMap<(String, String), (TableDef, Instant)>>,
    retry: ExponentialBuilder,
    requests: std::sync::atomic::AtomicU64,
    tx_lock: tokio::sync::Mutex<()>,
}

impl BigQueryWarehouse {
    /// Connects with Application Default Credentials, or with a fixed token when
    /// `base_url` points at an emulator.
    pub async fn connect(config: BigQueryConfig) -> Result<Self, WarehouseError> {
        let auth: Arc<dyn Authenticator> = match &config.base_url {
            Some(_) => Arc::new(FixedToken("emulator".to_string())),
            None => Arc::new(GoogleToken::from_environment().await?),
        };
        Self::with_authenticator(config, auth).await
    }

    pub async fn with_authenticator(
        config: BigQueryConfig,
        auth: Arc<dyn Authenticator>,
    ) -> Result<Self, WarehouseError> {
        check_project(&config.project)?;
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| "https://bigquery.googleapis.com/bigquery/v2".to_string())
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(60))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| WarehouseError::Backend(format!("HTTP client: {e}")))?;
        let client = gcp_bigquery_client::client_builder::ClientBuilder::new()
            .with_v2_base_url(base_url.clone())
            .build_from_authenticator(auth.clone())
            .await
            .map_err(|e| WarehouseError::Backend(format!("BigQuery client: {e}")))?;
        Ok(BigQueryWarehouse {
            project: config.project,
            location: config.location,
            base_url,
            client,
            http,
            auth,
            schemas: RwLock::new(HashMap::new()),
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(20))
                .with_max_times(6)
                .with_jitter(),
            requests: std::sync::atomic::AtomicU64::new(0),
            tx_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// HTTP requests sent to BigQuery so far (for measurements and tests).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn qualify(&self, dataset: &str, sql: &str) -> Result<String, WarehouseError> {
        check_name(dataset)?;
        qualify_tables(sql, |t| format!("`{}.{dataset}.{t}`", self.project))
    }

    async fn table_def(&self, dataset: &str, table: &str) -> Result<TableDef, WarehouseError> {
        let key = (dataset.to_string(), table.to_string());
        if let Ok(cache) = self.schemas.read() {
            if let Some((def, at)) = cache.get(&key) {
                if at.elapsed() < SCHEMA_CACHE_TTL {
                    return Ok(def.clone());
                }
            }
        }
        let fields = self.table_schema(dataset, table).await?;
        let def = TableDef {
            name: table.to_string(),
            description: None,
            fields,
            partition_field: None,
            clustering: vec![],
            lookup_keys: vec![],
        };
        if let Ok(mut cache) = self.schemas.write() {
            cache.insert(key, (def.clone(), Instant::now()));
        }
        Ok(def)
    }

    fn forget_schema(&self, dataset: &str, table: Option<&str>) {
        if let Ok(mut cache) = self.schemas.write() {
            cache.retain(|(d, t), _| !(d == dataset && table.is_none_or(|x| x == t)));
        }
    }

    /// One `jobs.query` call (plus `getQueryResults` pages), retried when transient.
    ///
    /// `dataset` becomes the job's `defaultDataset`: an unqualified table name can only
    /// resolve inside the dataset the statement was issued for (an org's own, for org work).
    async fn run(
        &self,
        dataset: Option<&str>,
        sql: &str,
        params: Vec<J>,
        session: Session<'_>,
    ) -> Result<QueryOutcome, WarehouseError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        if let Session::Id(_) = session {
            // Inside a transaction: the whole transaction is retried, not one query.
            return self.run_once(dataset, sql, &params, session, &request_id).await;
        }
        (|| async { self.run_once(dataset, sql, &params, session, &request_id).await })
            .retry(self.retry)
            .when(WarehouseError::is_transient)
            .notify(|e, wait| tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "BigQuery call failed; retrying"))
            .await
    }

    async fn run_once(
        &self,
        dataset: Option<&str>,
        sql: &str,
        params: &[J],
        session: Session<'_>,
        request_id: &str,
    ) -> Result<QueryOutcome, WarehouseError> {
        let mut body = json!({
            "query": sql,
            "useLegacySql": false,
            "parameterMode": "NAMED",
            "queryParameters": params,
            "location": self.location,
            "timeoutMs": 60_000,
            "requestId": request_id,
            "formatOptions": {"useInt64Timestamp": true},
        });
        if let Some(dataset) = dataset {
            body["defaultDataset"] = json!({"projectId": self.project, "datasetId": dataset});
        }
        match session {
            Session::None => {}
            Session::Create => body["createSession"] = json!(true),
            Session::Id(id) => body["connectionProperties"] = json!([{"key": "session_id", "value": id}]),
        }
        let url = format!("{}/projects/{}/queries", self.base_url, self.project);
        let mut page = self.send(self.http.post(&url).json(&body)).await?;
        let job_id = page["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
        let location = page["jobReference"]["location"]
            .as_str()
            .unwrap_or(&self.location)
            .to_string();
        let mut outcome = QueryOutcome {
            rows: Vec::new(),
            affected: page["numDmlAffectedRows"].as_str().and_then(|n| n.parse().ok()),
            session_id: page["sessionInfo"]["sessionId"].as_str().map(str::to_string),
        };
        loop {
            check_errors(&page)?;
            if page["jobComplete"] == json!(false) {
                page = self.results_page(&job_id, &location, None).await?;
                continue;
            }
            if outcome.affected.is_none() {
                outcome.affected = page["numDmlAffectedRows"].as_str().and_then(|n| n.parse().ok());
            }
            let fields: Vec<ApiField> = serde_json::from_value(page["schema"]["fields"].clone()).unwrap_or_default();
            for r in page["rows"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let cells = r["f"].as_array().map(Vec::as_slice).unwrap_or_default();
                let mut row = Row::new();
                for (f, c) in fields.iter().zip(cells) {
                    row.0.insert(f.name.clone(), decode_cell(f, c)?);
                }
                outcome.rows.push(row);
            }
            match page["pageToken"].as_str() {
                Some(token) if !token.is_empty() => {
                    let token = token.to_string();
                    page = self.results_page(&job_id, &location, Some(&token)).await?;
                }
                _ => return Ok(outcome),
            }
        }
    }

    async fn results_page(&self, job_id: &str, location: &str, token: Option<&str>) -> Result<J, WarehouseError> {
        let url = format!("{}/projects/{}/queries/{job_id}", self.base_url, self.project);
        let mut query = vec![
            ("location", location.to_string()),
            ("timeoutMs", "60000".to_string()),
            ("formatOptions.useInt64Timestamp", "true".to_string()),
        ];
        if let Some(t) = token {
            query.push(("pageToken", t.to_string()));
        }
        self.send(self.http.get(&url).query(&query)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<J, WarehouseError> {
        self.count();
        let token = self
            .auth
            .access_token()
            .await
            .map_err(|e| WarehouseError::Backend(format!("BigQuery credentials: {e}")))?;
        let resp = req.bearer_auth(token).send().await.map_err(|e| {
            if e.is_timeout() || e.is_connect() {
                WarehouseError::Unavailable(format!("BigQuery unreachable: {e}"))
            } else {
                WarehouseError::Backend(format!("BigQuery request failed: {e}"))
            }
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| WarehouseError::Unavailable(format!("BigQuery response: {e}")))?;
        let body: J = serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": {"message": text}}));
        if status >= 300 {
            let message = body["error"]["message"].as_str().unwrap_or("unknown error").to_string();
            let reason = body["error"]["errors"][0]["reason"].as_str().unwrap_or("").to_string();
            return Err(classify(status, &reason, &message));
        }
        Ok(body)
    }

    async fn execute_in(
        &self,
        dataset: &str,
        sql: &str,
        params: &Params,
        session: Session<'_>,
    ) -> Result<u64, WarehouseError> {
        let sql = self.qualify(dataset, sql)?;
        let (sql, params) = bytes_via_base64(&sql, params);
        let p: Vec<J> = params.0.iter().map(|(k, v)| query_param(k, v, None)).collect();
        Ok(self.run(Some(dataset), &sql, p, session).await?.affected.unwrap_or(0))
    }

    /// Runs `body` inside a BigQuery transaction (a session spanning several queries):
    /// committed when it returns Ok, rolled back otherwise. A transaction aborted by a
    /// concurrent one (a transient error) is retried whole, with backoff. Transactions of this
    /// process are serialised, which avoids most such aborts (and the emulator needs it).
    async fn transaction<T>(
        &self,
        body: impl for<'s> Fn(&'s Self, &'s str) -> futures::future::BoxFuture<'s, Result<T, WarehouseError>>,
    ) -> Result<T, WarehouseError> {
        let _serial = self.tx_lock.lock().await;
        let mut delays = self.retry.build();
        loop {
            let attempt = self.transaction_once(&body).await;
            match attempt {
                Err(e) if e.is_transient() => match delays.next() {
                    Some(wait) => {
                        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "BigQuery transaction aborted; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }

    async fn transaction_once<T>(
        &self,
        body: &impl for<'s> Fn(&'s Self, &'s str) -> futures::future::BoxFuture<'s, Result<T, WarehouseError>>,
    ) -> Result<T, WarehouseError> {
        let begun = self.run(None, "BEGIN TRANSACTION", vec![], Session::Create).await?;
        let session = begun
            .session_id
            .ok_or_else(|| WarehouseError::Backend("BigQuery returned no session for the transaction".to_string()))?;
        let result = body(self, &session).await;
        let end = match &result {
            Ok(_) => self
                .run_in_session("COMMIT TRANSACTION", vec![], &session)
                .await
                .map(|_| ()),
            Err(_) => self
                .run_in_session("ROLLBACK TRANSACTION", vec![], &session)
                .await
                .map(|_| ()),
        };
        let _ = self.run_in_session("CALL BQ.ABORT_SESSION()", vec![], &session).await;
        match (result, end) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
        }
    }

    /// One query inside a transaction's session: not retried on its own (the whole
    /// transaction is).
    async fn run_in_session(&self, sql: &str, params: Vec<J>, session: &str) -> Result<QueryOutcome, WarehouseError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        self.run_once(None, sql, &params, Session::Id(session), &request_id)
            .await
    }

    /// `{verb} <table> WHERE <org> = @org AND DATE(<date>) = @day` and its parameters.
    fn day_filter(&self, dataset: &str, table: &str, key: &PartitionKey, verb: &str) -> (String, Vec<J>) {
        let sql = format!(
            "{verb} `{}.{dataset}.{table}` WHERE `{}` = @org AND DATE(`{}`) = @day",
            self.project, key.org_column, key.date_column
        );
        let params = vec![
            query_param("org", &key.org_slug.as_str().into(), None),
            query_param("day", &key.date.into(), None),
        ];
        (sql, params)
    }

    /// Multi-row INSERT statements for `rows`, each within the parameter limit.
    fn insert_statements(&self, dataset: &str, def: &TableDef, rows: &[Row]) -> Vec<(String, Vec<J>)> {
        let mut columns: Vec<&str> = Vec::new();
        for r in rows {
            for c in r.columns() {
                if !columns.contains(&c.as_str()) {
                    columns.push(c);
                }
            }
        }
        let per_statement = (MAX_PARAMS_PER_STATEMENT / columns.len().max(1)).max(1);
        let target = format!("`{}.{dataset}.{}`", self.project, def.name);
        let col_list = columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
        rows.chunks(per_statement)
            .enumerate()
            .map(|(chunk_no, chunk)| {
                let mut params = Vec::with_capacity(chunk.len() * columns.len());
                let mut tuples = Vec::with_capacity(chunk.len());
                for (i, row) in chunk.iter().enumerate() {
                    let mut marks = Vec::with_capacity(columns.len());
                    for (c, col) in columns.iter().enumerate() {
                        let name = format!("r{chunk_no}_{i}_{c}");
                        let value = row.get(col).cloned().unwrap_or(super::Value::Null);
                        if let super::Value::Bytes(b) = &value {
                            use base64::Engine;
                            let text = base64::engine::general_purpose::STANDARD.encode(b);
                            params.push(query_param(&name, &super::Value::String(text), None));
                            marks.push(format!("FROM_BASE64(@{name})"));
                            continue;
                        }
                        params.push(query_param(&name, &value, def.field(col)));
                        marks.push(format!("@{name}"));
                    }
                    tuples.push(format!("({})", marks.join(", ")));
                }
                (
                    format!("INSERT INTO {target} ({col_list}) VALUES {}", tuples.join(", ")),
                    params,
                )
            })
            .collect()
    }
}

/// How a query relates to a session.
#[derive(Clone, Copy)]
enum Session<'a> {
    None,
    Create,
    Id(&'a str),
}

struct QueryOutcome {
    rows: Vec<Row>,
    affected: Option<u64>,
    session_id: Option<String>,
}

fn check_project(project: &str) -> Result<(), WarehouseError> {
    let ok = !project.is_empty()
        && project
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(WarehouseError::InvalidName(project.to_string()))
    }
}

/// A 200 response can still carry errors: treat any as a failure.
fn check_errors(body: &J) -> Result<(), WarehouseError> {
    let errors = body["errors"].as_array().filter(|e| !e.is_empty());
    let Some(errors) = errors else { return Ok(()) };
    let first = &errors[0];
    let message = first["message"].as_str().unwrap_or("query failed").to_string();
    let reason = first["reason"].as_str().unwrap_or("");
    Err(classify(200, reason, &message))
}

/// Maps a BigQuery failure to a typed error. Transient: HTTP 429/5xx, `rateLimitExceeded`,
/// `backendError`, `internalError`, and the serialisation failure concurrent DML on one table
/// can produce ("Could not serialize access to table … due to concurrent update"): those are
/// retried, and the quota and run-status updates stay exact because each attempt is one
/// conditional statement that either applied or did not.
pub fn classify(status: u16, reason: &str, message: &str) -> WarehouseError {
    let lower = message.to_ascii_lowercase();
    let transient_reason = matches!(
        reason,
        "rateLimitExceeded" | "backendError" | "internalError" | "jobBackendError"
    );
    if status == 429
        || status >= 500
        || transient_reason
        || lower.contains("could not serialize access")
        || lower.contains("due to concurrent update")
        || lower.contains("transaction is aborted due to concurrent")
        // bqemulator runs every session on one connection: a second BEGIN while another
        // session's transaction is open fails this way; it clears like a concurrent abort.
        || lower.contains("cannot start a transaction within a transaction")
    {
        return WarehouseError::Unavailable(message.to_string());
    }
    let not_found = status == 404 || reason == "notFound" || lower.contains("not found");
    if not_found && lower.contains("dataset") {
        return WarehouseError::DatasetNotFound(extract_name(message));
    }
    if not_found && lower.contains("table") {
        return WarehouseError::TableNotFound {
            dataset: String::new(),
            table: extract_name(message),
        };
    }
    match status {
        409 => WarehouseError::Backend(format!("already exists: {message}")),
        403 => WarehouseError::Backend(format!("permission denied: {message}")),
        404 => WarehouseError::Backend(format!("not found: {message}")),
        _ => WarehouseError::Query(message.to_string()),
    }
}

fn extract_name(message: &str) -> String {
    message
        .split([' ', ':'])
        .rfind(|w| w.contains('.') || w.contains('_'))
        .map(|w| w.trim_matches(|c: char| c == '`' || c == ',').to_string())
        .unwrap_or_else(|| message.to_string())
}

fn bq_error(e: BQError) -> WarehouseError {
    match e {
        BQError::ResponseError { error } => {
            let reason = error
                .error
                .errors
                .first()
                .and_then(|m| m.get("reason"))
                .cloned()
                .unwrap_or_default();
            classify(error.error.code as u16, &reason, &error.error.message)
        }
        BQError::RequestError(e) if e.is_timeout() || e.is_connect() => WarehouseError::Unavailable(e.to_string()),
        other => WarehouseError::Backend(other.to_string()),
    }
}

fn is_status(e: &BQError, code: i64) -> bool {
    matches!(e, BQError::ResponseError { error } if error.error.code == code)
}

#[async_trait]
impl Warehouse for BigQueryWarehouse {
    fn backend_name(&self) -> &'static str {
        "bigquery"
    }

    async fn ping(&self) -> Result<(), WarehouseError> {
        self.run(None, "SELECT 1 AS ok", vec![], Session::None)
            .await
            .map(|_| ())
    }

    async fn create_dataset(&self, dataset: &str, location: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        let ds = Dataset::new(&self.project, dataset).location(location);
        self.count();
        match self.client.dataset().create(ds).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(bq_error(e)),
        }
    }

    async fn dataset_exists(&self, dataset: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        self.count();
        match self.client.dataset().get(&self.project, dataset).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(bq_error(e)),
        }
    }

    async fn delete_dataset(&self, dataset: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        self.forget_schema(dataset, None);
        self.count();
        match self.client.dataset().delete(&self.project, dataset, true).await {
            Ok(()) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(bq_error(e)),
        }
    }

    async fn create_table(&self, dataset: &str, table: &TableDef) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        table.validate()?;
        let mut spec = json!({
            "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": table.name},
            "schema": {"fields": table.fields},
            "description": table.description,
        });
        if let Some(p) = &table.partition_field {
            spec["timePartitioning"] = json!({"type": "DAY", "field": p});
        }
        if !table.clustering.is_empty() {
            spec["clustering"] = json!({"fields": table.clustering});
        }
        let model: Table =
            serde_json::from_value(spec).map_err(|e| WarehouseError::Schema(format!("table {}: {e}", table.name)))?;
        self.forget_schema(dataset, Some(&table.name));
        self.count();
        match self.client.table().create(model).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(bq_error(e)),
        }
    }

    async fn table_exists(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        check_name(table)?;
        self.count();
        match self.client.table().get(&self.project, dataset, table, None).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(bq_error(e)),
        }
    }

    async fn drop_table(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        check_name(table)?;
        self.forget_schema(dataset, Some(table));
        self.count();
        match self.client.table().delete(&self.project, dataset, table).await {
            Ok(()) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(bq_error(e)),
        }
    }

    async fn table_schema(&self, dataset: &str, table: &str) -> Result<Vec<FieldSchema>, WarehouseError> {
        check_name(dataset)?;
        check_name(table)?;
        self.count();
        let model = self
            .client
            .table()
            .get(&self.project, dataset, table, None)
            .await
            .map_err(|e| {
                if is_status(&e, 404) {
                    WarehouseError::TableNotFound {
                        dataset: dataset.to_string(),
                        table: table.to_string(),
                    }
                } else {
                    bq_error(e)
                }
            })?;
        let fields_json = serde_json::to_value(&model.schema).map_err(|e| WarehouseError::Backend(e.to_string()))?;
        let fields: Vec<ApiField> = serde_json::from_value(fields_json["fields"].clone()).unwrap_or_default();
        fields.iter().map(ApiField::to_field).collect()
    }

    /// One `ALTER TABLE … ADD COLUMN IF NOT EXISTS` DDL job per column (BigQuery DDL is not
    /// transactional anyway, and the emulator takes one ALTER command per statement): a failure
    /// part-way leaves some columns added, and running the migration again adds the rest.
    async fn add_columns(&self, dataset: &str, table: &str, columns: &[FieldSchema]) -> Result<(), WarehouseError> {
        check_name(dataset)?;
        check_name(table)?;
        if columns.is_empty() {
            return Ok(());
        }
        let mut adds = Vec::with_capacity(columns.len());
        for c in columns {
            check_name(&c.name)?;
            if c.field_type == FieldType::Record {
                return Err(WarehouseError::Schema(format!(
                    "column {}: a RECORD column cannot be added by migration; add it by hand",
                    c.name
                )));
            }
            let scalar = convert::scalar_type_name(c.field_type);
            let decl = match c.mode {
                FieldMode::Nullable => scalar.to_string(),
                FieldMode::Repeated => format!("ARRAY<{scalar}>"),
                FieldMode::Required => {
                    return Err(WarehouseError::Schema(format!(
                        "column {} cannot be added as REQUIRED to an existing table",
                        c.name
                    )))
                }
            };
            adds.push(format!(
                "ALTER TABLE `{}.{dataset}.{table}` ADD COLUMN IF NOT EXISTS {} {decl}",
                self.project, c.name
            ));
        }
        for sql in adds {
            self.forget_schema(dataset, Some(table));
            let result = self.run(Some(dataset), &sql, Vec::new(), Session::None).await;
            self.forget_schema(dataset, Some(table));
            result.map_err(|e| with_dataset(e, dataset))?;
        }
        // BigQuery's table resource now lists the columns. The emulator's DDL changes its
        // storage but not the resource: patch the schema in (`tables.patch`, the documented
        // way to add NULLABLE columns) when it still lacks them; a no-op on BigQuery.
        self.count();
        let current = self
            .client
            .table()
            .get(&self.project, dataset, table, None)
            .await
            .map_err(bq_error)?;
        let mut fields = serde_json::to_value(&current.schema).map_err(|e| WarehouseError::Backend(e.to_string()))?
            ["fields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let missing: Vec<&FieldSchema> = columns
            .iter()
            .filter(|c| !fields.iter().any(|f| f["name"].as_str() == Some(c.name.as_str())))
            .collect();
        if !missing.is_empty() {
            for c in missing {
                fields.push(serde_json::to_value(c).map_err(|e| WarehouseError::Schema(e.to_string()))?);
            }
            let patch: Table = serde_json::from_value(json!({
                "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": table},
                "schema": {"fields": fields},
            }))
            .map_err(|e| WarehouseError::Schema(format!("table {table}: {e}")))?;
            self.count();
            self.client
                .table()
                .patch(&self.project, dataset, table, patch)
                .await
                .map_err(bq_error)?;
            self.forget_schema(dataset, Some(table));
        }
        Ok(())
    }

    async fn insert_rows(&self, dataset: &str, table: &str, rows: &[Row]) -> Result<u64, WarehouseError> {
        check_name(table)?;
        if rows.is_empty() {
            return Ok(0);
        }
        if !self.dataset_exists(dataset).await? {
            return Err(WarehouseError::DatasetNotFound(dataset.to_string()));
        }
        let def = self.table_def(dataset, table).await?;
        for row in rows {
            def.check_row(row)?;
        }
        let statements = self.insert_statements(dataset, &def, rows);
        if statements.len() == 1 {
            let (sql, params) = &statements[0];
            return Ok(self
                .run(None, sql, params.clone(), Session::None)
                .await?
                .affected
                .unwrap_or(rows.len() as u64));
        }
        self.transaction(move |wh, session| {
            let statements = statements.clone();
            Box::pin(async move {
                let mut n = 0;
                for (sql, params) in &statements {
                    n += wh
                        .run(None, sql, params.clone(), Session::Id(session))
                        .await?
                        .affected
                        .unwrap_or(0);
                }
                Ok(n)
            })
        })
        .await
    }

    async fn replace_partition(
        &self,
        dataset: &str,
        table: &str,
        key: &PartitionKey,
        rows: &[Row],
    ) -> Result<ReplaceOutcome, WarehouseError> {
        check_partition_load(table, key, rows)?;
        let def = self.table_def(dataset, table).await?;
        def.check_partition_columns(key)?;
        for row in rows {
            def.check_row(row)?;
        }
        let (delete, delete_params) = self.day_filter(dataset, table, key, "DELETE FROM");
        let inserts = self.insert_statements(dataset, &def, rows);
        self.transaction(move |wh, session| {
            let (delete, delete_params, inserts) = (delete.clone(), delete_params.clone(), inserts.clone());
            Box::pin(async move {
                let deleted = wh
                    .run(None, &delete, delete_params, Session::Id(session))
                    .await?
                    .affected
                    .unwrap_or(0);
                let mut inserted = 0;
                for (sql, params) in &inserts {
                    inserted += wh
                        .run(None, sql, params.clone(), Session::Id(session))
                        .await?
                        .affected
                        .unwrap_or(0);
                }
                Ok(ReplaceOutcome { deleted, inserted })
            })
        })
        .await
    }

    async fn swap_partition(
        &self,
        dataset: &str,
        staging: &str,
        table: &str,
        key: &PartitionKey,
    ) -> Result<ReplaceOutcome, WarehouseError> {
        check_name(staging)?;
        let def = self.table_def(dataset, table).await?;
        def.check_partition_columns(key)?;
        self.table_def(dataset, staging).await?.check_partition_columns(key)?;
        let columns: Vec<String> = def.fields.iter().map(|f| format!("`{}`", f.name)).collect();
        let columns = columns.join(", ");
        let (delete, params) = self.day_filter(dataset, table, key, "DELETE FROM");
        let (select, _) = self.day_filter(dataset, staging, key, &format!("SELECT {columns} FROM"));
        let insert = format!("INSERT INTO `{}.{dataset}.{table}` ({columns}) {select}", self.project);
        self.transaction(move |wh, session| {
            let (delete, insert, params) = (delete.clone(), insert.clone(), params.clone());
            Box::pin(async move {
                let deleted = wh
                    .run(None, &delete, params.clone(), Session::Id(session))
                    .await?
                    .affected
                    .unwrap_or(0);
                let inserted = wh
                    .run(None, &insert, params, Session::Id(session))
                    .await?
                    .affected
                    .unwrap_or(0);
                Ok(ReplaceOutcome { deleted, inserted })
            })
        })
        .await
    }

    async fn query(&self, dataset: &str, sql: &str, params: &Params) -> Result<Vec<Row>, WarehouseError> {
        let sql = self.qualify(dataset, sql)?;
        let missing = missing_params(&sql, params);
        if let Some(m) = missing {
            return Err(WarehouseError::MissingParam(m));
        }
        let (sql, params) = bytes_via_base64(&sql, params);
        let p: Vec<J> = params.0.iter().map(|(k, v)| query_param(k, v, None)).collect();
        let outcome = self
            .run(Some(dataset), &sql, p, Session::None)
            .await
            .map_err(|e| with_dataset(e, dataset))?;
        Ok(outcome.rows)
    }

    async fn execute(&self, dataset: &str, sql: &str, params: &Params) -> Result<u64, WarehouseError> {
        if let Some(m) = missing_params(sql, params) {
            return Err(WarehouseError::MissingParam(m));
        }
        self.execute_in(dataset, sql, params, Session::None)
            .await
            .map_err(|e| with_dataset(e, dataset))
    }

    async fn execute_atomic(&self, dataset: &str, statements: &[Statement]) -> Result<Vec<u64>, WarehouseError> {
        for s in statements {
            if let Some(m) = missing_params(&s.sql, &s.params) {
                return Err(WarehouseError::MissingParam(m));
            }
            self.qualify(dataset, &s.sql)?;
        }
        let dataset_name = dataset.to_string();
        let statements = statements.to_vec();
        self.transaction(move |wh, session| {
            let (dataset_name, statements) = (dataset_name.clone(), statements.clone());
            Box::pin(async move {
                let mut counts = Vec::with_capacity(statements.len());
                for (index, s) in statements.iter().enumerate() {
                    let n = wh
                        .execute_in(&dataset_name, &s.sql, &s.params, Session::Id(session))
                        .await?;
                    if let Some(expected) = s.expect_rows {
                        if n != expected {
                            return Err(WarehouseError::Conflict {
                                index,
                                expected,
                                actual: n,
                            });
                        }
                    }
                    counts.push(n);
                }
                Ok(counts)
            })
        })
        .await
        .map_err(|e| with_dataset(e, dataset))
    }
}

/// Where `@name` parameters appear in `sql`: (index of `@`, end of the name). `@@system`
/// variables are not parameters.
fn param_refs(sql: &str) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut refs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'@' && bytes.get(i + 1) != Some(&b'@') && (i == 0 || bytes[i - 1] != b'@') {
            let mut end = i + 1;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            if end > i + 1 {
                refs.push((i, end));
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    refs
}

/// BYTES parameters travel as base64 STRING parameters decoded in SQL (`FROM_BASE64(@p)`):
/// the same stored bytes on BigQuery, and correct on emulators that store a BYTES
/// parameter's base64 text undecoded.
fn bytes_via_base64(sql: &str, params: &Params) -> (String, Params) {
    use base64::Engine;
    if !params.0.values().any(|v| matches!(v, super::Value::Bytes(_))) {
        return (sql.to_string(), params.clone());
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut copied = 0;
    for (at, end) in param_refs(sql) {
        if matches!(params.0.get(&sql[at + 1..end]), Some(super::Value::Bytes(_))) {
            out.push_str(&sql[copied..at]);
            out.push_str(&format!("FROM_BASE64({})", &sql[at..end]));
            copied = end;
        }
    }
    out.push_str(&sql[copied..]);
    let mut p = params.clone();
    for v in p.0.values_mut() {
        if let super::Value::Bytes(b) = v {
            *v = super::Value::String(base64::engine::general_purpose::STANDARD.encode(b));
        }
    }
    (out, p)
}

/// `@name` parameters used in the SQL but not given (checked before sending, as SQLite does).
fn missing_params(sql: &str, params: &Params) -> Option<String> {
    param_refs(sql)
        .into_iter()
        .map(|(at, end)| &sql[at + 1..end])
        .find(|name| !params.0.contains_key(*name))
        .map(str::to_string)
}

fn with_dataset(e: WarehouseError, dataset: &str) -> WarehouseError {
    match e {
        WarehouseError::TableNotFound { table, .. } => WarehouseError::TableNotFound {
            dataset: dataset.to_string(),
            table: table.rsplit('.').next().unwrap_or(&table).to_string(),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_update_serialisation_errors_are_retried() {
        for (status, reason, message) in [
            (
                400,
                "invalidQuery",
                "Could not serialize access to table p:d.org_usage_quotas due to concurrent update",
            ),
            (
                200,
                "",
                "Transaction is aborted due to concurrent update against table p.d.t",
            ),
            (429, "rateLimitExceeded", "Exceeded rate limits"),
            (503, "backendError", "Service unavailable"),
            (500, "", "internal"),
            (403, "rateLimitExceeded", "Quota exceeded: too many DML statements"),
        ] {
            assert!(
                classify(status, reason, message).is_transient(),
                "{status} {reason} {message}"
            );
        }
    }

    #[test]
    fn other_errors_are_typed_and_not_retried() {
        assert!(matches!(
            classify(404, "notFound", "Not found: Dataset p:acme_local"),
            WarehouseError::DatasetNotFound(_)
        ));
        assert!(matches!(
            classify(404, "notFound", "Not found: Table p:d.t"),
            WarehouseError::TableNotFound { .. }
        ));
        let e = classify(400, "invalidQuery", "Syntax error: Unexpected identifier");
        assert!(matches!(e, WarehouseError::Query(_)) && !e.is_transient());
        assert!(!classify(403, "accessDenied", "Access Denied").is_transient());
        assert!(!classify(409, "duplicate", "Already Exists").is_transient());
    }

    #[test]
    fn bytes_parameters_are_sent_as_base64_decoded_in_sql() {
        let p = Params::new().with("b", vec![1u8, 2, 3]).with("a", 1i64);
        let (sql, p) = bytes_via_base64("INSERT INTO t VALUES (@a, @b) -- @bb", &p);
        assert_eq!(sql, "INSERT INTO t VALUES (@a, FROM_BASE64(@b)) -- @bb");
        assert_eq!(p.0.get("b"), Some(&super::super::Value::String("AQID".into())));
    }

    #[test]
    fn missing_params_are_found_and_system_variables_ignored() {
        let p = Params::new().with("a", 1i64);
        assert_eq!(missing_params("SELECT @a, @b", &p), Some("b".to_string()));
        assert_eq!(missing_params("SELECT @a, @@row_count", &p), None);
    }
}
