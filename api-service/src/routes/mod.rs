//! The api-service route table (all under `/api/v1`) and its OpenAPI document.

mod admin;
mod api_keys;
mod organizations;
mod subscriptions;
mod validator;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};
use cloudact_web::{docs, health, layers, AppContext};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "CloudAct API Service", description = "Bootstrap, organizations, subscriptions, API keys."),
    paths(
        health::health, health::live, health::ready,
        admin::bootstrap,
        organizations::dryrun, organizations::onboard, organizations::delete_org,
        subscriptions::get_subscription, subscriptions::put_subscription,
        api_keys::rotate, api_keys::get_key,
        validator::list_pipelines, validator::get_pipeline,
    ),
    tags((name = "admin"), (name = "organizations"), (name = "subscriptions"), (name = "api-keys"), (name = "validator"), (name = "health"))
)]
pub struct ApiDoc;

/// Builds the whole api-service app: routes, docs, shared middleware.
pub fn router(ctx: Arc<AppContext>) -> Router {
    let api = Router::new()
        .route("/admin/bootstrap", post(admin::bootstrap))
        .route("/organizations/dryrun", post(organizations::dryrun))
        .route("/organizations/onboard", post(organizations::onboard))
        .route(
            "/organizations/{org_slug}",
            axum::routing::delete(organizations::delete_org),
        )
        .route(
            "/organizations/{org_slug}/subscription",
            get(subscriptions::get_subscription).put(subscriptions::put_subscription),
        )
        .route("/organizations/{org_slug}/api-key", get(api_keys::get_key))
        .route("/organizations/{org_slug}/api-key/rotate", post(api_keys::rotate))
        .route("/validator/pipelines", get(validator::list_pipelines))
        .route("/validator/pipelines/{pipeline_id}", get(validator::get_pipeline));
    let app = Router::new().nest("/api/v1", api).merge(health::routes());
    let app = docs::mount(app, &ctx, ApiDoc::openapi());
    layers::apply(app, ctx)
}
