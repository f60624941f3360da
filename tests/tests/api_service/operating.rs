//! Operating the service: the audit trail, key scopes and revocation, the operator headers,
//! maintenance mode, Prometheus metrics and config reload.

use crate::prelude::*;

async fn audit_rows(app: &App, org: &str, auth: Auth<'_>, query: &str) -> Value {
    let (s, b) = app
        .call(
            Method::GET,
            &format!("/api/v1/organizations/{org}/audit-logs{query}"),
            auth,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// Every state change writes one audit row with actor, outcome and request id, a refused one
/// included; the trail survives the org's deletion; an org reads only its own.
#[tokio::test]
async fn every_change_is_audited_and_the_trail_outlives_the_org() {
    let app = spawn_api().await;
    app.bootstrap().await;
    let key = app.onboard("auditco").await;
    let other = app.onboard("otherco").await;
    // A subscription change by root, a key rotation by the org itself.
    let (s, b) = app
        .call(
            Method::PUT,
            "/api/v1/organizations/auditco/subscription",
            Auth::Root,
            Some(json!({"plan_name": "SCALE"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let resp = app
        .client
        .post(app.server.url("/api/v1/organizations/auditco/api-key/rotate"))
        .header("X-API-Key", &key)
        .header("X-User-ID", "alice@auditco.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rotate_request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let rotated: Value = resp.json().await.unwrap();
    let key = rotated["api_key"].as_str().unwrap().to_string();
    // Denied: the other org's key on this org's route.
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/organizations/auditco/api-key/rotate",
            Auth::Key(&other),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Failed: a bad plan.
    let (s, _) = app
        .call(
            Method::PUT,
            "/api/v1/organizations/auditco/subscription",
            Auth::Root,
            Some(json!({"plan_name": "GOLD"})),
        )
        .await;
    assert!(s.is_client_error());

    let b = audit_rows(&app, "auditco", Auth::Key(&key), "").await;
    let logs = b["audit_logs"].as_array().unwrap();
    let find = |action: &str, status: &str| {
        logs.iter()
            .find(|r| r["action"] == action && r["status"] == status)
            .unwrap_or_else(|| panic!("no {status} {action} in {b}"))
    };
    assert_eq!(find("organizations.onboard", "SUCCESS")["actor"], "root");
    let sub = find("organizations.subscription.update", "SUCCESS");
    assert_eq!(sub["actor"], "root");
    assert_eq!(
        (
            sub["details"]["before"]["plan"].as_str(),
            sub["details"]["after"]["plan"].as_str()
        ),
        (Some("PROFESSIONAL"), Some("SCALE")),
        "before/after: {sub}"
    );
    let rot = find("organizations.api-key.rotate", "SUCCESS");
    assert!(rot["actor"].as_str().unwrap().starts_with("key:"), "{rot}");
    assert_eq!(rot["user_id"], "alice@auditco.example");
    assert_eq!(rot["user_id_verified"], false);
    assert_eq!(rot["request_id"], rotate_request_id.as_str());
    let denied = find("organizations.api-key.rotate", "DENIED");
    assert!(
        denied["error_message"].as_str().unwrap().contains("otherco"),
        "{denied}"
    );
    find("organizations.subscription.update", "FAILURE");
    assert!(logs.iter().all(|r| r["status"] != "PENDING"), "{b}");
    // No secret in any row: neither key appears.
    let text = b.to_string();
    assert!(
        !text.contains(&key) && !text.contains(&other),
        "a key leaked into the audit log"
    );
    // Filters.
    let only = audit_rows(
        &app,
        "auditco",
        Auth::Root,
        "?action=organizations.api-key.rotate&limit=5",
    )
    .await;
    assert_eq!(only["count"], 2, "the rotation and the refused one: {only}");
    let (s, b) = app
        .call(
            Method::GET,
            "/api/v1/organizations/auditco/audit-logs?limit=0",
            Auth::Root,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Tenant check: the other org cannot read this trail.
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/auditco/audit-logs",
            Auth::Key(&other),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Deleting the org keeps its trail (and records the deletion).
    let (s, b) = app
        .call(
            Method::DELETE,
            "/api/v1/organizations/auditco",
            Auth::Root,
            Some(json!({"confirm_org_slug": "auditco"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let after = audit_rows(&app, "auditco", Auth::Root, "").await;
    assert!(after["total"].as_i64().unwrap() > logs.len() as i64, "{after}");
    assert!(after["audit_logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "organizations.delete" && r["status"] == "SUCCESS"));
}

/// When the audit row cannot be written, the change is refused and nothing changes.
#[tokio::test]
async fn a_change_that_cannot_be_audited_is_refused() {
    let app = spawn_api().await;
    app.bootstrap().await;
    let key = app.onboard("noaudit").await;
    // Break the audit table: a column the writer needs is gone.
    let wh = app.server.ctx.warehouse.clone();
    let central = cloudact_core::meta::CENTRAL_DATASET;
    let mut def = cloudact_core::config::TableList::load(&cloudact_e2e::configs_dir(), "setup/bootstrap/tables.yml")
        .unwrap()
        .tables
        .into_iter()
        .find(|t| t.def.name == "org_audit_logs")
        .unwrap()
        .def;
    def.fields.retain(|f| f.name != "user_agent");
    wh.drop_table(central, "org_audit_logs").await.unwrap();
    wh.create_table(central, &def).await.unwrap();
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/noaudit/api-key/rotate",
            Auth::Key(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_error_shape(s, &b, "AUDIT_UNAVAILABLE");
    // The old key still works: the rotation did not happen.
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/noaudit/api-key",
            Auth::Key(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

/// Scopes on keys are enforced; an org key cannot grant itself more; revoking issues no key.
#[tokio::test]
async fn key_scopes_are_enforced_and_keys_can_be_revoked() {
    let app = spawn_api().await;
    app.bootstrap().await;
    app.onboard("scoped").await;
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/scoped/api-key/rotate",
            Auth::Root,
            Some(json!({"scopes": ["pipelines:read"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["scopes"], json!(["pipelines:read"]));
    let reader = b["api_key"].as_str().unwrap().to_string();
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/scoped/subscription",
            Auth::Key(&reader),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "reading is in scope");
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/integrations/scoped/openai/setup",
            Auth::Key(&reader),
            Some(json!({"credential": "sk-nope"})),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("INSUFFICIENT_SCOPE")),
        "{b}"
    );
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/scoped/api-key/rotate",
            Auth::Key(&reader),
            Some(json!({"scopes": ["pipelines:read", "pipelines:execute"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a key cannot widen itself: {b}");
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/scoped/api-key/rotate",
            Auth::Root,
            Some(json!({"scopes": ["pipelines:fly"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    // Revoke (root): no key is issued, the key stops working at once.
    let (s, b) = app
        .call(Method::DELETE, "/api/v1/organizations/scoped/api-key", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["revoked"], 1);
    assert!(b.get("api_key").is_none());
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/scoped/subscription",
            Auth::Key(&reader),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = app
        .call(Method::DELETE, "/api/v1/organizations/scoped/api-key", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing left to revoke: {b}");
}

/// `last_used_at` is written in batches, not on the request path.
#[tokio::test]
async fn last_use_of_a_key_is_recorded_in_batches() {
    let app = spawn_api().await;
    app.bootstrap().await;
    let key = app.onboard("usedco").await;
    let last_used = |app: &App| {
        let wh = app.server.ctx.warehouse.clone();
        async move {
            wh.query(
                cloudact_core::meta::CENTRAL_DATASET,
                "SELECT last_used_at FROM {{org_api_keys}} WHERE org_slug = 'usedco' AND is_active = @a",
                &cloudact_core::warehouse::Params::new().with("a", true),
            )
            .await
            .unwrap()[0]
                .timestamp("last_used_at")
        }
    };
    for _ in 0..5 {
        let (s, _) = app
            .call(
                Method::GET,
                "/api/v1/organizations/usedco/api-key",
                Auth::Key(&key),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(last_used(&app).await, None, "no write on the hot path");
    assert_eq!(
        app.server.ctx.auth.flush_uses().await.unwrap(),
        1,
        "five uses, one key, one write"
    );
    assert!(last_used(&app).await.is_some());
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/usedco/api-key",
            Auth::Key(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.server.ctx.auth.flush_uses().await.unwrap(),
        0,
        "at most once a minute per key"
    );
}

/// `X-Process-Time`, `X-API-Version` everywhere; `RateLimit-*` on org routes with both the
/// per-minute and the per-hour limit; the hour limit refuses with 429.
#[tokio::test]
async fn operator_headers_and_hourly_rate_limits() {
    let app = spawn_api_with(&[
        ("RATE_LIMIT_REQUESTS_PER_MINUTE", "50"),
        ("RATE_LIMIT_REQUESTS_PER_HOUR", "3"),
    ])
    .await;
    app.bootstrap().await;
    let key = app.onboard("headers").await;
    let get = |path: &str| app.client.get(app.server.url(path)).header("X-API-Key", &key);
    let resp = app.client.get(app.server.url("/health")).send().await.unwrap();
    assert!(
        resp.headers()["x-process-time"]
            .to_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 0.0
    );
    assert_eq!(resp.headers()["x-api-version"], env!("CARGO_PKG_VERSION"));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = get("/api/v1/organizations/headers/api-key").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["ratelimit-limit"], "3", "the hour is the tighter window");
        remaining.push(resp.headers()["ratelimit-remaining"].to_str().unwrap().to_string());
        assert!(
            resp.headers()["ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let resp = get("/api/v1/organizations/headers/api-key").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    assert!(resp.headers().contains_key("retry-after"));
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["window"], "hour", "{b}");
}

/// Maintenance mode: 503 JSON with Retry-After everywhere but health and metrics.
#[tokio::test]
async fn maintenance_mode_answers_503_except_health_and_metrics() {
    let app = spawn_api_with(&[("MAINTENANCE_MODE", "true")]).await;
    let resp = app
        .client
        .post(app.server.url("/api/v1/admin/bootstrap"))
        .header("X-CA-Root-Key", ROOT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "3600");
    assert_eq!(resp.headers()["x-maintenance-mode"], "true");
    let b: Value = resp.json().await.unwrap();
    assert_eq!(
        (b["error"].as_str(), b["maintenance"].as_bool()),
        (Some("MAINTENANCE"), Some(true)),
        "{b}"
    );
    for path in ["/health", "/health/live", "/metrics"] {
        let s = app.client.get(app.server.url(path)).send().await.unwrap().status();
        assert_eq!(s, StatusCode::OK, "{path}");
    }
}

/// `/metrics` in Prometheus text: requests by route template (never a raw path or key), and
/// warehouse latency; with METRICS_TOKEN, only with the bearer token.
#[tokio::test]
async fn metrics_are_scraped_in_prometheus_format() {
    let app = spawn_api_with(&[("METRICS_TOKEN", "scrape-secret-123")]).await;
    app.bootstrap().await;
    let key = app.onboard("metricsco").await;
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/metricsco/api-key",
            Auth::Key(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.call(Method::GET, "/metrics", Auth::None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .get(app.server.url("/metrics"))
        .bearer_auth("scrape-secret-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let sample = |name: &str, labels: &[&str]| {
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(
        sample(
            "http_requests_total",
            &[
                r#"route="/api/v1/organizations/{org_slug}/api-key""#,
                r#"method="GET""#,
                r#"status="200""#
            ]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            "http_request_duration_seconds_count",
            &[r#"route="/api/v1/admin/bootstrap""#]
        ) >= 1.0
    );
    assert!(sample("warehouse_operation_duration_seconds_count", &[r#"backend="embedded""#]) >= 1.0);
    assert!(
        sample("pipeline_runs_finished_total", &[r#"status="COMPLETED""#]) >= 1.0,
        "bootstrap and onboarding are runs"
    );
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    assert!(
        !text.contains(&key) && !text.contains("/organizations/metricsco"),
        "no keys or raw paths in labels"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Reload: a broken spec is refused with every problem and the old catalogue kept; a good
/// change is swapped in.
#[tokio::test]
async fn config_reload_keeps_the_old_catalogue_on_any_error() {
    let configs = tempfile::tempdir().unwrap();
    let dir = configs.path().join("configs");
    copy_dir(&cloudact_e2e::configs_dir(), &dir);
    let app = spawn_api_with(&[("CONFIGS_DIR", dir.to_str().unwrap())]).await;
    let before = app.server.ctx.catalog.entries().len();
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/reload-configs", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    // Two broken specs: both reported, nothing swapped.
    std::fs::write(dir.join("example/broken.yml"), "pipeline_id: [not a string\n").unwrap();
    std::fs::write(
        dir.join("example/unknown_step.yml"),
        "pipeline_id: unknown_step\nsteps:\n  - step_id: a\n    ps_type: no.such.processor\n",
    )
    .unwrap();
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/reload-configs", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_error_shape(s, &b, "INVALID_CONFIGS");
    let problems = b["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p.as_str().unwrap().contains("broken.yml")),
        "{b}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("unknown_step.yml")),
        "{b}"
    );
    assert_eq!(app.server.ctx.catalog.entries().len(), before, "old catalogue kept");
    // Fixed: one new spec swapped in.
    std::fs::remove_file(dir.join("example/broken.yml")).unwrap();
    std::fs::remove_file(dir.join("example/unknown_step.yml")).unwrap();
    std::fs::copy(dir.join("example/noop.yml"), dir.join("example/noop_copy.yml")).unwrap();
    let text = std::fs::read_to_string(dir.join("example/noop_copy.yml")).unwrap();
    std::fs::write(
        dir.join("example/noop_copy.yml"),
        text.replace("pipeline_id: example_noop", "pipeline_id: example_noop_copy"),
    )
    .unwrap();
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/reload-configs", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["added"], json!(["example/noop_copy.yml"]), "{b}");
    assert_eq!(app.server.ctx.catalog.entries().len(), before + 1);
}
