//! The FOCUS 1.3 export (`GET /api/v1/costs/{org}/focus`, the `focus/export` pipeline) on the
//! sandbox demo (OpenAI tokens and units, Anthropic, a prorated plan) plus a loaded GCP
//! billing day with credits and tax: every charge is a row, the rows add up to the cost API's
//! total, unit prices multiply back to the costs, and the FinOps Foundation's
//! `focus-validator` finds no mandatory-rule failure.

use std::{path::Path, process::Command};

use cloudact_core::warehouse::{schema::parse_schema_json, Row, TableDef};
use rust_decimal::Decimal;

use crate::prelude::*;

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|_| panic!("not a decimal: {s:?}"))
}

/// A GCP billing export day, as `gcp.bq_etl` loads it: two usage lines (one with credits)
/// and a tax line.
async fn load_gcp_day(ctx: &Arc<cloudact_web::AppContext>, dataset: &str, org: &str) {
    let path = cloudact_e2e::configs_dir().join("gcp/schemas/gcp_billing_daily_raw.json");
    let fields = parse_schema_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let def = TableDef {
        name: "gcp_billing_daily_raw".into(),
        description: None,
        fields,
        partition_field: Some("usage_date".into()),
        clustering: vec![],
        lookup_keys: vec![],
    };
    ctx.warehouse.create_table(dataset, &def).await.unwrap();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
    let start: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().unwrap();
    let end: DateTime<Utc> = "2026-03-02T01:00:00Z".parse().unwrap();
    let line =
        |service: &str, sku: &str, cost: &str, credits: &str, list: &str, amount: f64, unit: &str, kind: &str| {
            Row::new()
                .with("org_slug", org)
                .with("usage_date", day)
                .with("billing_account_id", "012345-6789AB-CDEF01")
                .with("service_id", format!("svc-{service}"))
                .with("service_description", service)
                .with("sku_id", sku)
                .with("sku_description", format!("{service} {sku}"))
                .with("usage_start_time", start)
                .with("usage_end_time", end)
                .with("project_id", "demo-project")
                .with("project_name", "Demo project")
                .with("location_region", "us-central1")
                .with("location_zone", "us-central1-a")
                .with("cost", d(cost))
                .with("currency", "USD")
                .with("currency_conversion_rate", 1.0)
                .with("usage_amount", amount * 3600.0)
                .with("usage_unit", "seconds")
                .with("usage_amount_in_pricing_units", amount)
                .with("usage_pricing_unit", unit)
                .with("cost_type", kind)
                .with("credits_total", d(credits))
                .with("net_cost", d(cost) + d(credits))
                .with("cost_at_list", d(list))
                .with("invoice_month", "202603")
                .with("export_time", end)
                .with("ingestion_date", day)
                .with("labels_json", r#"[{"key":"team","value":"search"}]"#)
                .with("run_id", "fixture")
                .with("loaded_at", Utc::now())
        };
    let rows = vec![
        line(
            "Compute Engine",
            "CP-E2-STANDARD-4",
            "3.216",
            "-1.5",
            "4.02",
            24.0,
            "hour",
            "regular",
        ),
        line(
            "BigQuery",
            "BQ-ANALYSIS",
            "0.3125",
            "0",
            "0.3125",
            0.05,
            "tebibyte",
            "regular",
        ),
        line("Compute Engine", "TAX-US", "0.25", "0", "0.25", 0.0, "", "tax"),
    ];
    ctx.warehouse
        .insert_rows(dataset, "gcp_billing_daily_raw", &rows)
        .await
        .unwrap();
}

async fn get_text(app: &App, key: &str, path: &str) -> (StatusCode, String, String) {
    let resp = app
        .client
        .get(app.server.url(path))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, content_type, resp.text().await.unwrap())
}

