//! The black-box walk: both real binaries, one fresh DATA_DIR, real HTTP.
//! bootstrap → dryrun → onboard → the key works on the pipeline-service → another org's key
//! gets 403 → rotate → the old key gets 401 → suspend → no plaintext key in any data file or log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::collections::HashMap;

use cloudact_e2e::{all_files, BigQueryEmulator, KmsEmulator, Service, ROOT_KEY};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn send(client: &Client, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let _ = client;
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}")),
    )
}

#[tokio::test]
async fn admin_walk_across_both_services() {
    let dir = tempfile::tempdir().unwrap();
    walk(dir.path(), HashMap::new(), true).await;
}

/// The same walk with `WAREHOUSE=bigquery KMS=gcp`, against the local BigQuery and Cloud KMS
/// REST emulators.
#[tokio::test]
async fn admin_walk_on_bigquery_and_cloud_kms_emulators() {
    let bq = BigQueryEmulator::start();
    let kms = KmsEmulator::start();
    let key_name = kms.create_key("cloudact", "org-secrets").await;
    let dir = tempfile::tempdir().unwrap();
    let env = cloudact_e2e::cloud_env(&bq, &kms, key_name);
    walk(dir.path(), env, false).await;
    assert!(
        !dir.path().join("warehouse/organizations.sqlite3").exists(),
        "nothing went to the embedded warehouse"
    );
    assert!(!dir.path().join("kms").exists(), "no local key file was created");
}

