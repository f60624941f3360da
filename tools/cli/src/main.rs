//! `cloudact`: the operator's command line. It reads the same environment as the services
//! (`DATA_DIR`, `CONFIGS_DIR`, `WAREHOUSE`, `KMS`, …) and runs the same library code, without
//! HTTP: admin and org commands go through the api-service's own router in process (same
//! validation, same audit rows, actor `root`); runs, migrations, price resets and FOCUS exports
//! call the pipeline and warehouse libraries directly. `--json` prints machine-readable output.

use std::{process::ExitCode, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{Method, Request},
    Router,
};
use clap::{Parser, Subcommand};
use cloudact_core::{
    config::TableList,
    meta::{runs::RunFilter, AuditEntry, AuditOutcome, CENTRAL_DATASET},
    settings::Settings,
    warehouse::{schema::migrate_tables, Params, TableDef},
};
use cloudact_pipeline::{
    focus,
    processors::register_all,
    runs::{resolve_dates, SubmitRequest, Submitted},
    Catalog, Registry,
};
use cloudact_web::AppContext;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Parser)]
#[command(
    name = "cloudact",
    version,
    about = "Operate CloudAct: bootstrap, orgs, keys, subscriptions, runs, migrations.",
    long_about = "Operate CloudAct from the command line with the same code the services run (no HTTP).\n\
                  It reads the services' environment: DATA_DIR, CONFIGS_DIR, WAREHOUSE, KMS, GCP_PROJECT_ID, ..."
)]
struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create (or migrate) the central dataset and tables.
    Bootstrap,
    /// Onboard an organization; prints its API key once.
    Onboard {
        org_slug: String,
        #[arg(long)]
        company_name: String,
        #[arg(long)]
        admin_email: String,
        /// STARTER, PROFESSIONAL, SCALE or ENTERPRISE.
        #[arg(long, default_value = "STARTER")]
        plan: String,
    },
    /// Issue a new API key for an org (the old one stops working); prints it once.
    RotateKey {
        org_slug: String,
        /// Scopes of the new key, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Revoke an org's API key without issuing a new one.
    RevokeKey { org_slug: String },
    /// Subscription commands.
    Subscription {
        #[command(subcommand)]
        command: SubscriptionCommand,
    },
    /// Run a pipeline for an org in this process (e.g. `openai/cost/usage_cost`) and wait for
    /// it to finish.
    Run {
        org_slug: String,
        /// The run path under configs/, without `.yml` (aliases work too).
        pipeline: String,
        /// One day (YYYY-MM-DD); default yesterday.
        #[arg(long, conflicts_with_all = ["start", "end"])]
        date: Option<String>,
        #[arg(long, requires = "end")]
        start: Option<String>,
        #[arg(long, requires = "start")]
        end: Option<String>,
        /// Show each step as it finishes.
        #[arg(long)]
        wait: bool,
    },
    /// An org's recent runs.
    Runs {
        org_slug: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Load and validate every pipeline spec under CONFIGS_DIR; non-zero exit with every
    /// problem listed (for CI).
    ValidateConfigs,
    /// Bring the central tables and every org's tables up to the schema files.
    Migrate,
    /// Restore a provider's default prices for an org.
    ResetPricing { org_slug: String, provider: String },
    /// Write an org's charges as FOCUS 1.3 CSV (the rows `GET /costs/{org}/focus` streams),
    /// one day at a time, to a file.
    Focus {
        org_slug: String,
        /// First day (YYYY-MM-DD).
        #[arg(long)]
        start: String,
        /// Last day (YYYY-MM-DD), at most 366 days after the first.
        #[arg(long)]
        end: String,
        /// The CSV file to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum SubscriptionCommand {
    /// Change an org's plan, status or trial end.
    Set {
        org_slug: String,
        #[arg(long)]
        plan: Option<String>,
        /// ACTIVE, TRIAL, PAST_DUE, SUSPENDED or CANCELLED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        trial_end_date: Option<String>,
    },
}

/// What a command prints: text for people, JSON with `--json`; and whether it succeeded.
struct Outcome {
    ok: bool,
    text: String,
    json: Value,
}

impl Outcome {
    fn ok(text: impl Into<String>, json: Value) -> Self {
        Outcome {
            ok: true,
            text: text.into(),
            json,
        }
    }
    fn failed(text: impl Into<String>, json: Value) -> Self {
        Outcome {
            ok: false,
            text: text.into(),
            json,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match run(cli.command).await {
        Ok(o) => o,
        Err(e) => Outcome::failed(format!("error: {e}"), json!({"error": e})),
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&outcome.json).unwrap_or_default());
    } else if outcome.ok {
        println!("{}", outcome.text);
    } else {
        eprintln!("{}", outcome.text);
    }
    if outcome.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn settings() -> Result<Settings, String> {
    let mut settings = Settings::from_env(8000).map_err(|e| e.to_string())?;
    // The CLI acts as the platform admin. Without a configured root key it uses a
    // per-process one: whoever runs it already holds the data directory or the cloud
    // credentials.
    if settings.root_api_key.is_none() {
        settings.root_api_key = Some(SecretString::from(format!("cli-{}", uuid::Uuid::new_v4())));
    }
    // No rate limit against one's own command line.
    settings.rate_limit_enabled = false;
    Ok(settings)
}

async fn context() -> Result<Arc<AppContext>, String> {
    AppContext::build("cloudact-cli", settings()?)
        .await
        .map_err(|e| e.to_string())
}

/// One request to the api-service's router, in process, as root.
async fn call(ctx: &Arc<AppContext>, router: &Router, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let root = ctx
        .settings
        .root_api_key
        .as_ref()
        .map(|k| k.expose_secret().to_string())
        .unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-ca-root-key", root)
        .header("user-agent", concat!("cloudact-cli/", env!("CARGO_PKG_VERSION")));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
    let Ok(req) = req.body(body) else {
        return (500, json!({"detail": "could not build the request"}));
    };
    match router.clone().oneshot(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
                .await
                .unwrap_or_default();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }
        Err(e) => (500, json!({"detail": e.to_string()})),
    }
}

/// An api-service call rendered as the command's outcome.
async fn api(
    method: Method,
    path: &str,
    body: Option<Value>,
    text: impl Fn(&Value) -> String,
) -> Result<Outcome, String> {
    let ctx = context().await?;
    let router = api_service::router(ctx.clone());
    let (status, b) = call(&ctx, &router, method, path, body).await;
    ctx.shutdown.cancel();
    Ok(if (200..300).contains(&status) {
        Outcome::ok(text(&b), b)
    } else {
        Outcome::failed(
            format!(
                "failed ({status} {}): {}",
                b["error"].as_str().unwrap_or("ERROR"),
                b["detail"].as_str().unwrap_or("")
            ),
            b,
        )
    })
}

/// An audit row for what the CLI does without the api-service's router (runs, migrations,
/// price resets): written first, refused if it cannot be written, completed after.
async fn audited<F, Fut>(ctx: &AppContext, org: &str, action: &str, f: F) -> Result<Outcome, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, String>>,
{
    let entry = AuditEntry {
        org_slug: org,
        action,
        resource_type: "CLI",
        resource_id: None,
        status: "PENDING",
        api_key_id: Some("root"),
        user_id: None,
        ip_address: None,
        user_agent: Some(concat!("cloudact-cli/", env!("CARGO_PKG_VERSION"))),
        request_id: None,
        details: json!({"via": "cli"}),
    };
    let id = ctx
        .store
        .audit_begin(&entry, chrono::Utc::now())
        .await
        .map_err(|e| format!("the audit log cannot be written ({e}); nothing was done"))?;
    let result = f().await;
    let (status, details, error) = match &result {
        Ok(o) if o.ok => ("SUCCESS", o.json.clone(), None),
        Ok(o) => ("FAILURE", o.json.clone(), Some(o.text.clone())),
        Err(e) => ("FAILURE", json!({}), Some(e.clone())),
    };
    let done = AuditOutcome {
        status,
        org_slug: org,
        actor: Some("root"),
        details: json!({"via": "cli", "result": details}),
        error_message: error.as_deref(),
    };
    if let Err(e) = ctx.store.audit_finish(&id, &done).await {
        eprintln!("warning: the audit row {id} could not be completed: {e}");
    }
    result
}

async fn run(command: Command) -> Result<Outcome, String> {
    match command {
        Command::Bootstrap => {
            api(Method::POST, "/api/v1/admin/bootstrap", None, |b| {
                b["message"].as_str().unwrap_or("bootstrapped").to_string()
            })
            .await
        }
        Command::Onboard {
            org_slug,
            company_name,
            admin_email,
            plan,
        } => {
            let body = json!({"org_slug": org_slug, "company_name": company_name, "admin_email": admin_email,
                              "subscription_plan": plan});
            api(Method::POST, "/api/v1/organizations/onboard", Some(body), |b| {
                format!(
                    "{}\nAPI key (shown once): {}",
                    b["message"].as_str().unwrap_or(""),
                    b["api_key"].as_str().unwrap_or("")
                )
            })
            .await
        }
        Command::RotateKey { org_slug, scopes } => {
            let body = (!scopes.is_empty()).then(|| json!({"scopes": scopes}));
            api(
                Method::POST,
                &format!("/api/v1/organizations/{org_slug}/api-key/rotate"),
                body,
                |b| {
                    format!(
                        "new key for {org_slug} (shown once): {}\nscopes: {}",
                        b["api_key"].as_str().unwrap_or(""),
                        b["scopes"]
                    )
                },
            )
            .await
        }
        Command::RevokeKey { org_slug } => {
            api(
                Method::DELETE,
                &format!("/api/v1/organizations/{org_slug}/api-key"),
                None,
                |b| b["message"].as_str().unwrap_or("revoked").to_string(),
            )
            .await
        }
        Command::Subscription {
            command:
                SubscriptionCommand::Set {
                    org_slug,
                    plan,
                    status,
                    trial_end_date,
                },
        } => {
            let mut body = serde_json::Map::new();
            if let Some(p) = plan {
                body.insert("plan_name".into(), json!(p));
            }
            if let Some(s) = status {
                body.insert("status".into(), json!(s));
            }
            if let Some(t) = trial_end_date {
                body.insert("trial_end_date".into(), json!(t));
            }
            api(
                Method::PUT,
                &format!("/api/v1/organizations/{org_slug}/subscription"),
                Some(Value::Object(body)),
                |b| b["message"].as_str().unwrap_or("updated").to_string(),
            )
            .await
        }
        Command::ValidateConfigs => Ok(validate_configs()),
        Command::Migrate => {
            let ctx = context().await?;
            let result = audited(&ctx, cloudact_web::audit::PLATFORM_ORG, "cli.migrate", || migrate(&ctx)).await;
            ctx.shutdown.cancel();
            result
        }
        Command::ResetPricing { org_slug, provider } => {
            let ctx = context().await?;
            let profile = ctx
                .store
                .profile(&org_slug)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("organization '{org_slug}' does not exist"))?;
            let result = audited(&ctx, &org_slug, "cli.reset-pricing", || async {
                match pipeline_service::reset_org_pricing(&ctx, &profile.org_dataset_id, &provider).await {
                    Ok(n) => Ok(Outcome::ok(
                        format!("{provider} prices of {org_slug} reset to the defaults: {n} rows"),
                        json!({"org_slug": org_slug, "provider": provider, "count": n}),
                    )),
                    Err(e) => Ok(Outcome::failed(
                        format!("failed ({}): {}", e.code, e.detail),
                        json!({"error": e.code, "detail": e.detail}),
                    )),
                }
            })
            .await;
            ctx.shutdown.cancel();
            result
        }
        Command::Runs { org_slug, limit } => {
            let ctx = context().await?;
            let filter = RunFilter {
                status: None,
                pipeline_id: None,
                from: None,
                to: None,
                limit: limit.clamp(1, 1000),
                offset: 0,
            };
            let (rows, total) = ctx.store.runs(&org_slug, &filter).await.map_err(|e| e.to_string())?;
            let runs: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let pick = |c: &str| r.get(c).map(|v| v.to_json()).unwrap_or(Value::Null);
                    json!({"pipeline_logging_id": pick("pipeline_logging_id"), "pipeline_id": pick("pipeline_id"),
                           "status": pick("status"), "start_time": pick("start_time"), "end_time": pick("end_time"),
                           "trigger_type": pick("trigger_type"), "error_message": pick("error_message")})
                })
                .collect();
            let text = std::iter::once(format!("{} of {total} runs of {org_slug}:", runs.len()))
                .chain(runs.iter().map(|r| {
                    format!(
                        "  {}  {:<10} {}  {}",
                        r["pipeline_logging_id"].as_str().unwrap_or(""),
                        r["status"].as_str().unwrap_or(""),
                        r["pipeline_id"].as_str().unwrap_or(""),
                        r["start_time"].as_str().unwrap_or("")
                    )
                }))
                .collect::<Vec<_>>()
                .join("\n");
            ctx.shutdown.cancel();
            Ok(Outcome::ok(
                text,
                json!({"org_slug": org_slug, "runs": runs, "total": total}),
            ))
        }
        Command::Focus {
            org_slug,
            start,
            end,
            out,
        } => {
            let ctx = context().await?;
            let result = focus_csv(&ctx, &org_slug, &start, &end, &out).await;
            ctx.shutdown.cancel();
            result
        }
        Command::Run {
            org_slug,
            pipeline,
            date,
            start,
            end,
            wait,
        } => {
            let ctx = context().await?;
            let result = audited(&ctx, &org_slug, "cli.run", || {
                run_pipeline(&ctx, &org_slug, &pipeline, date, start, end, wait)
            })
            .await;
            ctx.shutdown.cancel();
            result
        }
    }
}

