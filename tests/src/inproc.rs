//! The in-process harness of the services' integration tests (`tests/tests/api_service`,
//! `tests/tests/pipeline_service`): the real app of either service on a random port, against
//! a temporary DATA_DIR prepared by the real bootstrap and onboarding code paths; orgs made
//! the way onboarding makes them; the sandbox provider server; request helpers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness panics on the unexpected

use std::{collections::HashMap, path::Path, sync::Arc};

use chrono::Utc;
use cloudact_core::{
    auth::{generate_org_api_key, hash_key, key_fingerprint},
    meta::{NewApiKey, NewOrg, Plan, SubscriptionStatus},
    settings::Settings,
};
use cloudact_pipeline::{CancellationToken, RunRequest, RunStatus};
use cloudact_web::{server::Running, AppContext};
use reqwest::{Client, Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

/// The root key every in-process app is started with.
pub const ROOT_KEY: &str = "inproc-test-root-key-0123456789abcdef";

/// One service running in this process on a random port, over its own temporary DATA_DIR.
pub struct App {
    pub server: Running,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

/// The pipeline-service, bootstrapped.
pub async fn spawn() -> App {
    spawn_with_clock(Arc::new(cloudact_core::clock::SystemClock), &[]).await
}

pub async fn spawn_with_clock(clock: Arc<dyn cloudact_core::clock::Clock>, extra: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(dir.path(), clock, extra).await;
    App {
        server,
        client: Client::new(),
        dir,
    }
}

/// Starts one more app process-equivalent (its own context, runner id and scheduler) on an
/// existing DATA_DIR: two of these are two instances sharing one warehouse.
pub async fn start_on(
    dir: &std::path::Path,
    clock: Arc<dyn cloudact_core::clock::Clock>,
    extra: &[(&str, &str)],
) -> Running {
    let ctx = bootstrapped_context(dir, clock, extra).await;
    cloudact_web::server::spawn(ctx.clone(), pipeline_service::router(ctx))
        .await
        .unwrap()
}

/// The settings environment of an in-process app over `dir` (root key, configs, a random
/// port), with `extra` on top.
fn test_env(dir: &Path, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("CA_ROOT_API_KEY".into(), ROOT_KEY.into());
    env.insert("DATA_DIR".into(), dir.display().to_string());
    env.insert("CONFIGS_DIR".into(), crate::configs_dir().display().to_string());
    env.insert("HOST".into(), "127.0.0.1".into());
    env.insert("PORT".into(), "0".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// A pipeline-service context over `dir`, bootstrapped by the real bootstrap pipeline. Tests
/// drive the scheduler's endpoints themselves (`SCHEDULER=external`, deterministic) unless
/// `extra` says otherwise.
pub async fn bootstrapped_context(
    dir: &Path,
    clock: Arc<dyn cloudact_core::clock::Clock>,
    extra: &[(&str, &str)],
) -> Arc<AppContext> {
    let mut with_scheduler = vec![("SCHEDULER", "external")];
    with_scheduler.extend_from_slice(extra);
    let env = test_env(dir, &with_scheduler);
    let ctx = AppContext::build_with_clock("pipeline-service", Settings::from_map(&env, 8001).unwrap(), clock)
        .await
        .unwrap();
    let spec = ctx.catalog.require("setup/bootstrap/pipeline.yml").unwrap();
    let report = ctx
        .executor
        .run(&spec, RunRequest::default(), CancellationToken::new())
        .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    ctx
}

/// Creates an ACTIVE org the way onboarding does and returns its key.
pub async fn org(ctx: &Arc<AppContext>, slug: &str) -> String {
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
    pub async fn whoami(&self, path_org: &str, key: Option<&str>) -> (StatusCode, Value) {
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

/// An org as onboarding makes it: central rows, ACTIVE, and its dataset with default pricing.
pub async fn onboarded(ctx: &Arc<AppContext>, slug: &str) -> String {
    let key = org(ctx, slug).await;
    let spec = ctx
        .catalog
        .require("setup/organizations/onboarding/pipeline.yml")
        .unwrap();
    let mut req = RunRequest {
        org_slug: Some(slug.into()),
        ..Default::default()
    };
    req.variables.insert("dataset".into(), ctx.settings.org_dataset(slug));
    let report = ctx.executor.run(&spec, req, CancellationToken::new()).await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    key
}

impl App {
    pub async fn post_run(
        &self,
        key: &str,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let resp = self
            .client
            .post(self.server.url(path))
            .header("X-API-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, resp.json().await.unwrap(), headers)
    }

    pub async fn get_json(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(self.server.url(path))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    /// Polls a run until it leaves PENDING/RUNNING.
    pub async fn finished(&self, key: &str, id: &str) -> Value {
        for _ in 0..600 {
            let (s, run) = self.get_json(key, &format!("/api/v1/pipelines/runs/{id}")).await;
            assert_eq!(s, StatusCode::OK, "{run}");
            if !matches!(run["status"].as_str(), Some("PENDING") | Some("RUNNING")) {
                return run;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("run {id} did not finish");
    }

    /// Starts a run (`body`: a date or a range), waits for it, and checks it COMPLETED.
    pub async fn completed_run(&self, key: &str, path: &str, body: Value) -> Value {
        let (s, b, _) = self.post_run(key, path, body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let run = self.finished(key, b["pipeline_logging_id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
        run
    }

    pub async fn count(&self, dataset: &str, table: &str, org: &str) -> i64 {
        let rows = self
            .server
            .ctx
            .warehouse
            .query(
                dataset,
                &format!("SELECT COUNT(*) AS n FROM {{{{{table}}}}} WHERE org_slug = @org"),
                &cloudact_core::warehouse::Params::new().with("org", org),
            )
            .await
            .unwrap();
        rows[0].int("n").unwrap()
    }
}

impl App {
    /// A root-key request; the JSON answer (or the text, wrapped) and the status.
    pub async fn root(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        root_call(&self.client, &self.server, method, path, body).await
    }
}

pub async fn root_call(
    client: &Client,
    server: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(client, server, method, path, ("X-CA-Root-Key", ROOT_KEY), body).await
}

/// One request with one auth header; the answer must be JSON.
pub async fn call(
    client: &Client,
    server: &Running,
    method: reqwest::Method,
    path: &str,
    (header, value): (&str, &str),
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(method, server.url(path)).header(header, value);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")),
    )
}

/// Serves `app` on a free loopback port for the rest of the test; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

pub async fn sandbox() -> String {
    serve(sandbox_providers::router(42)).await
}

pub async fn spawn_with_sandbox() -> App {
    let url = sandbox().await;
    spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[
            ("OPENAI_BASE_URL", &url),
            ("ANTHROPIC_BASE_URL", &url),
            ("DEEPSEEK_BASE_URL", &url),
            ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "1"),
        ],
    )
    .await
}

impl App {
    pub async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(&self.client, &self.server, method, path, ("X-API-Key", key), body).await
    }

    pub async fn setup(&self, key: &str, org: &str, provider: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            key,
            &format!("/api/v1/integrations/{org}/{provider}/setup"),
            Some(body),
        )
        .await
    }
}

/// The api-service (not bootstrapped: its tests bootstrap over HTTP).
pub async fn spawn_api_with(extra: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let env = test_env(dir.path(), extra);
    let settings = Settings::from_map(&env, 8000).unwrap();
    let ctx = AppContext::build("api-service", settings).await.unwrap();
    let server = cloudact_web::server::spawn(ctx.clone(), api_service::router(ctx))
        .await
        .unwrap();
    App {
        server,
        client: Client::new(),
        dir,
    }
}

pub async fn spawn_api() -> App {
    spawn_api_with(&[]).await
}

pub enum Auth<'a> {
    None,
    Root,
    Key(&'a str),
    RootValue(&'a str),
}

/// api-service requests (any auth), bootstrap and onboarding over HTTP.
impl App {
    pub async fn call(&self, method: Method, path: &str, auth: Auth<'_>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.server.url(path));
        req = match auth {
            Auth::None => req,
            Auth::Root => req.header("X-CA-Root-Key", ROOT_KEY),
            Auth::RootValue(v) => req.header("X-CA-Root-Key", v),
            Auth::Key(k) => req.header("X-API-Key", k),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} body is not JSON: {text}"));
        (status, value)
    }

    pub async fn bootstrap(&self) {
        let (s, b) = self
            .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    pub async fn onboard(&self, slug: &str) -> String {
        let (s, b) = self
            .call(
                Method::POST,
                "/api/v1/organizations/onboard",
                Auth::Root,
                Some(org_body(slug)),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["api_key"].as_str().unwrap().to_string()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rows of the org in a central (`organizations`) table.
    pub async fn central_count(&self, table: &str, org: &str) -> i64 {
        let rows = self
            .server
            .ctx
            .warehouse
            .query(
                "organizations",
                &format!("SELECT COUNT(*) AS n FROM {{{{{table}}}}} WHERE org_slug = @org"),
                &cloudact_core::warehouse::Params::new().with("org", org),
            )
            .await
            .unwrap();
        rows[0].int("n").unwrap()
    }
}

pub fn org_body(slug: &str) -> Value {
    json!({"org_slug": slug, "company_name": "Acme Corp", "admin_email": "admin@acme.example", "subscription_plan": "professional"})
}

pub fn assert_error_shape(status: StatusCode, body: &Value, code: &str) {
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{status}: {body}"
    );
    assert_eq!(body["error"], json!(code), "{status}: {body}");
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{status}: {body}"
    );
}

/// The example pipeline's run path (`{org}` to be replaced, or use [`example`]).
pub const EXAMPLE: &str = "/api/v1/pipelines/run/{org}/example/synthetic_usage";

/// The example pipeline's run path for `org`.
pub fn example(org: &str) -> String {
    EXAMPLE.replace("{org}", org)
}

/// Runs a spec given as YAML text in-process for `org` on 2026-03-01.
pub async fn run_inline(ctx: &Arc<AppContext>, org: &str, yaml: &str) -> cloudact_pipeline::RunReport {
    let spec = cloudact_pipeline::PipelineSpec::from_yaml(yaml).unwrap();
    let mut req = RunRequest {
        org_slug: Some(org.into()),
        dates: vec!["2026-03-01".parse().unwrap()],
        ..Default::default()
    };
    req.variables.insert("dataset".into(), ctx.settings.org_dataset(org));
    ctx.executor.run(&spec, req, CancellationToken::new()).await
}
