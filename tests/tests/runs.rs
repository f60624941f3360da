//! Black-box pipeline runs: both real binaries, two orgs running the example pipeline at once,
//! reruns that leave identical tables, no cross-org rows, and a pipeline-service killed with
//! SIGKILL mid-run whose run is failed (not left RUNNING) after a restart — on the embedded
//! warehouse and on the BigQuery emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use cloudact_core::warehouse::{
    bigquery::{BigQueryConfig, BigQueryWarehouse},
    embedded::EmbeddedWarehouse,
    Params, Warehouse,
};
use cloudact_e2e::{BigQueryEmulator, KmsEmulator, Service, ROOT_KEY};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")),
    )
}

struct Env {
    c: Client,
    api: Service,
    pipe: Service,
}

impl Env {
    async fn onboard(&self, slug: &str) -> String {
        let body = json!({"org_slug": slug, "company_name": "Co", "admin_email": "ops@co.example", "subscription_plan": "SCALE"});
        let (s, b) = call(
            self.c
                .post(self.api.url("/api/v1/organizations/onboard"))
                .header("X-CA-Root-Key", ROOT_KEY)
                .json(&body),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["api_key"].as_str().unwrap().to_string()
    }

    async fn run(&self, key: &str, org: &str, body: Value) -> String {
        let url = self
            .pipe
            .url(&format!("/api/v1/pipelines/run/{org}/example/synthetic_usage"));
        let (s, b) = call(self.c.post(url).header("X-API-Key", key).json(&body)).await;
        if s != StatusCode::ACCEPTED {
            let log = std::fs::read_to_string(&self.pipe.log).unwrap_or_default();
            let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
            panic!("{s}: {b}\n{}", errors.join("\n"));
        }
        b["pipeline_logging_id"].as_str().unwrap().to_string()
    }

    async fn status(&self, key: &str, id: &str) -> Value {
        let (s, b) = call(
            self.c
                .get(self.pipe.url(&format!("/api/v1/pipelines/runs/{id}")))
                .header("X-API-Key", key),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    async fn finished(&self, key: &str, id: &str) -> Value {
        for _ in 0..1200 {
            let b = self.status(key, id).await;
            if !matches!(b["status"].as_str(), Some("PENDING") | Some("RUNNING")) {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} did not finish");
    }
}

async fn counts(wh: &dyn Warehouse, org: &str) -> (i64, i64, i64) {
    let ds = format!("{org}_local");
    let q = |table: &str| {
        format!("SELECT COUNT(*) AS n, SUM(CASE WHEN org_slug = @org THEN 0 ELSE 1 END) AS foreign_rows FROM {{{{{table}}}}}")
    };
    let usage = wh
        .query(&ds, &q("example_usage_daily"), &Params::new().with("org", org))
        .await
        .unwrap();
    let cost = wh
        .query(&ds, &q("example_cost_daily"), &Params::new().with("org", org))
        .await
        .unwrap();
    let foreign = usage[0].int("foreign_rows").unwrap_or(0) + cost[0].int("foreign_rows").unwrap_or(0);
    (usage[0].int("n").unwrap(), cost[0].int("n").unwrap(), foreign)
}

async fn two_orgs_concurrently_then_rerun(dir: &Path, env: HashMap<&'static str, String>, wh: Arc<dyn Warehouse>) {
    let api = Service::start("api-service", dir, &env);
    let pipe = Service::start("pipeline-service", dir, &env);
    let e = Env {
        c: Client::new(),
        api,
        pipe,
    };
    let (s, b) = call(
        e.c.post(e.api.url("/api/v1/admin/bootstrap"))
            .header("X-CA-Root-Key", ROOT_KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let acme = e.onboard("acme").await;
    let globex = e.onboard("globex").await;
    let days = json!({"start_date": "2026-01-01", "end_date": "2026-01-03"});
    let (a, g) = tokio::join!(
        e.run(&acme, "acme", days.clone()),
        e.run(&globex, "globex", days.clone())
    );
    let (ra, rg) = tokio::join!(e.finished(&acme, &a), e.finished(&globex, &g));
    assert_eq!(
        (ra["status"].as_str(), rg["status"].as_str()),
        (Some("COMPLETED"), Some("COMPLETED")),
        "{ra} {rg}"
    );
    let first = (counts(&*wh, "acme").await, counts(&*wh, "globex").await);
    assert_eq!(
        first,
        ((36, 36, 0), (36, 36, 0)),
        "3 days × 12 rows each, no cross-org rows"
    );
    // Rerun the same dates for both at once: identical tables.
    let (a, g) = tokio::join!(e.run(&acme, "acme", days.clone()), e.run(&globex, "globex", days));
    tokio::join!(e.finished(&acme, &a), e.finished(&globex, &g));
    assert_eq!((counts(&*wh, "acme").await, counts(&*wh, "globex").await), first);
    assert!(e.api.terminate().success());
    assert!(e.pipe.terminate().success());
}

#[tokio::test]
async fn two_orgs_on_the_embedded_warehouse() {
    let dir = tempfile::tempdir().unwrap();
    let wh: Arc<dyn Warehouse> = Arc::new(EmbeddedWarehouse::open(dir.path()).unwrap());
    two_orgs_concurrently_then_rerun(dir.path(), HashMap::new(), wh).await;
}

#[tokio::test]
async fn two_orgs_on_the_bigquery_emulator() {
    let bq = BigQueryEmulator::start();
    let kms = KmsEmulator::start();
    let key_name = kms.create_key("runs", "k").await;
    let dir = tempfile::tempdir().unwrap();
    let env = cloudact_e2e::cloud_env(&bq, &kms, key_name);
    let config = BigQueryConfig {
        project: bq.project.clone(),
        location: "US".into(),
        base_url: Some(bq.base_url.clone()),
    };
    let wh: Arc<dyn Warehouse> = Arc::new(BigQueryWarehouse::connect(config).await.unwrap());
    two_orgs_concurrently_then_rerun(dir.path(), env, wh).await;
}

#[tokio::test]
async fn a_run_killed_with_its_process_is_failed_after_restart_and_reruns_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = [
        ("RUN_HEARTBEAT_SECONDS", "1".to_string()),
        ("RUN_STALE_SECONDS", "3".to_string()),
    ]
    .into_iter()
    .collect();
    let api = Service::start("api-service", dir.path(), &env);
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    let mut e = Env {
        c: Client::new(),
        api,
        pipe,
    };
    call(
        e.c.post(e.api.url("/api/v1/admin/bootstrap"))
            .header("X-CA-Root-Key", ROOT_KEY),
    )
    .await;
    let key = e.onboard("crash").await;
    let range = json!({"start_date": "2026-02-01", "end_date": "2026-02-10", "parameters": {"pause_ms": 400}});
    let id = e.run(&key, "crash", range).await;
    // Wait until it is RUNNING and has loaded at least one day, then SIGKILL the process.
    for _ in 0..200 {
        let b = e.status(&key, &id).await;
        if b["status"] == "RUNNING" && !b["steps"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = e.pipe.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let _ = e.pipe.child.wait();
    e.pipe = Service::start("pipeline-service", dir.path(), &env);
    let run = e.finished(&key, &id).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert!(run["error_message"].as_str().unwrap().contains("stopped"), "{run}");
    let wh = EmbeddedWarehouse::open(dir.path()).unwrap();
    let partial = counts(&wh, "crash").await;
    assert!(partial.0 < 120, "the killed run loaded only some days: {partial:?}");
    // The slot was released, and a rerun yields exactly the ten days.
    let id = e
        .run(
            &key,
            "crash",
            json!({"start_date": "2026-02-01", "end_date": "2026-02-10"}),
        )
        .await;
    assert_eq!(e.finished(&key, &id).await["status"], "COMPLETED");
    assert_eq!(counts(&wh, "crash").await, (120, 120, 0));
}
