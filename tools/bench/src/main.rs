//! Benchmarks (see `bench/README.md`):
//!
//! - `cloudact-bench [runs] [RUNS] [MAX_CONCURRENT_RUNS]` — run throughput ([`runs`]).
//! - `cloudact-bench ingest [--pages N] [--rows-per-page N] [--pages-url URL]` — OpenAI usage
//!   ingestion and pricing ([`ingest`]).
//! - `cloudact-bench pages DIR PORT` — the plain static page server ([`pages`]).
//! - `cloudact-bench scheduler [--orgs N] [--concurrency C] [--pubsub HOST:PORT]` — trigger +
//!   queue processing for N orgs ([`scheduler`]).

mod ingest;
mod pages;
mod runs;
mod scheduler;

use std::{collections::HashMap, path::Path, process::ExitCode, sync::Arc};

use chrono::Utc;
use cloudact_core::{
    auth::hash_key,
    meta::{NewApiKey, NewOrg, Plan, SubscriptionStatus},
    settings::Settings,
};
use cloudact_pipeline::{CancellationToken, RunRequest};
use cloudact_web::AppContext;

/// A pipeline-service context on a fresh embedded warehouse in `data_dir` (with `extra`
/// settings), bootstrapped, with one ACTIVE org `bench` (dataset `bench_local`).
pub async fn bench_context(data_dir: &Path, extra: &[(&str, String)]) -> Result<Arc<AppContext>, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("DATA_DIR".into(), data_dir.display().to_string());
    env.insert(
        "CONFIGS_DIR".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs").into(),
    );
    for (k, v) in extra {
        env.insert(k.to_string(), v.clone());
    }
    let settings = Settings::from_map(&env, 8001).map_err(|e| e.to_string())?;
    let ctx = AppContext::build("pipeline-service", settings)
        .await
        .map_err(|e| e.to_string())?;
    let bootstrap = ctx
        .catalog
        .require("setup/bootstrap/pipeline.yml")
        .map_err(|e| e.to_string())?;
    ctx.executor
        .run(&bootstrap, RunRequest::default(), CancellationToken::new())
        .await;
    let now = Utc::now();
    let org = NewOrg {
        org_slug: "bench".into(),
        company_name: "Bench".into(),
        admin_email: "b@bench.example".into(),
        org_dataset_id: "bench_local".into(),
        plan: Plan::Enterprise,
        status: SubscriptionStatus::Active,
        trial_end_date: None,
        key: NewApiKey {
            org_api_key_id: "k".into(),
            hash: hash_key("bench"),
            ciphertext: vec![0],
            fingerprint: "ench".into(),
        },
        idempotency: None,
    };
    ctx.store.create_org(&org, now).await.map_err(|e| e.to_string())?;
    ctx.store.activate_org("bench", now).await.map_err(|e| e.to_string())?;
    Ok(ctx)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ingest") => ingest::run(&args[1..]).await,
        Some("pages") => pages::run(&args[1..]).await,
        Some("runs") => runs::run(&args[1..]).await,
        Some("scheduler") => scheduler::run(&args[1..]).await,
        _ => runs::run(&args).await,
    }
}