/// `cloudact focus`: the org's FOCUS rows of each day, appended to `out` as they are read.
async fn focus_csv(
    ctx: &AppContext,
    org: &str,
    start: &str,
    end: &str,
    out: &std::path::Path,
) -> Result<Outcome, String> {
    use std::io::Write;
    let parse = |v: &str| {
        chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| format!("{v:?} is not a YYYY-MM-DD date"))
    };
    let (first, last) = (parse(start)?, parse(end)?);
    if first > last || (last - first).num_days() > 366 {
        return Err("--start must be ≤ --end, at most 366 days apart".into());
    }
    let profile = ctx
        .store
        .profile(org)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("organization '{org}' does not exist"))?;
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    w.write_all(&focus::csv_header()).map_err(io)?;
    let (mut rows, mut unpriced, mut billed) = (0u64, 0u64, rust_decimal::Decimal::ZERO);
    let present = focus::present_tables(ctx.warehouse.as_ref(), &profile.org_dataset_id)
        .await
        .map_err(|e| e.to_string())?;
    let mut day = first;
    while day <= last {
        let d = focus::focus_day_of(ctx.warehouse.as_ref(), &profile.org_dataset_id, org, day, &present)
            .await
            .map_err(|e| e.to_string())?;
        for r in &d.rows {
            w.write_all(&focus::csv_row(r)).map_err(io)?;
            billed += r.numeric("BilledCost").unwrap_or_default();
        }
        rows += d.rows.len() as u64;
        unpriced += d.unpriced_rows;
        day = match day.succ_opt() {
            Some(next) => next,
            None => break,
        };
    }
    w.flush().map_err(io)?;
    Ok(Outcome::ok(
        format!(
            "{rows} FOCUS {} rows of {org} ({first} to {last}, billed {}) written to {}; {unpriced} unpriced usage rows left out",
            focus::FOCUS_VERSION,
            billed.normalize(),
            out.display()
        ),
        json!({"org_slug": org, "rows": rows, "unpriced_rows": unpriced, "billed_cost": billed.normalize().to_string(),
               "focus_version": focus::FOCUS_VERSION, "file": out.display().to_string()}),
    ))
}

