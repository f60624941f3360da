//! Embedded warehouse: SQLite (bundled), one database file per dataset under
//! `{DATA_DIR}/warehouse/{dataset}.sqlite3`.
//!
//! Both services open the same files: WAL mode lets readers and one writer work at once
//! across processes, a busy timeout waits out the other process's write lock, and every
//! multi-statement write runs in a `BEGIN IMMEDIATE` transaction so it takes the write lock
//! up front (a deferred transaction that upgrades later can fail without waiting).
//!
//! Column declarations carry the BigQuery type first and an SQLite affinity second
//! (`TIMESTAMP TEXT`, `BOOL INTEGER`, ...), so query results decode back into typed
//! [`Value`]s. Timestamps are stored as fixed-width RFC 3339 text (text order is time order),
//! dates as `YYYY-MM-DD`, JSON/RECORD/REPEATED as JSON text, NUMERIC as decimal text.
//! The full table definition is kept in `_table_defs` inside each dataset file.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{
    types::{Value as SqlValue, ValueRef},
    Connection, OpenFlags, TransactionBehavior,
};

use super::{
    check_column_name, check_name, check_partition_load, qualify_tables, FieldMode, FieldSchema, FieldType, Params,
    PartitionKey, ReplaceOutcome, Row, Statement, TableDef, Value, Warehouse, WarehouseError,
};

const DEFS_TABLE: &str = "_table_defs";

/// SQLite-backed [`Warehouse`].
pub struct EmbeddedWarehouse {
    root: PathBuf,
    busy_timeout: Duration,
    connections: Mutex<HashMap<String, Arc<DatasetConnection>>>,
}

struct DatasetConnection {
    inode: u64,
    conn: Mutex<Connection>,
}

impl EmbeddedWarehouse {
    /// Opens (creating if needed) the warehouse directory `{data_dir}/warehouse`.
    pub fn open(data_dir: &Path) -> Result<Self, WarehouseError> {
        let root = data_dir.join("warehouse");
        std::fs::create_dir_all(&root)
            .map_err(|e| WarehouseError::Backend(format!("cannot create {}: {e}", root.display())))?;
        Ok(EmbeddedWarehouse {
            root,
            busy_timeout: Duration::from_secs(15),
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// Path of a dataset's database file.
    pub fn dataset_path(&self, dataset: &str) -> PathBuf {
        self.root.join(format!("{dataset}.sqlite3"))
    }

    fn cached(&self, dataset: &str) -> Result<Option<Arc<DatasetConnection>>, WarehouseError> {
        let map = self.connections.lock().map_err(|_| poisoned())?;
        Ok(map.get(dataset).cloned())
    }

    /// The open connection of a dataset, reopened when the file was deleted or replaced by
    /// another process. Fails with `DatasetNotFound` when the file does not exist.
    fn connection(&self, dataset: &str) -> Result<Arc<DatasetConnection>, WarehouseError> {
        check_name(dataset)?;
        let path = self.dataset_path(dataset);
        let inode = match std::fs::metadata(&path) {
            Ok(m) => m.ino(),
            Err(_) => {
                self.forget(dataset)?;
                return Err(WarehouseError::DatasetNotFound(dataset.to_string()));
            }
        };
        if let Some(c) = self.cached(dataset)? {
            if c.inode == inode {
                return Ok(c);
            }
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map_err)?;
        conn.busy_timeout(self.busy_timeout).map_err(map_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(map_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(map_err)?;
        conn.create_aggregate_function(
            "decimal_sum",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8 | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            DecimalSum,
        )
        .map_err(map_err)?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {DEFS_TABLE} (table_name TEXT PRIMARY KEY, fields TEXT NOT NULL, \
             partition_field TEXT, clustering TEXT NOT NULL, description TEXT)"
        ))
        .map_err(map_err)?;
        let entry = Arc::new(DatasetConnection {
            inode,
            conn: Mutex::new(conn),
        });
        self.connections
            .lock()
            .map_err(|_| poisoned())?
            .insert(dataset.to_string(), entry.clone());
        Ok(entry)
    }

    fn forget(&self, dataset: &str) -> Result<(), WarehouseError> {
        self.connections.lock().map_err(|_| poisoned())?.remove(dataset);
        Ok(())
    }

    /// Runs `f` with the dataset's connection on the blocking pool.
    async fn with_conn<T, F>(&self, dataset: &str, f: F) -> Result<T, WarehouseError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, WarehouseError> + Send + 'static,
    {
        let entry = self.connection(dataset)?;
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = entry.conn.lock().map_err(|_| poisoned())?;
            f(&mut conn)
        })
        .await
        .map_err(|e| WarehouseError::Backend(format!("warehouse task failed: {e}")))?;
        // Name the dataset in a missing-table error, and report a file deleted while in use
        // (a dataset dropped by another request) as the missing dataset it now is.
        result.map_err(|e| match e {
            WarehouseError::TableNotFound { dataset: d, table } if d.is_empty() => WarehouseError::TableNotFound {
                dataset: dataset.to_string(),
                table,
            },
            WarehouseError::Query(_) if !self.dataset_path(dataset).exists() => {
                let _ = self.forget(dataset);
                WarehouseError::DatasetNotFound(dataset.to_string())
            }
            other => other,
        })
    }
}

/// `decimal_sum(x)`: the exact sum of NUMERIC values (stored as decimal text), NULLs skipped,
/// NULL when there is nothing to add — what BigQuery's `SUM` over NUMERIC gives.
struct DecimalSum;

impl rusqlite::functions::Aggregate<Option<rust_decimal::Decimal>, Option<String>> for DecimalSum {
    fn init(&self, _: &mut rusqlite::functions::Context<'_>) -> rusqlite::Result<Option<rust_decimal::Decimal>> {
        Ok(None)
    }