#[tokio::test]
async fn the_focus_export_of_the_demo_has_every_charge_and_passes_the_finops_validator() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "focusorg").await;
    let other = onboarded(&ctx, "focusother").await;
    app.setup(
        &key,
        "focusorg",
        "openai",
        json!({"credential": "sk-admin-focus-000001"}),
    )
    .await;
    app.setup(
        &key,
        "focusorg",
        "anthropic",
        json!({"credential": "sk-ant-admin01-focus-1"}),
    )
    .await;
    let range = json!({"start_date": "2026-03-01", "end_date": "2026-03-03"});
    for url in [
        "/api/v1/pipelines/run/focusorg/openai/cost/usage_cost",
        "/api/v1/pipelines/run/focusorg/anthropic/cost/usage_cost",
    ] {
        app.completed_run(&key, url, range.clone()).await;
    }
    // A plan started mid-month with a discount: 3 seats × 25 × 19/31 days, 20% off.
    let (s, b) = app
        .send(
            Method::POST,
            &key,
            "/api/v1/integrations/focusorg/openai/subscriptions",
            Some(json!({"plan_name": "TEAM", "quantity": 3, "unit_price_usd": "25",
                        "effective_date": "2026-03-13", "discount_percentage": 20})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    app.completed_run(
        &key,
        "/api/v1/pipelines/run/focusorg/openai/subscriptions",
        json!({"date": "2026-03-20"}),
    )
    .await;
    load_gcp_day(&ctx, "focusorg_local", "focusorg").await;

    let query = "start_date=2026-03-01&end_date=2026-03-03";
    let (s, content_type, csv_text) = get_text(&app, &key, &format!("/api/v1/costs/focusorg/focus?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{csv_text}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    let expected_header: Vec<String> = cloudact_pipeline::focus::COLUMNS
        .iter()
        .map(|(c, _)| c.to_string())
        .collect();
    assert_eq!(header, expected_header);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let get = |r: &csv::StringRecord, name: &str| r.get(col(name)).unwrap_or("").to_string();

    // Every charge is there: the billed costs add up to the cost API's total, to the cent and
    // beyond (the demo is all USD).
    let (s, costs) = app
        .send(Method::GET, &key, &format!("/api/v1/costs/focusorg?{query}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{costs}");
    let billed: Decimal = records.iter().map(|r| d(&get(r, "BilledCost"))).sum();
    assert_eq!(billed, d(costs["total_cost"].as_str().unwrap()), "{costs}");
    let by_source = |table: &str| records.iter().filter(|r| get(r, "x_source_table") == table).count();
    for table in [
        "openai_cost_daily",
        "openai_unit_cost_daily",
        "anthropic_cost_daily",
        "gcp_billing_daily_raw",
        "openai_subscriptions_monthly",
    ] {
        assert!(by_source(table) > 0, "no rows from {table}");
    }
    // GCP: two usage lines, the tax line, and the credits as a charge of their own.
    let gcp: Vec<(String, String)> = records
        .iter()
        .filter(|r| get(r, "x_source_table") == "gcp_billing_daily_raw")
        .map(|r| (get(r, "ChargeCategory"), get(r, "BilledCost")))
        .collect();
    assert_eq!(gcp.len(), 4, "{gcp:?}");
    assert!(gcp.contains(&("Credit".into(), "-1.5".into())), "{gcp:?}");
    assert!(gcp.contains(&("Tax".into(), "0.25".into())), "{gcp:?}");
    assert!(gcp.contains(&("Usage".into(), "3.216".into())), "{gcp:?}");
    // The plan: a Recurring charge of 3 × 19/31 seat-months at 25 list, 20 contracted.
    let plan = records
        .iter()
        .find(|r| get(r, "x_source_table") == "openai_subscriptions_monthly")
        .unwrap();
    assert_eq!(
        (get(plan, "ChargeCategory"), get(plan, "ChargeFrequency")),
        ("Usage".into(), "Recurring".into())
    );
    assert_eq!(get(plan, "ListUnitPrice"), "25.0");
    assert_eq!(get(plan, "ContractedUnitPrice"), "20.0");
    assert_eq!(get(plan, "ChargePeriodStart"), "2026-03-13T00:00:00Z");
    assert_eq!(get(plan, "ChargePeriodEnd"), "2026-04-01T00:00:00Z");
    assert_eq!(d(&get(plan, "BilledCost")), d("36.774193548"), "3 × 25 × 19/31 × 0.8");
    // LLM usage: one row per token kind, and ListUnitPrice × PricingQuantity is the cost
    // (exactly for tokens).
    let mut kinds = std::collections::BTreeSet::new();
    for r in &records {
        let table = get(r, "x_source_table");
        if get(r, "ChargeCategory") == "Usage" && table.ends_with("_daily") {
            let product = d(&get(r, "ListUnitPrice")) * d(&get(r, "PricingQuantity"));
            if table == "openai_unit_cost_daily" {
                // Minutes and GiB-days are seconds ÷ 60 and bytes ÷ 2³⁰, rounded to 9 places.
                assert!((product - d(&get(r, "ListCost"))).abs() <= d("0.000000001"), "{r:?}");
            } else {
                assert_eq!(product, d(&get(r, "ListCost")), "{r:?}");
            }
            assert_eq!(get(r, "ServiceCategory"), "AI and Machine Learning");
            assert!(
                !get(r, "SkuPriceId").is_empty() && !get(r, "SkuMeter").is_empty(),
                "{r:?}"
            );
            kinds.insert(get(r, "SkuMeter"));
        }
        assert_eq!(get(r, "x_org_slug"), "focusorg");
    }
    for meter in [
        "Input Tokens",
        "Output Tokens",
        "Cache Read Tokens",
        "Images",
        "Characters",
        "Sessions",
    ] {
        assert!(kinds.contains(meter), "no {meter} rows: {kinds:?}");
    }

    // JSON: the same rows, in the same column order, plus the count of unpriced usage rows.
    let (s, body) = app
        .send(
            Method::GET,
            &key,
            &format!("/api/v1/costs/focusorg/focus?{query}&format=json"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["focus_version"], "1.3");
    assert_eq!(body["rows"].as_array().unwrap().len(), records.len());
    assert_eq!(body["row_count"], records.len());
    assert_eq!(body["unpriced_rows"], costs["unknown_model_rows"], "{costs}");

    // The table the pipeline writes holds the day's rows, replaced (not added) on a rerun.
    let day_rows = records
        .iter()
        .filter(|r| get(r, "x_usage_date") == "2026-03-02")
        .count();
    for _ in 0..2 {
        let run = app
            .completed_run(
                &key,
                "/api/v1/pipelines/run/focusorg/focus/export",
                json!({"date": "2026-03-02"}),
            )
            .await;
        assert_eq!(run["steps"][0]["metadata"]["output"]["inserted"], day_rows, "{run}");
    }
    let n = ctx
        .warehouse
        .query(
            "focusorg_local",
            "SELECT COUNT(*) AS n, SUM(CASE WHEN x_usage_date = @day THEN 1 ELSE 0 END) AS day_n \
             FROM {{cost_data_focus_1_3}} WHERE x_org_slug = @org",
            &Params::new()
                .with("org", "focusorg")
                .with("day", chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()),
        )
        .await
        .unwrap();
    let day_rows = i64::try_from(day_rows).unwrap();
    assert_eq!((n[0].int("n"), n[0].int("day_n")), (Some(day_rows), Some(day_rows)));

    // Bad input is a clear 400; another org's key is refused.
    for bad in [
        "start_date=2026-03-03&end_date=2026-03-01",
        "start_date=2026-03-01&end_date=2026-03-03&format=xml",
        "start_date=2026-03-01&end_date=2026-03-03&limit=5",
    ] {
        let (s, b) = app
            .send(Method::GET, &key, &format!("/api/v1/costs/focusorg/focus?{bad}"), None)
            .await;
        assert_error_shape(s, &b, "INVALID_QUERY");
    }
    let (s, b) = app
        .send(
            Method::GET,
            &other,
            &format!("/api/v1/costs/focusorg/focus?{query}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    // The FinOps Foundation's validator (FOCUS 1.2 rules, the applicability criteria that
    // hold for this data) finds no MUST-level failure.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/focus-test");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("focus-demo.csv");
    std::fs::write(&file, &csv_text).unwrap();
    let result = Command::new(root.join("tools/focus/validate.sh"))
        .arg(&file)
        .arg(out.join("report"))
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "focus-validator found mandatory failures:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}
