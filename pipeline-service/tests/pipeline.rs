//! pipeline-service integration tests: the real app on a random port against a DATA_DIR
//! prepared by the real bootstrap and onboarding code paths (core + pipeline crates).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use cloudact_core::{
    auth::{generate_org_api_key, hash_key, key_fingerprint},
    meta::{NewApiKey, NewOrg, Plan, SubscriptionChange, SubscriptionStatus},
    settings::Settings,
};
use cloudact_pipeline::{CancellationToken, RunRequest, RunStatus};
use cloudact_web::{server::Running, AppContext};
use reqwest::{Client, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;

struct App {
    server: Running,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn spawn() -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("DATA_DIR".into(), dir.path().display().to_string());
    env.insert(
        "CONFIGS_DIR".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../configs").into(),
    );
    env.insert("HOST".into(), "127.0.0.1".into());
    env.insert("PORT".into(), "0".into());
    let ctx = AppContext::build("pipeline-service", Settings::from_map(&env, 8001).unwrap())
        .await
        .unwrap();
    let spec = ctx.catalog.require("setup/bootstrap/pipeline.yml").unwrap();
    let report = ctx
        .executor
        .run(&spec, RunRequest::default(), CancellationToken::new())
        .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    let server = cloudact_web::server::spawn(ctx.clone(), pipeline_service::router(ctx))
        .await
        .unwrap();
    App {
        server,
        client: Client::new(),
        _dir: dir,
    }
}

/// Creates an ACTIVE org the way onboarding does and returns its key.
async fn org(ctx: &Arc<AppContext>, slug: &str) -> String {
    let key = generate_org_api_key(slug);
    let ciphertext = ctx
        .kms
        .encrypt(key.expose_secret().as_bytes(), slug.as_bytes())
        .await
        .unwrap();
    let now = Utc::now();
    let new_org = NewOrg {
        org_slug: slug.into(),
        company_name: "Co".into(),
        admin_email: "a@b.co".into(),
        org_dataset_id: ctx.settings.org_dataset(slug),
        plan: Plan::Starter,
        status: SubscriptionStatus::Active,
        trial_end_date: None,
        key: NewApiKey {
            org_api_key_id: uuid::Uuid::new_v4().to_string(),
            hash: hash_key(key.expose_secret()),
            ciphertext,
            fingerprint: key_fingerprint(key.expose_secret()),
        },
        idempotency: None,
    };
    ctx.store.create_org(&new_org, now).await.unwrap();
    ctx.store.activate_org(slug, now).await.unwrap();
    key.expose_secret().to_string()
}

impl App {
    async fn whoami(&self, path_org: &str, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .get(self.server.url(&format!("/api/v1/organizations/{path_org}/whoami")));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }
}

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