    fn step(
        &self,
        ctx: &mut rusqlite::functions::Context<'_>,
        acc: &mut Option<rust_decimal::Decimal>,
    ) -> rusqlite::Result<()> {
        let bad = |why: &str| rusqlite::Error::UserFunctionError(format!("decimal_sum: {why}").into());
        let v = match ctx.get_raw(0) {
            ValueRef::Null => return Ok(()),
            ValueRef::Integer(i) => rust_decimal::Decimal::from(i),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse::<rust_decimal::Decimal>().ok())
                .ok_or_else(|| bad("not a decimal"))?,
            ValueRef::Real(_) | ValueRef::Blob(_) => return Err(bad("not a NUMERIC value")),
        };
        *acc = Some(
            acc.unwrap_or(rust_decimal::Decimal::ZERO)
                .checked_add(v)
                .ok_or_else(|| bad("overflow"))?,
        );
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut rusqlite::functions::Context<'_>,
        acc: Option<Option<rust_decimal::Decimal>>,
    ) -> rusqlite::Result<Option<String>> {
        Ok(acc.flatten().map(|d| d.normalize().to_string()))
    }
}

fn poisoned() -> WarehouseError {
    WarehouseError::Backend("a warehouse connection lock was poisoned by a panic".to_string())
}

#[async_trait]
impl Warehouse for EmbeddedWarehouse {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), WarehouseError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&root)
                .map_err(|e| WarehouseError::Unavailable(format!("{}: {e}", root.display())))?;
            if !meta.is_dir() || meta.permissions().readonly() {
                return Err(WarehouseError::Unavailable(format!(
                    "{} is not a writable directory",
                    root.display()
                )));
            }
            let conn = Connection::open_in_memory().map_err(map_err)?;
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(map_err)?;
            Ok(())
        })
        .await
        .map_err(|e| WarehouseError::Backend(format!("warehouse task failed: {e}")))?
    }

    async fn create_dataset(&self, dataset: &str, _location: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        let path = self.dataset_path(dataset);
        // create_new is atomic: of two processes creating the same dataset, exactly one wins.
        let created = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                return Err(WarehouseError::Backend(format!(
                    "cannot create {}: {e}",
                    path.display()
                )))
            }
        };
        self.connection(dataset)?;
        Ok(created)
    }

    async fn dataset_exists(&self, dataset: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        Ok(self.dataset_path(dataset).exists())
    }

    async fn delete_dataset(&self, dataset: &str) -> Result<bool, WarehouseError> {
        check_name(dataset)?;
        self.forget(dataset)?;
        let path = self.dataset_path(dataset);
        let existed = path.exists();
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(WarehouseError::Backend(format!("cannot remove {}: {e}", p.display()))),
            }
        }
        Ok(existed)
    }

    async fn create_table(&self, dataset: &str, table: &TableDef) -> Result<bool, WarehouseError> {
        table.validate()?;
        let table = table.clone();
        self.with_conn(dataset, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            if sqlite_table_exists(&tx, &table.name)? {
                return Ok(false);
            }
            tx.execute_batch(&create_table_sql(&table)).map_err(map_err)?;
            let fields = serde_json::to_string(&table.fields).map_err(|e| WarehouseError::Schema(e.to_string()))?;
            let clustering =
                serde_json::to_string(&table.clustering).map_err(|e| WarehouseError::Schema(e.to_string()))?;
            tx.execute(
                &format!("INSERT OR REPLACE INTO {DEFS_TABLE} VALUES (?1, ?2, ?3, ?4, ?5)"),
                rusqlite::params![table.name, fields, table.partition_field, clustering, table.description],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(true)
        })
        .await
    }

    async fn table_exists(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError> {
        check_name(table)?;
        let table = table.to_string();
        match self
            .with_conn(dataset, move |conn| sqlite_table_exists(conn, &table))
            .await
        {
            Err(WarehouseError::DatasetNotFound(_)) => Ok(false),
            other => other,
        }
    }

    async fn drop_table(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError> {
        check_name(table)?;
        let table = table.to_string();
        self.with_conn(dataset, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let existed = sqlite_table_exists(&tx, &table)?;
            tx.execute_batch(&format!("DROP TABLE IF EXISTS \"{table}\""))
                .map_err(map_err)?;
            tx.execute(&format!("DELETE FROM {DEFS_TABLE} WHERE table_name = ?1"), [&table])
                .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(existed)
        })
        .await
    }

    async fn table_schema(&self, dataset: &str, table: &str) -> Result<Vec<FieldSchema>, WarehouseError> {
        check_name(table)?;
        let (dataset_name, table) = (dataset.to_string(), table.to_string());
        self.with_conn(dataset, move |conn| Ok(load_def(conn, &dataset_name, &table)?.fields))
            .await
    }

    async fn add_columns(&self, dataset: &str, table: &str, columns: &[FieldSchema]) -> Result<(), WarehouseError> {
        check_name(table)?;
        for c in columns {
            check_column_name(&c.name)?;
            if c.mode == FieldMode::Required {
                return Err(WarehouseError::Schema(format!(
                    "column {} cannot be added as REQUIRED to an existing table",
                    c.name
                )));
            }
        }
        let (dataset_name, table, columns) = (dataset.to_string(), table.to_string(), columns.to_vec());
        self.with_conn(dataset, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut def = load_def(&tx, &dataset_name, &table)?;
            for c in &columns {
                if def.fields.iter().any(|f| f.name == c.name) {
                    return Err(WarehouseError::Schema(format!(
                        "table {table} already has a column {}",
                        c.name
                    )));
                }
                tx.execute_batch(&format!(
                    "ALTER TABLE \"{table}\" ADD COLUMN \"{}\" {}",
                    c.name,
                    column_decl(c)
                ))
                .map_err(map_err)?;
                def.fields.push(c.clone());
            }
            let fields = serde_json::to_string(&def.fields).map_err(|e| WarehouseError::Schema(e.to_string()))?;
            tx.execute(
                &format!("UPDATE {DEFS_TABLE} SET fields = ?1 WHERE table_name = ?2"),
                rusqlite::params![fields, table],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn insert_rows(&self, dataset: &str, table: &str, rows: &[Row]) -> Result<u64, WarehouseError> {
        self.insert_batch(dataset, table, rows.to_vec()).await
    }

    async fn insert_batch(&self, dataset: &str, table: &str, rows: Vec<Row>) -> Result<u64, WarehouseError> {
        check_name(table)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (dataset_name, table) = (dataset.to_string(), table.to_string());
        self.with_conn(dataset, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let def = load_def(&tx, &dataset_name, &table)?;
            let n = insert_all(&tx, &def, &rows)?;
            tx.commit().map_err(map_err)?;
            Ok(n)
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
        let (dataset_name, table, key, rows) = (dataset.to_string(), table.to_string(), key.clone(), rows.to_vec());
        self.with_conn(dataset, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let def = load_def(&tx, &dataset_name, &table)?;
            def.check_partition_columns(&key)?;
            let deleted = delete_day(&tx, &table, &key)?;
            let inserted = insert_all(&tx, &def, &rows)?;
            tx.commit().map_err(map_err)?;
            Ok(ReplaceOutcome { deleted, inserted })
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
        check_name(table)?;
        let (dataset_name, staging, table, key) =
            (dataset.to_string(), staging.to_string(), table.to_string(), key.clone());
        self.with_conn(dataset, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let def = load_def(&tx, &dataset_name, &table)?;
            def.check_partition_columns(&key)?;
            load_def(&tx, &dataset_name, &staging)?.check_partition_columns(&key)?;
            let deleted = delete_day(&tx, &table, &key)?;
            let columns: Vec<String> = def.fields.iter().map(|f| format!("\"{}\"", f.name)).collect();
            let columns = columns.join(", ");
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO \"{table}\" ({columns}) SELECT {columns} FROM \"{staging}\" \
                         WHERE \"{}\" = ?1 AND substr(\"{}\", 1, 10) = ?2",
                        key.org_column, key.date_column
                    ),
                    rusqlite::params![key.org_slug, key.date.to_string()],
                )
                .map_err(map_err)? as u64;
            tx.commit().map_err(map_err)?;
            Ok(ReplaceOutcome { deleted, inserted })
        })
        .await
    }

    fn exact_sum(&self, expr: &str) -> String {
        format!("decimal_sum({expr})")
    }

    async fn query(&self, dataset: &str, sql: &str, params: &Params) -> Result<Vec<Row>, WarehouseError> {
        let sql = qualify_tables(sql, |t| format!("\"{t}\""))?;
        let params = params.clone();
        self.with_conn(dataset, move |conn| run_query(conn, &sql, &params))
            .await
    }

    async fn execute(&self, dataset: &str, sql: &str, params: &Params) -> Result<u64, WarehouseError> {
        let sql = qualify_tables(sql, |t| format!("\"{t}\""))?;
        let params = params.clone();
        self.with_conn(dataset, move |conn| run_execute(conn, &sql, &params))
            .await
    }

    async fn execute_atomic(&self, dataset: &str, statements: &[Statement]) -> Result<Vec<u64>, WarehouseError> {
        let mut prepared = Vec::with_capacity(statements.len());
        for s in statements {
            prepared.push((
                qualify_tables(&s.sql, |t| format!("\"{t}\""))?,
                s.params.clone(),
                s.expect_rows,
            ));
        }
        self.with_conn(dataset, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut counts = Vec::with_capacity(prepared.len());
            for (index, (sql, params, expect)) in prepared.iter().enumerate() {
                let n = run_execute(&tx, sql, params)?;
                if let Some(expected) = expect {
                    if n != *expected {
                        // Dropping `tx` rolls everything back.
                        return Err(WarehouseError::Conflict {
                            index,
                            expected: *expected,
                            actual: n,
                        });
                    }
                }
                counts.push(n);
            }
            tx.commit().map_err(map_err)?;
            Ok(counts)
        })
        .await
    }
}

fn sqlite_table_exists(conn: &Connection, table: &str) -> Result<bool, WarehouseError> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(map_err)
}

