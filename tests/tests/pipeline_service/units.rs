//! Every dollar on the bill: OpenAI usage priced per image, character, minute, GiB-day,
//! session and call, completions service tiers, Anthropic long-context and priority usage —
//! each against hand-computed figures exact to the nano-dollar — and reconciliation per line
//! item against the sandbox's bill.

use rust_decimal::Decimal;

use crate::prelude::*;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A local OpenAI Admin API serving hand-written usage of every unit-priced endpoint (and two
/// completions rows on the priority and scale tiers) for 2026-03-05; an empty page otherwise.
async fn hand_written_openai_units() -> String {
    use axum::{extract::Path, extract::Query, routing::get};
    let handler = |Path(endpoint): Path<String>, Query(q): Query<Vec<(String, String)>>| async move {
        let start: i64 = q
            .iter()
            .find(|(k, _)| k == "start_time")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let day = DateTime::from_timestamp(start, 0).map(|t| t.date_naive().to_string());
        let groups: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "group_by")
            .map(|(_, v)| v.as_str())
            .collect();
        let results = if day.as_deref() != Some("2026-03-05") {
            json!([])
        } else {
            match endpoint.as_str() {
                "completions" => json!([
                    {"model": "gpt-4o-mini-2024-07-18", "project_id": "proj_a", "batch": false, "service_tier": "priority",
                     "num_model_requests": 5, "input_tokens": 1_100_000, "input_cached_tokens": 100_000,
                     "input_cache_write_tokens": 0, "input_uncached_tokens": 1_000_000, "output_tokens": 100_000},
                    {"model": "gpt-4o-2024-08-06", "project_id": "proj_a", "batch": false, "service_tier": "scale",
                     "num_model_requests": 1, "input_tokens": 1_000_000, "input_cached_tokens": 0,
                     "input_cache_write_tokens": 0, "input_uncached_tokens": 1_000_000, "output_tokens": 0},
                ]),
                "images" => json!([
                    {"object": "organization.usage.images.result", "model": "dall-e-3", "size": "1024x1024",
                     "source": "image.generation", "images": 3, "num_model_requests": 3, "project_id": "proj_a"},
                    {"object": "organization.usage.images.result", "model": "dall-e-3", "size": "1792x1024",
                     "source": "image.generation", "images": 2, "num_model_requests": 2, "project_id": "proj_b"},
                    {"object": "organization.usage.images.result", "model": "gpt-image-9", "size": "1024x1024",
                     "source": "image.edit", "images": 4, "num_model_requests": 4, "project_id": "proj_b"},
                ]),
                "audio_speeches" => json!([{"object": "organization.usage.audio_speeches.result", "model": "tts-1",
                    "characters": 123_457, "num_model_requests": 9, "project_id": "proj_a"}]),
                "audio_transcriptions" => json!([{"object": "organization.usage.audio_transcriptions.result",
                    "model": "whisper-1", "seconds": 1_001, "num_model_requests": 4, "project_id": "proj_a"}]),
                "moderations" => json!([{"object": "organization.usage.moderations.result",
                    "model": "omni-moderation-latest", "input_tokens": 50_000, "num_model_requests": 50, "project_id": "proj_a"}]),
                // 3.5 GiB stored, in two projects.
                "vector_stores" => json!([
                    {"object": "organization.usage.vector_stores.result", "usage_bytes": 3u64 << 30, "project_id": "proj_a"},
                    {"object": "organization.usage.vector_stores.result", "usage_bytes": 1u64 << 29, "project_id": "proj_b"},
                ]),
                "code_interpreter_sessions" => json!([{"object": "organization.usage.code_interpreter_sessions.result",
                    "num_sessions": 7, "project_id": "proj_a"}]),
                "file_search_calls" => json!([{"object": "organization.usage.file_searches.result",
                    "num_requests": 1_234, "project_id": "proj_a", "vector_store_id": null}]),
                "web_search_calls" => json!([
                    {"object": "organization.usage.web_search_calls.result", "model": "gpt-4o-mini-search-preview-2025-03-11",
                     "context_level": "high", "num_requests": 10, "num_model_requests": 10, "project_id": "proj_a"},
                    {"object": "organization.usage.web_search_calls.result", "model": "gpt-4o-2024-08-06",
                     "context_level": "low", "num_requests": 999, "num_model_requests": 900, "project_id": "proj_b"},
                ]),
                _ => json!([]),
            }
        };
        // Each endpoint is asked for the dimensions that price it.
        let wanted: &[&str] = match endpoint.as_str() {
            "images" => &["model", "project_id", "size", "source"],
            "web_search_calls" => &["model", "project_id", "context_level"],
            "vector_stores" | "code_interpreter_sessions" | "file_search_calls" => &["project_id"],
            "completions" => &["model", "project_id", "batch", "service_tier"],
            _ => &["model", "project_id"],
        };
        // (The credential check asks for one bucket, ungrouped.)
        let status = if groups.is_empty() || groups == wanted {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        (
            status,
            axum::Json(json!({"object": "page", "has_more": false, "next_page": null,
                "data": [{"object": "bucket", "start_time": start, "end_time": start + 86_400, "results": results}]})),
        )
    };
    let app = axum::Router::new()
        .route("/v1/organization/usage/{endpoint}", get(handler))
        .fallback(|| async { axum::Json(json!({"object": "page", "data": [], "has_more": false, "next_page": null})) });
    serve(app).await
}

async fn run_day(app: &App, key: &str, path: &str, date: &str) -> Value {
    app.completed_run(key, path, json!({"date": date})).await
}

/// Seeded prices: DALL·E 3 0.04 (1024x1024) and 0.08 (1792x1024) an image, TTS-1 15 per 1M
/// characters, Whisper 0.006 a minute, moderations free, vector storage 0.10 a GiB-day with the
/// first GiB free, 0.03 a code-interpreter session, 2.50 per 1 000 file searches, web search 10
/// per 1 000 calls (25 for the search-preview models); gpt-4o-mini priority 0.25 / 0.125 / 1
/// per 1M.
#[tokio::test]
async fn every_openai_usage_kind_is_priced_by_its_own_unit_exactly() {
    let url = hand_written_openai_units().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &url), ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2")],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "units").await;
    let (_, b) = app
        .setup(&key, "units", "openai", json!({"credential": "sk-admin-units-000001"}))
        .await;
    assert_eq!(b["validation_status"], "VALID", "{b}");
    let path = "/api/v1/pipelines/run/units/openai/cost/usage_cost";
    let run = run_day(&app, &key, path, "2026-03-05").await;
    let step = |name: &str| {
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step_name"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {run}"))["metadata"]["output"]
            .clone()
    };
    let extract = step("extract_unit_usage");
    assert_eq!(extract["inserted"], 12, "{extract}");
    assert_eq!(extract["tables"]["openai_images_usage_daily_raw"], 3);
    let priced = step("calculate_unit_cost");
    // 0.12 + 0.16 + 1.851855 + 0.1001 + 0 + 0.35 − 0.1 + 0.21 + 3.085 + 0.25 + 9.99; the
    // unpriced image model adds nothing and is flagged.
    assert_eq!(d(priced["total_cost"].as_str().unwrap()), d("16.016955"), "{priced}");
    assert_eq!(priced["unknown_prices"], 1);
    assert_eq!(d(priced["free_units_credit"].as_str().unwrap()), d("0.1"));
    let rows = ctx
        .warehouse
        .query(
            "units_local",
            "SELECT usage_type, charge_type, model, project_id, variant, unit, consumed_quantity, consumed_unit, \
             pricing_quantity, unit_price, total_cost, unknown_model FROM {{openai_unit_cost_daily}}",
            &Default::default(),
        )
        .await
        .unwrap();
    // (usage type, model or project, variant) → (unit, pricing quantity, unit price, cost)
    type Expected<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );
    let expected: [Expected; 13] = [
        (
            "images",
            "dall-e-3",
            Some("1024x1024"),
            "image",
            "3",
            Some("0.04"),
            Some("0.12"),
        ),
        (
            "images",
            "dall-e-3",
            Some("1792x1024"),
            "image",
            "2",
            Some("0.08"),
            Some("0.16"),
        ),
        ("images", "gpt-image-9", Some("1024x1024"), "image", "4", None, None),
        (
            "audio_speeches",
            "tts-1",
            None,
            "1m_characters",
            "0.123457",
            Some("15"),
            Some("1.851855"),
        ),
        (
            "audio_transcriptions",
            "whisper-1",
            None,
            "minute",
            "16.683333333",
            Some("0.006"),
            Some("0.1001"),
        ),
        (
            "moderations",
            "omni-moderation-latest",
            None,
            "1m_tokens",
            "0.05",
            Some("0"),
            Some("0"),
        ),
        (
            "vector_stores",
            "proj_a",
            None,
            "gib_day",
            "3",
            Some("0.1"),
            Some("0.3"),
        ),
        (
            "vector_stores",
            "proj_b",
            None,
            "gib_day",
            "0.5",
            Some("0.1"),
            Some("0.05"),
        ),
        (
            "vector_stores",
            "free_tier",
            None,
            "gib_day",
            "1",
            Some("0.1"),
            Some("-0.1"),
        ),
        (
            "code_interpreter_sessions",
            "proj_a",
            None,
            "session",
            "7",
            Some("0.03"),
            Some("0.21"),
        ),
        (
            "file_search_calls",
            "proj_a",
            None,
            "1k_calls",
            "1.234",
            Some("2.5"),
            Some("3.085"),
        ),
        (
            "web_search_calls",
            "gpt-4o-mini-search-preview-2025-03-11",
            Some("high"),
            "1k_calls",
            "0.01",
            Some("25"),
            Some("0.25"),
        ),
        (
            "web_search_calls",
            "gpt-4o-2024-08-06",
            Some("low"),
            "1k_calls",
            "0.999",
            Some("10"),
            Some("9.99"),
        ),
    ];
    assert_eq!(rows.len(), expected.len(), "{rows:?}");
    for (kind, who, variant, unit, quantity, price, cost) in expected {
        let row = rows
            .iter()
            .find(|r| {
                r.string("usage_type").as_deref() == Some(kind)
                    && r.string("variant").as_deref() == variant
                    && (r.string("model").as_deref() == Some(who)
                        || (r.string("model").is_none() && r.string("project_id").as_deref() == Some(who))
                        || r.string("charge_type").as_deref() == Some(who))
            })
            .unwrap_or_else(|| panic!("no row {kind} {who} {variant:?}: {rows:?}"));
        assert_eq!(row.string("unit").as_deref(), Some(unit), "{kind} {who}");
        assert_eq!(row.numeric("pricing_quantity"), Some(d(quantity)), "{kind} {who}");
        assert_eq!(row.numeric("unit_price"), price.map(d), "{kind} {who}");
        assert_eq!(row.numeric("total_cost"), cost.map(d), "{kind} {who}");
        assert_eq!(row.boolean("unknown_model"), Some(cost.is_none()), "{kind} {who}");
    }
    // Service tiers: priority at its own prices (1 000 000 × 0.25 + 100 000 × 0.125 + 100 000 ×
    // 1), scale without a row of its own at standard (1 000 000 × 2.5).
    let tiers = ctx
        .warehouse
        .query(
            "units_local",
            "SELECT pricing_tier, total_cost FROM {{openai_cost_daily}} ORDER BY pricing_tier",
            &Default::default(),
        )
        .await
        .unwrap();
    let tiers: Vec<(Option<String>, Option<Decimal>)> = tiers
        .iter()
        .map(|r| (r.string("pricing_tier"), r.numeric("total_cost")))
        .collect();
    assert_eq!(
        tiers,
        vec![
            (Some("priority".into()), Some(d("0.3625"))),
            (Some("scale".into()), Some(d("2.5")))
        ]
    );
    // The cost query includes the unit costs (by model, or by kind where there is none) and
    // counts the unpriced row as unknown, never as 0.
    let (s, b) = app
        .send(
            Method::GET,
            &key,
            "/api/v1/costs/units?start_date=2026-03-05&end_date=2026-03-05&group_by=model",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        d(b["total_cost"].as_str().unwrap()),
        d("16.016955") + d("2.8625"),
        "{b}"
    );
    assert_eq!(b["unknown_model_rows"], 1, "{b}");
    let model = |m: &str| {
        b["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == m)
            .map(|r| d(r["total_cost"].as_str().unwrap()))
    };
    assert_eq!(model("vector_stores"), Some(d("0.25")), "{b}");
    assert_eq!(model("dall-e-3"), Some(d("0.28")), "{b}");
    // A re-run replaces the day: same rows, no duplicates.
    run_day(&app, &key, path, "2026-03-05").await;
    let again = ctx
        .warehouse
        .query(
            "units_local",
            "SELECT COUNT(*) AS n FROM {{openai_unit_cost_daily}}",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(again[0].int("n"), Some(13));
    // A unit price is set like any other; a unit without its price is refused and changes
    // nothing.
    let pricing = "/api/v1/integrations/units/openai/pricing";
    let (s, b) = app
        .send(
            Method::POST,
            &key,
            pricing,
            Some(json!({"model_id": "gpt-image-9-1024x1024", "unit": "image", "effective_date": "2026-03-01"})),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("INVALID_PRICE")),
        "{b}"
    );
    let (s, b) = app
        .send(
            Method::POST,
            &key,
            pricing,
            Some(json!({"model_id": "gpt-image-9-1024x1024", "unit": "furlongs", "unit_price": "1", "effective_date": "2026-03-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (s, b) = app
        .send(
            Method::POST,
            &key,
            pricing,
            Some(
                json!({"model_id": "gpt-image-9-1024x1024", "unit": "image", "unit_price": "0.05",
                        "effective_date": "2026-03-01"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let run = run_day(&app, &key, path, "2026-03-05").await;
    let priced = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_name"] == "calculate_unit_cost")
        .unwrap()["metadata"]["output"]
        .clone();
    // Now 4 × 0.05 more, and nothing unknown.
    assert_eq!(d(priced["total_cost"].as_str().unwrap()), d("16.216955"), "{priced}");
    assert_eq!(priced["unknown_prices"], 0);
}

/// A local Anthropic Admin API with long-context, batch long-context, priority and an
/// unpriced long-context usage row for 2026-03-05.
async fn hand_written_anthropic_tiers() -> String {
    use axum::{extract::Query, routing::get};
    let report = move |Query(q): Query<HashMap<String, String>>| async move {
        let start = q.get("starting_at").cloned().unwrap_or_default();
        let row = |model: &str, tier: &str, window: &str, searches: u64| {
            json!({"model": model, "service_tier": tier, "context_window": window, "workspace_id": "wrk_a",
                   "uncached_input_tokens": 1_000_000,
                   "cache_creation": {"ephemeral_5m_input_tokens": 100_000, "ephemeral_1h_input_tokens": 10_000},
                   "cache_read_input_tokens": 200_000, "output_tokens": 50_000,
                   "server_tool_use": {"web_search_requests": searches}})
        };
        let results = if start.starts_with("2026-03-05") {
            json!([
                row("claude-sonnet-4-5-20250929", "standard", "200k-1M", 3),
                row("claude-sonnet-4-5-20250929", "batch", "200k-1M", 0),
                row("claude-sonnet-4-5-20250929", "priority", "0-200k", 0),
                row("claude-3-5-haiku-20241022", "standard", "200k-1M", 0),
            ])
        } else {
            json!([])
        };
        axum::Json(
            json!({"data": [{"starting_at": start, "ending_at": q.get("ending_at"), "results": results}],
                          "has_more": false, "next_page": null}),
        )
    };
    let app = axum::Router::new()
        .route("/v1/organizations/usage_report/messages", get(report))
        .fallback(|| async { axum::Json(json!({"data": [], "has_more": false, "next_page": null})) });
    serve(app).await
}

/// Seeded claude-sonnet-4-5 rates: standard 3 / 0.3 / 3.75 / 6 / 15, long context 6 / 0.6 /
/// 7.5 / 12 / 22.5, batch long context half that; web search 10 per 1 000.
#[tokio::test]
async fn anthropic_long_context_batch_and_priority_usage_are_priced_exactly() {
    let url = hand_written_anthropic_tiers().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[
            ("ANTHROPIC_BASE_URL", &url),
            ("PROVIDER_VALIDATION_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "longctx").await;
    let (_, b) = app
        .setup(
            &key,
            "longctx",
            "anthropic",
            json!({"credential": "sk-ant-admin01-long-1"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID", "{b}");
    run_day(
        &app,
        &key,
        "/api/v1/pipelines/run/longctx/anthropic/cost/usage_cost",
        "2026-03-05",
    )
    .await;
    let rows = ctx
        .warehouse
        .query(
            "longctx_local",
            "SELECT model, pricing_tier, total_cost, unknown_model FROM {{anthropic_cost_daily}}",
            &Default::default(),
        )
        .await
        .unwrap();
    let cost = |model: &str, tier: &str| {
        rows.iter()
            .find(|r| r.string("model").as_deref() == Some(model) && r.string("pricing_tier").as_deref() == Some(tier))
            .map(|r| (r.numeric("total_cost"), r.boolean("unknown_model")))
    };
    let sonnet = "claude-sonnet-4-5-20250929";
    // 1 000 000 × 6 + 100 000 × 7.5 + 10 000 × 12 + 200 000 × 0.6 + 50 000 × 22.5 + 3 × 0.01
    assert_eq!(cost(sonnet, "long_context"), Some((Some(d("8.145")), Some(false))));
    // Half of every token price: 3 + 0.375 + 0.06 + 0.06 + 0.5625.
    assert_eq!(
        cost(sonnet, "batch_long_context"),
        Some((Some(d("4.0575")), Some(false)))
    );
    // Priority without a row of its own: standard, 3 + 0.375 + 0.06 + 0.06 + 0.75.
    assert_eq!(cost(sonnet, "priority"), Some((Some(d("4.245")), Some(false))));
    // No long-context rate for 3.5 Haiku: unknown, never the short-context price.
    assert_eq!(
        cost("claude-3-5-haiku-20241022", "long_context"),
        Some((None, Some(true)))
    );
}

/// Reconciliation names the line items behind a gap: on the sandbox's week every line the
/// usage explains reconciles to 0 exactly, and a flagged day's only flagged line is the charge
/// the usage APIs do not show (a fine-tuning job, Claude Code seats).
#[tokio::test]
async fn reconciliation_per_line_item_names_what_is_missing() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "lines").await;
    app.setup(&key, "lines", "openai", json!({"credential": "sk-admin-lines-000001"}))
        .await;
    app.setup(
        &key,
        "lines",
        "anthropic",
        json!({"credential": "sk-ant-admin01-lines-1"}),
    )
    .await;
    let range = json!({"start_date": "2026-01-01", "end_date": "2026-01-07"});
    for url in [
        "/api/v1/pipelines/run/lines/openai/cost/usage_cost",
        "/api/v1/pipelines/run/lines/anthropic/cost/usage_cost",
    ] {
        app.completed_run(&key, url, range.clone()).await;
    }
    let (s, b) = app
        .send(
            Method::GET,
            &key,
            "/api/v1/costs/lines/reconciliation?start_date=2026-01-01&end_date=2026-01-07",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 14, "{b}");
    let mut flagged_days = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for r in rows {
        let lines = r["line_items"].as_array().unwrap();
        let flagged: Vec<&str> = lines
            .iter()
            .filter(|l| l["flagged"] == true)
            .map(|l| l["line_item"].as_str().unwrap())
            .collect();
        for l in lines {
            let name = l["line_item"].as_str().unwrap();
            kinds.insert(name.rsplit(", ").next().unwrap().to_string());
            if !flagged.contains(&name) {
                assert_eq!(l["difference"], "0", "{r}");
            }
        }
        // The day's lines add up to the day.
        let sum: Decimal = lines.iter().map(|l| d(l["difference"].as_str().unwrap())).sum();
        assert_eq!(sum, d(r["difference"].as_str().unwrap()), "{r}");
        if r["flagged"] == true {
            flagged_days += 1;
            let expected = if r["provider"] == "openai" {
                "fine_tuning_training"
            } else {
                "claude code seats"
            };
            assert_eq!(flagged, vec![expected], "{r}");
            let line = lines.iter().find(|l| l["line_item"] == expected).unwrap();
            assert_eq!(line["computed_cost"], "0");
        } else {
            assert!(flagged.is_empty(), "{r}");
            assert_eq!(r["difference"], "0", "{r}");
        }
    }
    assert!(flagged_days > 0 && flagged_days < 14, "{b}");
    // Every kind of charge the sandbox bills is reconciled by name.
    for kind in [
        "input",
        "cached input",
        "output",
        "images",
        "characters",
        "minutes",
        "vector store storage",
        "code interpreter sessions",
        "file search tool calls",
        "web search tool calls",
        "uncached_input_tokens",
        "cache_read_input_tokens",
        "cache_creation.ephemeral_5m_input_tokens",
        "cache_creation.ephemeral_1h_input_tokens",
        "output_tokens",
        "web_search",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
}

/// The monthly subscriptions pipeline: seats × monthly price, a mid-month change as one plan
/// ending and another starting (both prorated by day), a trial ending mid-month, a discount,
/// a disabled plan skipped; re-runs replace the month; the cost query includes it. Worked by
/// hand for January 2026 (31 days).
#[tokio::test]
async fn monthly_subscriptions_prorate_trials_and_changes_exactly() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "seats").await;
    app.setup(&key, "seats", "openai", json!({"credential": "sk-admin-seats-000001"}))
        .await;
    let plans = "/api/v1/integrations/seats/openai/subscriptions";
    for body in [
        // Whole month: 4 × 25 = 100, 10% off → 90.
        json!({"plan_name": "TEAM", "quantity": 4, "unit_price_usd": "25", "effective_date": "2025-06-01",
               "discount_percentage": 10}),
        // The change on 2026-01-15: 2 seats to the 14th (2 × 30 × 14 / 31), then 5 seats (5 × 30 × 17 / 31).
        json!({"plan_name": "ENTERPRISE_OLD", "quantity": 2, "unit_price_usd": "30", "effective_date": "2025-01-01",
               "end_date": "2026-01-14"}),
        json!({"plan_name": "ENTERPRISE", "quantity": 5, "unit_price_usd": "30", "effective_date": "2026-01-15"}),
        // Trial to 2026-01-20: 11 paid days of 1 × 62 → 22.
        json!({"plan_name": "PRO_TRIAL", "quantity": 1, "unit_price_usd": "62", "effective_date": "2026-01-01",
               "trial_end_date": "2026-01-20", "tier_type": "trial"}),
        // Disabled: not charged.
        json!({"plan_name": "OFF", "quantity": 9, "unit_price_usd": "99", "effective_date": "2025-01-01", "is_enabled": false}),
    ] {
        let (s, b) = app.send(Method::POST, &key, plans, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let path = "/api/v1/pipelines/run/seats/openai/subscriptions";
    let run = run_day(&app, &key, path, "2026-01-20").await;
    let output = &run["steps"][0]["metadata"]["output"];
    // 90 + 27.096774194 + 82.258064516 + 22 (each rounded to 9 decimals, then summed).
    assert_eq!(output["month"], "2026-01-01", "{run}");
    assert_eq!(d(output["total_cost"].as_str().unwrap()), d("221.35483871"), "{run}");
    let rows = ctx
        .warehouse
        .query(
            "seats_local",
            "SELECT plan_name, paid_days, trial_days, list_cost, total_cost, period_start, period_end \
             FROM {{openai_subscriptions_monthly}} ORDER BY plan_name",
            &Default::default(),
        )
        .await
        .unwrap();
    let got: Vec<(String, i64, i64, Decimal, Decimal)> = rows
        .iter()
        .map(|r| {
            (
                r.string("plan_name").unwrap(),
                r.int("paid_days").unwrap(),
                r.int("trial_days").unwrap(),
                r.numeric("list_cost").unwrap(),
                r.numeric("total_cost").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ENTERPRISE".into(), 17, 0, d("82.258064516"), d("82.258064516")),
            ("ENTERPRISE_OLD".into(), 14, 0, d("27.096774194"), d("27.096774194")),
            ("PRO_TRIAL".into(), 11, 20, d("22"), d("22")),
            ("TEAM".into(), 31, 0, d("100"), d("90")),
        ]
    );
    // Another day of the same month computes the same month: replaced, not added.
    run_day(&app, &key, path, "2026-01-03").await;
    let (s, b) = app
        .send(
            Method::GET,
            &key,
            "/api/v1/costs/seats?start_date=2026-01-01&end_date=2026-01-31&group_by=provider,model",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(d(b["total_cost"].as_str().unwrap()), d("221.35483871"), "{b}");
    let team = b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "TEAM")
        .unwrap();
    assert_eq!(
        (team["provider"].as_str(), team["total_cost"].as_str()),
        (Some("openai"), Some("90"))
    );
    // February: the old plan and the trial are over or paid whole.
    let run = run_day(&app, &key, path, "2026-02-10").await;
    // 90 + 150 + 62.
    assert_eq!(
        d(run["steps"][0]["metadata"]["output"]["total_cost"].as_str().unwrap()),
        d("302"),
        "{run}"
    );
}

/// `gcp.api_extractor` on the Cloud Billing API: the org's service account gets a token by the
/// JWT grant, every `nextPageToken` page is read (the sandbox serving two accounts a page), an
/// expired token is exchanged for a new one mid-listing, and a re-run replaces the snapshot.
#[tokio::test]
async fn gcp_list_apis_are_paged_with_a_refreshed_service_account_token() {
    let (sa, token_url) = cloudact_e2e::sandbox_service_account().await;
    let google = token_url.trim_end_matches("/token").to_string();
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[
            ("GCP_OAUTH_TOKEN_URL", &token_url),
            ("GCP_API_BASE_URL", &google),
            ("GCP_BIGQUERY_BASE_URL", &google),
        ],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "gcpapi").await;
    let (s, b) = app
        .send(
            Method::POST,
            &key,
            "/api/v1/integrations/gcpapi/gcp/setup",
            Some(json!({"credential": sa.to_string()})),
        )
        .await;
    assert_eq!(
        (s, b["validation_status"].as_str()),
        (StatusCode::OK, Some("VALID")),
        "{b}"
    );
    let http = reqwest::Client::new();
    let faults = http
        .put(format!("{google}/_sandbox/faults"))
        .json(&json!({"max_page_size": 2, "expire_token_after_pages": 2}))
        .send()
        .await
        .unwrap();
    assert!(faults.status().is_success());
    let path = "/api/v1/pipelines/run/gcpapi/gcp/api/billing_accounts";
    let run = run_day(&app, &key, path, "2026-03-05").await;
    let output = &run["steps"][0]["metadata"]["output"];
    assert_eq!(
        (&output["pages"], &output["inserted"], &output["token_refreshes"]),
        (&json!(4), &json!(7), &json!(1)),
        "{run}"
    );
    let rows = ctx
        .warehouse
        .query(
            "gcpapi_local",
            "SELECT billing_account_name, display_name, open, currency_code, resource_json \
             FROM {{gcp_billing_accounts_raw}} ORDER BY display_name",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r
        .string("billing_account_name")
        .unwrap()
        .starts_with("billingAccounts/")));
    assert_eq!(rows[3].string("open").as_deref(), Some("false"));
    assert_eq!(rows[5].string("currency_code").as_deref(), Some("EUR"));
    let item: Value = serde_json::from_str(&rows[0].string("resource_json").unwrap()).unwrap();
    assert_eq!(item["displayName"], "Sandbox billing account 1");
    // Again, without faults: one page of 50, the same seven rows (replaced, not added).
    http.delete(format!("{google}/_sandbox/faults")).send().await.unwrap();
    let run = run_day(&app, &key, path, "2026-03-05").await;
    assert_eq!(run["steps"][0]["metadata"]["output"]["pages"], 1, "{run}");
    let n = ctx
        .warehouse
        .query(
            "gcpapi_local",
            "SELECT COUNT(*) AS n FROM {{gcp_billing_accounts_raw}}",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(n[0].int("n"), Some(7));
}
