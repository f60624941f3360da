//! The warehouse conformance suite, unchanged, against the BigQuery backend talking to a
//! local BigQuery REST emulator (`bqemulator`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::sync::Arc;

use cloudact_core::warehouse::{
    bigquery::{BigQueryConfig, BigQueryWarehouse},
    conformance, Warehouse,
};
use cloudact_e2e::BigQueryEmulator;

async fn warehouse(emu: &BigQueryEmulator) -> Arc<dyn Warehouse> {
    let config = BigQueryConfig {
        project: emu.project.clone(),
        location: "US".into(),
        base_url: Some(emu.base_url.clone()),
    };
    Arc::new(BigQueryWarehouse::connect(config).await.unwrap())
}

#[tokio::test]
async fn conformance_suite_on_the_bigquery_emulator() {
    let emu = BigQueryEmulator::start();
    let wh = warehouse(&emu).await;
    conformance::run_all(wh, "bq").await;
}

/// A large day load, twice: a rerun replaces rather than duplicates. Prints requests and wall
/// time (never asserted). `LOAD_ROWS` sets the size (default 2 500; the benchmark in
/// `bench/README.md` uses 10 000).
#[tokio::test]
async fn large_day_load_and_rerun() {
    use chrono::NaiveDate;
    use cloudact_core::warehouse::{conformance::sample_table, Params, PartitionKey, Row};
    let emu = BigQueryEmulator::start();
    let config = BigQueryConfig {
        project: emu.project.clone(),
        location: "US".into(),
        base_url: Some(emu.base_url.clone()),
    };
    let wh = BigQueryWarehouse::connect(config).await.unwrap();
    wh.create_dataset("load_test", "US").await.unwrap();
    wh.create_table("load_test", &sample_table("usage")).await.unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let n_rows: i64 = std::env::var("LOAD_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_500);
    let rows: Vec<Row> = (0..n_rows)
        .map(|i| {
            Row::new()
                .with("org_slug", "acme")
                .with("usage_date", day)
                .with("model", format!("m{}", i % 7))
                .with("tokens", i)
        })
        .collect();
    let key = PartitionKey {
        org_column: "org_slug".into(),
        org_slug: "acme".into(),
        date_column: "usage_date".into(),
        date: day,
    };
    for run in 1..=2 {
        let before = wh.requests_sent();
        let started = std::time::Instant::now();
        let outcome = wh.replace_partition("load_test", "usage", &key, &rows).await.unwrap();
        println!(
            "load {run}: {} rows in {:?}, {} BigQuery requests ({} rows per INSERT statement at most)",
            outcome.inserted,
            started.elapsed(),
            wh.requests_sent() - before,
            9_000 / 4
        );
        assert_eq!(outcome.inserted, n_rows as u64);
        assert_eq!(outcome.deleted, if run == 1 { 0 } else { n_rows as u64 });
    }
    let n = wh
        .query(
            "load_test",
            "SELECT COUNT(*) AS n, SUM(tokens) AS s FROM {{usage}}",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(n[0].int("n"), Some(n_rows), "a rerun replaced the day");
    assert_eq!(n[0].int("s"), Some((0..n_rows).sum()));
}

/// An org-key authentication costs one BigQuery query on a cache miss and none on a hit.
#[tokio::test]
async fn auth_cache_hit_costs_no_bigquery_request() {
    use chrono::Utc;
    use cloudact_core::{
        auth::hash_key,
        config::TableList,
        meta::{NewApiKey, NewOrg, OrgStore, Plan, SubscriptionStatus, CENTRAL_DATASET},
    };
    let emu = BigQueryEmulator::start();
    let config = BigQueryConfig {
        project: emu.project.clone(),
        location: "US".into(),
        base_url: Some(emu.base_url.clone()),
    };
    let wh = Arc::new(BigQueryWarehouse::connect(config).await.unwrap());
    let tables = TableList::load(&cloudact_e2e::configs_dir(), "setup/bootstrap/tables.yml").unwrap();
    wh.create_dataset(CENTRAL_DATASET, "US").await.unwrap();
    for t in &tables.tables {
        wh.create_table(CENTRAL_DATASET, &t.def).await.unwrap();
    }
    let store = OrgStore::new(wh.clone());
    let key = "acme_api_AAAAAAAAAAAAAAAAAAAAAA";
    let org = NewOrg {
        org_slug: "acme".into(),
        company_name: "Acme".into(),
        admin_email: "a@acme.example".into(),
        org_dataset_id: "acme_local".into(),
        plan: Plan::Starter,
        status: SubscriptionStatus::Trial,
        trial_end_date: None,
        key: NewApiKey {
            org_api_key_id: "k1".into(),
            hash: hash_key(key),
            ciphertext: vec![1, 2, 3],
            fingerprint: "AAAA".into(),
        },
        idempotency: None,
    };
    store.create_org(&org, Utc::now()).await.unwrap();
    store.activate_org("acme", Utc::now()).await.unwrap();
    let mut env = std::collections::HashMap::new();
    env.insert("AUTH_CACHE_TTL_SECONDS".to_string(), "30".to_string());
    let settings = cloudact_core::settings::Settings::from_map(&env, 8001).unwrap();
    let auth = cloudact_web::auth::AuthService::new(&settings, store);
    let before = wh.requests_sent();
    let owner = auth.resolve_key(key).await.unwrap().unwrap();
    assert_eq!(owner.org_slug, "acme");
    assert_eq!(owner.subscription_status.as_deref(), Some("TRIAL"));
    let miss = wh.requests_sent() - before;
    let before = wh.requests_sent();
    for _ in 0..100 {
        auth.resolve_key(key).await.unwrap().unwrap();
    }
    let hits = wh.requests_sent() - before;
    println!("org-key authentication: {miss} BigQuery request(s) on a cache miss, {hits} for 100 cache hits");
    assert_eq!(miss, 1);
    assert_eq!(hits, 0);
}

/// Run admission, dedupe, quota refusal and finishing on BigQuery, as on the embedded backend.
#[tokio::test]
async fn run_admission_and_quotas_on_bigquery() {
    use chrono::Utc;
    use cloudact_core::{
        config::TableList,
        meta::{
            runs::{Admission, NewRun, QuotaLimit},
            NewApiKey, NewOrg, OrgStore, Plan, PlanLimits, SubscriptionStatus, CENTRAL_DATASET,
        },
    };
    let emu = BigQueryEmulator::start();
    let wh = warehouse(&emu).await;
    let tables = TableList::load(&cloudact_e2e::configs_dir(), "setup/bootstrap/tables.yml").unwrap();
    wh.create_dataset(CENTRAL_DATASET, "US").await.unwrap();
    for t in &tables.tables {
        wh.create_table(CENTRAL_DATASET, &t.def).await.unwrap();
    }
    let store = OrgStore::new(wh.clone());
    let org = NewOrg {
        org_slug: "acme".into(),
        company_name: "Acme".into(),
        admin_email: "a@acme.example".into(),
        org_dataset_id: "acme_local".into(),
        plan: Plan::Starter,
        status: SubscriptionStatus::Active,
        trial_end_date: None,
        key: NewApiKey {
            org_api_key_id: "k1".into(),
            hash: "h".into(),
            ciphertext: vec![1],
            fingerprint: "AAAA".into(),
        },
        idempotency: None,
    };
    store.create_org(&org, Utc::now()).await.unwrap();
    let limits = PlanLimits {
        daily_limit: 2,
        monthly_limit: 100,
        concurrent_limit: 5,
        seat_limit: 1,
        providers_limit: 1,
    };
    let run = |id: &str, day: &str| NewRun {
        pipeline_logging_id: id.into(),
        org_slug: "acme".into(),
        pipeline_id: "p".into(),
        trigger_type: "api".into(),
        trigger_by: None,
        user_id: None,
        org_api_key_id: None,
        start_date: day.parse().unwrap(),
        end_date: day.parse().unwrap(),
        parameters: serde_json::json!({}),
        retry_of: None,
        runner_id: "r1".into(),
    };
    let now = Utc::now();
    assert_eq!(
        store.admit_run(&run("a", "2026-01-01"), &limits, now).await.unwrap(),
        Admission::Admitted
    );
    assert_eq!(
        store.admit_run(&run("b", "2026-01-01"), &limits, now).await.unwrap(),
        Admission::Duplicate("a".into())
    );
    assert_eq!(
        store.admit_run(&run("c", "2026-01-02"), &limits, now).await.unwrap(),
        Admission::Admitted
    );
    assert!(matches!(
        store.admit_run(&run("d", "2026-01-03"), &limits, now).await.unwrap(),
        Admission::Refused {
            limit: QuotaLimit::Daily,
            allowed: 2,
            used: 2
        }
    ));
    assert!(store.mark_running("a", "r1", now).await.unwrap());
    assert!(store
        .finish_run("acme", "a", "COMPLETED", true, None, serde_json::json!({}), now)
        .await
        .unwrap());
    assert!(
        !store
            .finish_run("acme", "a", "FAILED", false, None, serde_json::json!({}), now)
            .await
            .unwrap(),
        "only once"
    );
    let q = store.quota_row("acme", now.date_naive()).await.unwrap().unwrap();
    assert_eq!(
        (
            q.int("pipelines_run_today"),
            q.int("concurrent_pipelines_running"),
            q.int("pipelines_succeeded_today")
        ),
        (Some(2), Some(1), Some(1))
    );
    let swept = store
        .sweep_stale_runs(now + chrono::Duration::seconds(120), now)
        .await
        .unwrap();
    assert_eq!(swept.len(), 1, "run c had no live runner");
    let q = store.quota_row("acme", now.date_naive()).await.unwrap().unwrap();
    assert_eq!(q.int("concurrent_pipelines_running"), Some(0));
}

/// A GCP service account is validated the way Google does it: an RS256-signed JWT exchanged
/// at the account's `token_uri` (the sandbox's OAuth2 endpoint), then a `LIMIT 0` read of the
/// customer's billing-export table (on the BigQuery emulator).
#[tokio::test]
async fn gcp_service_accounts_are_validated_with_a_signed_jwt_and_a_limit_0_read() {
    use cloudact_core::{
        config::ProviderEntry,
        warehouse::{schema::parse_schema_json, TableDef},
    };
    use cloudact_pipeline::providers::validate::{validate_service_account, Validation};
    let emu = BigQueryEmulator::start();
    let wh = warehouse(&emu).await;
    wh.create_dataset("billing", "US").await.unwrap();
    let fields = parse_schema_json(r#"[{"name":"service","type":"STRING"},{"name":"cost","type":"FLOAT64"},{"name":"usage_start_time","type":"TIMESTAMP"}]"#).unwrap();
    let def = TableDef {
        name: "gcp_billing_export_v1_0123".into(),
        description: None,
        fields,
        partition_field: None,
        clustering: vec![],
        lookup_keys: vec![],
    };
    wh.create_table("billing", &def).await.unwrap();
    let (sa, token_url) = cloudact_e2e::sandbox_service_account().await;
    let bigquery = ProviderEntry {
        name: "GCP_SA".into(),
        aliases: vec!["gcp".into()],
        credential_type: "SERVICE_ACCOUNT_JSON".into(),
        key_prefixes: vec![],
        admin_key_prefix: None,
        base_url: emu.base_url.trim_end_matches("/bigquery/v2").to_string(),
        base_url_env: "GCP_BIGQUERY_BASE_URL".into(),
        validation_timeout_seconds: 10,
    };
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let ok = validate_service_account(
        &http,
        &bigquery,
        &token_url,
        &sa.to_string(),
        "test-proj.billing.gcp_billing_export_v1_0123",
    )
    .await;
    println!(
        "GCP service-account validation against the sandbox + emulator: {:?}",
        started.elapsed()
    );
    assert_eq!(ok, Validation::Valid);
    let missing = validate_service_account(
        &http,
        &bigquery,
        &token_url,
        &sa.to_string(),
        "test-proj.billing.no_such_table",
    )
    .await;
    assert!(
        matches!(&missing, Validation::Invalid(m) if m.contains("no_such_table")),
        "{missing:?}"
    );
    let mut stranger = sa.clone();
    stranger["client_email"] = serde_json::json!("someone-else@test-proj.iam.gserviceaccount.com");
    let refused = validate_service_account(
        &http,
        &bigquery,
        &token_url,
        &stranger.to_string(),
        "test-proj.billing.gcp_billing_export_v1_0123",
    )
    .await;
    assert!(
        matches!(&refused, Validation::Invalid(m) if m.contains("Invalid JWT Signature")),
        "{refused:?}"
    );
}

/// The bootstrap's migration on BigQuery: a central table made from an older schema file
/// gains the new columns (its rows kept); a retyped table makes the whole migration refuse.
#[tokio::test]
async fn migration_from_an_older_schema_on_bigquery() {
    use cloudact_core::{
        config::TableList,
        meta::CENTRAL_DATASET,
        warehouse::{schema::migrate_tables, FieldType, Params, Row},
    };
    let emu = BigQueryEmulator::start();
    let wh = warehouse(&emu).await;
    let tables = TableList::load(&cloudact_e2e::configs_dir(), "setup/bootstrap/tables.yml").unwrap();
    let defs: Vec<_> = tables.tables.iter().map(|t| &t.def).collect();
    wh.create_dataset(CENTRAL_DATASET, "US").await.unwrap();
    let audit = defs.iter().find(|d| d.name == "org_audit_logs").unwrap();
    let mut older = (*audit).clone();
    older
        .fields
        .retain(|f| f.name != "user_agent" && f.name != "error_message");
    wh.create_table(CENTRAL_DATASET, &older).await.unwrap();
    let row = Row::new()
        .with("audit_id", "a-old")
        .with("org_slug", "acme")
        .with("action", "CREATE")
        .with("resource_type", "ORG")
        .with("status", "SUCCESS")
        .with("created_at", chrono::Utc::now());
    wh.execute(
        CENTRAL_DATASET,
        "INSERT INTO {{org_audit_logs}} (audit_id, org_slug, action, resource_type, status, created_at) \
         VALUES ('a-old', 'acme', 'CREATE', 'ORG', 'SUCCESS', CURRENT_TIMESTAMP())",
        &Params::new(),
    )
    .await
    .unwrap();
    // A retyped table elsewhere: refused whole, the audit table untouched.
    let subs = defs.iter().find(|d| d.name == "org_subscriptions").unwrap();
    let mut retyped = (*subs).clone();
    let victim = retyped
        .fields
        .iter_mut()
        .find(|f| f.field_type == FieldType::String && f.name != "org_slug")
        .unwrap();
    victim.field_type = FieldType::Integer;
    wh.create_table(CENTRAL_DATASET, &retyped).await.unwrap();
    let err = migrate_tables(&*wh, CENTRAL_DATASET, &defs)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nothing was changed") && err.contains("org_subscriptions."),
        "{err}"
    );
    assert_eq!(
        wh.table_schema(CENTRAL_DATASET, "org_audit_logs").await.unwrap().len(),
        older.fields.len()
    );
    wh.drop_table(CENTRAL_DATASET, "org_subscriptions").await.unwrap();
    let report = migrate_tables(&*wh, CENTRAL_DATASET, &defs).await.unwrap();
    assert_eq!(
        report.columns_added.get("org_audit_logs"),
        Some(&vec!["user_agent".to_string(), "error_message".to_string()])
    );
    assert!(report.created.contains(&"org_subscriptions".to_string()));
    // New rows fill the new columns; the old row reads them as null.
    wh.insert_rows(
        CENTRAL_DATASET,
        "org_audit_logs",
        &[row.with("audit_id", "a-new").with("error_message", "boom")],
    )
    .await
    .unwrap();
    let rows = wh
        .query(
            CENTRAL_DATASET,
            "SELECT audit_id, error_message FROM {{org_audit_logs}} ORDER BY audit_id",
            &Params::new(),
        )
        .await
        .unwrap();
    let got: Vec<(Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.string("audit_id"), r.string("error_message")))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("a-new".into()), Some("boom".into())),
            (Some("a-old".into()), None)
        ]
    );
}
