//! Bootstrap: root key only, idempotent.

use crate::prelude::*;

#[tokio::test]
async fn bootstrap_needs_the_root_key_and_is_idempotent() {
    let app = spawn_api().await;
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

/// Tables made from an older schema file are brought up to the current one by re-running
/// bootstrap and onboarding (`columns_added`); an incompatible table (a type change) is refused
/// with 409 and nothing changes.
#[tokio::test]
async fn bootstrap_and_onboarding_migrate_tables_from_an_older_schema() {
    use cloudact_core::warehouse::{FieldType, Row, TableDef};
    let app = spawn_api().await;
    app.bootstrap().await;
    let wh = app.server.ctx.warehouse.clone();
    let central = cloudact_core::meta::CENTRAL_DATASET;
    let tables =
        cloudact_core::config::TableList::load(&cloudact_e2e::configs_dir(), "setup/bootstrap/tables.yml").unwrap();
    let current: TableDef = tables
        .tables
        .iter()
        .find(|t| t.def.name == "org_audit_logs")
        .unwrap()
        .def
        .clone();
    // The audit table as an older release made it: without user_agent and error_message.
    let mut older = current.clone();
    older
        .fields
        .retain(|f| f.name != "user_agent" && f.name != "error_message");
    wh.drop_table(central, "org_audit_logs").await.unwrap();
    wh.create_table(central, &older).await.unwrap();
    let old_row = Row::new()
        .with("audit_id", "a-old")
        .with("org_slug", "acme")
        .with("action", "CREATE")
        .with("resource_type", "ORG")
        .with("status", "SUCCESS")
        .with("created_at", chrono::Utc::now());
    wh.insert_rows(central, "org_audit_logs", &[old_row]).await.unwrap();
    // An incompatible change elsewhere: nothing is changed, the audit table included.
    let profiles = tables
        .tables
        .iter()
        .find(|t| t.def.name == "org_subscriptions")
        .unwrap()
        .def
        .clone();
    let mut retyped = profiles.clone();
    let victim = retyped
        .fields
        .iter_mut()
        .find(|f| f.field_type == FieldType::String && f.name != "org_slug")
        .unwrap();
    victim.field_type = FieldType::Integer;
    let victim = victim.name.clone();
    wh.drop_table(central, "org_subscriptions").await.unwrap();
    wh.create_table(central, &retyped).await.unwrap();
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_error_shape(s, &b, "SCHEMA_INCOMPATIBLE");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("org_subscriptions.{victim}")),
        "{b}"
    );
    assert_eq!(
        wh.table_schema(central, "org_audit_logs").await.unwrap().len(),
        older.fields.len(),
        "nothing changed"
    );
    // Fixed by hand: the re-run adds the two columns and keeps the old row.
    wh.drop_table(central, "org_subscriptions").await.unwrap();
    wh.create_table(central, &profiles).await.unwrap();
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["columns_added"],
        json!({"org_audit_logs": ["user_agent", "error_message"]}),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("2 columns added"), "{b}");
    assert_eq!(app.central_count("org_audit_logs", "acme").await, 1);
    let (_, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, None)
        .await;
    assert_eq!(b["columns_added"], json!({}), "up to date: {b}");

    // An org table from an older schema: re-sync (onboarding again) migrates it.
    app.onboard("migr").await;
    let org_tables = cloudact_core::config::TableList::load(
        &cloudact_e2e::configs_dir(),
        "setup/organizations/onboarding/tables.yml",
    )
    .unwrap();
    let pricing = org_tables
        .tables
        .iter()
        .find(|t| t.def.name == "llm_model_pricing")
        .unwrap()
        .def
        .clone();
    let mut old_pricing = pricing.clone();
    old_pricing
        .fields
        .retain(|f| !f.name.starts_with("free_tier_") && f.name != "discount_reason");
    wh.drop_table("migr_local", "llm_model_pricing").await.unwrap();
    wh.create_table("migr_local", &old_pricing).await.unwrap();
    let mut body = org_body("migr");
    body["regenerate_api_key_if_exists"] = json!(true);
    let (s, b) = app
        .call(Method::POST, "/api/v1/organizations/onboard", Auth::Root, Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let added: Vec<String> = serde_json::from_value(b["columns_added"]["llm_model_pricing"].clone()).unwrap();
    assert_eq!(
        added,
        [
            "free_tier_input_tokens",
            "free_tier_output_tokens",
            "free_tier_reset_frequency",
            "discount_reason"
        ],
        "{b}"
    );
}
