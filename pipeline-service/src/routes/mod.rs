//! The pipeline-service route table (all under `/api/v1`) and its OpenAPI document.

mod costs;
mod integrations;
mod organizations;
mod pipelines;
mod pricing;
mod scheduler;
mod subscriptions;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};
use cloudact_web::{docs, health, layers, AppContext};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "CloudAct Pipeline Service", description = "Pipeline runs, integrations, pricing and cost queries."),
    paths(
        health::health, health::live, health::ready, organizations::whoami,
        pipelines::run_with_domain, pipelines::run_short, pipelines::list_runs, pipelines::get_run,
        pipelines::cancel_run, pipelines::retry_run, pipelines::catalogue,
        integrations::setup, integrations::revalidate, integrations::list, integrations::get_one,
        integrations::update, integrations::remove,
        pricing::list, pricing::get_model, pricing::create, pricing::update, pricing::delete, pricing::reset,
        pricing::import_litellm,
        costs::costs, costs::reconciliation,
        subscriptions::list, subscriptions::get_plan, subscriptions::create, subscriptions::update,
        subscriptions::delete, subscriptions::reset,
        scheduler::list, scheduler::create, scheduler::get_one, scheduler::update, scheduler::deactivate,
        scheduler::org_runs, scheduler::get_settings, scheduler::put_settings, scheduler::trigger, scheduler::process, scheduler::process_queue, scheduler::queue,
        scheduler::status, scheduler::reset_daily_quotas, scheduler::cleanup_orphaned,
    ),
    tags((name = "pipelines"), (name = "integrations"), (name = "pricing"), (name = "costs"), (name = "scheduler"), (name = "organizations"), (name = "health"))
)]
pub struct ApiDoc;

/// Builds the whole pipeline-service app: routes, docs, shared middleware. Also starts the
/// run heartbeat/sweeper loop and the scheduler's (with `SCHEDULER=internal`, trigger +
/// process every tick; with the Pub/Sub queue, the consumer); they stop at shutdown.
pub fn router(ctx: Arc<AppContext>) -> Router {
    ctx.runs.start_background(ctx.shutdown.clone());
    let internal = ctx.settings.scheduler.mode == cloudact_core::settings::SchedulerMode::Internal;
    ctx.scheduler.start_background(internal, ctx.shutdown.clone());
    let api = Router::new()
        .route("/scheduler/trigger", post(scheduler::trigger))
        .route("/scheduler/queue/process", post(scheduler::process))
        .route("/scheduler/process-queue", post(scheduler::process_queue))
        .route("/scheduler/queue", get(scheduler::queue))
        .route("/scheduler/status", get(scheduler::status))
        .route("/scheduler/reset-daily-quotas", post(scheduler::reset_daily_quotas))
        .route(
            "/scheduler/cleanup-orphaned-pipelines",
            post(scheduler::cleanup_orphaned),
        )
        .route(
            "/scheduler/org/{org_slug}/pipelines",
            get(scheduler::list).post(scheduler::create),
        )
        .route(
            "/scheduler/org/{org_slug}/pipelines/{config_id}",
            get(scheduler::get_one)
                .put(scheduler::update)
                .delete(scheduler::deactivate),
        )
        .route("/scheduler/org/{org_slug}/runs", get(scheduler::org_runs))
        .route(
            "/scheduler/org/{org_slug}/settings",
            get(scheduler::get_settings).put(scheduler::put_settings),
        )
        .route("/organizations/{org_slug}/whoami", get(organizations::whoami))
        .route("/pipelines", get(pipelines::catalogue))
        .route("/costs/{org_slug}", get(costs::costs))
        .route("/costs/{org_slug}/reconciliation", get(costs::reconciliation))
        .route(
            "/pipelines/run/{org_slug}/{provider}/{pipeline}",
            post(pipelines::run_short),
        )
        .route(
            "/pipelines/run/{org_slug}/{provider}/{domain}/{pipeline}",
            post(pipelines::run_with_domain),
        )
        .route("/pipelines/runs", get(pipelines::list_runs))
        .route(
            "/pipelines/runs/{run_id}",
            get(pipelines::get_run).delete(pipelines::cancel_run),
        )
        .route("/pipelines/runs/{run_id}/retry", post(pipelines::retry_run))
        .route("/integrations/{org_slug}", get(integrations::list))
        .route(
            "/integrations/{org_slug}/{provider}",
            get(integrations::get_one)
                .put(integrations::update)
                .delete(integrations::remove),
        )
        .route("/integrations/{org_slug}/{provider}/setup", post(integrations::setup))
        .route(
            "/integrations/{org_slug}/{provider}/validate",
            post(integrations::revalidate),
        )
        .route(
            "/integrations/{org_slug}/{provider}/pricing",
            get(pricing::list).post(pricing::create),
        )
        .route(
            "/integrations/{org_slug}/{provider}/pricing/reset",
            post(pricing::reset),
        )
        .route(
            "/integrations/{org_slug}/{provider}/pricing/import",
            post(pricing::import_litellm),
        )
        .route(
            "/integrations/{org_slug}/{provider}/pricing/{model_id}",
            get(pricing::get_model).put(pricing::update).delete(pricing::delete),
        )
        .route(
            "/integrations/{org_slug}/{provider}/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/integrations/{org_slug}/{provider}/subscriptions/reset",
            post(subscriptions::reset),
        )
        .route(
            "/integrations/{org_slug}/{provider}/subscriptions/{plan_name}",
            get(subscriptions::get_plan)
                .put(subscriptions::update)
                .delete(subscriptions::delete),
        );
    let app = Router::new().nest("/api/v1", api).merge(health::routes());
    let app = docs::mount(app, &ctx, ApiDoc::openapi());
    layers::apply(app, ctx)
}