fn validate_configs() -> Outcome {
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => return Outcome::failed(e.clone(), json!({"valid": false, "problems": [e]})),
    };
    let mut registry = Registry::default();
    register_all(&mut registry);
    let mut problems: Vec<String> = Vec::new();
    let mut pipelines = 0;
    match Catalog::load(&settings.configs_dir, &registry) {
        Ok(c) => pipelines = c.entries().len(),
        Err(errors) => problems.extend(errors),
    }
    if let Err(e) = cloudact_core::config::ProviderRegistry::load(&settings.configs_dir) {
        problems.push(e.to_string());
    }
    for list in [
        "setup/bootstrap/tables.yml",
        "setup/organizations/onboarding/tables.yml",
    ] {
        if let Err(errors) = TableList::load(&settings.configs_dir, list) {
            problems.extend(errors.iter().map(ToString::to_string));
        }
    }
    let dir = settings.configs_dir.display().to_string();
    if problems.is_empty() {
        Outcome::ok(
            format!("{dir}: {pipelines} pipeline specs, the provider registry and the table lists are valid"),
            json!({"valid": true, "configs_dir": dir, "pipelines": pipelines}),
        )
    } else {
        Outcome::failed(
            format!("{dir}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - ")),
            json!({"valid": false, "configs_dir": dir, "problems": problems}),
        )
    }
}

