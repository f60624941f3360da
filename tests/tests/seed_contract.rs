//! The original system's documented curls (`../shared/reference/seeds/`), replayed with their
//! paths and bodies as written against both real binaries, so the contract the original
//! frontend and operators rely on cannot drift. Placeholder keys (`sk-...`) are replaced by
//! admin keys the sandbox provider server accepts (usage reports need admin keys); the providers are reached the way each SDK
//! configures them (`OPENAI_BASE_URL` with `/v1`, `ANTHROPIC_BASE_URL` bare).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::HashMap, time::Duration};

use cloudact_e2e::{Service, ROOT_KEY};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};

const ORG: &str = "guruinc_234234";
const OPENAI_KEY: &str = "sk-admin-good-00000001";
const ANTHROPIC_KEY: &str = "sk-ant-admin01-good-001";

/// Sends, checks the `X-Request-ID` echo every answer carries, and parses the JSON body.
async fn call(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "no X-Request-ID on a {status}"
    );
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")),
    )
}

async fn sandbox() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sandbox_providers::router(42)).await });
    format!("http://{addr}")
}

async fn finished(c: &Client, pipe: &Service, key: &str, id: &str) -> Value {
    for _ in 0..600 {
        let (s, run) = call(
            c.get(pipe.url(&format!("/api/v1/pipelines/runs/{id}")))
                .header("X-API-Key", key),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{run}");
        if !matches!(run["status"].as_str(), Some("PENDING") | Some("RUNNING")) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} did not finish");
}

#[tokio::test]
async fn the_seed_documents_curls_work_as_documented() {
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = [
        // Each SDK's own form: the OpenAI SDK's base URL ends in /v1, Anthropic's is the host.
        ("OPENAI_BASE_URL", format!("{sandbox}/v1")),
        ("ANTHROPIC_BASE_URL", sandbox.clone()),
        ("DEEPSEEK_BASE_URL", sandbox.clone()),
        // The seed's JSON list form.
        ("CORS_ORIGINS", r#"["http://localhost:3000"]"#.to_string()),
    ]
    .into_iter()
    .collect();
    let api = Service::start("api-service", dir.path(), &env);
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    let c = Client::new();
    let root = |r: RequestBuilder| r.header("X-CA-Root-Key", ROOT_KEY);

    // curl -s http://localhost:8000/health ; curl -s http://localhost:8001/health
    for svc in [&api, &pipe] {
        let (s, b) = call(c.get(svc.url("/health"))).await;
        assert_eq!(s, StatusCode::OK, "{}: {b}", svc.name);
    }

    // POST /api/v1/admin/bootstrap -d '{"force_recreate_dataset": false}'
    let (s, b) =
        call(root(c.post(api.url("/api/v1/admin/bootstrap"))).json(&json!({"force_recreate_dataset": false}))).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // POST /api/v1/organizations/dryrun (Guru Inc, STARTER)
    let org_body = json!({"org_slug": ORG, "company_name": "Guru Inc", "admin_email": "admin@guru.com",
                          "subscription_plan": "STARTER"});
    let (s, b) = call(root(c.post(api.url("/api/v1/organizations/dryrun"))).json(&org_body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["status"].as_str(), b["ready_for_onboarding"].as_bool()),
        (Some("SUCCESS"), Some(true)),
        "{b}"
    );

    // POST /api/v1/organizations/onboard → {"api_key": "guruinc_234234_api_…", "org_slug", "dataset_created": true}
    let (s, b) = call(root(c.post(api.url("/api/v1/organizations/onboard"))).json(&org_body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let key = b["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("{ORG}_api_")), "{key}");
    assert_eq!(
        (b["org_slug"].as_str(), b["dataset_created"].as_bool()),
        (Some(ORG), Some(true))
    );
    assert_eq!(
        b["subscription_status"], "ACTIVE",
        "like the original, no trial nobody asked for"
    );
    let org_key = |r: RequestBuilder| r.header("X-API-Key", key.as_str());

    // curl -s http://localhost:8000/api/v1/validator/pipelines
    let (s, b) = call(c.get(api.url("/api/v1/validator/pipelines"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        b["pipelines"].as_array().unwrap().iter().all(|p| p["kind"] == "data"),
        "{b}"
    );

    // POST /api/v1/integrations/{org}/openai/setup -d '{"credential": "sk-...", "credential_name": "Production Key"}'
    // → {"success": true, "validation_status": "VALID", "pricing_initialized": true, "subscriptions_initialized": true}
    let (s, b) = call(
        org_key(c.post(pipe.url(&format!("/api/v1/integrations/{ORG}/openai/setup"))))
            .json(&json!({"credential": OPENAI_KEY, "credential_name": "Production Key"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for (field, want) in [
        ("success", json!(true)),
        ("validation_status", json!("VALID")),
        ("pricing_initialized", json!(true)),
        ("subscriptions_initialized", json!(true)),
    ] {
        assert_eq!(b[field], want, "{field}: {b}");
    }
    // The later layout: integrations on :8000, with the other seed's body ('{"api_key": "sk-..."}').
    let (s, b) = call(
        org_key(c.post(api.url(&format!("/api/v1/integrations/{ORG}/anthropic/setup"))))
            .json(&json!({"api_key": ANTHROPIC_KEY})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["validation_status"], "VALID", "{b}");

    // GET /api/v1/integrations/{org} → {"integrations": {"OPENAI": {"status": "VALID"}, "GCP_SA": …, …}}, same on both.
    let (s, on_api) = call(org_key(c.get(api.url(&format!("/api/v1/integrations/{ORG}"))))).await;
    assert_eq!(s, StatusCode::OK, "{on_api}");
    let (_, on_pipe) = call(org_key(c.get(pipe.url(&format!("/api/v1/integrations/{ORG}"))))).await;
    assert_eq!(on_api["integrations"], on_pipe["integrations"]);
    assert_eq!(on_api["integrations"]["OPENAI"]["status"], "VALID", "{on_api}");
    assert_eq!(on_api["integrations"]["ANTHROPIC"]["status"], "VALID", "{on_api}");
    assert_eq!(on_api["integrations"]["GCP_SA"]["status"], "NOT_CONFIGURED", "{on_api}");
    assert_eq!(
        on_api["integrations"]["DEEPSEEK"]["status"], "NOT_CONFIGURED",
        "{on_api}"
    );

    // The documented run paths, each resolving to its canonical pipeline.
    let day = json!({"start_date": "2025-11-25", "end_date": "2025-11-25"});
    for (path, id) in [
        ("openai/usage_cost", "openai_usage_cost"),
        ("openai/cost/usage_cost", "openai_usage_cost"),
        ("anthropic/usage_cost", "anthropic_usage_cost"),
        ("anthropic/cost/usage_cost", "anthropic_usage_cost"),
    ] {
        let (s, b) = call(org_key(c.post(pipe.url(&format!("/api/v1/pipelines/run/{ORG}/{path}")))).json(&day)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{path}: {b}");
        let run = finished(&c, &pipe, &key, b["pipeline_logging_id"].as_str().unwrap()).await;
        assert_eq!(
            (run["status"].as_str(), run["pipeline_id"].as_str()),
            (Some("COMPLETED"), Some(id)),
            "{path}: {run}"
        );
    }
    // The GCP paths (and the bodiless curl of the request-id section) reach the billing
    // pipeline, which needs the GCP integration first: the same clear refusal on each.
    for (path, body) in [
        ("gcp/cost/billing", Some(json!({"date": "2025-11-25"}))),
        ("gcp/cost/cost_billing", Some(json!({"date": "2025-11-25"}))),
        ("gcp/billing", Some(json!({"date": "2025-11-25"}))),
        ("gcp/cost/billing", None),
    ] {
        let mut req = org_key(c.post(pipe.url(&format!("/api/v1/pipelines/run/{ORG}/{path}"))));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let (s, b) = call(req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert_eq!(b["error"], "INTEGRATION_NOT_CONFIGURED", "{path}: {b}");
        assert!(b["detail"].as_str().unwrap().contains("GCP"), "{path}: {b}");
    }

    // CORS from the JSON list, PATCH among the allowed methods.
    let resp = c
        .request(
            reqwest::Method::OPTIONS,
            api.url(&format!("/api/v1/integrations/{ORG}")),
        )
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "PATCH")
        .send()
        .await
        .unwrap();
    let allow = |h: &str| {
        resp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(allow("access-control-allow-origin"), "http://localhost:3000");
    assert!(
        allow("access-control-allow-methods").contains("PATCH"),
        "{:?}",
        resp.headers()
    );

    assert!(api.terminate().success());
    assert!(pipe.terminate().success());
}
