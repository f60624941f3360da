//! LLM pricing and provider plans: CRUD, reset, effective dating, LiteLLM import, seeding on
//! first setup.

use crate::prelude::*;

#[tokio::test]
async fn pricing_crud_reset_and_effective_dating() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "prices").await;
    let other = onboarded(&ctx, "prices_other").await;
    let base = "/api/v1/integrations/prices/openai/pricing";
    let (s, list) = app.send(reqwest::Method::GET, &key, base, None).await;
    assert_eq!(s, StatusCode::OK);
    let seeded = list["count"].as_u64().unwrap();
    assert!(seeded >= 10, "{list}");
    let gpt4o = list["pricing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model_id"] == "gpt-4o" && r["pricing_tier"] == "standard")
        .unwrap()
        .clone();
    assert_eq!(
        (
            gpt4o["input_price_per_1m"].as_str(),
            gpt4o["input_price_per_1k"].as_str()
        ),
        (Some("2.5"), Some("0.0025"))
    );
    // Create with per-1K prices (converted), 409 on the same key, 422 on bad input.
    let body = serde_json::json!({"model_id": "my-ft-model", "input_price_per_1k": 0.003, "output_price_per_1m": "12.5",
                                  "web_search_price_per_1k": "12", "effective_date": "2026-01-01"});
    let (s, b) = app.send(reqwest::Method::POST, &key, base, Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (
            b["input_price_per_1m"].as_str(),
            b["is_custom"].as_bool(),
            b["web_search_price_per_1k"].as_str()
        ),
        (Some("3"), Some(true), Some("12"))
    );
    let (s, _) = app.send(reqwest::Method::POST, &key, base, Some(body)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    for bad in [
        serde_json::json!({"model_id": "m", "input_price_per_1m": -1, "output_price_per_1m": 1, "effective_date": "2026-01-01"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "effective_date": "2026-01-01"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "input_price_per_1k": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-1-1"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01", "pricing_tier": "gold"}),
        serde_json::json!({"model_id": "m", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01", "colour": 1}),
    ] {
        let (s, b) = app.send(reqwest::Method::POST, &key, base, Some(bad.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
    }
    let (s, _) = app.send(reqwest::Method::POST, &key, base, Some(serde_json::json!({"model_id": "bad id!", "input_price_per_1m": 1, "output_price_per_1m": 1, "effective_date": "2026-01-01"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Read, update, delete.
    let (s, one) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/my-ft-model"), None)
        .await;
    assert_eq!(
        (s, one["model_id"].as_str()),
        (StatusCode::OK, Some("my-ft-model")),
        "one row: {one}"
    );
    let (_, all) = app
        .send(
            reqwest::Method::GET,
            &key,
            &format!("{base}/my-ft-model?all=true"),
            None,
        )
        .await;
    assert_eq!(all["count"].as_u64(), Some(1), "{all}");
    let (s, b) = app
        .send(
            reqwest::Method::PUT,
            &key,
            &format!("{base}/my-ft-model"),
            Some(serde_json::json!({"output_price_per_1m": 10})),
        )
        .await;
    assert_eq!(
        (s, b["output_price_per_1m"].as_str()),
        (StatusCode::OK, Some("10")),
        "{b}"
    );
    let (s, _) = app
        .send(
            reqwest::Method::PUT,
            &key,
            &format!("{base}/my-ft-model"),
            Some(serde_json::json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no fields to update");
    let resp = app
        .client
        .delete(app.server.url(&format!("{base}/my-ft-model")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/my-ft-model"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Another org: 403 on every pricing route, and its own table is untouched.
    for (m, path) in [
        (reqwest::Method::GET, base.to_string()),
        (reqwest::Method::POST, format!("{base}/reset")),
        (reqwest::Method::DELETE, format!("{base}/gpt-4o")),
    ] {
        let (s, _) = app.send(m, &other, &path, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    // Effective dating: a price change on the 15th prices the 14th and the 16th differently.
    let (s, _) = app
        .send(reqwest::Method::POST, &key, base, Some(serde_json::json!({"model_id": "gpt-4o", "input_price_per_1m": 5, "output_price_per_1m": 20, "effective_date": "2026-01-15"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let cost = |day: &'static str| {
        let (app, key, ctx) = (&app, key.clone(), ctx.clone());
        async move {
            let (_, b, _) = app
                .post_run(&key, &example("prices"), serde_json::json!({"date": day}))
                .await;
            app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
            let rows = ctx
                .warehouse
                .query("prices_local", "SELECT input_tokens, input_cost FROM {{example_cost_daily}} WHERE usage_date = @d AND model_id = 'gpt-4o' AND pricing_tier = 'standard' AND project_id = 'proj_web'", &cloudact_core::warehouse::Params::new().with("d", day.parse::<chrono::NaiveDate>().unwrap()))
                .await
                .unwrap();
            let tokens = rust_decimal::Decimal::from(rows[0].int("input_tokens").unwrap());
            rows[0].numeric("input_cost").unwrap() * rust_decimal::Decimal::from(1_000_000) / tokens
        }
    };
    assert_eq!(
        cost("2026-01-14").await,
        rust_decimal::Decimal::from_str_exact("2.5").unwrap(),
        "old price before the 15th"
    );
    assert_eq!(
        cost("2026-01-16").await,
        rust_decimal::Decimal::from(5),
        "new price from the 15th"
    );
    // Reset restores the defaults (dropping custom rows of that provider only).
    let (s, b) = app
        .send(reqwest::Method::POST, &key, &format!("{base}/reset"), None)
        .await;
    assert_eq!((s, b["count"].as_u64()), (StatusCode::OK, Some(seeded)));
    let (_, anthropic) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/integrations/prices/claude/pricing",
            None,
        )
        .await;
    assert!(anthropic["count"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn provider_plan_crud_and_reset() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "plans").await;
    let other = onboarded(&ctx, "plans_other").await;
    let base = "/api/v1/integrations/plans/openai/subscriptions";
    let (s, list) = app.send(reqwest::Method::GET, &key, base, None).await;
    assert_eq!(s, StatusCode::OK);
    let seeded = list["count"].as_u64().unwrap();
    assert!(seeded > 0);
    let (s, b) = app
        .send(reqwest::Method::POST, &key, base, Some(serde_json::json!({"plan_name": "TEAM_SEATS", "quantity": 12, "unit_price_usd": "25.50", "effective_date": "2026-01-01"})))
        .await;
    assert_eq!(
        (s, b["unit_price_usd"].as_str()),
        (StatusCode::CREATED, Some("25.5")),
        "{b}"
    );
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            &key,
            base,
            Some(serde_json::json!({"plan_name": "TEAM_SEATS", "unit_price_usd": 1, "effective_date": "2026-01-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            &key,
            base,
            Some(serde_json::json!({"plan_name": "X", "unit_price_usd": -1, "effective_date": "2026-01-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/bad-name!"), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = app
        .send(
            reqwest::Method::PUT,
            &key,
            &format!("{base}/TEAM_SEATS"),
            Some(serde_json::json!({"quantity": 15})),
        )
        .await;
    assert_eq!((s, b["quantity"].as_i64()), (StatusCode::OK, Some(15)));
    let (s, _) = app.send(reqwest::Method::GET, &other, base, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let resp = app
        .client
        .delete(app.server.url(&format!("{base}/TEAM_SEATS")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/TEAM_SEATS"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = app
        .send(reqwest::Method::POST, &key, &format!("{base}/reset"), None)
        .await;
    assert_eq!((s, b["count"].as_u64()), (StatusCode::OK, Some(seeded)));
}

#[tokio::test]
async fn a_litellm_price_map_import_reports_added_changed_and_skipped() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "importer").await;
    let map = serde_json::json!({
        "sample_spec": {"litellm_provider": "openai"},
        "gpt-4o": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1.1e-05,
                   "input_cost_per_token_batches": 1.25e-06, "output_cost_per_token_batches": 5e-06, "cache_read_input_token_cost": 1.25e-06},
        "gpt-4o-mini": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07},
        "gpt-new-1": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.2e-05},
        "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
        "claude-x": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05}
    });
    let url = "/api/v1/integrations/importer/openai/pricing/import";
    let (s, b) = app
        .send(
            reqwest::Method::POST,
            &key,
            url,
            Some(serde_json::json!({"models": map, "effective_date": "2026-02-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // gpt-4o standard gets a new output price (changed: a new dated row), its batch tier is
    // unchanged; gpt-4o-mini is unchanged; gpt-new-1 is new; dall-e-3 is skipped (not a token
    // model); claude-x is another provider's.
    assert_eq!((b["added"].as_u64(), b["changed"].as_u64()), (Some(1), Some(1)), "{b}");
    assert_eq!(b["skipped"].as_u64(), Some(3), "{b}");
    let (_, one) = app
        .send(
            reqwest::Method::GET,
            &key,
            "/api/v1/integrations/importer/openai/pricing/gpt-new-1",
            None,
        )
        .await;
    assert_eq!(
        (one["input_price_per_1m"].as_str(), one["output_price_per_1m"].as_str()),
        (Some("3"), Some("12"))
    );
    let (_, again) = app
        .send(
            reqwest::Method::POST,
            &key,
            url,
            Some(serde_json::json!({"models": map, "effective_date": "2026-02-01"})),
        )
        .await;
    assert_eq!(
        (again["added"].as_u64(), again["changed"].as_u64()),
        (Some(0), Some(0)),
        "a second import changes nothing: {again}"
    );
    let (s, _) = app
        .send(
            reqwest::Method::POST,
            &key,
            url,
            Some(serde_json::json!({"path": "../secrets.json", "effective_date": "2026-02-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn first_successful_setup_seeds_the_providers_default_prices() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "seeding").await;
    let url = "/api/v1/integrations/seeding/deepseek/pricing";
    let resp = app
        .client
        .delete(app.server.url(&format!("{url}/deepseek-chat")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for m in ["deepseek-reasoner", "deepseek-v4-flash", "deepseek-v4-pro"] {
        app.client
            .delete(app.server.url(&format!("{url}/{m}")))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
    }
    let (_, none) = app.send(reqwest::Method::GET, &key, url, None).await;
    assert_eq!(none["count"], 0);
    let (_, b) = app
        .setup(
            &key,
            "seeding",
            "deepseek",
            serde_json::json!({"credential": "sk-invalid-seed-000001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "INVALID");
    assert_eq!(
        (
            b["pricing_initialized"].as_bool(),
            b["subscriptions_initialized"].as_bool()
        ),
        (Some(false), Some(true)),
        "nothing seeded by an invalid credential; the plans onboarding seeded are there: {b}"
    );
    let (_, still) = app.send(reqwest::Method::GET, &key, url, None).await;
    assert_eq!(still["count"], 0, "an invalid credential seeds nothing");
    // The seed's body: `api_key` is another name for `credential`, with a credential_name.
    let (s, b) = app
        .setup(
            &key,
            "seeding",
            "deepseek",
            serde_json::json!({"api_key": "sk-good-seed-0000001", "credential_name": "Production Key"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["validation_status"], "VALID");
    assert_eq!(
        (
            b["success"].as_bool(),
            b["pricing_initialized"].as_bool(),
            b["pricing_rows_seeded"].as_u64()
        ),
        (Some(true), Some(true), Some(4)),
        "{b}"
    );
    assert_eq!(b["subscriptions_initialized"], true, "{b}");
    let (_, seeded) = app.send(reqwest::Method::GET, &key, url, None).await;
    assert_eq!(seeded["count"], 4, "{seeded}");
    // Both names at once is ambiguous.
    let (s, b) = app
        .setup(
            &key,
            "seeding",
            "deepseek",
            serde_json::json!({"api_key": "sk-good-seed-0000001", "credential": "sk-good-seed-0000002"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(
        seeded["pricing"][0]["notes"].as_str().unwrap().starts_with("source: "),
        "each figure records its source"
    );
}

/// The original api-service's bulk price update: each item applied like a PUT, the reply
/// counting what was updated and naming each failure.
#[tokio::test]
async fn bulk_price_updates_apply_each_item_and_name_failures() {
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "bulkp").await;
    let base = "/api/v1/integrations/bulkp/openai/pricing";
    let body = serde_json::json!({"updates": [
        {"model_id": "gpt-4o", "input_price_per_1k": "0.002", "output_price_per_1k": "0.008", "notes": "negotiated"},
        {"model_id": "no-such-model", "input_price_per_1k": "0.001"},
        {"model_id": "gpt-4o-mini", "input_price_per_1k": "-1"},
        {"input_price_per_1k": "0.001"},
    ]});
    let (s, b) = app.send(reqwest::Method::PATCH, &key, base, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["updated_count"].as_u64(), b["failed_count"].as_u64()),
        (Some(1), Some(3)),
        "{b}"
    );
    let errors = b["errors"].as_array().unwrap();
    assert_eq!(errors[0]["model_id"], "no-such-model");
    assert_eq!(errors[0]["error"], "PRICING_NOT_FOUND");
    let (_, one) = app
        .send(reqwest::Method::GET, &key, &format!("{base}/gpt-4o"), None)
        .await;
    assert_eq!(
        (
            one["input_price_per_1m"].as_str(),
            one["output_price_per_1m"].as_str(),
            one["notes"].as_str()
        ),
        (Some("2"), Some("8"), Some("negotiated")),
        "{one}"
    );
    let (s, b) = app
        .send(
            reqwest::Method::PATCH,
            &key,
            base,
            Some(serde_json::json!({"updates": []})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
}