async fn migrate(ctx: &AppContext) -> Result<Outcome, String> {
    let configs = &ctx.settings.configs_dir;
    let central = TableList::load(configs, "setup/bootstrap/tables.yml")
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
    let defs: Vec<&TableDef> = central.tables.iter().map(|t| &t.def).collect();
    let mut report = serde_json::Map::new();
    let mut problems = Vec::new();
    match migrate_tables(&*ctx.warehouse, CENTRAL_DATASET, &defs).await {
        Ok(r) => {
            report.insert(CENTRAL_DATASET.into(), json!(r));
        }
        Err(e) => problems.push(format!("{CENTRAL_DATASET}: {e}")),
    }
    let org_tables = TableList::load(configs, "setup/organizations/onboarding/tables.yml")
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
    let org_defs: Vec<&TableDef> = org_tables.tables.iter().map(|t| &t.def).collect();
    let orgs = ctx
        .warehouse
        .query(
            CENTRAL_DATASET,
            "SELECT org_slug, org_dataset_id FROM {{org_profiles}} ORDER BY org_slug",
            &Params::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    for o in &orgs {
        let Some(dataset) = o.string("org_dataset_id") else {
            continue;
        };
        if !ctx
            .warehouse
            .dataset_exists(&dataset)
            .await
            .map_err(|e| e.to_string())?
        {
            continue;
        }
        match migrate_tables(&*ctx.warehouse, &dataset, &org_defs).await {
            Ok(r) => {
                report.insert(dataset, json!(r));
            }
            Err(e) => problems.push(format!("{dataset}: {e}")),
        }
    }
    let added: usize = report
        .values()
        .filter_map(|r| r["columns_added"].as_object())
        .map(|m| m.values().filter_map(Value::as_array).map(Vec::len).sum::<usize>())
        .sum();
    let created: usize = report
        .values()
        .filter_map(|r| r["created"].as_array())
        .map(Vec::len)
        .sum();
    let json = json!({"datasets": report, "problems": problems, "columns_added": added, "tables_created": created});
    Ok(if problems.is_empty() {
        Outcome::ok(
            format!(
                "{} datasets up to date: {added} columns added, {created} tables created",
                report.len()
            ),
            json,
        )
    } else {
        Outcome::failed(
            format!(
                "{} dataset(s) refused (nothing changed in them):\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            ),
            json,
        )
    })
}

async fn run_pipeline(
    ctx: &Arc<AppContext>,
    org_slug: &str,
    pipeline: &str,
    date: Option<String>,
    start: Option<String>,
    end: Option<String>,
    wait: bool,
) -> Result<Outcome, String> {
    let path = format!("{}.yml", pipeline.trim_end_matches(".yml"));
    let entry = ctx
        .catalog
        .by_run_path(&path)
        .filter(|e| e.kind == "data")
        .ok_or_else(|| format!("no runnable pipeline at configs/{path}"))?;
    if ctx.store.profile(org_slug).await.map_err(|e| e.to_string())?.is_none() {
        return Err(format!("organization '{org_slug}' does not exist"));
    }
    let today = ctx.clock.now().date_naive();
    let (start_date, end_date) = resolve_dates(date.as_deref(), start.as_deref(), end.as_deref(), today)?;
    let mut parameters = serde_json::Map::new();
    parameters.insert("start_date".into(), json!(start_date.to_string()));
    parameters.insert("end_date".into(), json!(end_date.to_string()));
    ctx.runs.start_background(ctx.shutdown.clone());
    let request = SubmitRequest {
        org_slug: org_slug.to_string(),
        org_api_key_id: None,
        start_date,
        end_date,
        trigger_type: "cli".into(),
        trigger_by: Some("cloudact-cli".into()),
        user_id: None,
        parameters,
        retry_of: None,
        scheduled: None,
    };
    let id = match ctx.runs.submit(&entry, request).await.map_err(|e| format!("{e:?}"))? {
        Submitted::Started(id) => id,
        Submitted::AlreadyRunning(id) => return Err(format!("the same run is already in progress: {id}")),
        Submitted::AlreadyAdmitted => return Err("already admitted".into()),
    };
    if wait {
        eprintln!("run {id}: {} for {org_slug}, {start_date} to {end_date}", entry.id);
    }
    // The run executes in this process: wait for its end, showing steps as they finish.
    let mut shown = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if wait {
            if let Ok(steps) = ctx.store.run_steps(org_slug, &id).await {
                for s in steps.iter().skip(shown) {
                    eprintln!(
                        "  step {:<28} {:<10} {} rows  {} ms",
                        s.string("step_name").unwrap_or_default(),
                        s.string("status").unwrap_or_default(),
                        s.int("rows_processed").unwrap_or(0),
                        s.int("duration_ms").unwrap_or(0)
                    );
                }
                shown = steps.len();
            }
        }
        let Some(run) = ctx.store.run(org_slug, &id).await.map_err(|e| e.to_string())? else {
            return Err(format!("run {id} disappeared"));
        };
        let status = run.string("status").unwrap_or_default();
        if status != "PENDING" && status != "RUNNING" {
            let json = json!({"pipeline_logging_id": id, "pipeline_id": entry.id, "status": status,
                              "error_message": run.string("error_message")});
            let text = format!(
                "run {id}: {status}{}",
                run.string("error_message")
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            return Ok(if status == "COMPLETED" {
                Outcome::ok(text, json)
            } else {
                Outcome::failed(text, json)
            });
        }
    }
}
