//! The pipeline-service route table (all under `/api/v1`) and its OpenAPI document.

mod organizations;

use std::sync::Arc;

use axum::{routing::get, Router};
use cloudact_web::{docs, health, layers, AppContext};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "CloudAct Pipeline Service", description = "Pipeline runs, integrations, pricing and cost queries."),
    paths(health::health, health::live, health::ready, organizations::whoami),
    tags((name = "organizations"), (name = "health"))
)]
pub struct ApiDoc;

/// Builds the whole pipeline-service app: routes, docs, shared middleware.
pub fn router(ctx: Arc<AppContext>) -> Router {
    let api = Router::new().route("/organizations/{org_slug}/whoami", get(organizations::whoami));
    let app = Router::new().nest("/api/v1", api).merge(health::routes());
    let app = docs::mount(app, &ctx, ApiDoc::openapi());
    layers::apply(app, ctx)
}