fn load_def(conn: &Connection, dataset: &str, table: &str) -> Result<TableDef, WarehouseError> {
    let found = conn
        .query_row(
            &format!("SELECT fields, partition_field, clustering, description FROM {DEFS_TABLE} WHERE table_name = ?1"),
            [table],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
        )
        .map(Some)
        .or_else(|e| {
            if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
                Ok(None)
            } else {
                Err(e)
            }
        })
        .map_err(map_err)?;
    let Some((fields, partition_field, clustering, description)) = found else {
        return Err(WarehouseError::TableNotFound {
            dataset: dataset.to_string(),
            table: table.to_string(),
        });
    };
    Ok(TableDef {
        name: table.to_string(),
        description,
        fields: serde_json::from_str(&fields).map_err(|e| WarehouseError::Schema(e.to_string()))?,
        partition_field,
        clustering: serde_json::from_str(&clustering).map_err(|e| WarehouseError::Schema(e.to_string()))?,
        lookup_keys: Vec::new(),
    })
}

/// Declared type of a column: BigQuery type first (read back when decoding), affinity second.
fn column_decl(field: &FieldSchema) -> String {
    if field.mode == FieldMode::Repeated {
        return "REPEATED TEXT".to_string();
    }
    match field.field_type {
        FieldType::String => "STRING TEXT",
        FieldType::Integer => "INT64 INTEGER",
        FieldType::Float => "FLOAT64 REAL",
        FieldType::Numeric => "NUMERIC TEXT",
        FieldType::Bignumeric => "BIGNUMERIC TEXT",
        FieldType::Boolean => "BOOL INTEGER",
        FieldType::Bytes => "BYTES BLOB",
        FieldType::Date => "DATE TEXT",
        FieldType::Timestamp | FieldType::Datetime => "TIMESTAMP TEXT",
        FieldType::Json => "JSON TEXT",
        FieldType::Record => "RECORD TEXT",
    }
    .to_string()
}

