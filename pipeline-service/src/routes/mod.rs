//! The pipeline-service route table (all under `/api/v1`) and its OpenAPI document.

mod costs;
mod focus;
mod integrations;
mod organizations;
mod pipelines;
pub mod pricing;
mod scheduler;
mod subscriptions;

use std::sync::Arc;

use axum::Router;
use cloudact_web::{auth, docs, health, layers, route_table::RouteTable, AppContext};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "CloudAct Pipeline Service", description = "Pipeline runs, integrations, pricing and cost queries."),
    paths(
        health::health, health::live, health::ready,
        cloudact_web::reload::reload_configs, organizations::whoami,
        pipelines::run_with_domain, pipelines::run_short, pipelines::list_runs, pipelines::get_run,
        pipelines::cancel_run, pipelines::retry_run, pipelines::catalogue,
        costs::costs, costs::reconciliation, focus::focus_export,
        scheduler::list, scheduler::create, scheduler::get_one, scheduler::update, scheduler::deactivate,
        scheduler::org_runs, scheduler::get_settings, scheduler::put_settings, scheduler::trigger, scheduler::process, scheduler::process_queue, scheduler::queue,
        scheduler::status, scheduler::reset_daily_quotas, scheduler::cleanup_orphaned,
    ),
    tags((name = "pipelines"), (name = "integrations"), (name = "pricing"), (name = "costs"), (name = "scheduler"), (name = "organizations"), (name = "health"))
)]
pub struct ApiDoc;

/// The integration and LLM-data routes' OpenAPI paths (both services serve them).
#[derive(OpenApi)]
#[openapi(
    paths(
        integrations::setup, integrations::revalidate, integrations::list, integrations::get_one,
        integrations::update, integrations::remove,
        pricing::list, pricing::get_model, pricing::create, pricing::update, pricing::delete, pricing::reset,
        pricing::import_litellm, pricing::bulk_update,
        subscriptions::list, subscriptions::get_plan, subscriptions::create, subscriptions::update,
        subscriptions::delete, subscriptions::reset,
    ),
    tags((name = "integrations"), (name = "pricing"))
)]
pub struct LlmDataDoc;

/// The whole OpenAPI document of the pipeline-service.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(LlmDataDoc::openapi());
    doc
}

/// Integrations (credentials) and LLM data (pricing, plans), one implementation mounted on
/// both services: the original's later layout serves them from the api-service, its earlier
/// one from the pipeline-service, and a frontend built against either works.
pub fn llm_data_routes() -> RouteTable {
    RouteTable::new("/api/v1")
        .get("/integrations/{org_slug}", integrations::list)
        .get("/integrations/{org_slug}/{provider}", integrations::get_one)
        .put("/integrations/{org_slug}/{provider}", integrations::update)
        .delete("/integrations/{org_slug}/{provider}", integrations::remove)
        .post("/integrations/{org_slug}/{provider}/setup", integrations::setup)
        .post("/integrations/{org_slug}/{provider}/validate", integrations::revalidate)
        .get("/integrations/{org_slug}/{provider}/pricing", pricing::list)
        .post("/integrations/{org_slug}/{provider}/pricing", pricing::create)
        .patch("/integrations/{org_slug}/{provider}/pricing", pricing::bulk_update)
        .post("/integrations/{org_slug}/{provider}/pricing/reset", pricing::reset)
        .post(
            "/integrations/{org_slug}/{provider}/pricing/import",
            pricing::import_litellm,
        )
        .get(
            "/integrations/{org_slug}/{provider}/pricing/{model_id}",
            pricing::get_model,
        )
        .put(
            "/integrations/{org_slug}/{provider}/pricing/{model_id}",
            pricing::update,
        )
        .delete(
            "/integrations/{org_slug}/{provider}/pricing/{model_id}",
            pricing::delete,
        )
        .get("/integrations/{org_slug}/{provider}/subscriptions", subscriptions::list)
        .post(
            "/integrations/{org_slug}/{provider}/subscriptions",
            subscriptions::create,
        )
        .post(
            "/integrations/{org_slug}/{provider}/subscriptions/reset",
            subscriptions::reset,
        )
        .get(
            "/integrations/{org_slug}/{provider}/subscriptions/{plan_name}",
            subscriptions::get_plan,
        )
        .put(
            "/integrations/{org_slug}/{provider}/subscriptions/{plan_name}",
            subscriptions::update,
        )
        .delete(
            "/integrations/{org_slug}/{provider}/subscriptions/{plan_name}",
            subscriptions::delete,
        )
}

