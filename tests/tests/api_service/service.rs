//! Service-level behaviour of the api-service: health and request ids, docs, per-org rate
//! limits, CORS, production settings, the public pipeline catalogue.

use crate::prelude::*;

#[tokio::test]
async fn health_and_request_ids() {
    let app = spawn_api().await;
    for path in ["/health", "/health/live", "/health/ready", "/"] {
        let (s, b) = app.call(Method::GET, path, Auth::None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
    }
    let resp = app
        .client
        .get(app.server.url("/health"))
        .header("X-Request-ID", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc_123");
    let resp = app.client.get(app.server.url("/health")).send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 36, "generated uuid");
    let resp = app
        .client
        .get(app.server.url("/nope"))
        .header("X-Request-ID", "rid-404")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["request_id"], "rid-404");
    assert_eq!(body["error"], "NOT_FOUND");
}

#[tokio::test]
async fn docs_are_served_and_can_be_disabled() {
    let app = spawn_api().await;
    let (s, doc) = app.call(Method::GET, "/openapi.json", Auth::None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/admin/bootstrap",
        "/api/v1/organizations/onboard",
        "/api/v1/organizations/{org_slug}/api-key/rotate",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from OpenAPI");
    }
    let ui = app.client.get(app.server.url("/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger"), "vendored Swagger UI page");
    // Redoc, vendored: the page and its script come from the binary, nothing from a CDN.
    let page = app.client.get(app.server.url("/redoc")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"spec-url="/openapi.json""#) && html.contains(r#"src="/redoc/redoc.standalone.js""#),
        "{html}"
    );
    assert!(!html.contains("https://"), "no remote asset: {html}");
    let js = app
        .client
        .get(app.server.url("/redoc/redoc.standalone.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/javascript"));
    let body = js.text().await.unwrap();
    assert!(
        body.len() > 500_000 && !body.contains("cdn.redoc.ly"),
        "the vendored bundle"
    );
    let off = spawn_api_with(&[("ENABLE_API_DOCS", "false")]).await;
    for path in ["/openapi.json", "/redoc"] {
        let (s, _) = off.call(Method::GET, path, Auth::None, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn per_org_rate_limit_is_keyed_by_the_authenticated_org() {
    let app = spawn_api_with(&[("RATE_LIMIT_REQUESTS_PER_MINUTE", "3")]).await;
    app.bootstrap().await;
    // Onboarding two orgs spent root's budget; the orgs have their own.
    let a = app.onboard("rl_a").await;
    let b = app.onboard("rl_b").await;
    for _ in 0..3 {
        let (s, _) = app
            .call(Method::GET, "/api/v1/organizations/rl_a/api-key", Auth::Key(&a), None)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let resp = app
        .client
        .get(app.server.url("/api/v1/organizations/rl_a/api-key"))
        .header("X-API-Key", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_error_shape(StatusCode::TOO_MANY_REQUESTS, &body, "RATE_LIMITED");
    let (s, _) = app
        .call(Method::GET, "/api/v1/organizations/rl_b/api-key", Auth::Key(&b), None)
        .await;
    assert_eq!(s, StatusCode::OK, "another org is not limited by rl_a's traffic");
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = spawn_api_with(&[("CORS_ORIGINS", "https://app.cloudact.example")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.server.url("/api/v1/admin/bootstrap"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-ca-root-key,content-type")
            .send()
    };
    let ok = preflight("https://app.cloudact.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.cloudact.example"
    );
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("x-ca-root-key"));
    let bad = preflight("https://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn production_refuses_unsafe_settings_listing_every_problem() {
    let mut env = HashMap::new();
    let dir = tempfile::tempdir().unwrap();
    env.insert("ENVIRONMENT".to_string(), "production".to_string());
    env.insert("DATA_DIR".to_string(), dir.path().display().to_string());
    env.insert(
        "CONFIGS_DIR".to_string(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../configs").to_string(),
    );
    env.insert("CA_ROOT_API_KEY".to_string(), "too-short".to_string());
    env.insert("DISABLE_AUTH".to_string(), "true".to_string());
    env.insert("RATE_LIMIT_ENABLED".to_string(), "false".to_string());
    let err = AppContext::build("api-service", Settings::from_map(&env, 8000).unwrap())
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    for needle in ["CA_ROOT_API_KEY", "DISABLE_AUTH", "RATE_LIMIT_ENABLED", "KMS=local"] {
        assert!(text.contains(needle), "{needle} missing in: {text}");
    }
}

#[tokio::test]
async fn pipeline_catalogue_is_public() {
    let app = spawn_api().await;
    let app = &app;
    let list = |query: &'static str| async move {
        let (s, b) = app
            .call(
                Method::GET,
                &format!("/api/v1/validator/pipelines{query}"),
                Auth::None,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let ids: Vec<String> = b["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(b["total"].as_u64().unwrap() as usize, ids.len());
        (ids, b)
    };
    let setup = ["setup_bootstrap", "setup_org_dryrun", "setup_org_onboarding"];
    // Runnable pipelines only by default; setup ones when asked for.
    let (ids, b) = list("").await;
    assert!(ids.contains(&"openai_usage_cost".to_string()), "{ids:?}");
    assert!(setup.iter().all(|s| !ids.contains(&s.to_string())), "{ids:?}");
    let gcp = b["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "gcp_billing")
        .unwrap();
    assert_eq!(gcp["aliases"], json!(["gcp/cost/cost_billing", "gcp/billing"]));
    let (ids, _) = list("?kind=setup&enabled_only=false").await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    let (ids, _) = list("?kind=all&enabled_only=false").await;
    for id in setup {
        assert!(ids.contains(&id.to_string()), "{id} in {ids:?}");
    }
    let (s, b) = app
        .call(Method::GET, "/api/v1/validator/pipelines?kind=nope", Auth::None, None)
        .await;
    assert_error_shape(s, &b, "INVALID_QUERY");
    let (s, b) = app
        .call(
            Method::GET,
            "/api/v1/validator/pipelines/setup_bootstrap",
            Auth::None,
            None,
        )
        .await;
    assert_eq!(
        (s, b["path"].as_str()),
        (StatusCode::OK, Some("setup/bootstrap/pipeline.yml"))
    );
    let (s, b) = app
        .call(Method::GET, "/api/v1/validator/pipelines/nope", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_shape(s, &b, "PIPELINE_NOT_FOUND");
    let (s, _) = app
        .call(Method::GET, "/api/v1/validator/pipelines?bogus=1", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
