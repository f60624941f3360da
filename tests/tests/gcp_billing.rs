//! GCP billing end to end: the customer's Cloud Billing export lives in a BigQuery (the local
//! emulator) and is read with the customer's service account (JWT grant at the sandbox's
//! Google token endpoint); our warehouse is the embedded default or BigQuery itself. Both real
//! binaries, real HTTP. The expected figures are worked out by hand from the fixture rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::HashMap, sync::Arc};

use cloudact_core::warehouse::{
    bigquery::{BigQueryConfig, BigQueryWarehouse},
    embedded::EmbeddedWarehouse,
    Params, Warehouse,
};
use cloudact_e2e::{BigQueryEmulator, KmsEmulator, Service, ROOT_KEY};
use reqwest::{Client, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const SOURCE: &str = "test-proj.cust_billing.gcp_billing_export_v1_0A1B2C";

async fn bq(c: &Client, emu: &BigQueryEmulator, path: &str, body: Value) -> Value {
    let r = c
        .post(format!("{}/projects/test-proj{path}", emu.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{path}: {v}");
    v
}

/// One export row: usage start, export time, cost, credit amounts, cost type.
async fn export_row(
    c: &Client,
    emu: &BigQueryEmulator,
    usage: &str,
    export: &str,
    cost: &str,
    credits: &[&str],
    kind: &str,
) {
    let credits: Vec<String> = credits
        .iter()
        .enumerate()
        .map(|(i, a)| format!("STRUCT('credit{i}' AS name, {a} AS amount)"))
        .collect();
    let credits = if credits.is_empty() {
        "CAST([] AS ARRAY<STRUCT<name STRING, amount FLOAT64>>)".to_string()
    } else {
        format!("[{}]", credits.join(", "))
    };
    let sql = format!(
        "INSERT INTO `{SOURCE}` (billing_account_id, service, sku, usage_start_time, usage_end_time, project, location, \
         export_time, cost, currency, currency_conversion_rate, usage, cost_type, credits, invoice, labels, system_labels, cost_at_list) \
         VALUES ('01A2B3-C4D5E6-F7A8B9', STRUCT('6F81-5844-456A' AS id, 'Compute Engine' AS description), \
         STRUCT('2E27-4F75-95CD' AS id, 'N2 Instance Core' AS description), TIMESTAMP '{usage}', \
         TIMESTAMP_ADD(TIMESTAMP '{usage}', INTERVAL 1 HOUR), STRUCT('acme-prod' AS id, 'Acme Prod' AS name, '1234' AS number), \
         STRUCT('us-central1' AS location, 'US' AS country, 'us-central1' AS region, 'us-central1-a' AS zone), \
         TIMESTAMP '{export}', {cost}, 'USD', 1.0, STRUCT(3600.0 AS amount, 'seconds' AS unit, 1.0 AS amount_in_pricing_units, 'hour' AS pricing_unit), \
         '{kind}', {credits}, STRUCT('202601' AS month), [STRUCT('env' AS key, 'prod' AS value)], \
         CAST([] AS ARRAY<STRUCT<key STRING, value STRING>>), {cost})"
    );
    bq(c, emu, "/queries", json!({"query": sql, "useLegacySql": false})).await;
}

async fn customer_export(c: &Client, emu: &BigQueryEmulator) {
    bq(
        c,
        emu,
        "/datasets",
        json!({"datasetReference": {"projectId": "test-proj", "datasetId": "cust_billing"}}),
    )
    .await;
    let rec = |name: &str, fields: Value| json!({"name": name, "type": "RECORD", "fields": fields});
    let kv = json!([{"name": "key", "type": "STRING"}, {"name": "value", "type": "STRING"}]);
    let idd = json!([{"name": "id", "type": "STRING"}, {"name": "description", "type": "STRING"}]);
    let schema = json!({"fields": [
        {"name": "billing_account_id", "type": "STRING"},
        rec("service", idd.clone()), rec("sku", idd),
        {"name": "usage_start_time", "type": "TIMESTAMP"}, {"name": "usage_end_time", "type": "TIMESTAMP"},
        rec("project", json!([{"name": "id", "type": "STRING"}, {"name": "name", "type": "STRING"}, {"name": "number", "type": "STRING"}])),
        rec("location", json!([{"name": "location", "type": "STRING"}, {"name": "country", "type": "STRING"}, {"name": "region", "type": "STRING"}, {"name": "zone", "type": "STRING"}])),
        {"name": "export_time", "type": "TIMESTAMP"}, {"name": "cost", "type": "FLOAT"}, {"name": "currency", "type": "STRING"},
        {"name": "currency_conversion_rate", "type": "FLOAT"},
        rec("usage", json!([{"name": "amount", "type": "FLOAT"}, {"name": "unit", "type": "STRING"}, {"name": "amount_in_pricing_units", "type": "FLOAT"}, {"name": "pricing_unit", "type": "STRING"}])),
        {"name": "cost_type", "type": "STRING"},
        {"name": "credits", "type": "RECORD", "mode": "REPEATED", "fields": [{"name": "name", "type": "STRING"}, {"name": "amount", "type": "FLOAT"}]},
        rec("invoice", json!([{"name": "month", "type": "STRING"}])),
        {"name": "labels", "type": "RECORD", "mode": "REPEATED", "fields": kv.clone()},
        {"name": "system_labels", "type": "RECORD", "mode": "REPEATED", "fields": kv},
        {"name": "cost_at_list", "type": "FLOAT"},
    ]});
    bq(
        c,
        emu,
        "/datasets/cust_billing/tables",
        json!({"tableReference": {"projectId": "test-proj", "datasetId": "cust_billing",
        "tableId": "gcp_billing_export_v1_0A1B2C"}, "schema": schema}),
    )
    .await;
    // Usage day 2026-01-10; exports read up to 2026-01-14 00:00 (3 days after the day).
    export_row(
        c,
        emu,
        "2026-01-10 03:00:00+00",
        "2026-01-10 08:00:00+00",
        "12.345678",
        &["-1.2", "-0.045678"],
        "regular",
    )
    .await;
    export_row(
        c,
        emu,
        "2026-01-10 05:00:00+00",
        "2026-01-11 02:00:00+00",
        "0.5",
        &[],
        "regular",
    )
    .await;
    export_row(
        c,
        emu,
        "2026-01-10 05:00:00+00",
        "2026-01-12 20:00:00+00",
        "-0.1",
        &[],
        "adjustment",
    )
    .await;
    export_row(
        c,
        emu,
        "2026-01-10 06:00:00+00",
        "2026-01-16 00:00:00+00",
        "7.0",
        &[],
        "regular",
    )
    .await; // exported too late
    export_row(
        c,
        emu,
        "2026-01-09 23:00:00+00",
        "2026-01-10 01:00:00+00",
        "3.0",
        &[],
        "regular",
    )
    .await; // the day before
    export_row(
        c,
        emu,
        "2026-01-11 00:00:00+00",
        "2026-01-11 05:00:00+00",
        "4.0",
        &[],
        "regular",
    )
    .await; // the day after
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.unwrap();
    let s = r.status();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{s}: {text}")))
}

/// Starts the pipeline at `path` for `date` over HTTP and polls until the run ends; the run.
async fn run_to_end(c: &Client, pipe: &Service, key: &str, path: &str, date: &str) -> Value {
    let (s, b) = send(
        c.post(pipe.url(path))
            .header("X-API-Key", key)
            .json(&json!({"date": date})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["pipeline_logging_id"].as_str().unwrap().to_string();
    for _ in 0..600 {
        let (_, run) = send(
            c.get(pipe.url(&format!("/api/v1/pipelines/runs/{id}")))
                .header("X-API-Key", key),
        )
        .await;
        if !matches!(run["status"].as_str(), Some("PENDING") | Some("RUNNING")) {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("run {id} did not finish");
}

async fn billing_day(embedded: bool) {
    let emu = BigQueryEmulator::start();
    let c = Client::new();
    customer_export(&c, &emu).await;
    let (sa, token_url) = cloudact_e2e::sandbox_service_account().await;

    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<&'static str, String> = HashMap::new();
    env.insert(
        "GCP_BIGQUERY_BASE_URL",
        emu.base_url.trim_end_matches("/bigquery/v2").to_string(),
    );
    env.insert("GCP_OAUTH_TOKEN_URL", token_url);
    let _kms = if embedded {
        None
    } else {
        let kms = KmsEmulator::start();
        let key = kms.create_key("cloudact", "org-secrets").await;
        env.extend(cloudact_e2e::cloud_env(&emu, &kms, key));
        Some(kms)
    };
    let api = Service::start("api-service", dir.path(), &env);
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    let root = |r: reqwest::RequestBuilder| r.header("X-CA-Root-Key", ROOT_KEY);
    let (s, b) = send(root(c.post(api.url("/api/v1/admin/bootstrap")))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut keys = Vec::new();
    for slug in ["gcporg", "otherorg"] {
        let (s, b) = send(
            root(c.post(api.url("/api/v1/organizations/onboard")))
                .json(&json!({"org_slug": slug, "company_name": slug, "admin_email": format!("ops@{slug}.example")})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        keys.push(b["api_key"].as_str().unwrap().to_string());
    }
    let key = &keys[0];
    let (s, b) = send(
        c.post(pipe.url("/api/v1/integrations/gcporg/gcp/setup"))
            .header("X-API-Key", key)
            .json(&json!({"credential": sa.to_string(), "metadata": {"billing_export_table": SOURCE}})),
    )
    .await;
    assert_eq!(
        (s, b["validation_status"].as_str()),
        (StatusCode::OK, Some("VALID")),
        "{b}"
    );
    // Another org cannot run GCP billing: it has no GCP integration of its own.
    let (s, b) = send(
        c.post(pipe.url("/api/v1/pipelines/run/otherorg/gcp/cost/billing"))
            .header("X-API-Key", &keys[1])
            .json(&json!({"date": "2026-01-10"})),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INTEGRATION_NOT_CONFIGURED")),
        "{b}"
    );

    let warehouse: Arc<dyn Warehouse> = if embedded {
        Arc::new(EmbeddedWarehouse::open(dir.path()).unwrap())
    } else {
        Arc::new(
            BigQueryWarehouse::connect(BigQueryConfig {
                project: emu.project.clone(),
                location: "US".into(),
                base_url: Some(emu.base_url.clone()),
            })
            .await
            .unwrap(),
        )
    };
    let run_day = || async {
        let run = run_to_end(
            &c,
            &pipe,
            key,
            "/api/v1/pipelines/run/gcporg/gcp/cost/billing",
            "2026-01-10",
        )
        .await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
    };
    let totals = || async {
        let rows = warehouse
            .query(
                "gcporg_local",
                "SELECT COUNT(*) AS n, SUM(cost) AS cost, SUM(net_cost) AS net, SUM(credits_total) AS credits, \
                 COUNT(DISTINCT usage_date) AS days FROM {{gcp_billing_daily_raw}} WHERE org_slug = @org",
                &Params::new().with("org", "gcporg"),
            )
            .await
            .unwrap();
        let dec = |col: &str| {
            rows[0]
                .numeric(col)
                .or_else(|| rows[0].float(col).map(|f| Decimal::try_from(f).unwrap().round_dp(9)))
                .unwrap()
        };
        (
            rows[0].int("n").unwrap(),
            dec("cost"),
            dec("net"),
            dec("credits"),
            rows[0].int("days").unwrap(),
        )
    };
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    for _ in 0..2 {
        run_day().await;
        // 12.345678 + 0.5 − 0.1 before credits; credits −1.2 − 0.045678; net 11.5.
        assert_eq!(
            totals().await,
            (3, d("12.745678"), d("11.5"), d("-1.245678"), 1),
            "and a rerun replaces the day"
        );
    }
    let detail = warehouse
        .query(
            "gcporg_local",
            "SELECT * FROM {{gcp_billing_daily_raw}} WHERE cost_type = 'regular' ORDER BY usage_start_time",
            &Params::new(),
        )
        .await
        .unwrap();
    let first = &detail[0];
    assert_eq!(first.string("service_description").as_deref(), Some("Compute Engine"));
    assert_eq!(first.string("project_id").as_deref(), Some("acme-prod"));
    assert_eq!(first.string("location_region").as_deref(), Some("us-central1"));
    assert_eq!(first.string("invoice_month").as_deref(), Some("202601"));
    assert!(first.string("labels_json").unwrap().contains("\"prod\""));
    assert_eq!(first.numeric("net_cost"), Some(d("11.1")));
    // A late correction exported after the first load is picked up by a rerun of the day.
    export_row(
        &c,
        &emu,
        "2026-01-10 07:00:00+00",
        "2026-01-13 09:00:00+00",
        "-0.25",
        &[],
        "adjustment",
    )
    .await;
    run_day().await;
    assert_eq!(totals().await, (4, d("12.495678"), d("11.25"), d("-1.245678"), 1));
    // The cost query counts GCP at its net cost, by service.
    let (s, b) = send(
        c.get(pipe.url("/api/v1/costs/gcporg?start_date=2026-01-01&end_date=2026-01-31&group_by=provider,model"))
            .header("X-API-Key", key),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["rows"][0]["provider"], "gcp", "{b}");
    assert_eq!(b["rows"][0]["model"], "Compute Engine");
    assert_eq!(d(b["total_cost"].as_str().unwrap()), d("11.25"));
    // The FOCUS export of the same month: the lines at their cost, their credits as Credit
    // rows of their own, the two adjustments (-0.1, and the late -0.25) as Adjustment rows;
    // billed costs add up to the net.
    let (s, b) = send(
        c.get(pipe.url("/api/v1/costs/gcporg/focus?start_date=2026-01-01&end_date=2026-01-31&format=json"))
            .header("X-API-Key", key),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rows = b["rows"].as_array().unwrap();
    let sum = |category: Option<&str>| -> Decimal {
        rows.iter()
            .filter(|r| category.is_none_or(|c| r["ChargeCategory"] == c))
            .map(|r| d(r["BilledCost"].as_str().unwrap()))
            .sum()
    };
    assert_eq!(sum(None), d("11.25"), "{b}");
    assert_eq!(sum(Some("Credit")), d("-1.245678"), "{b}");
    assert_eq!(sum(Some("Adjustment")), d("-0.35"), "{b}");
    assert_eq!(b["row_count"], 5, "two usage lines, their one credit, two adjustments");
    assert!(
        rows.iter()
            .all(|r| r["ProviderName"] == "Google Cloud" && r["BillingCurrency"].is_string()),
        "{b}"
    );
    assert!(
        rows.iter()
            .any(|r| r["ServiceName"] == "Compute Engine" && r["SubAccountId"] == "acme-prod"),
        "{b}"
    );
    // … and the table the focus/export step writes, in this backend.
    let finished = run_to_end(
        &c,
        &pipe,
        key,
        "/api/v1/pipelines/run/gcporg/focus/export",
        "2026-01-10",
    )
    .await;
    assert_eq!(finished["status"], "COMPLETED", "{finished}");
    let day_rows = rows.iter().filter(|r| r["x_usage_date"] == "2026-01-10").count();
    let n = warehouse
        .query(
            "gcporg_local",
            "SELECT COUNT(*) AS n FROM {{cost_data_focus_1_3}} WHERE x_org_slug = @org",
            &Params::new().with("org", "gcporg"),
        )
        .await
        .unwrap();
    assert_eq!(n[0].int("n"), Some(i64::try_from(day_rows).unwrap()), "{finished}");
    drop((api, pipe));
}

#[tokio::test]
async fn gcp_billing_export_into_the_embedded_warehouse() {
    billing_day(true).await;
}

#[tokio::test]
async fn gcp_billing_export_into_bigquery() {
    billing_day(false).await;
}

/// Setup with only the credential (the seed's `{"credential": "<service account JSON>"}`):
/// the export table is discovered with the service account in its project's datasets; with
/// none there, the integration is VALID with `billing_export_table: null`, a message saying how
/// to set it, and the billing pipeline fails with that same message; with both kinds of
/// export, the resource-level one is chosen and the reply says so.
#[tokio::test]
async fn gcp_setup_with_only_the_credential_discovers_the_billing_export() {
    let emu = BigQueryEmulator::start();
    let c = Client::new();
    let (sa, token_url) = cloudact_e2e::sandbox_service_account().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<&'static str, String> = HashMap::new();
    env.insert(
        "GCP_BIGQUERY_BASE_URL",
        emu.base_url.trim_end_matches("/bigquery/v2").to_string(),
    );
    env.insert("GCP_OAUTH_TOKEN_URL", token_url);
    let api = Service::start("api-service", dir.path(), &env);
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    let root = |r: reqwest::RequestBuilder| r.header("X-CA-Root-Key", ROOT_KEY);
    let (s, b) = send(root(c.post(api.url("/api/v1/admin/bootstrap")))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = send(
        root(c.post(api.url("/api/v1/organizations/onboard")))
            .json(&json!({"org_slug": "discover", "company_name": "Discover", "admin_email": "ops@discover.example"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let key = b["api_key"].as_str().unwrap().to_string();
    let setup = || async {
        send(
            c.post(pipe.url("/api/v1/integrations/discover/gcp/setup"))
                .header("X-API-Key", &key)
                .json(&json!({"credential": sa.to_string()})),
        )
        .await
    };

    // Nothing exported yet (a dataset without export tables).
    bq(
        &c,
        &emu,
        "/datasets",
        json!({"datasetReference": {"projectId": "test-proj", "datasetId": "analytics"}}),
    )
    .await;
    let (s, b) = setup().await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["validation_status"], "VALID", "{b}");
    assert_eq!(b["billing_export_table"], Value::Null, "{b}");
    let message = b["message"].as_str().unwrap();
    assert!(message.contains("PUT /api/v1/integrations/{org_slug}/gcp"), "{message}");
    assert_eq!(
        b["schedules_activated"], 0,
        "no daily billing run that can only fail: {b}"
    );
    // Re-validating searches again; still none, still a valid account.
    let (s, v) = send(
        c.post(pipe.url("/api/v1/integrations/discover/gcp/validate"))
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["validation_status"], "VALID", "{v}");
    let run = run_to_end(
        &c,
        &pipe,
        &key,
        "/api/v1/pipelines/run/discover/gcp/cost/billing",
        "2026-01-10",
    )
    .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert!(
        run["error_message"]
            .as_str()
            .unwrap()
            .contains("PUT /api/v1/integrations/{org_slug}/gcp"),
        "the same clear message: {run}"
    );

    // The standard export appears: re-validating finds it, stores it, starts the schedule.
    customer_export(&c, &emu).await;
    let (s, b) = send(
        c.post(pipe.url("/api/v1/integrations/discover/gcp/validate"))
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["validation_status"].as_str(), b["billing_export_table"].as_str()),
        (Some("VALID"), Some(SOURCE)),
        "{b}"
    );
    assert_eq!(b["schedules_activated"], 2, "billing and billing_accounts: {b}");
    let (s, b) = setup().await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["validation_status"].as_str(), b["billing_export_table"].as_str()),
        (Some("VALID"), Some(SOURCE)),
        "{b}"
    );
    let (_, schedules) = send(
        c.get(pipe.url("/api/v1/scheduler/org/discover/pipelines"))
            .header("X-API-Key", &key),
    )
    .await;
    let mut ids: Vec<&str> = schedules["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pipeline_id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec!["gcp_billing", "gcp_billing_accounts"],
        "the daily GCP schedules start once a table is known: {schedules}"
    );
    // And a resource-level export beside it: preferred, and the reply says so.
    let resource = "test-proj.cust_billing.gcp_billing_export_resource_v1_0A1B2C";
    bq(
        &c,
        &emu,
        "/queries",
        json!({"query": format!("CREATE TABLE `{resource}` AS SELECT * FROM `{SOURCE}`"), "useLegacySql": false}),
    )
    .await;
    let (s, b) = setup().await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["billing_export_table"], resource, "{b}");
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains("resource-level") && message.contains(SOURCE),
        "{message}"
    );
    let (_, listed) = send(
        c.get(pipe.url("/api/v1/integrations/discover/gcp"))
            .header("X-API-Key", &key),
    )
    .await;
    assert_eq!(
        listed["metadata"]["billing_export_table"], resource,
        "stored in the metadata: {listed}"
    );
    // A table named by PUT is read once first: one the account cannot read is refused.
    let (s, b) = send(
        c.put(pipe.url("/api/v1/integrations/discover/gcp"))
            .header("X-API-Key", &key)
            .json(&json!({"metadata": {"billing_export_table": "test-proj.cust_billing.gcp_billing_export_v1_NOPE"}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"], "BILLING_TABLE_UNREADABLE", "{b}");
    let (s, b) = send(
        c.put(pipe.url("/api/v1/integrations/discover/gcp"))
            .header("X-API-Key", &key)
            .json(&json!({"metadata": {"billing_export_table": SOURCE}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["metadata"]["billing_export_table"].as_str(), b["status"].as_str()),
        (Some(SOURCE), Some("VALID")),
        "{b}"
    );
    assert!(api.terminate().success());
    assert!(pipe.terminate().success());
}
