//! OpenAPI document at `/openapi.json` and Swagger UI (vendored, works offline) at `/docs`,
//! unless `ENABLE_API_DOCS=false`.

use std::sync::Arc;

use axum::Router;
use utoipa::openapi::{
    content::ContentBuilder,
    response::ResponseBuilder,
    schema::{ObjectBuilder, Type},
    security::{ApiKey, ApiKeyValue, SecurityScheme},
    OpenApi as OpenApiDoc, Ref, RefOr,
};
use utoipa_swagger_ui::SwaggerUi;

use crate::context::AppContext;

/// Responses any operation may give, whatever its handler does: the edge's own refusals
/// (auth, size, media type, rate limits, a misconfigured backend) and the JSON error body.
const COMMON_ERRORS: [(&str, &str); 10] = [
    ("400", "Malformed request (bad JSON, path or query parameter)"),
    ("401", "No or unknown credentials"),
    ("403", "Credentials that may not call this route or org"),
    ("404", "Not found"),
    ("413", "Request body larger than 1 MiB"),
    ("415", "Body is not application/json"),
    ("422", "Body or parameters fail validation"),
    ("429", "Rate limit exceeded (Retry-After says when to come back)"),
    ("500", "Internal error (no details are exposed)"),
    (
        "503",
        "Unavailable: shutting down, misconfigured backend, or admin routes without a root key",
    ),
];

/// Completes a service's document: the two key schemes, the `ErrorBody` schema, and the
/// responses the edge can give on every operation (undocumented ones are added; documented
/// error responses without a body get the `ErrorBody` content).
pub fn with_security(mut doc: OpenApiDoc) -> OpenApiDoc {
    let error_schema = ObjectBuilder::new()
        .description(Some(
            "Every error response: a message a person can act on, a stable code, the request id.",
        ))
        .property("detail", ObjectBuilder::new().schema_type(Type::String))
        .property("error", ObjectBuilder::new().schema_type(Type::String))
        .property("request_id", ObjectBuilder::new().schema_type(Type::String))
        .required("detail")
        .required("error")
        .required("request_id")
        .build();
    let error_content = || {
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            for (code, description) in COMMON_ERRORS {
                responses.entry(code.to_string()).or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(description)
                            .content("application/json", error_content())
                            .build(),
                    )
                });
            }
            for (code, response) in responses.iter_mut() {
                if let RefOr::T(r) = response {
                    if (code.starts_with('4') || code.starts_with('5')) && r.content.is_empty() {
                        r.content.insert("application/json".to_string(), error_content());
                    }
                }
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ErrorBody".to_string(), RefOr::T(error_schema.into()));
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

/// Redoc's standalone bundle, vendored (`assets/redoc/VENDORED.md`): `/redoc` loads nothing
/// from a CDN.
const REDOC_JS: &[u8] = include_bytes!("../assets/redoc/redoc.standalone.js");

const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API reference</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="/openapi.json" hide-download-button="false"></redoc>
<script src="/redoc/redoc.standalone.js"></script>
</body>
</html>
"#;

async fn redoc_page() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        REDOC_PAGE,
    )
}

async fn redoc_js() -> impl axum::response::IntoResponse {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
}

/// Merges the docs routes into `router` when docs are enabled: Swagger UI at `/docs`, Redoc
/// at `/redoc`, the document at `/openapi.json`, all served from the binary.
pub fn mount(router: Router<Arc<AppContext>>, ctx: &AppContext, doc: OpenApiDoc) -> Router<Arc<AppContext>> {
    if !ctx.settings.enable_api_docs {
        return router;
    }
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", with_security(doc)))
        .route("/redoc", axum::routing::get(redoc_page))
        .route("/redoc/redoc.standalone.js", axum::routing::get(redoc_js))
}
