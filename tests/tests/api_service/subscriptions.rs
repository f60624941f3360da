//! Subscriptions: plan and status updates.

use crate::prelude::*;

#[tokio::test]
async fn subscription_updates() {
    let app = spawn_api().await;
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
    assert_eq!(b["updated"], true, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("status ACTIVE → SUSPENDED"),
        "{b}"
    );
    let (_, b) = put(json!({"stripe_status": "past_due"})).await;
    assert_eq!(
        (b["updated"].as_bool(), b["status"].as_str()),
        (Some(false), Some("SUSPENDED")),
        "{b}"
    );
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