fn create_table_sql(table: &TableDef) -> String {
    let columns: Vec<String> = table
        .fields
        .iter()
        .map(|f| {
            let not_null = if f.mode == FieldMode::Required { " NOT NULL" } else { "" };
            format!("\"{}\" {}{not_null}", f.name, column_decl(f))
        })
        .collect();
    let mut sql = format!("CREATE TABLE \"{}\" ({});", table.name, columns.join(", "));
    // Clustering and partitioning become an index: the same columns make lookups cheap.
    let mut index_cols: Vec<&str> = table.clustering.iter().map(String::as_str).collect();
    if let Some(p) = &table.partition_field {
        if !index_cols.contains(&p.as_str()) {
            index_cols.push(p);
        }
    }
    if !index_cols.is_empty() {
        let cols: Vec<String> = index_cols.iter().map(|c| format!("\"{c}\"")).collect();
        sql.push_str(&format!(
            "CREATE INDEX \"idx_{}_cluster\" ON \"{}\" ({});",
            table.name,
            table.name,
            cols.join(", ")
        ));
    }
    for key in &table.lookup_keys {
        sql.push_str(&format!(
            "CREATE INDEX \"idx_{}_{key}\" ON \"{}\" (\"{key}\");",
            table.name, table.name
        ));
    }
    sql
}

