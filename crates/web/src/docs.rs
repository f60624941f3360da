//! OpenAPI document at `/openapi.json` and Swagger UI (vendored, works offline) at `/docs`,
//! unless `ENABLE_API_DOCS=false`.

use std::sync::Arc;

use axum::Router;
use utoipa::openapi::{
    security::{ApiKey, ApiKeyValue, SecurityScheme},
    OpenApi as OpenApiDoc,
};
use utoipa_swagger_ui::SwaggerUi;

use crate::context::AppContext;

/// Adds the two key schemes to a service's document.
pub fn with_security(mut doc: OpenApiDoc) -> OpenApiDoc {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "root_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-CA-Root-Key"))),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
    );
    doc
}

/// Merges the docs routes into `router` when docs are enabled.
pub fn mount(router: Router<Arc<AppContext>>, ctx: &AppContext, doc: OpenApiDoc) -> Router<Arc<AppContext>> {
    if !ctx.settings.enable_api_docs {
        return router;
    }
    router.merge(SwaggerUi::new("/docs").url("/openapi.json", with_security(doc)))
}
