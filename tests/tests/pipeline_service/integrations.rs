//! Integrations: provider credentials validated live, stored encrypted, decrypted for their own
//! org only; lifecycle, revalidation, GCP service accounts.

use crate::prelude::*;

#[tokio::test]
async fn processors_get_the_decrypted_credential_of_their_own_org_only() {
    use cloudact_core::warehouse::Row;
    use cloudact_pipeline::{context::credential_aad, StepContext};
    let app = spawn().await;
    let ctx = app.server.ctx.clone();
    org(&ctx, "vault_a").await;
    org(&ctx, "vault_b").await;
    let secret = "sk-admin-test-0123456789";
    let ciphertext = ctx
        .kms
        .encrypt(secret.as_bytes(), credential_aad("vault_a", "openai").as_bytes())
        .await
        .unwrap();
    let row = |org: &str, ct: Vec<u8>| {
        Row::new()
            .with("credential_id", uuid::Uuid::new_v4().to_string())
            .with("org_slug", org)
            .with("provider", "OPENAI")
            .with("encrypted_credential", ct)
            .with("credential_type", "api_key")
            .with("validation_status", "VALID")
            .with("is_active", true)
            .with("created_at", Utc::now())
    };
    // vault_b's row holds a copy of vault_a's ciphertext: it must not decrypt there.
    ctx.warehouse
        .insert_rows(
            "organizations",
            "org_integration_credentials",
            &[row("vault_a", ciphertext.clone()), row("vault_b", ciphertext)],
        )
        .await
        .unwrap();
    let step = |org: &str| {
        StepContext::new(
            ctx.executor.services().clone(),
            Some(org.to_string()),
            "run".into(),
            "p".into(),
            "s".into(),
            Default::default(),
            Default::default(),
            CancellationToken::new(),
        )
    };
    let got = step("vault_a").credential("openai").await.unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&got), secret);
    assert!(
        step("vault_b").credential("openai").await.is_err(),
        "a copied ciphertext does not decrypt for another org"
    );
    assert!(
        step("vault_a").credential("anthropic").await.is_err(),
        "no such credential"
    );
}