/// Deletes one org's rows of one day (DATE text or TIMESTAMP text: the first 10 characters).
fn delete_day(conn: &Connection, table: &str, key: &PartitionKey) -> Result<u64, WarehouseError> {
    conn.execute(
        &format!(
            "DELETE FROM \"{table}\" WHERE \"{}\" = ?1 AND substr(\"{}\", 1, 10) = ?2",
            key.org_column, key.date_column
        ),
        rusqlite::params![key.org_slug, key.date.to_string()],
    )
    .map(|n| n as u64)
    .map_err(map_err)
}

fn insert_all(conn: &Connection, def: &TableDef, rows: &[Row]) -> Result<u64, WarehouseError> {
    // Every row is checked before any is written.
    let mut plan: Option<super::schema::ColumnPlan<'_>> = None;
    for row in rows {
        if !plan.as_ref().is_some_and(|p| p.matches(row)) {
            plan = Some(def.plan_columns(row.columns())?);
        }
        if let Some(p) = &plan {
            p.check(row)?;
        }
    }
    let mut n = 0u64;
    // Rows of one load usually share their columns: the statement is built once per shape.
    let mut current: Option<(Vec<&String>, rusqlite::CachedStatement<'_>)> = None;
    for row in rows {
        let same = current
            .as_ref()
            .is_some_and(|(cols, _)| cols.len() == row.0.len() && cols.iter().copied().eq(row.columns()));
        if !same {
            let columns: Vec<&String> = row.columns().collect();
            let names: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
            let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO \"{}\" ({}) VALUES ({})",
                def.name,
                names.join(", "),
                marks.join(", ")
            );
            current = Some((columns, conn.prepare_cached(&sql).map_err(map_err)?));
        }
        if let Some((_, stmt)) = current.as_mut() {
            for (i, value) in row.0.values().enumerate() {
                bind_value(stmt, i + 1, value)?;
            }
            stmt.raw_execute().map_err(map_err)?;
        }
        n += 1;
    }
    Ok(n)
}

