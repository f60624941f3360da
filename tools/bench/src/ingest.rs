//! OpenAI usage ingestion and pricing.
//!
//! Writes `PAGES` page files of `ROWS` completions-usage results each (the Admin Usage API's
//! page envelope, every documented result field, deterministic values; cached between runs),
//! serves them from a separate process with the plain static page server ([`crate::pages`]),
//! and runs the real `openai.usage` processor for one day against it on a fresh embedded
//! warehouse (HTTP, parse, staged batches of 1 000, atomic swap) — then prices the loaded
//! rows with the real `openai.cost` processor. Reports rows/s, wall time and peak RSS.
//! `--pages-url URL` reads pages from another server instead (same `?page=N` scheme).

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::Instant,
};

use chrono::{NaiveDate, Utc};
use cloudact_core::{meta::integrations::NewCredential, warehouse::Params};
use cloudact_pipeline::{context::credential_aad, CancellationToken, PipelineSpec, RunRequest, RunStatus};
use cloudact_web::AppContext;

const DAY: &str = "2026-03-01";
const MODELS: [&str; 9] = [
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
    "o3-mini-2025-01-31",
    "gpt-4o",
    "gpt-4o-mini",
    "o1-2024-12-17",
    "o1-mini-2024-09-12",
    "gpt-4.1-2025-04-14",
    "ft:unpriced-model",
];

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Peak and current resident set size of this process, in MB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Writes the page files unless a complete set is already there; returns their total size.
fn write_pages(dir: &Path, pages: usize, rows: usize) -> std::io::Result<u64> {
    let done = dir.join("COMPLETE");
    if !done.exists() {
        std::fs::create_dir_all(dir)?;
        let start = NaiveDate::parse_from_str(DAY, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0);
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        for p in 1..=pages {
            let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("page-{p}.json")))?);
            write!(
                out,
                "{{\"object\":\"page\",\"data\":[{{\"object\":\"bucket\",\"start_time\":{start},\"end_time\":{},\"results\":[",
                start + 86_400
            )?;
            for r in 0..rows {
                let i = (p - 1) * rows + r;
                let model = MODELS[i % MODELS.len()];
                let batch = i.is_multiple_of(7);
                let tier = if batch {
                    "batch"
                } else {
                    ["default", "default", "flex", "priority"][i % 4]
                };
                let requests = 1 + next(400);
                let input = requests * (50 + next(3000));
                let cached = input * next(50) / 100;
                let write_ = input * next(10) / 100;
                let output = requests * (10 + next(800));
                let audio_in = if i.is_multiple_of(11) { next(500) } else { 0 };
                let text_in = input - cached - write_ - audio_in.min(input - cached - write_);
                write!(
                    out,
                    "{}{{\"object\":\"organization.usage.completions.result\",\"input_tokens\":{input},\"output_tokens\":{output},\
                     \"num_model_requests\":{requests},\"project_id\":\"proj_{:07}\",\"user_id\":null,\"api_key_id\":null,\
                     \"model\":\"{model}\",\"batch\":{batch},\"service_tier\":\"{tier}\",\"input_cached_tokens\":{cached},\
                     \"input_cache_write_tokens\":{write_},\"input_uncached_tokens\":{},\"input_text_tokens\":{text_in},\
                     \"output_text_tokens\":{output},\"input_cached_text_tokens\":{cached},\"input_audio_tokens\":{audio_in},\
                     \"input_cached_audio_tokens\":0,\"output_audio_tokens\":0,\"input_image_tokens\":0,\
                     \"input_cached_image_tokens\":0,\"output_image_tokens\":0}}",
                    if r == 0 { "" } else { "," },
                    i / MODELS.len(),
                    input - cached - write_,
                )?;
            }
            let more = p < pages;
            if more {
                write!(out, "]}}],\"has_more\":true,\"next_page\":\"{}\"}}", p + 1)?;
            } else {
                write!(out, "]}}],\"has_more\":false,\"next_page\":null}}")?;
            }
            out.flush()?;
        }
        std::fs::write(&done, format!("{pages} pages × {rows} rows\n"))?;
    }
    let mut total = 0;
    for p in 1..=pages {
        total += std::fs::metadata(dir.join(format!("page-{p}.json")))?.len();
    }
    Ok(total)
}

/// Starts the static page server as its own process (its memory is not ours).
fn serve_pages(dir: &Path) -> Result<(Child, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("pages")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("page server said {line:?}"))?
        .to_string();
    Ok((child, url))
}

