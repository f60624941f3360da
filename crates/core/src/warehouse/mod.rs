//! The warehouse trait: every table read and write of both services goes through it.
//!
//! Two backends implement it: [`embedded::EmbeddedWarehouse`] (SQLite, one file per dataset,
//! the default) and BigQuery (production). Code above the trait never knows which it has.
//!
//! SQL handed to [`Warehouse::query`] / [`Warehouse::execute`] names tables as `{{table}}`;
//! the backend replaces each with its fully qualified name (callers never paste dataset or
//! project names into SQL). Values are always bound as named `@param`s. Keep the SQL to the
//! subset both engines share: plain SELECT/INSERT/UPDATE/DELETE, comparisons, `COUNT`/`SUM`,
//! `COALESCE`, `ORDER BY`, `LIMIT`/`OFFSET`; pass times and dates in as parameters.

pub mod bigquery;
pub mod embedded;
pub mod metered;
pub mod schema;
pub mod value;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::sync::OnceLock;

use async_trait::async_trait;
use chrono::NaiveDate;
use regex::Regex;

pub use schema::{FieldMode, FieldSchema, FieldType, TableDef};
pub use value::{Params, Row, Value};

/// Warehouse failures, typed so callers can map them to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("dataset {0} does not exist")]
    DatasetNotFound(String),
    #[error("table {dataset}.{table} does not exist")]
    TableNotFound { dataset: String, table: String },
    #[error("invalid name {0:?}: names are lower-case letters, digits and underscores")]
    InvalidName(String),
    #[error("invalid row for table {table}: {reason}")]
    InvalidRow { table: String, reason: String },
    #[error("schema problem: {0}")]
    Schema(String),
    #[error("query parameter @{0} is used in the SQL but was not given")]
    MissingParam(String),
    #[error("query failed: {0}")]
    Query(String),
    /// A guarded statement in an atomic batch did not affect the expected number of rows;
    /// the whole batch was rolled back.
    #[error("conflict: statement {index} affected {actual} rows, expected {expected}; nothing was changed")]
    Conflict { index: usize, expected: u64, actual: u64 },
    /// Transient: locked database, concurrent update, rate limit, 5xx. Safe to retry.
    #[error("warehouse temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("warehouse backend error: {0}")]
    Backend(String),
}

impl WarehouseError {
    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, WarehouseError::Unavailable(_))
    }
}

/// One DML statement of an atomic batch. With `expect_rows`, the batch is rolled back
/// (and [`WarehouseError::Conflict`] returned) unless the statement affected exactly that many rows.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Params,
    pub expect_rows: Option<u64>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Params) -> Self {
        Statement {
            sql: sql.into(),
            params,
            expect_rows: None,
        }
    }

    pub fn expecting(mut self, rows: u64) -> Self {
        self.expect_rows = Some(rows);
        self
    }
}

/// The slice of a table one idempotent load owns: the rows of one org on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionKey {
    pub org_column: String,
    pub org_slug: String,
    /// A DATE or TIMESTAMP column; rows match when its calendar day (UTC) equals `date`.
    pub date_column: String,
    pub date: NaiveDate,
}

/// What a partition replacement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaceOutcome {
    pub deleted: u64,
    pub inserted: u64,
}