/// Binds a value without copying text or blobs.
fn bind_value(stmt: &mut rusqlite::Statement<'_>, i: usize, value: &Value) -> Result<(), WarehouseError> {
    let r = match value {
        Value::String(s) => stmt.raw_bind_parameter(i, s.as_str()),
        Value::Bytes(b) => stmt.raw_bind_parameter(i, b.as_slice()),
        other => stmt.raw_bind_parameter(i, to_sql(other)),
    };
    r.map_err(map_err)
}

fn bind_params(stmt: &mut rusqlite::Statement<'_>, params: &Params) -> Result<(), WarehouseError> {
    for i in 1..=stmt.parameter_count() {
        let Some(name) = stmt.parameter_name(i).map(str::to_string) else {
            return Err(WarehouseError::Query(
                "positional parameters are not supported; use @name".to_string(),
            ));
        };
        let key = name.trim_start_matches(['@', ':', '$']);
        let value = params
            .0
            .get(key)
            .ok_or_else(|| WarehouseError::MissingParam(key.to_string()))?;
        stmt.raw_bind_parameter(i, to_sql(value)).map_err(map_err)?;
    }
    Ok(())
}

fn run_execute(conn: &Connection, sql: &str, params: &Params) -> Result<u64, WarehouseError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    bind_params(&mut stmt, params)?;
    let n = stmt.raw_execute().map_err(map_err)?;
    Ok(n as u64)
}

fn run_query(conn: &Connection, sql: &str, params: &Params) -> Result<Vec<Row>, WarehouseError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    bind_params(&mut stmt, params)?;
    let columns: Vec<(String, Option<String>)> = stmt
        .columns()
        .map(|c| (c.name().to_string(), c.decl_type().map(str::to_string)))
        .collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let mut row = Row::new();
        for (i, (name, decl)) in columns.iter().enumerate() {
            let raw = r.get_ref(i).map_err(map_err)?;
            row.0.insert(name.clone(), from_sql(raw, decl.as_deref())?);
        }
        out.push(row);
    }
    Ok(out)
}

fn to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int(i) => SqlValue::Integer(*i),
        Value::Float(f) => SqlValue::Real(*f),
        Value::Numeric(d) => SqlValue::Text(d.to_string()),
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Bytes(b) => SqlValue::Blob(b.clone()),
        Value::Date(d) => SqlValue::Text(d.to_string()),
        Value::Timestamp(t) => SqlValue::Text(Value::timestamp_text(t)),
        Value::Json(j) => SqlValue::Text(j.to_string()),
    }
}

