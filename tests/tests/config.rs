//! Fail fast on a wrong configuration: both real binaries started with a BigQuery base URL
//! that lacks `/bigquery/v2` (the emulator's bare host). Outside production they start
//! degraded: `/health/ready` is 503 naming the setting, and requests get a 503
//! `CONFIGURATION_ERROR` naming it — never a 500. In production they refuse to start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::collections::HashMap;

use cloudact_e2e::{BigQueryEmulator, KmsEmulator, Service, ROOT_KEY};
use reqwest::{Client, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn a_bigquery_url_without_the_api_path_is_named_not_a_500() {
    let bq = BigQueryEmulator::start();
    let bare = bq
        .base_url
        .trim_end_matches('/')
        .trim_end_matches("/bigquery/v2")
        .to_string();
    assert_ne!(bare, bq.base_url);
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = [
        ("WAREHOUSE", "bigquery".to_string()),
        ("GCP_PROJECT_ID", bq.project.clone()),
        ("BIGQUERY_BASE_URL", bare.clone()),
    ]
    .into_iter()
    .collect();
    let c = Client::new();
    for name in ["api-service", "pipeline-service"] {
        let svc = Service::start_live(name, dir.path(), &env);
        let resp = c.get(svc.url("/health/ready")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}");
        let b: Value = resp.json().await.unwrap();
        let problems = b["problems"].to_string();
        assert!(
            problems.contains("BIGQUERY_BASE_URL") && problems.contains("/bigquery/v2"),
            "{name}: {b}"
        );
        // Liveness stays 200 (the process is fine; restarting it would not help).
        assert_eq!(
            c.get(svc.url("/health/live")).send().await.unwrap().status(),
            StatusCode::OK
        );
        let path = if name == "api-service" {
            "/api/v1/admin/bootstrap"
        } else {
            "/api/v1/scheduler/trigger"
        };
        let resp = c
            .post(svc.url(path))
            .header("X-CA-Root-Key", ROOT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{name} {path}");
        let b: Value = resp.json().await.unwrap();
        assert_eq!(b["error"], "CONFIGURATION_ERROR", "{b}");
        assert!(b["detail"].as_str().unwrap().contains("BIGQUERY_BASE_URL"), "{b}");
        assert!(b["request_id"].is_string());
        // The API description stays readable, so an operator can still look around.
        assert_eq!(
            c.get(svc.url("/openapi.json")).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    // The right URL on the same emulator: ready.
    let good: HashMap<&str, String> = [
        ("WAREHOUSE", "bigquery".to_string()),
        ("GCP_PROJECT_ID", bq.project.clone()),
        ("BIGQUERY_BASE_URL", bq.base_url.clone()),
    ]
    .into_iter()
    .collect();
    let svc = Service::start("api-service", dir.path(), &good);
    let resp = c.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Production refuses to start, naming the setting.
    let mut prod = env.clone();
    prod.insert("ENVIRONMENT", "production".to_string());
    let (status, out) = Service::run_to_exit("pipeline-service", dir.path(), &prod);
    assert!(!status.success(), "{out}");
    assert!(out.contains("BIGQUERY_BASE_URL"), "{out}");
}

#[tokio::test]
async fn a_kms_key_that_does_not_exist_is_named() {
    let kms = KmsEmulator::start();
    // A key ring exists, the configured key does not: encrypting fails at the probe.
    let real = kms.create_key("cloudact", "org-secrets").await;
    let missing = real.replace("org-secrets", "no-such-key");
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = [
        ("KMS", "gcp".to_string()),
        ("KMS_KEY_NAME", missing.clone()),
        ("KMS_ENDPOINT", kms.endpoint.clone()),
    ]
    .into_iter()
    .collect();
    let svc = Service::start_live("api-service", dir.path(), &env);
    let c = Client::new();
    let resp = c.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let b: Value = resp.json().await.unwrap();
    let problems = b["problems"].to_string();
    assert!(
        problems.contains("KMS_KEY_NAME") && problems.contains("no-such-key"),
        "{b}"
    );
    let resp = c
        .post(svc.url("/api/v1/admin/bootstrap"))
        .header("X-CA-Root-Key", ROOT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(svc);
    // The real key: ready.
    let mut good = env.clone();
    good.insert("KMS_KEY_NAME", real);
    let svc = Service::start("api-service", dir.path(), &good);
    assert_eq!(
        c.get(svc.url("/health/ready")).send().await.unwrap().status(),
        StatusCode::OK
    );
}