async fn walk(dir: &std::path::Path, mut env: HashMap<&'static str, String>, embedded: bool) {
    env.insert("AUTH_CACHE_TTL_SECONDS", "1".to_string());
    let sandbox = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    env.insert("OPENAI_BASE_URL", format!("http://{}", sandbox.local_addr().unwrap()));
    tokio::spawn(async move { axum::serve(sandbox, sandbox_providers::router(7)).await });
    let api = Service::start("api-service", dir, &env);
    let pipe = Service::start("pipeline-service", dir, &env);
    println!(
        "ready after: api-service {:?}, pipeline-service {:?}",
        api.ready_after, pipe.ready_after
    );
    let c = Client::new();
    let root = |req: reqwest::RequestBuilder| {
        req.header("X-CA-Root-Key", ROOT_KEY)
            .header("X-Request-ID", "e2e-walk-0001")
    };

    let (s, b) = send(&c, root(c.post(api.url("/api/v1/admin/bootstrap")))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["tables_created"].as_array().unwrap().len(), 15);

    let acme = json!({"org_slug": "acme", "company_name": "Acme Inc", "admin_email": "ops@acme.example", "subscription_plan": "STARTER"});
    let (s, b) = send(&c, root(c.post(api.url("/api/v1/organizations/dryrun"))).json(&acme)).await;
    assert_eq!(
        (s, b["ready_for_onboarding"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{b}"
    );

    let (s, b) = send(&c, root(c.post(api.url("/api/v1/organizations/onboard"))).json(&acme)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let acme_key = b["api_key"].as_str().unwrap().to_string();
    let globex = json!({"org_slug": "globex", "company_name": "Globex", "admin_email": "it@globex.example"});
    let (s, b) = send(&c, root(c.post(api.url("/api/v1/organizations/onboard"))).json(&globex)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let globex_key = b["api_key"].as_str().unwrap().to_string();

    // The key minted by the api-service works on the pipeline-service (another process).
    let whoami = |key: &str, org: &str| {
        c.get(pipe.url(&format!("/api/v1/organizations/{org}/whoami")))
            .header("X-API-Key", key.to_string())
    };
    let (s, b) = send(&c, whoami(&acme_key, "acme")).await;
    assert_eq!((s, b["org_slug"].as_str()), (StatusCode::OK, Some("acme")), "{b}");
    assert_eq!(b["can_run_pipelines"], true);

    // Another org's key: 403 on every org-scoped route of both services.
    let (s, b) = send(&c, whoami(&globex_key, "acme")).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("ORG_MISMATCH")));
    for path in [
        "/api/v1/organizations/acme/subscription",
        "/api/v1/organizations/acme/api-key",
    ] {
        let (s, _) = send(&c, c.get(api.url(path)).header("X-API-Key", &globex_key)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    let (s, _) = send(
        &c,
        c.post(api.url("/api/v1/organizations/acme/api-key/rotate"))
            .header("X-API-Key", &globex_key),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A provider credential stored through the pipeline-service never shows up in plaintext.
    let provider_secret = "sk-proj-walk-secret-0123456789abcdef";
    let (s, b) = send(
        &c,
        c.post(pipe.url("/api/v1/integrations/acme/openai/setup"))
            .header("X-API-Key", &acme_key)
            .json(&json!({"credential": provider_secret, "skip_validation": true})),
    )
    .await;
    assert_eq!(
        (s, b["validation_status"].as_str()),
        (StatusCode::OK, Some("PENDING")),
        "{b}"
    );
    assert!(!b.to_string().contains(provider_secret));

    // Globex pulls a day of OpenAI usage from the sandbox and prices it in this warehouse;
    // a rerun replaces the day (same totals).
    let (s, b) = send(
        &c,
        c.post(pipe.url("/api/v1/integrations/globex/openai/setup"))
            .header("X-API-Key", &globex_key)
            .json(&json!({"credential": "sk-admin-walk-globex-0001"})),
    )
    .await;
    assert_eq!(b["validation_status"], "VALID", "{s}: {b}");
    let mut totals = Vec::new();
    for _ in 0..2 {
        let (s, b) = send(
            &c,
            c.post(pipe.url("/api/v1/pipelines/run/globex/openai/cost/usage_cost"))
                .header("X-API-Key", &globex_key)
                .json(&json!({"date": "2026-01-10"})),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let id = b["pipeline_logging_id"].as_str().unwrap().to_string();
        let mut run = Value::Null;
        for _ in 0..1200 {
            let (_, r) = send(
                &c,
                c.get(pipe.url(&format!("/api/v1/pipelines/runs/{id}")))
                    .header("X-API-Key", &globex_key),
            )
            .await;
            run = r;
            if !matches!(run["status"].as_str(), Some("PENDING") | Some("RUNNING")) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(run["status"], "COMPLETED", "{run}");
        let (s, b) = send(
            &c,
            c.get(pipe.url("/api/v1/costs/globex?start_date=2026-01-10&end_date=2026-01-10&group_by=model"))
                .header("X-API-Key", &globex_key),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["unknown_model_rows"], 0, "{b}");
        let by_model: f64 = b["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["total_cost"].as_str().unwrap().parse::<f64>().unwrap())
            .sum();
        let total: f64 = b["total_cost"].as_str().unwrap().parse().unwrap();
        assert!(total > 0.0 && (total - by_model).abs() < 1e-6, "{b}");
        totals.push(b["total_cost"].clone());
    }
    assert_eq!(totals[0], totals[1], "a rerun replaces the day");

    // Rotate: the old key dies at once in the api-service, and within the cache TTL (1 s
    // here) in the pipeline-service; the new key works in both.
    let (s, b) = send(
        &c,
        c.post(api.url("/api/v1/organizations/acme/api-key/rotate"))
            .header("X-API-Key", &acme_key),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let new_key = b["api_key"].as_str().unwrap().to_string();
    let (s, _) = send(
        &c,
        c.get(api.url("/api/v1/organizations/acme/api-key"))
            .header("X-API-Key", &acme_key),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (s, b) = send(&c, whoami(&acme_key, "acme")).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_API_KEY"))
    );
    let (s, _) = send(&c, whoami(&new_key, "acme")).await;
    assert_eq!(s, StatusCode::OK);

    // Suspend (as the Stripe sync would): visible to the org on the pipeline-service.
    let (s, b) = send(
        &c,
        root(c.put(api.url("/api/v1/organizations/acme/subscription"))).json(&json!({"stripe_status": "past_due"})),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("SUSPENDED")), "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // the other process's cache TTL
    let (s, b) = send(&c, whoami(&new_key, "acme")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (b["subscription_status"].as_str(), b["can_run_pipelines"].as_bool()),
        (Some("SUSPENDED"), Some(false))
    );
    let (s, b) = send(
        &c,
        c.get(api.url("/api/v1/organizations/acme/subscription"))
            .header("X-API-Key", &new_key),
    )
    .await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("SUSPENDED")));

    // Graceful shutdown on SIGTERM.
    assert!(api.terminate().success(), "api-service exits cleanly on SIGTERM");
    assert!(pipe.terminate().success(), "pipeline-service exits cleanly on SIGTERM");

    // No plaintext key anywhere: data files, key file, logs.
    let files = all_files(dir);
    assert_eq!(
        files.iter().any(|f| f.extension().is_some_and(|e| e == "sqlite3")),
        embedded
    );
    let logs: String = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(
        logs.contains("e2e-walk-0001"),
        "the request id appears in the log lines of the request"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes
                .windows(provider_secret.len())
                .any(|w| w == provider_secret.as_bytes()),
            "{} contains a provider credential",
            f.display()
        );
        for key in [&acme_key, &new_key, &globex_key] {
            let secret = key.split_once("_api_").unwrap().1.as_bytes();
            assert_eq!(secret.len(), 22);
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} contains a plaintext key",
                f.display()
            );
        }
        assert!(
            !bytes.windows(ROOT_KEY.len()).any(|w| w == ROOT_KEY.as_bytes()),
            "{} contains the root key",
            f.display()
        );
    }
}

#[test]
fn production_refuses_to_start_and_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["api-service", "pipeline-service"] {
        let out = std::process::Command::new(cloudact_e2e::binary(name))
            .env_clear()
            .env("ENVIRONMENT", "production")
            .env("CA_ROOT_API_KEY", "short")
            .env("DISABLE_AUTH", "true")
            .env("RATE_LIMIT_ENABLED", "false")
            .env("DATA_DIR", dir.path())
            .env("CONFIGS_DIR", cloudact_e2e::configs_dir())
            .env("PORT", "0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} must refuse to start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in ["CA_ROOT_API_KEY", "DISABLE_AUTH", "RATE_LIMIT_ENABLED", "KMS=local"] {
            assert!(stderr.contains(needle), "{name}: {needle} not named in: {stderr}");
        }
    }
}