fn from_sql(raw: ValueRef<'_>, decl: Option<&str>) -> Result<Value, WarehouseError> {
    let bad = |what: &str| WarehouseError::Backend(format!("stored value is not a valid {what}"));
    let text = |raw: ValueRef<'_>| -> Option<String> {
        match raw {
            ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Integer(i) => Some(i.to_string()),
            ValueRef::Real(f) => Some(f.to_string()),
            _ => None,
        }
    };
    if matches!(raw, ValueRef::Null) {
        return Ok(Value::Null);
    }
    let kind = decl.and_then(|d| d.split_whitespace().next()).unwrap_or("");
    Ok(match kind {
        "BOOL" => match raw {
            ValueRef::Integer(i) => Value::Bool(i != 0),
            _ => return Err(bad("BOOL")),
        },
        "INT64" => match raw {
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Float(f),
            _ => return Err(bad("INT64")),
        },
        "FLOAT64" => match raw {
            ValueRef::Integer(i) => Value::Float(i as f64),
            ValueRef::Real(f) => Value::Float(f),
            _ => return Err(bad("FLOAT64")),
        },
        "NUMERIC" | "BIGNUMERIC" => {
            Value::Numeric(text(raw).and_then(|t| t.parse().ok()).ok_or_else(|| bad("NUMERIC"))?)
        }
        "DATE" => Value::Date(
            text(raw)
                .and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok())
                .ok_or_else(|| bad("DATE"))?,
        ),
        "TIMESTAMP" => Value::Timestamp(
            text(raw)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| bad("TIMESTAMP"))?,
        ),
        "JSON" | "RECORD" | "REPEATED" => Value::Json(
            text(raw)
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| bad("JSON"))?,
        ),
        "BYTES" => match raw {
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            _ => return Err(bad("BYTES")),
        },
        "STRING" => Value::String(text(raw).ok_or_else(|| bad("STRING"))?),
        // Expressions (COUNT, SUM, literals) have no declared type: use the storage class.
        _ => match raw {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Float(f),
            ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        },
    })
}

fn map_err(e: rusqlite::Error) -> WarehouseError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        let message = msg.clone().unwrap_or_else(|| f.to_string());
        return match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => WarehouseError::Unavailable(message),
            ErrorCode::ConstraintViolation => WarehouseError::InvalidRow {
                table: String::new(),
                reason: message,
            },
            _ if message.starts_with("no such table: ") => WarehouseError::TableNotFound {
                dataset: String::new(),
                table: message
                    .trim_start_matches("no such table: ")
                    .trim_matches('"')
                    .to_string(),
            },
            _ => WarehouseError::Query(message),
        };
    }
    WarehouseError::Query(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::conformance;

    fn open() -> (tempfile::TempDir, Arc<dyn Warehouse>) {
        let dir = tempfile::tempdir().unwrap();
        let wh = EmbeddedWarehouse::open(dir.path()).unwrap();
        (dir, Arc::new(wh))
    }

    #[tokio::test]
    async fn conformance_suite() {
        let (_dir, wh) = open();
        conformance::run_all(wh, "conf").await;
    }

    #[tokio::test]
    async fn two_handles_share_one_file_like_two_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a: Arc<dyn Warehouse> = Arc::new(EmbeddedWarehouse::open(dir.path()).unwrap());
        let b: Arc<dyn Warehouse> = Arc::new(EmbeddedWarehouse::open(dir.path()).unwrap());
        conformance::shared_between_handles(a, b, "shared").await;
    }

    #[tokio::test]
    async fn a_dataset_deleted_elsewhere_is_not_resurrected() {
        let dir = tempfile::tempdir().unwrap();
        let a = EmbeddedWarehouse::open(dir.path()).unwrap();
        let b = EmbeddedWarehouse::open(dir.path()).unwrap();
        a.create_dataset("gone", "US").await.unwrap();
        b.dataset_exists("gone").await.unwrap();
        a.delete_dataset("gone").await.unwrap();
        let err = b.query("gone", "SELECT 1 AS one", &Params::new()).await.unwrap_err();
        assert!(matches!(err, WarehouseError::DatasetNotFound(_)), "{err:?}");
    }
}
