//! Every processor type, and the one function that registers them all.

pub mod anthropic;
pub mod data_quality;
pub mod deepseek;
pub mod example;
pub mod gcp;
pub mod generic;
pub mod notify_systems;
pub mod openai;
pub mod pricing;
pub mod setup;

use crate::registry::Registry;

/// Registers every processor. Adding a processor: a module, one line here, one YAML spec.
pub fn register_all(registry: &mut Registry) {
    registry.register::<setup::bootstrap::BootstrapProcessor>();
    registry.register::<setup::dryrun::DryrunProcessor>();
    registry.register::<setup::onboarding::OnboardingProcessor>();
    registry.register::<example::synthetic_usage::SyntheticUsageProcessor>();
    registry.register::<example::price_usage::PriceUsageProcessor>();
    registry.register::<example::noop::NoopProcessor>();
    registry.register::<openai::usage::UsageProcessor>();
    registry.register::<openai::cost::CostProcessor>();
    registry.register::<openai::costs_api::CostsApiProcessor>();
    registry.register::<anthropic::usage::UsageProcessor>();
    registry.register::<anthropic::cost::CostProcessor>();
    registry.register::<anthropic::costs_api::CostsApiProcessor>();
    registry.register::<deepseek::balance::BalanceProcessor>();
    registry.register::<gcp::bq_etl::BillingEtl>();
    registry.register::<generic::api_extractor::ApiExtractor>();
    registry.register::<generic::transformer::Transformer>();
    registry.register::<data_quality::expectations::ExpectationsProcessor>();
    registry.register::<notify_systems::email_notification::EmailNotification>();
    registry.register::<notify_systems::slack_notification::SlackNotification>();
}
