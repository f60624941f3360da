//! Every processor type, and the one function that registers them all.

pub mod anthropic;
pub mod data_quality;
pub mod day;
pub mod deepseek;
pub mod example;
pub mod focus_export;
pub mod gcp;
pub mod generic;
pub mod notify_systems;
pub mod openai;
pub mod pricing;
pub mod setup;
pub mod subscriptions;
pub mod unit_pricing;

use serde::Deserialize;

use crate::registry::Registry;

/// Config of a processor that loads one day into one table created from a schema file under
/// `configs/` (usage, billed cost, balance).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayTableConfig {
    pub dataset: String,
    pub date: String,
    pub table: String,
    pub schema: String,
}

impl DayTableConfig {
    /// The config, once its table name is checked.
    pub fn checked(self) -> Result<Self, String> {
        cloudact_core::warehouse::check_name(&self.table).map_err(|e| e.to_string())?;
        Ok(self)
    }

    /// The day table this config loads, partitioned on `partition`.
    pub fn day_table<'a>(&'a self, partition: &'a str, clustering: &'a [&'a str]) -> day::DayTable<'a> {
        day::DayTable {
            dataset: &self.dataset,
            table: &self.table,
            schema: &self.schema,
            date: &self.date,
            partition,
            clustering,
        }
    }
}

/// Config of a cost processor: one day of a usage table priced with the org's pricing table
/// into a cost table created from a schema file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    pub dataset: String,
    pub date: String,
    pub usage_table: String,
    pub cost_table: String,
    pub schema: String,
    pub pricing_table: String,
}

impl CostConfig {
    /// The config, once its table names are checked.
    pub fn checked(self) -> Result<Self, String> {
        for t in [&self.usage_table, &self.cost_table, &self.pricing_table] {
            cloudact_core::warehouse::check_name(t).map_err(|e| e.to_string())?;
        }
        Ok(self)
    }

    /// The cost table this config replaces one day of (partitioned on `usage_date`).
    pub fn cost_day_table(&self) -> day::DayTable<'_> {
        day::DayTable {
            dataset: &self.dataset,
            table: &self.cost_table,
            schema: &self.schema,
            date: &self.date,
            partition: "usage_date",
            clustering: &["org_slug", "model"],
        }
    }
}

/// Registers every processor. Adding a processor: a module, one line here, one YAML spec.
pub fn register_all(registry: &mut Registry) {
    registry.register::<setup::bootstrap::BootstrapProcessor>();
    registry.register::<setup::dryrun::DryrunProcessor>();
    registry.register::<setup::onboarding::OnboardingProcessor>();
    registry.register::<example::synthetic_usage::SyntheticUsageProcessor>();
    registry.register::<example::price_usage::PriceUsageProcessor>();
    registry.register::<example::noop::NoopProcessor>();
    registry.register::<openai::usage::UsageProcessor>();
    registry.register::<openai::usage::UnitUsageProcessor>();
    registry.register::<openai::unit_cost::UnitCostProcessor>();
    registry.register::<openai::cost::CostProcessor>();
    registry.register::<openai::costs_api::CostsApiProcessor>();
    registry.register::<anthropic::usage::UsageProcessor>();
    registry.register::<anthropic::cost::CostProcessor>();
    registry.register::<anthropic::costs_api::CostsApiProcessor>();
    registry.register::<deepseek::balance::BalanceProcessor>();
    registry.register::<focus_export::FocusExport>();
    registry.register::<subscriptions::SubscriptionsProcessor<subscriptions::OpenAi>>();
    registry.register::<subscriptions::SubscriptionsProcessor<subscriptions::Anthropic>>();
    registry.register::<subscriptions::SubscriptionsProcessor<subscriptions::Gemini>>();
    registry.register::<subscriptions::SubscriptionsProcessor<subscriptions::DeepSeek>>();
    registry.register::<subscriptions::SubscriptionsProcessor<subscriptions::Custom>>();
    registry.register::<gcp::bq_etl::BillingEtl>();
    registry.register::<gcp::api_extractor::GcpApiExtractor>();
    registry.register::<generic::api_extractor::ApiExtractor>();
    registry.register::<generic::transformer::Transformer>();
    registry.register::<data_quality::expectations::ExpectationsProcessor>();
    registry.register::<notify_systems::email_notification::EmailNotification>();
    registry.register::<notify_systems::slack_notification::SlackNotification>();
}
