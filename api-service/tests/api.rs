//! api-service integration tests: the real app on a random port, real SQLite files and the
//! real local KMS in a temporary DATA_DIR, driven over HTTP with reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::HashMap, path::Path};

use cloudact_core::settings::Settings;
use cloudact_web::{server::Running, AppContext};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ROOT: &str = "test-root-key-0123456789-abcdefghijklmnop";

struct App {
    server: Running,
    client: Client,
    dir: tempfile::TempDir,
}

async fn spawn_with(extra: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("DATA_DIR".into(), dir.path().display().to_string());
    env.insert(
        "CONFIGS_DIR".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../configs").into(),
    );
    env.insert("CA_ROOT_API_KEY".into(), ROOT.into());
    env.insert("HOST".into(), "127.0.0.1".into());
    env.insert("PORT".into(), "0".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
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

async fn spawn() -> App {
    spawn_with(&[]).await
}

enum Auth<'a> {
    None,
    Root,
    Key(&'a str),
    RootValue(&'a str),
}

impl App {
    async fn call(&self, method: Method, path: &str, auth: Auth<'_>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.server.url(path));
        req = match auth {
            Auth::None => req,
            Auth::Root => req.header("X-CA-Root-Key", ROOT),
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

    async fn bootstrap(&self) {
        let (s, b) = self
            .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    async fn onboard(&self, slug: &str) -> String {
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

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn count(&self, table: &str, org: &str) -> i64 {
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

fn org_body(slug: &str) -> Value {
    json!({"org_slug": slug, "company_name": "Acme Corp", "admin_email": "admin@acme.example", "subscription_plan": "professional"})
}

fn assert_error_shape(status: StatusCode, body: &Value, code: &str) {
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

#[tokio::test]
async fn health_and_request_ids() {
    let app = spawn().await;
    for path in ["/health", "/health/live", "/health/ready", "/"] {
        let (s, b) = app.call(Method::GET, path, Auth::None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
    }
    let resp = app
        .client
        .get(app.server.url("/health"))
        .header("X-Request-ID", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc_123");
    let resp = app.client.get(app.server.url("/health")).send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 36, "generated uuid");
    let resp = app
        .client
        .get(app.server.url("/nope"))
        .header("X-Request-ID", "rid-404")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["request_id"], "rid-404");
    assert_eq!(body["error"], "NOT_FOUND");
}

#[tokio::test]
async fn docs_are_served_and_can_be_disabled() {
    let app = spawn().await;
    let (s, doc) = app.call(Method::GET, "/openapi.json", Auth::None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/admin/bootstrap",
        "/api/v1/organizations/onboard",
        "/api/v1/organizations/{org_slug}/api-key/rotate",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from OpenAPI");
    }
    let ui = app.client.get(app.server.url("/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger"), "vendored Swagger UI page");
    let off = spawn_with(&[("ENABLE_API_DOCS", "false")]).await;
    let (s, _) = off.call(Method::GET, "/openapi.json", Auth::None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bootstrap_needs_the_root_key_and_is_idempotent() {
    let app = spawn().await;
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error_shape(s, &b, "ROOT_KEY_REQUIRED");
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::RootValue("wrong"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error_shape(s, &b, "INVALID_ROOT_KEY");
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["tables_created"].as_array().unwrap().len(), 15);
    assert_eq!(b["total_tables"], 15);
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["tables_created"].as_array().unwrap().len(), 0);
    assert_eq!(b["tables_existed"].as_array().unwrap().len(), 15);
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/admin/bootstrap",
            Auth::Root,
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error_shape(s, &b, "VALIDATION_ERROR");
}

#[tokio::test]
async fn dryrun_reports_checks_and_creates_nothing() {
    let app = spawn().await;
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/dryrun",
            Auth::Root,
            Some(org_body("acme")),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["ready_for_onboarding"], false, "not bootstrapped yet");
    let failed: Vec<&str> = b["validation_results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["check_name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["central_tables"]);
    app.bootstrap().await;
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/dryrun",
            Auth::Root,
            Some(org_body("acme")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["ready_for_onboarding"], true, "{b}");
    assert_eq!(b["subscription_plan"], "PROFESSIONAL");
    assert_eq!(app.count("org_profiles", "acme").await, 0);
    assert!(!app.data_dir().join("warehouse/acme_local.sqlite3").exists());
    app.onboard("acme").await;
    let (_, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/dryrun",
            Auth::Root,
            Some(org_body("acme")),
        )
        .await;
    assert_eq!(b["ready_for_onboarding"], false);
    assert!(b["message"].as_str().unwrap().contains("org_existence"), "{b}");
}

#[tokio::test]
async fn onboarding_writes_everything_once() {
    let app = spawn().await;
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/onboard",
            Auth::Root,
            Some(org_body("acme")),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "not bootstrapped: {b}");
    assert_error_shape(s, &b, "NOT_BOOTSTRAPPED");
    app.bootstrap().await;
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/onboard",
            Auth::Root,
            Some(org_body("acme")),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let key = b["api_key"].as_str().unwrap();
    assert!(
        key.starts_with("acme_api_") && key.len() == "acme_api_".len() + 22,
        "{key}"
    );
    assert_eq!(b["api_key_fingerprint"], json!(&key[key.len() - 4..]));
    assert_eq!(b["dataset_id"], "acme_local");
    assert_eq!(b["subscription_status"], "TRIAL");
    assert!(app.data_dir().join("warehouse/acme_local.sqlite3").exists());
    for table in ["org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas"] {
        assert_eq!(app.count(table, "acme").await, 1, "{table}");
    }
    let wh = &app.server.ctx.warehouse;
    let seeded = wh
        .query(
            "acme_local",
            "SELECT COUNT(*) AS n FROM {{llm_model_pricing}}",
            &Default::default(),
        )
        .await
        .unwrap();
    assert!(seeded[0].int("n").unwrap() > 20, "default pricing seeded");
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/onboard",
            Auth::Root,
            Some(org_body("acme")),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error_shape(s, &b, "ORG_EXISTS");
    assert_eq!(app.count("org_profiles", "acme").await, 1);

    // Subscription and key as seen by the org itself and by root.
    for auth in [Auth::Key(key), Auth::Root] {
        let (s, sub) = app
            .call(Method::GET, "/api/v1/organizations/acme/subscription", auth, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{sub}");
        assert_eq!(sub["plan_name"], "PROFESSIONAL");
        assert_eq!(sub["daily_limit"], 25);
        assert_eq!(sub["monthly_limit"], 750);
    }
    let (s, info) = app
        .call(Method::GET, "/api/v1/organizations/acme/api-key", Auth::Key(key), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["api_key_fingerprint"], json!(&key[key.len() - 4..]));
    assert_eq!(info["is_active"], true);
    assert!(info.get("api_key").is_none() && !info.to_string().contains(key));
}

#[tokio::test]
async fn onboarding_is_all_or_nothing() {
    let app = spawn().await;
    app.bootstrap().await;
    // Something in the way of the org dataset makes the onboarding pipeline fail.
    let blocker = app.data_dir().join("warehouse/doomed_local.sqlite3");
    std::fs::create_dir_all(&blocker).unwrap();
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/onboard",
            Auth::Root,
            Some(org_body("doomed")),
        )
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");
    assert_error_shape(s, &b, "INTERNAL_ERROR");
    assert!(
        !b["detail"].as_str().unwrap().contains("sqlite"),
        "5xx bodies do not leak internals: {b}"
    );
    for table in ["org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas"] {
        assert_eq!(app.count(table, "doomed").await, 0, "{table} rolled back");
    }
    std::fs::remove_dir(&blocker).unwrap();
    app.onboard("doomed").await;
}

#[tokio::test]
async fn idempotency_key_replays_without_the_key() {
    let app = spawn().await;
    app.bootstrap().await;
    let send = |body: Value, idem: &'static str| {
        app.client
            .post(app.server.url("/api/v1/organizations/onboard"))
            .header("X-CA-Root-Key", ROOT)
            .header("Idempotency-Key", idem)
            .json(&body)
            .send()
    };
    let first: Value = send(org_body("idem"), "abc-1").await.unwrap().json().await.unwrap();
    let key = first["api_key"].as_str().unwrap().to_string();
    let replay = send(org_body("idem"), "abc-1").await.unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["idempotent_replay"], true);
    assert_eq!(replay["api_key"], Value::Null, "never a fake key");
    assert_eq!(replay["api_key_fingerprint"], first["api_key_fingerprint"]);
    assert!(!replay.to_string().contains(&key));
    let other = send(org_body("idem_two"), "abc-1").await.unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert_eq!(app.count("org_profiles", "idem").await, 1);
    assert_eq!(app.count("org_profiles", "idem_two").await, 0);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = spawn().await;
    app.bootstrap().await;
    let long = "a".repeat(51);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"org_slug": "Acme", "company_name": "A Co", "admin_email": "a@b.co"}),
            "INVALID_ORG_SLUG",
        ),
        (
            json!({"org_slug": "ab", "company_name": "A Co", "admin_email": "a@b.co"}),
            "INVALID_ORG_SLUG",
        ),
        (
            json!({"org_slug": long, "company_name": "A Co", "admin_email": "a@b.co"}),
            "INVALID_ORG_SLUG",
        ),
        (
            json!({"org_slug": "../x", "company_name": "A Co", "admin_email": "a@b.co"}),
            "INVALID_ORG_SLUG",
        ),
        (
            json!({"org_slug": "x'; DROP TABLE org_profiles;--", "company_name": "A Co", "admin_email": "a@b.co"}),
            "INVALID_ORG_SLUG",
        ),
        (
            json!({"org_slug": "good_slug", "company_name": "A Co", "admin_email": "not-an-email"}),
            "INVALID_EMAIL",
        ),
        (
            json!({"org_slug": "good_slug", "company_name": "A Co", "admin_email": "a@b"}),
            "INVALID_EMAIL",
        ),
        (
            json!({"org_slug": "good_slug", "company_name": "A Co", "admin_email": "a@b.co", "subscription_plan": "GOLD"}),
            "INVALID_PLAN",
        ),
        (
            json!({"org_slug": "good_slug", "company_name": "A Co", "admin_email": "a@b.co", "subscription_plan": "ENTERPRISE"}),
            "INVALID_PLAN",
        ),
        (
            json!({"org_slug": "good_slug", "company_name": "A", "admin_email": "a@b.co"}),
            "INVALID_COMPANY_NAME",
        ),
        (
            json!({"org_slug": "good_slug", "company_name": "A Co", "admin_email": "a@b.co", "is_admin": true}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"org_slug": 5, "company_name": "A Co", "admin_email": "a@b.co"}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"company_name": "A Co", "admin_email": "a@b.co"}),
            "VALIDATION_ERROR",
        ),
    ];
    for route in ["/api/v1/organizations/onboard", "/api/v1/organizations/dryrun"] {
        for (body, code) in &cases {
            let (s, b) = app.call(Method::POST, route, Auth::Root, Some(body.clone())).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{route} {body}: {b}");
            assert_error_shape(s, &b, code);
        }
    }
    // Malformed JSON, wrong content type, 2 MiB body.
    let raw = |body: Vec<u8>, ct: &'static str| {
        app.client
            .post(app.server.url("/api/v1/organizations/onboard"))
            .header("X-CA-Root-Key", ROOT)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = raw(b"{\"org_slug\": ".to_vec(), "application/json").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_error_shape(StatusCode::BAD_REQUEST, &r.json().await.unwrap(), "MALFORMED_JSON");
    let r = raw(b"org_slug=acme".to_vec(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut big = b"{\"org_slug\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    big.extend(b"\"}");
    let r = raw(big, "application/json").await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(
        StatusCode::PAYLOAD_TOO_LARGE,
        &r.json().await.unwrap(),
        "PAYLOAD_TOO_LARGE",
    );
    // Nothing was written anywhere.
    let wh = &app.server.ctx.warehouse;
    let rows = wh
        .query(
            "organizations",
            "SELECT COUNT(*) AS n FROM {{org_profiles}}",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(rows[0].int("n"), Some(0));
    let datasets: Vec<_> = std::fs::read_dir(app.data_dir().join("warehouse"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".sqlite3"))
        .collect();
    assert_eq!(datasets, vec!["organizations.sqlite3"]);
    // Bad slugs in paths.
    for path in [
        "/api/v1/organizations/ACME/subscription",
        "/api/v1/organizations/ab/subscription",
    ] {
        let (s, b) = app.call(Method::GET, path, Auth::Root, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert_error_shape(s, &b, "INVALID_ORG_SLUG");
    }
}

#[tokio::test]
async fn tenants_are_isolated_on_every_org_route() {
    let app = spawn().await;
    app.bootstrap().await;
    let a = app.onboard("org_a").await;
    let b_key = app.onboard("org_b").await;
    let routes = [
        (Method::GET, "/api/v1/organizations/org_b/subscription"),
        (Method::GET, "/api/v1/organizations/org_b/api-key"),
        (Method::POST, "/api/v1/organizations/org_b/api-key/rotate"),
    ];
    for (method, path) in routes.iter().cloned() {
        let (s, b) = app.call(method.clone(), path, Auth::Key(&a), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {b}");
        assert_error_shape(s, &b, "ORG_MISMATCH");
        let (s, _) = app.call(method.clone(), path, Auth::None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path} without a key");
        let (s, _) = app
            .call(method, path, Auth::Key("org_b_api_notarealkey000000000"), None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Root-only routes refuse org keys, even the org's own (403: a key, but not one that
    // may call admin routes).
    let (s, b) = app
        .call(
            Method::PUT,
            "/api/v1/organizations/org_b/subscription",
            Auth::Key(&b_key),
            Some(json!({"status": "ACTIVE"})),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("ROOT_KEY_REQUIRED")),
        "{b}"
    );
    let (s, _) = app
        .call(
            Method::DELETE,
            "/api/v1/organizations/org_b",
            Auth::Key(&b_key),
            Some(json!({"confirm_org_slug": "org_b"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // org_b's key still works for org_b: nothing was rotated by the refused attempt.
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/org_b/api-key",
            Auth::Key(&b_key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn rotation_kills_the_old_key_at_once() {
    let app = spawn().await;
    app.bootstrap().await;
    let old = app.onboard("rot").await;
    let (s, _) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&old), None)
        .await;
    assert_eq!(s, StatusCode::OK, "key is cached now");
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/rot/api-key/rotate",
            Auth::Key(&old),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let new = b["api_key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(b["previous_key_revoked"], true);
    let (s, b) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&old), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_error_shape(s, &b, "INVALID_API_KEY");
    let (s, b) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&new), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["api_key_fingerprint"], json!(&new[new.len() - 4..]));
    // Root can rotate too.
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/rot/api-key/rotate",
            Auth::Root,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&new), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let newest = b["api_key"].as_str().unwrap();
    let rows = app.count("org_api_keys", "rot").await;
    assert_eq!(rows, 3, "old keys kept, revoked");
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/rot/api-key",
            Auth::Key(newest),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/organizations/nobody/api-key/rotate",
            Auth::Root,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn subscription_updates() {
    let app = spawn().await;
    app.bootstrap().await;
    let key = app.onboard("subs").await;
    let put = |body: Value| {
        app.call(
            Method::PUT,
            "/api/v1/organizations/subs/subscription",
            Auth::Root,
            Some(body),
        )
    };
    let (s, b) = put(json!({"stripe_status": "past_due"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "SUSPENDED");
    let (s, b) = put(json!({"stripe_status": "trialing", "trial_end_date": "2030-01-31T12:00:00Z"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (b["status"].as_str(), b["trial_end_date"].as_str()),
        (Some("TRIAL"), Some("2030-01-31"))
    );
    let (_, b) = put(json!({"daily_limit": 7})).await;
    assert_eq!(
        (b["daily_limit"].as_i64(), b["plan_name"].as_str()),
        (Some(7), Some("PROFESSIONAL"))
    );
    let (_, b) = put(json!({"plan_name": "scale", "status": "ACTIVE"})).await;
    assert_eq!(
        (
            b["plan_name"].as_str(),
            b["daily_limit"].as_i64(),
            b["monthly_limit"].as_i64()
        ),
        (Some("SCALE"), Some(100), Some(3000))
    );
    let today = chrono::Utc::now().date_naive();
    let quota = app.server.ctx.store.quota_row("subs", today).await.unwrap().unwrap();
    assert_eq!(
        quota.int("daily_limit"),
        Some(100),
        "today's quota row follows the plan"
    );
    for (body, code) in [
        (json!({"daily_limit": 0}), "INVALID_LIMIT"),
        (json!({"concurrent_limit": 101}), "INVALID_LIMIT"),
        (json!({"plan_name": "GOLD"}), "INVALID_PLAN"),
        (json!({"status": "PAUSED"}), "INVALID_STATUS"),
        (json!({"stripe_status": "weird"}), "INVALID_STRIPE_STATUS"),
        (
            json!({"status": "ACTIVE", "stripe_status": "active"}),
            "CONFLICTING_STATUS",
        ),
        (json!({"trial_end_date": "next week"}), "INVALID_DATE"),
        (json!({"colour": "red"}), "VALIDATION_ERROR"),
    ] {
        let (s, b) = put(body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
        assert_error_shape(s, &b, code);
    }
    let (_, b) = app
        .call(
            Method::GET,
            "/api/v1/organizations/subs/subscription",
            Auth::Key(&key),
            None,
        )
        .await;
    assert_eq!(
        (b["status"].as_str(), b["plan_name"].as_str()),
        (Some("ACTIVE"), Some("SCALE")),
        "refused updates changed nothing"
    );
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/ghost/subscription",
            Auth::Root,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_an_org_removes_rows_dataset_and_key() {
    let app = spawn().await;
    app.bootstrap().await;
    let key = app.onboard("gone").await;
    let keep = app.onboard("stays").await;
    let del = |body: Value| app.call(Method::DELETE, "/api/v1/organizations/gone", Auth::Root, Some(body));
    let (s, b) = del(json!({"confirm_org_slug": "stays"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_shape(s, &b, "CONFIRMATION_MISMATCH");
    let (s, b) = del(json!({"confirm_org_slug": "gone"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["dataset_deleted"], true);
    assert_eq!(b["deleted_from_tables"]["org_profiles"], 1);
    assert!(!app.data_dir().join("warehouse/gone_local.sqlite3").exists());
    for table in ["org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas"] {
        assert_eq!(app.count(table, "gone").await, 0, "{table}");
    }
    let (s, _) = app
        .call(Method::GET, "/api/v1/organizations/gone/api-key", Auth::Key(&key), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/stays/api-key",
            Auth::Key(&keep),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the other org is untouched");
    let (s, _) = del(json!({"confirm_org_slug": "gone"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn per_org_rate_limit_is_keyed_by_the_authenticated_org() {
    let app = spawn_with(&[("RATE_LIMIT_REQUESTS_PER_MINUTE", "3")]).await;
    app.bootstrap().await;
    // Onboarding two orgs spent root's budget; the orgs have their own.
    let a = app.onboard("rl_a").await;
    let b = app.onboard("rl_b").await;
    for _ in 0..3 {
        let (s, _) = app
            .call(Method::GET, "/api/v1/organizations/rl_a/api-key", Auth::Key(&a), None)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let resp = app
        .client
        .get(app.server.url("/api/v1/organizations/rl_a/api-key"))
        .header("X-API-Key", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_error_shape(StatusCode::TOO_MANY_REQUESTS, &body, "RATE_LIMITED");
    let (s, _) = app
        .call(Method::GET, "/api/v1/organizations/rl_b/api-key", Auth::Key(&b), None)
        .await;
    assert_eq!(s, StatusCode::OK, "another org is not limited by rl_a's traffic");
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = spawn_with(&[("CORS_ORIGINS", "https://app.cloudact.example")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.server.url("/api/v1/admin/bootstrap"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-ca-root-key,content-type")
            .send()
    };
    let ok = preflight("https://app.cloudact.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.cloudact.example"
    );
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("x-ca-root-key"));
    let bad = preflight("https://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn no_plaintext_key_in_data_files() {
    let app = spawn().await;
    app.bootstrap().await;
    let key = app.onboard("secretive").await;
    let (_, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/secretive/api-key/rotate",
            Auth::Key(&key),
            None,
        )
        .await;
    let rotated = b["api_key"].as_str().unwrap().to_string();
    app.server.ctx.warehouse.ping().await.unwrap();
    let mut files = Vec::new();
    let mut stack = vec![app.data_dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for secret in [&key, &rotated] {
            let needle = &secret.as_bytes()["secretive_api_".len()..];
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains a key",
                f.display()
            );
        }
    }
}

#[tokio::test]
async fn production_refuses_unsafe_settings_listing_every_problem() {
    let mut env = HashMap::new();
    let dir = tempfile::tempdir().unwrap();
    env.insert("ENVIRONMENT".to_string(), "production".to_string());
    env.insert("DATA_DIR".to_string(), dir.path().display().to_string());
    env.insert(
        "CONFIGS_DIR".to_string(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../configs").to_string(),
    );
    env.insert("CA_ROOT_API_KEY".to_string(), "too-short".to_string());
    env.insert("DISABLE_AUTH".to_string(), "true".to_string());
    env.insert("RATE_LIMIT_ENABLED".to_string(), "false".to_string());
    let err = AppContext::build("api-service", Settings::from_map(&env, 8000).unwrap())
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    for needle in ["CA_ROOT_API_KEY", "DISABLE_AUTH", "RATE_LIMIT_ENABLED", "KMS=local"] {
        assert!(text.contains(needle), "{needle} missing in: {text}");
    }
}

#[tokio::test]
async fn pipeline_catalogue_is_public() {
    let app = spawn().await;
    let (s, b) = app
        .call(
            Method::GET,
            "/api/v1/validator/pipelines?enabled_only=false",
            Auth::None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = b["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    for id in ["setup_bootstrap", "setup_org_dryrun", "setup_org_onboarding"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    assert_eq!(b["total"].as_u64().unwrap() as usize, ids.len());
    let (s, b) = app
        .call(
            Method::GET,
            "/api/v1/validator/pipelines/setup_bootstrap",
            Auth::None,
            None,
        )
        .await;
    assert_eq!(
        (s, b["path"].as_str()),
        (StatusCode::OK, Some("setup/bootstrap/pipeline.yml"))
    );
    let (s, b) = app
        .call(Method::GET, "/api/v1/validator/pipelines/nope", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_shape(s, &b, "PIPELINE_NOT_FOUND");
    let (s, _) = app
        .call(Method::GET, "/api/v1/validator/pipelines?bogus=1", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