async fn context(data_dir: &Path, base_url: &str) -> Result<std::sync::Arc<AppContext>, String> {
    let ctx = crate::bench_context(data_dir, &[("OPENAI_BASE_URL", base_url.to_string())]).await?;
    let now = Utc::now();
    let onboarding = ctx
        .catalog
        .require("setup/organizations/onboarding/pipeline.yml")
        .map_err(|e| e.to_string())?;
    let report = ctx
        .executor
        .run(&onboarding, request(&ctx), CancellationToken::new())
        .await;
    if report.status != RunStatus::Completed {
        return Err(format!("onboarding: {report:?}"));
    }
    let ciphertext = ctx
        .kms
        .encrypt(b"sk-admin-bench-key", credential_aad("bench", "OPENAI").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let credential = NewCredential {
        credential_id: "cred_bench".into(),
        org_slug: "bench".into(),
        provider: "OPENAI".into(),
        credential_name: "bench".into(),
        ciphertext,
        credential_type: "api_key".into(),
        fingerprint: "-key".into(),
        validation_status: "VALID".into(),
        last_error: None,
        metadata: serde_json::json!({}),
        user_id: None,
    };
    ctx.store
        .store_credential(&credential, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ctx)
}

fn request(ctx: &AppContext) -> RunRequest {
    let mut req = RunRequest {
        org_slug: Some("bench".into()),
        ..Default::default()
    };
    req.variables
        .insert("dataset".into(), ctx.settings.org_dataset("bench"));
    if let Ok(day) = NaiveDate::parse_from_str(DAY, "%Y-%m-%d") {
        req.dates = vec![day];
    }
    req
}

async fn one_step(ctx: &AppContext, yaml: &str) -> Result<(f64, u64), String> {
    let spec = PipelineSpec::from_yaml(yaml)?;
    let started = Instant::now();
    let report = ctx.executor.run(&spec, request(ctx), CancellationToken::new()).await;
    let seconds = started.elapsed().as_secs_f64();
    if report.status != RunStatus::Completed {
        return Err(format!("{:?}: {:?}", report.status, report.error));
    }
    let rows = report.steps.iter().map(|s| s.rows_processed).sum();
    Ok((seconds, rows))
}

pub async fn run(args: &[String]) -> ExitCode {
    match ingest(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn ingest(args: &[String]) -> Result<(), String> {
    let pages: usize = flag(args, "--pages").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let rows: usize = flag(args, "--rows-per-page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    // `--keep-data DIR`: the warehouse goes to DIR and stays there, for a closer look.
    let kept = flag(args, "--keep-data").map(PathBuf::from);
    let (server, url) = match flag(args, "--pages-url") {
        Some(url) => (None, url),
        None => {
            let dir: PathBuf = flag(args, "--dir")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join(format!("cloudact-bench-pages-{pages}x{rows}")));
            let t = Instant::now();
            let bytes = write_pages(&dir, pages, rows).map_err(|e| format!("{}: {e}", dir.display()))?;
            println!(
                "pages: {pages} × {rows} rows, {:.0} MB of JSON in {} (ready in {:.1} s)",
                bytes as f64 / 1e6,
                dir.display(),
                t.elapsed().as_secs_f64()
            );
            let (child, url) = serve_pages(&dir)?;
            (Some(child), url)
        }
    };
    let outcome = measure(
        kept.as_deref().unwrap_or(data.path()),
        &url,
        pages * rows,
        !args.iter().any(|a| a == "--no-pricing"),
    )
    .await;
    if let Some(mut child) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
    outcome
}

async fn measure(data_dir: &Path, url: &str, expected: usize, pricing: bool) -> Result<(), String> {
    let ctx = context(data_dir, url).await?;
    let (peak_before, _) = rss_mb();
    let (seconds, loaded) = one_step(
        &ctx,
        "pipeline_id: bench_usage\nsteps:\n  - step_id: extract_usage\n    ps_type: openai.usage\n    config:\n      \
         dataset: \"{dataset}\"\n      date: \"{date}\"\n      table: openai_usage_daily_raw\n      \
         schema: openai/schemas/openai_usage_daily_raw.json\n      endpoints: [completions]\n",
    )
    .await?;
    let (peak, _) = rss_mb();
    println!(
        "ingest: {loaded} rows in {seconds:.2} s → {:.0} rows/s end to end (HTTP, parse, staged batches, swap); \
         peak RSS {peak:.0} MB (before the load: {peak_before:.0} MB)",
        loaded as f64 / seconds
    );
    if loaded as usize != expected {
        return Err(format!("expected {expected} rows, loaded {loaded}"));
    }
    if !pricing {
        return Ok(());
    }
    let (seconds, priced) = one_step(
        &ctx,
        "pipeline_id: bench_cost\nsteps:\n  - step_id: calculate_cost\n    ps_type: openai.cost\n    config:\n      \
         dataset: \"{dataset}\"\n      date: \"{date}\"\n      usage_table: openai_usage_daily_raw\n      \
         cost_table: openai_cost_daily\n      schema: openai/schemas/openai_cost_daily.json\n      \
         pricing_table: llm_model_pricing\n",
    )
    .await?;
    let (peak, _) = rss_mb();
    println!(
        "pricing: {priced} rows in {seconds:.2} s → {:.0} rows/s; peak RSS so far {peak:.0} MB",
        priced as f64 / seconds
    );
    let check = ctx
        .warehouse
        .query(
            "bench_local",
            "SELECT COUNT(*) AS n, SUM(CASE WHEN unknown_model THEN 1 ELSE 0 END) AS unknown FROM {{openai_cost_daily}}",
            &Params::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "check: {} cost rows, {} of an unpriced model (flagged, cost null)",
        check[0].int("n").unwrap_or(0),
        check[0].int("unknown").unwrap_or(0)
    );
    Ok(())
}
