//! The api-service route table (all under `/api/v1`) and its OpenAPI document.

mod admin;
mod api_keys;
mod audit_logs;
mod organizations;
mod subscriptions;
mod validator;

use std::sync::Arc;

use axum::Router;
use cloudact_web::{auth, docs, health, layers, route_table::RouteTable, AppContext};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "CloudAct API Service", description = "Bootstrap, organizations, subscriptions, API keys."),
    paths(
        health::health, health::live, health::ready,
        cloudact_web::reload::reload_configs,
        admin::bootstrap,
        organizations::dryrun, organizations::onboard, organizations::delete_org,
        subscriptions::get_subscription, subscriptions::put_subscription,
        api_keys::rotate, api_keys::get_key, api_keys::revoke,
        audit_logs::list,
        validator::list_pipelines, validator::get_pipeline,
    ),
    tags((name = "admin"), (name = "organizations"), (name = "subscriptions"), (name = "api-keys"), (name = "audit"), (name = "validator"), (name = "health"))
)]
pub struct ApiDoc;

/// The whole OpenAPI document of the api-service: its own routes plus the integration and
/// LLM-data routes it shares with the pipeline-service.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(pipeline_service::LlmDataDoc::openapi());
    doc
}

/// Every `/api/v1` route of the service (tests walk this table).
pub fn api_routes() -> RouteTable {
    RouteTable::new("/api/v1")
        .post("/admin/bootstrap", admin::bootstrap)
        .post("/admin/reload-configs", cloudact_web::reload::reload_configs)
        .post("/organizations/dryrun", organizations::dryrun)
        .post("/organizations/onboard", organizations::onboard)
        .delete("/organizations/{org_slug}", organizations::delete_org)
        .get(
            "/organizations/{org_slug}/subscription",
            subscriptions::get_subscription,
        )
        .put(
            "/organizations/{org_slug}/subscription",
            subscriptions::put_subscription,
        )
        .get("/organizations/{org_slug}/api-key", api_keys::get_key)
        .delete("/organizations/{org_slug}/api-key", api_keys::revoke)
        .post("/organizations/{org_slug}/api-key/rotate", api_keys::rotate)
        .get("/organizations/{org_slug}/audit-logs", audit_logs::list)
        .get("/validator/pipelines", validator::list_pipelines)
        .get("/validator/pipelines/{pipeline_id}", validator::get_pipeline)
        // One implementation, mounted here as the original's later layout has it.
        .merge(pipeline_service::llm_data_routes())
}

/// Builds the whole api-service app: routes, docs, shared middleware.
pub fn router(ctx: Arc<AppContext>) -> Router {
    auth::start_revalidation(&ctx);
    cloudact_web::reload::start_sighup_reload(&ctx);
    let api = api_routes().into_router();
    let app = api.merge(health::routes());
    let app = docs::mount(app, &ctx, openapi());
    layers::apply(app, ctx)
}
