//! Streaming day loads: rows arrive page by page, are written in batches of [`BATCH_ROWS`] to
//! a staging table of their own (`{table}__stage_{yyyymmdd}` in the org's dataset: same
//! columns, no index), and one atomic swap at the end replaces the org's day in the target
//! table. Memory stays bounded by one batch whatever the day's size; readers see the old day
//! until the swap and the new day after it. A crash or failure leaves the target untouched; the
//! staging table is dropped after the swap, and a leftover one is dropped by the next load of
//! that day. One batch is written while the next is being built (at most one in flight), so
//! fetching and parsing overlap with the warehouse writes. (Two loads of the same table and day at once would share a staging table; run
//! admission refuses a duplicate of a pending or running run.)

use chrono::NaiveDate;
use cloudact_core::warehouse::{Params, PartitionKey, ReplaceOutcome, Row, Statement, TableDef};

use crate::{context::StepContext, registry::ProcessorError};

/// Rows per staged write.
pub const BATCH_ROWS: usize = 1000;

/// The staging table of `table` for one day.
pub fn staging_name(table: &str, date: NaiveDate) -> String {
    format!("{table}__stage_{}", date.format("%Y%m%d"))
}

/// Creates `name` afresh (dropping a leftover) with `def`'s columns and no index.
async fn fresh_staging(
    ctx: &StepContext,
    dataset: &str,
    def: &TableDef,
    name: &str,
    description: String,
) -> Result<(), ProcessorError> {
    let staging = TableDef {
        name: name.to_string(),
        description: Some(description),
        fields: def.fields.clone(),
        partition_field: None,
        clustering: Vec::new(),
        lookup_keys: Vec::new(),
    };
    let wh = ctx.warehouse();
    wh.drop_table(dataset, name).await?;
    wh.create_table(dataset, &staging).await?;
    Ok(())
}

/// One org-day load in progress.
pub struct DayLoad<'a> {
    ctx: &'a StepContext,
    dataset: String,
    table: String,
    staging: String,
    key: PartitionKey,
    buffer: Vec<Row>,
    staged: u64,
    in_flight: Option<tokio::task::JoinHandle<Result<u64, cloudact_core::warehouse::WarehouseError>>>,
}

impl<'a> DayLoad<'a> {
    /// Starts a load of `def`'s table for the run's org on `date` (partition column
    /// `date_column`), with a fresh staging table.
    pub async fn begin(
        ctx: &'a StepContext,
        dataset: &str,
        def: &TableDef,
        date_column: &str,
        date: NaiveDate,
    ) -> Result<DayLoad<'a>, ProcessorError> {
        let org_slug = ctx.require_org()?;
        let staging = staging_name(&def.name, date);
        fresh_staging(
            ctx,
            dataset,
            def,
            &staging,
            format!("rows of {} for {date} being loaded", def.name),
        )
        .await?;
        Ok(DayLoad {
            ctx,
            dataset: dataset.to_string(),
            table: def.name.clone(),
            staging,
            key: PartitionKey {
                org_column: "org_slug".into(),
                org_slug,
                date_column: date_column.into(),
                date,
            },
            buffer: Vec::with_capacity(BATCH_ROWS),
            staged: 0,
            in_flight: None,
        })
    }

    /// Adds a row, writing a batch when one is full. Rows must belong to the load's org and day.
    pub async fn push(&mut self, row: Row) -> Result<(), ProcessorError> {
        self.buffer.push(row);
        if self.buffer.len() >= BATCH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Starts writing the buffered rows to staging (after the previous write finished).
    pub async fn flush(&mut self) -> Result<(), ProcessorError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        cloudact_core::warehouse::check_partition_load(&self.table, &self.key, &self.buffer)?;
        self.wait().await?;
        let rows = std::mem::replace(&mut self.buffer, Vec::with_capacity(BATCH_ROWS));
        let (wh, dataset, staging) = (self.ctx.warehouse().clone(), self.dataset.clone(), self.staging.clone());
        self.in_flight = Some(tokio::spawn(
            async move { wh.insert_batch(&dataset, &staging, rows).await },
        ));
        Ok(())
    }

    /// Waits for the write in flight.
    async fn wait(&mut self) -> Result<(), ProcessorError> {
        if let Some(handle) = self.in_flight.take() {
            let n = handle
                .await
                .map_err(|e| ProcessorError::Failed(format!("staged write task failed: {e}")))??;
            self.staged += n;
        }
        Ok(())
    }

    /// Rows written to staging so far.
    pub fn staged(&self) -> u64 {
        self.staged
    }

    /// Flushes, swaps the staged day into the target table in one transaction, and drops the
    /// staging table.
    pub async fn commit(mut self) -> Result<ReplaceOutcome, ProcessorError> {
        self.flush().await?;
        self.wait().await?;
        let wh = self.ctx.warehouse();
        let outcome = wh
            .swap_partition(&self.dataset, &self.staging, &self.table, &self.key)
            .await?;
        self.ctx.add_rows(outcome.inserted);
        metrics::counter!("pipeline_rows_loaded_total", "table" => self.table.clone()).increment(outcome.inserted);
        if let Err(e) = wh.drop_table(&self.dataset, &self.staging).await {
            tracing::warn!(table = %self.staging, error = %e, "staging table not dropped; the next load of the day drops it");
        }
        Ok(outcome)
    }
}