/// Every `/api/v1` route of the service (tests walk this table).
pub fn api_routes() -> RouteTable {
    RouteTable::new("/api/v1")
        .post("/scheduler/trigger", scheduler::trigger)
        .post("/admin/reload-configs", cloudact_web::reload::reload_configs)
        .post("/scheduler/queue/process", scheduler::process)
        .post("/scheduler/process-queue", scheduler::process_queue)
        .get("/scheduler/queue", scheduler::queue)
        .get("/scheduler/status", scheduler::status)
        .post("/scheduler/reset-daily-quotas", scheduler::reset_daily_quotas)
        .post("/scheduler/cleanup-orphaned-pipelines", scheduler::cleanup_orphaned)
        .get("/scheduler/org/{org_slug}/pipelines", scheduler::list)
        .post("/scheduler/org/{org_slug}/pipelines", scheduler::create)
        .get("/scheduler/org/{org_slug}/pipelines/{config_id}", scheduler::get_one)
        .put("/scheduler/org/{org_slug}/pipelines/{config_id}", scheduler::update)
        .delete("/scheduler/org/{org_slug}/pipelines/{config_id}", scheduler::deactivate)
        .get("/scheduler/org/{org_slug}/runs", scheduler::org_runs)
        .get("/scheduler/org/{org_slug}/settings", scheduler::get_settings)
        .put("/scheduler/org/{org_slug}/settings", scheduler::put_settings)
        .get("/organizations/{org_slug}/whoami", organizations::whoami)
        .get("/pipelines", pipelines::catalogue)
        .get("/costs/{org_slug}", costs::costs)
        .get("/costs/{org_slug}/reconciliation", costs::reconciliation)
        .get("/costs/{org_slug}/focus", focus::focus_export)
        .post("/pipelines/run/{org_slug}/{provider}/{pipeline}", pipelines::run_short)
        .post(
            "/pipelines/run/{org_slug}/{provider}/{domain}/{pipeline}",
            pipelines::run_with_domain,
        )
        .get("/pipelines/runs", pipelines::list_runs)
        .get("/pipelines/runs/{run_id}", pipelines::get_run)
        .delete("/pipelines/runs/{run_id}", pipelines::cancel_run)
        .post("/pipelines/runs/{run_id}/retry", pipelines::retry_run)
        .merge(llm_data_routes())
}

/// Builds the whole pipeline-service app: routes, docs, shared middleware. Also starts the
/// run heartbeat/sweeper loop and the scheduler's (with `SCHEDULER=internal`, trigger +
/// process every tick; with the Pub/Sub queue, the consumer); they stop at shutdown.
pub fn router(ctx: Arc<AppContext>) -> Router {
    ctx.runs.start_background(ctx.shutdown.clone());
    let internal = ctx.settings.scheduler.mode == cloudact_core::settings::SchedulerMode::Internal;
    ctx.scheduler.start_background(internal, ctx.shutdown.clone());
    auth::start_revalidation(&ctx);
    cloudact_web::reload::start_sighup_reload(&ctx);
    let api = api_routes().into_router();
    let app = api.merge(health::routes());
    let app = docs::mount(app, &ctx, openapi());
    layers::apply(app, ctx)
}