#[tokio::test]
async fn api_keys_are_validated_live_against_the_provider() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "integ").await;
    let cases = [
        ("openai", "sk-proj-good-000000001", "VALID"),
        ("openai", "sk-admin-good-00000001", "VALID"),
        ("openai", "sk-admin-noscope-000001", "VALID"),
        ("openai", "sk-invalid-00000000001", "INVALID"),
        ("openai", "sk-fault429-0000000001", "PENDING"),
        ("openai", "sk-fault500-0000000001", "PENDING"),
        ("openai", "sk-slow-00000000000001", "PENDING"),
        ("openai", "sk-truncated-000000001", "PENDING"),
        ("anthropic", "sk-ant-api03-good-0001", "VALID"),
        ("claude", "sk-ant-admin01-good-001", "VALID"),
        ("anthropic", "sk-ant-invalid-00000001", "INVALID"),
        ("deepseek", "sk-deepseek-good-00001", "VALID"),
        ("deepseek", "sk-invalid-ds-0000001", "INVALID"),
    ];
    for (provider, credential, expected) in cases {
        let started = std::time::Instant::now();
        let (s, b) = app
            .setup(&key, "integ", provider, serde_json::json!({"credential": credential}))
            .await;
        println!("setup {provider} {credential}: {expected} in {:?}", started.elapsed());
        assert_eq!(s, StatusCode::OK, "{provider} {credential}: {b}");
        assert_eq!(b["validation_status"], expected, "{provider} {credential}: {b}");
        assert_eq!(
            b["credential_fingerprint"],
            serde_json::json!(&credential[credential.len() - 4..])
        );
        assert!(!b.to_string().contains(credential), "the credential is never returned");
        if expected == "INVALID" {
            assert!(
                b["validation_error"].as_str().unwrap().contains("Incorrect API key"),
                "the provider's reason: {b}"
            );
        }
    }
    let (s, b) = app
        .setup(
            &key,
            "integ",
            "openai",
            serde_json::json!({"credential": "pk-not-openai-123"}),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_CREDENTIAL_FORMAT"))
    );
    let (s, _) = app
        .setup(
            &key,
            "integ",
            "openai",
            serde_json::json!({"credential": "sk-proj-good-1", "extra": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app
        .setup(
            &key,
            "integ",
            "mistral",
            serde_json::json!({"credential": "sk-proj-good-1234"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // One active credential per provider: the last one stored.
    let (_, list) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/integ", None)
        .await;
    assert_eq!(list["integrations"]["OPENAI"]["status"], "PENDING", "{list}");
    assert_eq!(list["integrations"]["GCP_SA"]["status"], "NOT_CONFIGURED");
    let rows = ctx
        .warehouse
        .query(
            "organizations",
            "SELECT COUNT(*) AS n FROM {{org_integration_credentials}} WHERE org_slug = 'integ' AND is_active = @t",
            &cloudact_core::warehouse::Params::new().with("t", true),
        )
        .await
        .unwrap();
    assert_eq!(rows[0].int("n"), Some(3));
}

#[tokio::test]
async fn integration_lifecycle_revalidation_and_isolation() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "life").await;
    let other = org(&ctx, "life_other").await;
    let secret = "sk-proj-good-lifecycle-7";
    let (_, b) = app
        .setup(
            &key,
            "life",
            "openai",
            serde_json::json!({"credential": secret, "skip_validation": true, "credential_name": "Prod key"}),
        )
        .await;
    assert_eq!(b["validation_status"], "PENDING");
    let (_, b) = app
        .send(
            reqwest::Method::POST,
            &key,
            "/api/v1/integrations/life/openai/validate",
            None,
        )
        .await;
    assert_eq!(
        b["validation_status"], "VALID",
        "re-validation works whatever the stored status: {b}"
    );
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!(
        (one["status"].as_str(), one["credential_name"].as_str()),
        (Some("VALID"), Some("Prod key"))
    );
    let (s, b) = app
        .send(
            reqwest::Method::PUT,
            &key,
            "/api/v1/integrations/life/openai",
            Some(serde_json::json!({"credential_name": "Renamed"})),
        )
        .await;
    assert_eq!(
        (s, b["credential_name"].as_str()),
        (StatusCode::OK, Some("Renamed")),
        "{b}"
    );
    // Processors get the decrypted credential of this org only.
    let step = cloudact_pipeline::StepContext::new(
        ctx.executor.services().clone(),
        Some("life".into()),
        "r".into(),
        "p".into(),
        "s".into(),
        Default::default(),
        Default::default(),
        CancellationToken::new(),
    );
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&step.credential("openai").await.unwrap()),
        secret
    );
    // Another org's key on every integration route: 403.
    let routes = [
        (reqwest::Method::GET, "/api/v1/integrations/life", None),
        (reqwest::Method::GET, "/api/v1/integrations/life/openai", None),
        (
            reqwest::Method::POST,
            "/api/v1/integrations/life/openai/setup",
            Some(serde_json::json!({"credential": "sk-proj-good-123456"})),
        ),
        (reqwest::Method::POST, "/api/v1/integrations/life/openai/validate", None),
        (
            reqwest::Method::PUT,
            "/api/v1/integrations/life/openai",
            Some(serde_json::json!({"credential_name": "hijack"})),
        ),
        (reqwest::Method::DELETE, "/api/v1/integrations/life/openai", None),
    ];
    for (method, path, body) in routes {
        let (s, b) = app.send(method.clone(), &other, path, body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("ORG_MISMATCH")),
            "{method} {path}"
        );
    }
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!(one["credential_name"], "Renamed", "refused requests changed nothing");
    let (s, b) = app
        .send(reqwest::Method::DELETE, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!((s, b["removed"].as_bool()), (StatusCode::OK, Some(true)));
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/life/openai", None)
        .await;
    assert_eq!(one["status"], "NOT_CONFIGURED");
    let (_, b) = app
        .send(
            reqwest::Method::POST,
            &key,
            "/api/v1/integrations/life/openai/validate",
            None,
        )
        .await;
    assert_eq!(b["validation_status"], "NOT_CONFIGURED");
    // No credential in any data file.
    let mut stack = vec![app.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the credential",
                    p.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn gcp_service_accounts_are_checked_before_anything_is_stored() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = org(&ctx, "gcp_org").await;
    let sa = |extra: Value| {
        let mut v = serde_json::json!({"type": "service_account", "project_id": "cust-proj", "private_key_id": "abcd1234",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "client_email": "reader@cust-proj.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token"});
        for (k, val) in extra.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v.to_string()
    };
    let table = serde_json::json!({"billing_export_table": "cust-proj.billing.gcp_billing_export_v1_0123"});
    for (credential, metadata, needle) in [
        ("{not json at all".to_string(), table.clone(), "not valid JSON"),
        (
            sa(serde_json::json!({"type": "user"})),
            table.clone(),
            "service_account",
        ),
        (
            sa(serde_json::json!({"private_key": null, "client_email": null})),
            table.clone(),
            "private_key, client_email",
        ),
        // Without a table, setup discovers it (tests/gcp_billing.rs); a non-text one is refused.
        (
            sa(serde_json::json!({})),
            serde_json::json!({"billing_export_table": 42}),
            "project.dataset.table",
        ),
        (
            sa(serde_json::json!({})),
            serde_json::json!({"billing_export_table": "x; DROP TABLE y"}),
            "project.dataset.table",
        ),
    ] {
        let (s, b) = app
            .setup(
                &key,
                "gcp_org",
                "gcp",
                serde_json::json!({"credential": credential, "metadata": metadata}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b["detail"].as_str().unwrap().contains(needle), "{needle}: {b}");
    }
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/gcp_org/gcp_sa", None)
        .await;
    assert_eq!(one["status"], "NOT_CONFIGURED", "nothing stored by refused setups");
    let (s, b) = app
        .setup(
            &key,
            "gcp_org",
            "gcp_sa",
            serde_json::json!({"credential": sa(serde_json::json!({})), "metadata": table}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["provider"], "GCP_SA");
    assert_eq!(b["credential_fingerprint"], "1234");
    let (_, one) = app
        .send(reqwest::Method::GET, &key, "/api/v1/integrations/gcp_org/gcp", None)
        .await;
    assert_eq!(one["metadata"]["project_id"], "cust-proj");
    assert!(!one.to_string().contains("BEGIN PRIVATE KEY"));
}
