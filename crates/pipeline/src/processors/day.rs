//! The preamble every day-loading processor shares, in one place: the org of the run, the
//! `{date}` it loads, its table created (or checked) from the schema file, and, for provider
//! processors, the org's decrypted credential and the provider's base URL. A new provider
//! processor opens a [`ProviderDay`], maps the provider's response to rows and calls
//! [`LoadDay::replace`]; nothing else.

use chrono::NaiveDate;
use cloudact_core::warehouse::{ReplaceOutcome, Row, TableDef};
use secrecy::SecretString;

use crate::{
    context::StepContext,
    load::DayLoad,
    processors::example::{ensure_day_table, parse_day},
    registry::ProcessorError,
};

/// Which table a step loads one day into, and how it is laid out.
#[derive(Debug, Clone, Copy)]
pub struct DayTable<'a> {
    pub dataset: &'a str,
    pub table: &'a str,
    /// Schema file under `configs/`.
    pub schema: &'a str,
    /// The `{date}`-substituted config value.
    pub date: &'a str,
    /// The DAY partition column (also the column a re-run replaces by).
    pub partition: &'a str,
    pub clustering: &'a [&'a str],
}

/// One org's day of one table, ready to be replaced.
#[derive(Debug)]
pub struct LoadDay {
    pub org: String,
    pub day: NaiveDate,
    pub dataset: String,
    pub def: TableDef,
    partition: String,
}

impl LoadDay {
    /// Resolves the org and the day and creates (or checks) the table.
    pub async fn open(ctx: &StepContext, target: DayTable<'_>) -> Result<LoadDay, ProcessorError> {
        let org = ctx.require_org()?;
        let day = parse_day(target.date)?;
        let def = ensure_day_table(
            ctx,
            target.dataset,
            target.table,
            target.schema,
            target.partition,
            target.clustering,
        )
        .await?;
        Ok(LoadDay {
            org,
            day,
            dataset: target.dataset.to_string(),
            def,
            partition: target.partition.to_string(),
        })
    }

    /// The day's first second as a Unix timestamp (the OpenAI API's `start_time`).
    pub fn start_unix(&self) -> i64 {
        self.day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0)
    }

    /// The day after (the exclusive end of a one-day window).
    pub fn next_day(&self) -> NaiveDate {
        self.day.succ_opt().unwrap_or(self.day)
    }

    /// Replaces the org's rows of the day with `rows` in one atomic swap (the idempotent load).
    pub async fn replace(&self, ctx: &StepContext, rows: &[Row]) -> Result<ReplaceOutcome, ProcessorError> {
        ctx.load_day(
            &self.dataset,
            &self.def.name,
            self.org.clone(),
            &self.partition,
            self.day,
            rows,
        )
        .await
    }

    /// A streaming load of the day (rows pushed in batches, swapped in at commit), for days
    /// too large to hold in memory.
    pub async fn stream<'a>(&self, ctx: &'a StepContext) -> Result<DayLoad<'a>, ProcessorError> {
        DayLoad::begin(ctx, &self.dataset, &self.def, &self.partition, self.day).await
    }
}

/// A [`LoadDay`] of a provider processor, with what it calls the provider with.
#[derive(Debug)]
pub struct ProviderDay {
    pub target: LoadDay,
    /// The org's decrypted credential for the provider (never logged: `SecretString`).
    pub key: SecretString,
    /// The provider's base URL from the registry, without a trailing slash.
    pub base: String,
}

impl ProviderDay {
    /// Resolves the org, the day, the table, the credential and the base URL, in that order
    /// (a step without an org or with a bad date fails before any credential is decrypted).
    pub async fn open(ctx: &StepContext, provider: &str, target: DayTable<'_>) -> Result<ProviderDay, ProcessorError> {
        let target = LoadDay::open(ctx, target).await?;
        let key = ctx.credential(provider).await?;
        let base = ctx.provider_base_url(provider)?;
        Ok(ProviderDay { target, key, base })
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl std::ops::Deref for ProviderDay {
    type Target = LoadDay;
    fn deref(&self) -> &LoadDay {
        &self.target
    }
}
