//! Streaming day loads: rows arrive page by page, are written in batches of
//! [`BATCH_ROWS`] to a staging table (`{table}__staging`, same columns), and one atomic swap at
//! the end replaces the org's day in the target table. Memory stays bounded by one batch
//! whatever the day's size; readers see the old day until the swap and the new day after it;
//! a crash or failure leaves the target untouched and the staged rows are cleared by the next
//! load of the same org and day.

use chrono::NaiveDate;
use cloudact_core::warehouse::{PartitionKey, ReplaceOutcome, Row, TableDef};

use crate::{context::StepContext, registry::ProcessorError};

/// Rows per staged write.
pub const BATCH_ROWS: usize = 1000;

/// The staging table of `table`.
pub fn staging_name(table: &str) -> String {
    format!("{table}__staging")
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
}

impl<'a> DayLoad<'a> {
    /// Starts a load of `def`'s table for the run's org on `date` (partition column
    /// `date_column`): creates the staging table if needed and clears leftovers of the slice.
    pub async fn begin(
        ctx: &'a StepContext,
        dataset: &str,
        def: &TableDef,
        date_column: &str,
        date: NaiveDate,
    ) -> Result<DayLoad<'a>, ProcessorError> {
        let org_slug = ctx.require_org()?;
        let staging = staging_name(&def.name);
        let mut staging_def = def.clone();
        staging_def.name = staging.clone();
        staging_def.description = Some(format!(
            "rows of {} being loaded; swapped in at the end of a load",
            def.name
        ));
        let wh = ctx.warehouse();
        wh.create_table(dataset, &staging_def).await?;
        let key = PartitionKey {
            org_column: "org_slug".into(),
            org_slug,
            date_column: date_column.into(),
            date,
        };
        wh.delete_partition(dataset, &staging, &key).await?;
        Ok(DayLoad {
            ctx,
            dataset: dataset.to_string(),
            table: def.name.clone(),
            staging,
            key,
            buffer: Vec::with_capacity(BATCH_ROWS),
            staged: 0,
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

    /// Writes the buffered rows to staging.
    pub async fn flush(&mut self) -> Result<(), ProcessorError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        cloudact_core::warehouse::check_partition_load(&self.staging, &self.key, &self.buffer)?;
        let n = self
            .ctx
            .warehouse()
            .insert_rows(&self.dataset, &self.staging, &self.buffer)
            .await?;
        self.staged += n;
        self.buffer.clear();
        Ok(())
    }

    /// Rows written to staging so far (excluding the unflushed buffer).
    pub fn staged(&self) -> u64 {
        self.staged
    }

    /// Flushes and swaps the staged day into the target table in one transaction.
    pub async fn commit(mut self) -> Result<ReplaceOutcome, ProcessorError> {
        self.flush().await?;
        let outcome = self
            .ctx
            .warehouse()
            .swap_partition(&self.dataset, &self.staging, &self.table, &self.key)
            .await?;
        self.ctx.add_rows(outcome.inserted);
        Ok(outcome)
    }
}