/// Storage for datasets of tables. `Send + Sync`, held as `Arc<dyn Warehouse>`.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// `embedded` or `bigquery`.
    fn backend_name(&self) -> &'static str;

    /// A cheap round trip proving the backend answers (used by `/health/ready`).
    async fn ping(&self) -> Result<(), WarehouseError>;

    /// Creates a dataset; `Ok(false)` when it already existed.
    async fn create_dataset(&self, dataset: &str, location: &str) -> Result<bool, WarehouseError>;
    async fn dataset_exists(&self, dataset: &str) -> Result<bool, WarehouseError>;
    /// Deletes a dataset with all its tables; `Ok(false)` when there was none.
    async fn delete_dataset(&self, dataset: &str) -> Result<bool, WarehouseError>;

    /// Creates a table from its definition; `Ok(false)` when it already existed (left as is).
    async fn create_table(&self, dataset: &str, table: &TableDef) -> Result<bool, WarehouseError>;
    async fn table_exists(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError>;
    /// Drops a table; `Ok(false)` when there was none.
    async fn drop_table(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError>;
    /// The table's current column schema.
    async fn table_schema(&self, dataset: &str, table: &str) -> Result<Vec<FieldSchema>, WarehouseError>;

    /// Adds columns to an existing table, all or none (existing rows read them as null). Each
    /// column must be new and NULLABLE or REPEATED; see [`schema::plan_evolution`].
    async fn add_columns(&self, dataset: &str, table: &str, columns: &[FieldSchema]) -> Result<(), WarehouseError>;

    /// Inserts a batch of rows, all or none. Rows are checked against the table schema first.
    async fn insert_rows(&self, dataset: &str, table: &str, rows: &[Row]) -> Result<u64, WarehouseError>;

    /// As [`Warehouse::insert_rows`], taking the rows (a backend can then avoid copying them).
    async fn insert_batch(&self, dataset: &str, table: &str, rows: Vec<Row>) -> Result<u64, WarehouseError> {
        self.insert_rows(dataset, table, &rows).await
    }

    /// Atomically replaces the rows of one org and day with `rows` (which must all belong to
    /// that org and day). Running the same load twice leaves the same table.
    async fn replace_partition(
        &self,
        dataset: &str,
        table: &str,
        key: &PartitionKey,
        rows: &[Row],
    ) -> Result<ReplaceOutcome, WarehouseError>;

    /// Atomically replaces the rows of one org and day in `table` with that slice of
    /// `staging` (a table with the same columns): the commit of a load streamed in batches.
    /// Readers see the old day or the new day, never a mix. `staging` is left as it was.
    async fn swap_partition(
        &self,
        dataset: &str,
        staging: &str,
        table: &str,
        key: &PartitionKey,
    ) -> Result<ReplaceOutcome, WarehouseError>;

    /// SQL for an exact sum of a NUMERIC expression (an aggregate): BigQuery's `SUM`; the
    /// embedded backend's `decimal_sum`, since SQLite's own `SUM` over decimal text is a float.
    fn exact_sum(&self, expr: &str) -> String {
        format!("SUM({expr})")
    }

    /// Runs a SELECT and returns its rows.
    async fn query(&self, dataset: &str, sql: &str, params: &Params) -> Result<Vec<Row>, WarehouseError>;

    /// Runs one DML statement and returns the number of affected rows.
    async fn execute(&self, dataset: &str, sql: &str, params: &Params) -> Result<u64, WarehouseError>;

    /// Runs DML statements as one transaction: all take effect or none do.
    async fn execute_atomic(&self, dataset: &str, statements: &[Statement]) -> Result<Vec<u64>, WarehouseError>;
}

/// Checks a dataset, table or column name: `^[a-z0-9_]{1,128}$`.
pub fn check_name(name: &str) -> Result<(), WarehouseError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(WarehouseError::InvalidName(name.to_string()))
    }
}

/// Checks a column name: a letter or underscore, then letters, digits and underscores, at most
/// 128 (BigQuery's rule). Mixed case is allowed for standard column sets such as FOCUS's
/// `BilledCost`; both backends compare column names case-insensitively, so a table's
/// columns must differ in more than case ([`schema::TableDef::validate`]).
pub fn check_column_name(name: &str) -> Result<(), WarehouseError> {
    let ok = name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(WarehouseError::InvalidName(name.to_string()))
    }
}

/// Replaces every `{{table}}` token in `sql` using `qualify`; fails on a bad table name.
pub fn qualify_tables(sql: &str, qualify: impl Fn(&str) -> String) -> Result<String, WarehouseError> {
    static TOKEN: OnceLock<Regex> = OnceLock::new();
    let re = TOKEN.get_or_init(|| Regex::new(r"\{\{([^}]*)\}\}").unwrap_or_else(|e| panic!("static regex: {e}")));
    let mut bad = None;
    let out = re.replace_all(sql, |c: &regex::Captures<'_>| {
        let name = c[1].trim();
        if check_name(name).is_err() {
            bad = Some(name.to_string());
        }
        qualify(name)
    });
    match bad {
        Some(name) => Err(WarehouseError::InvalidName(name)),
        None => Ok(out.into_owned()),
    }
}

/// Checks a partition load before it touches a backend: the table and key column names, and
/// that every row belongs to the partition it replaces.
pub fn check_partition_load(table: &str, key: &PartitionKey, rows: &[Row]) -> Result<(), WarehouseError> {
    check_name(table)?;
    check_column_name(&key.org_column)?;
    check_column_name(&key.date_column)?;
    for row in rows {
        let org_ok = row.string(&key.org_column).as_deref() == Some(key.org_slug.as_str());
        let date_ok = row.date(&key.date_column) == Some(key.date);
        if !org_ok || !date_ok {
            return Err(WarehouseError::InvalidRow {
                table: table.to_string(),
                reason: format!(
                    "row outside the partition being replaced ({}={}, {}={})",
                    key.org_column, key.org_slug, key.date_column, key.date
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_tokens_are_qualified_and_checked() {
        let sql = qualify_tables("SELECT * FROM {{org_profiles}} p JOIN {{ org_api_keys }} k", |t| {
            format!("`p.d.{t}`")
        })
        .unwrap();
        assert_eq!(sql, "SELECT * FROM `p.d.org_profiles` p JOIN `p.d.org_api_keys` k");
        assert!(qualify_tables("SELECT * FROM {{x; DROP}}", |t| t.to_string()).is_err());
        assert!(qualify_tables("SELECT * FROM {{../etc}}", |t| t.to_string()).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("acme_local").is_ok());
        assert!(check_column_name("BilledCost").is_ok() && check_column_name("x_org_slug").is_ok());
        for bad in ["", "9lives", "Billed-Cost", "a b", "ü"] {
            assert!(check_column_name(bad).is_err(), "{bad}");
        }
        for bad in ["", "Acme", "a-b", "a.b", "a b", "a;"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
