//! [`Metered`]: a [`Warehouse`] decorator that records every call's latency
//! (`warehouse_operation_duration_seconds`) and failures (`warehouse_errors_total`) by backend
//! and operation through the `metrics` facade. Labels are the backend name and a fixed
//! operation name: never a dataset, table or SQL text.

use std::{future::Future, sync::Arc, time::Instant};

use async_trait::async_trait;

use super::{FieldSchema, Params, PartitionKey, ReplaceOutcome, Row, Statement, TableDef, Warehouse, WarehouseError};

pub struct Metered {
    inner: Arc<dyn Warehouse>,
}

impl Metered {
    pub fn wrap(inner: Arc<dyn Warehouse>) -> Arc<dyn Warehouse> {
        Arc::new(Metered { inner })
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, WarehouseError>>,
    ) -> Result<T, WarehouseError> {
        let started = Instant::now();
        let result = f.await;
        let backend = self.inner.backend_name();
        metrics::histogram!("warehouse_operation_duration_seconds", "backend" => backend, "op" => op)
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("warehouse_errors_total", "backend" => backend, "op" => op).increment(1);
        }
        result
    }
}

#[async_trait]
impl Warehouse for Metered {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    async fn ping(&self) -> Result<(), WarehouseError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn create_dataset(&self, dataset: &str, location: &str) -> Result<bool, WarehouseError> {
        self.timed("create_dataset", self.inner.create_dataset(dataset, location))
            .await
    }

    async fn dataset_exists(&self, dataset: &str) -> Result<bool, WarehouseError> {
        self.timed("dataset_exists", self.inner.dataset_exists(dataset)).await
    }

    async fn delete_dataset(&self, dataset: &str) -> Result<bool, WarehouseError> {
        self.timed("delete_dataset", self.inner.delete_dataset(dataset)).await
    }

    async fn create_table(&self, dataset: &str, table: &TableDef) -> Result<bool, WarehouseError> {
        self.timed("create_table", self.inner.create_table(dataset, table))
            .await
    }

    async fn table_exists(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError> {
        self.timed("table_exists", self.inner.table_exists(dataset, table))
            .await
    }

    async fn drop_table(&self, dataset: &str, table: &str) -> Result<bool, WarehouseError> {
        self.timed("drop_table", self.inner.drop_table(dataset, table)).await
    }

    async fn table_schema(&self, dataset: &str, table: &str) -> Result<Vec<FieldSchema>, WarehouseError> {
        self.timed("table_schema", self.inner.table_schema(dataset, table))
            .await
    }

    async fn add_columns(&self, dataset: &str, table: &str, columns: &[FieldSchema]) -> Result<(), WarehouseError> {
        self.timed("add_columns", self.inner.add_columns(dataset, table, columns))
            .await
    }

    async fn insert_rows(&self, dataset: &str, table: &str, rows: &[Row]) -> Result<u64, WarehouseError> {
        self.timed("insert", self.inner.insert_rows(dataset, table, rows)).await
    }

    async fn insert_batch(&self, dataset: &str, table: &str, rows: Vec<Row>) -> Result<u64, WarehouseError> {
        self.timed("insert", self.inner.insert_batch(dataset, table, rows))
            .await
    }

    async fn replace_partition(
        &self,
        dataset: &str,
        table: &str,
        key: &PartitionKey,
        rows: &[Row],
    ) -> Result<ReplaceOutcome, WarehouseError> {
        self.timed(
            "replace_partition",
            self.inner.replace_partition(dataset, table, key, rows),
        )
        .await
    }

    async fn swap_partition(
        &self,
        dataset: &str,
        staging: &str,
        table: &str,
        key: &PartitionKey,
    ) -> Result<ReplaceOutcome, WarehouseError> {
        self.timed(
            "swap_partition",
            self.inner.swap_partition(dataset, staging, table, key),
        )
        .await
    }

    fn exact_sum(&self, expr: &str) -> String {
        self.inner.exact_sum(expr)
    }

    async fn query(&self, dataset: &str, sql: &str, params: &Params) -> Result<Vec<Row>, WarehouseError> {
        self.timed("query", self.inner.query(dataset, sql, params)).await
    }

    async fn execute(&self, dataset: &str, sql: &str, params: &Params) -> Result<u64, WarehouseError> {
        self.timed("execute", self.inner.execute(dataset, sql, params)).await
    }

    async fn execute_atomic(&self, dataset: &str, statements: &[Statement]) -> Result<Vec<u64>, WarehouseError> {
        self.timed("execute_atomic", self.inner.execute_atomic(dataset, statements))
            .await
    }
}
