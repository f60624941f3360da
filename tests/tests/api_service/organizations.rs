//! Organizations: dryrun, onboarding (once, all or nothing, idempotency keys), bad input,
//! tenant isolation, deletion.

use crate::prelude::*;

#[tokio::test]
async fn dryrun_reports_checks_and_creates_nothing() {
    let app = spawn_api().await;
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
    assert_eq!(app.central_count("org_profiles", "acme").await, 0);
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
    let app = spawn_api().await;
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
    assert_eq!(
        b["subscription_status"], "ACTIVE",
        "no trial nobody asked for (the original's default)"
    );
    assert!(app.data_dir().join("warehouse/acme_local.sqlite3").exists());
    for table in ["org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas"] {
        assert_eq!(app.central_count(table, "acme").await, 1, "{table}");
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
    assert_eq!(app.central_count("org_profiles", "acme").await, 1);

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
    let app = spawn_api().await;
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
        assert_eq!(app.central_count(table, "doomed").await, 0, "{table} rolled back");
    }
    std::fs::remove_dir(&blocker).unwrap();
    app.onboard("doomed").await;
}

#[tokio::test]
async fn idempotency_key_replays_without_the_key() {
    let app = spawn_api().await;
    app.bootstrap().await;
    let send = |body: Value, idem: &'static str| {
        app.client
            .post(app.server.url("/api/v1/organizations/onboard"))
            .header("X-CA-Root-Key", ROOT_KEY)
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
    assert_eq!(app.central_count("org_profiles", "idem").await, 1);
    assert_eq!(app.central_count("org_profiles", "idem_two").await, 0);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = spawn_api().await;
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
            .header("X-CA-Root-Key", ROOT_KEY)
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
    let app = spawn_api().await;
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
async fn deleting_an_org_removes_rows_dataset_and_key() {
    let app = spawn_api().await;
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
        assert_eq!(app.central_count(table, "gone").await, 0, "{table}");
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
async fn onboarding_takes_the_stripe_state_the_frontend_has() {
    let app = spawn_api().await;
    app.bootstrap().await;
    let onboard = |body: Value| app.call(Method::POST, "/api/v1/organizations/onboard", Auth::Root, Some(body));
    let mut body = org_body("trialco");
    body["subscription_status"] = json!("trialing");
    body["trial_end_date"] = json!("2030-06-30");
    let (s, b) = onboard(body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["subscription_status"], "TRIAL");
    let (s, sub) = app
        .call(
            Method::GET,
            "/api/v1/organizations/trialco/subscription",
            Auth::Root,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sub}");
    assert_eq!(
        (sub["status"].as_str(), sub["trial_end_date"].as_str()),
        (Some("TRIAL"), Some("2030-06-30"))
    );
    // A trial without an end gets the 14-day default; an ACTIVE org none.
    let mut body = org_body("trial_default");
    body["subscription_status"] = json!("TRIAL");
    let (s, _) = onboard(body).await;
    assert_eq!(s, StatusCode::OK);
    let (_, sub) = app
        .call(
            Method::GET,
            "/api/v1/organizations/trial_default/subscription",
            Auth::Root,
            None,
        )
        .await;
    let want = (chrono::Utc::now().date_naive() + chrono::Duration::days(14)).to_string();
    assert_eq!(sub["trial_end_date"].as_str(), Some(want.as_str()));
    // Stripe's forms: unix seconds for a trial; an ACTIVE org whose ended trial is still on
    // the Stripe subscription is simply ACTIVE.
    for (slug, extra, status, end) in [
        (
            "unix_trial",
            json!({"subscription_status": "trialing", "trial_end_date": 1_893_456_000}),
            "TRIAL",
            Some("2030-01-01"),
        ),
        (
            "ended_trial",
            json!({"subscription_status": "active", "trial_end_date": "2025-01-01T00:00:00Z"}),
            "ACTIVE",
            None,
        ),
    ] {
        let mut body = org_body(slug);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, b) = onboard(body).await;
        assert_eq!(s, StatusCode::OK, "{slug}: {b}");
        assert_eq!(b["subscription_status"], status, "{slug}: {b}");
        let (_, sub) = app
            .call(
                Method::GET,
                &format!("/api/v1/organizations/{slug}/subscription"),
                Auth::Root,
                None,
            )
            .await;
        assert_eq!(sub["trial_end_date"].as_str(), end, "{slug}: {sub}");
    }
    // Refused, and nothing created.
    for (slug, extra, code) in [
        (
            "bad_status",
            json!({"subscription_status": "SUSPENDED"}),
            "INVALID_SUBSCRIPTION_STATUS",
        ),
        (
            "bad_trial",
            json!({"subscription_status": "TRIAL", "trial_end_date": "next tuesday"}),
            "INVALID_DATE",
        ),
        (
            "past_trial",
            json!({"subscription_status": "TRIAL", "trial_end_date": "2020-01-01"}),
            "INVALID_DATE",
        ),
    ] {
        let mut body = org_body(slug);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, b) = onboard(body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{slug}: {b}");
        assert_error_shape(s, &b, code);
        assert_eq!(app.central_count("org_profiles", slug).await, 0, "{slug}");
    }
}
