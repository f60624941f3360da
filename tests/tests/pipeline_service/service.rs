//! Service-level behaviour of the pipeline-service: org-key auth and the tenant check, whoami,
//! health, docs and JSON errors, graceful shutdown.

use crate::prelude::*;

#[tokio::test]
async fn org_key_auth_and_tenant_check() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let a = org(&ctx, "alpha").await;
    let b = org(&ctx, "beta").await;
    let (s, body) = app.whoami("alpha", Some(&a)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["org_slug"], "alpha");
    assert_eq!(body["org_dataset_id"], "alpha_local");
    assert_eq!(body["can_run_pipelines"], true);
    let (s, body) = app.whoami("beta", Some(&a)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("ORG_MISMATCH"))
    );
    let (s, body) = app.whoami("alpha", None).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("API_KEY_REQUIRED"))
    );
    let (s, body) = app.whoami("alpha", Some("alpha_api_AAAAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_API_KEY"))
    );
    let (s, body) = app.whoami("Alpha", Some(&a)).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ORG_SLUG"))
    );
    let (s, _) = app.whoami("beta", Some(&b)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn whoami_reports_a_suspended_subscription() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "paused_org").await;
    let current = ctx.store.subscription("paused_org").await.unwrap().unwrap();
    let change = SubscriptionChange {
        status: Some(SubscriptionStatus::Suspended),
        limits: current.limits,
        ..Default::default()
    };
    ctx.store
        .update_subscription("paused_org", &current, &change, Utc::now())
        .await
        .unwrap();
    let (s, body) = app.whoami("paused_org", Some(&key)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["subscription_status"], "SUSPENDED");
    assert_eq!(body["can_run_pipelines"], false);
    assert!(body["reason"].as_str().unwrap().contains("SUSPENDED"));
}

#[tokio::test]
async fn health_docs_and_json_errors() {
    let app = spawn().await;
    let ready = app.client.get(app.server.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let doc: Value = app
        .client
        .get(app.server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/organizations/{org_slug}/whoami"].is_object());
    assert_eq!(doc["info"]["title"], "CloudAct Pipeline Service");
    let resp = app.client.post(app.server.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn shutdown_turns_liveness_off_and_drains() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let url = app.server.url("/health/live");
    let live = app.client.get(&url).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    app.server.stop().await;
    assert!(ctx.shutting_down.load(std::sync::atomic::Ordering::Relaxed));
    assert!(
        app.client.get(&url).send().await.is_err(),
        "no longer accepting connections"
    );
}