impl Drop for DayLoad<'_> {
    fn drop(&mut self) {
        // An abandoned load (error, cancel) stops its write; the staging table stays until the
        // next load of the day drops it.
        if let Some(handle) = self.in_flight.take() {
            handle.abort();
        }
    }
}

/// Upserts by key, batch by batch: each batch of [`BATCH_ROWS`] (the last row of a key wins)
/// goes to a staging table and one transaction deletes the target's rows with the batch's keys
/// and inserts the batch. Progress is durable batch by batch, and a rerun never duplicates.
pub struct MergeLoad<'a> {
    ctx: &'a StepContext,
    dataset: String,
    table: String,
    staging: String,
    columns: String,
    key_column: String,
    org_slug: String,
    buffer: Vec<Row>,
    merged: u64,
}

impl<'a> MergeLoad<'a> {
    /// Starts a merge into `def`'s table keyed by `key_column` (rows of the run's org).
    pub async fn begin(
        ctx: &'a StepContext,
        dataset: &str,
        def: &TableDef,
        key_column: &str,
    ) -> Result<MergeLoad<'a>, ProcessorError> {
        let org_slug = ctx.require_org()?;
        let run: String = ctx
            .run_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let staging = format!("{}__merge_{run}", def.name);
        fresh_staging(
            ctx,
            dataset,
            def,
            &staging,
            format!("one batch being merged into {}", def.name),
        )
        .await?;
        let columns: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
        Ok(MergeLoad {
            ctx,
            dataset: dataset.to_string(),
            table: def.name.clone(),
            staging,
            columns: columns.join(", "),
            key_column: key_column.to_string(),
            org_slug,
            buffer: Vec::with_capacity(BATCH_ROWS),
            merged: 0,
        })
    }

    pub async fn push(&mut self, row: Row) -> Result<(), ProcessorError> {
        self.buffer.push(row);
        if self.buffer.len() >= BATCH_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Merges the buffered rows.
    pub async fn flush(&mut self) -> Result<(), ProcessorError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Within a batch the last row of a key wins.
        let mut seen = std::collections::HashSet::new();
        let mut batch: Vec<Row> = std::mem::take(&mut self.buffer)
            .into_iter()
            .rev()
            .filter(|r| seen.insert(r.string(&self.key_column)))
            .collect();
        if batch.iter().any(|r| r.string(&self.key_column).is_none()) {
            return Err(ProcessorError::Failed(format!(
                "a merged row has no {}",
                self.key_column
            )));
        }
        batch.reverse();
        if batch
            .iter()
            .any(|r| r.string("org_slug").as_deref() != Some(self.org_slug.as_str()))
        {
            return Err(ProcessorError::Failed("a merged row belongs to another org".into()));
        }
        let wh = self.ctx.warehouse();
        wh.insert_batch(&self.dataset, &self.staging, batch).await?;
        let org = Params::new().with("org", self.org_slug.as_str());
        let (t, s, k, cols) = (&self.table, &self.staging, &self.key_column, &self.columns);
        let counts = wh
            .execute_atomic(
                &self.dataset,
                &[
                    Statement::new(
                        format!(
                            "DELETE FROM {{{{{t}}}}} WHERE org_slug = @org AND {k} IN (SELECT {k} FROM {{{{{s}}}}})"
                        ),
                        org.clone(),
                    ),
                    Statement::new(
                        format!(
                            "INSERT INTO {{{{{t}}}}} ({cols}) SELECT {cols} FROM {{{{{s}}}}} WHERE org_slug = @org"
                        ),
                        org.clone(),
                    ),
                    Statement::new(format!("DELETE FROM {{{{{s}}}}} WHERE org_slug = @org"), org),
                ],
            )
            .await?;
        let inserted = counts.get(1).copied().unwrap_or(0);
        self.merged += inserted;
        self.ctx.add_rows(inserted);
        Ok(())
    }

    /// Rows merged so far.
    pub fn merged(&self) -> u64 {
        self.merged
    }

    /// Merges what is buffered, drops the staging table, and returns the rows merged.
    pub async fn finish(mut self) -> Result<u64, ProcessorError> {
        let flushed = self.flush().await;
        if let Err(e) = self.ctx.warehouse().drop_table(&self.dataset, &self.staging).await {
            tracing::warn!(table = %self.staging, error = %e, "merge staging table not dropped");
        }
        flushed.map(|()| self.merged)
    }
}
