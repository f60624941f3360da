//! Generic processors: the REST extractor (paging, auth, retries, merged progress), SQL
//! transforms and data-quality checks inside the org's dataset.

use crate::prelude::*;

/// A small REST API with every paging style and auth scheme the extractor speaks: 25 records
/// `{id, name}` per listing. `/cursor` (bearer, 429 on its first call), `/offset` (header
/// `X-Token`), `/page` (query `api_key`), `/link` (basic auth, `Link` header), `/broken`
/// (bearer; page 3 answers 500 until fixed).
async fn rest_api() -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use axum::{
        extract::{Query, State},
        http::HeaderMap,
        response::IntoResponse,
        routing::get,
    };
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    #[derive(Clone)]
    struct S {
        calls: Arc<AtomicU32>,
        broken: Arc<AtomicBool>,
    }
    type Q = Query<HashMap<String, String>>;
    let items = |from: usize, n: usize| -> Vec<Value> {
        (from..(from + n).min(25))
            .map(|i| serde_json::json!({"id": i, "name": format!("item-{i}")}))
            .collect()
    };
    let deny = || (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    let broken = Arc::new(AtomicBool::new(true));
    let bearer_ok =
        |h: &HeaderMap| h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer sk-generic-0001");
    let app = axum::Router::new()
        .route(
            "/cursor",
            get(move |State(s): State<S>, h: HeaderMap, Query(q): Q| async move {
                if !bearer_ok(&h) {
                    return deny();
                }
                if s.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
                }
                let from: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let data = items(from, 10);
                let next = (from + 10 < 25).then(|| (from + 10).to_string());
                axum::Json(serde_json::json!({"data": data, "meta": {"next_cursor": next}})).into_response()
            }),
        )
        .route(
            "/offset",
            get(move |h: HeaderMap, Query(q): Q| async move {
                if h.get("x-token").and_then(|v| v.to_str().ok()) != Some("sk-generic-0001") {
                    return deny();
                }
                let offset: usize = q["offset"].parse().unwrap();
                let limit: usize = q["limit"].parse().unwrap();
                axum::Json(serde_json::json!({"results": {"rows": items(offset, limit)}})).into_response()
            }),
        )
        .route(
            "/page",
            get(move |Query(q): Q| async move {
                if q.get("api_key").map(String::as_str) != Some("sk-generic-0001") {
                    return deny();
                }
                let page: usize = q["page"].parse().unwrap();
                let per: usize = q["per_page"].parse().unwrap();
                axum::Json(serde_json::json!(items((page - 1) * per, per))).into_response()
            }),
        )
        .route(
            "/link",
            get(move |h: HeaderMap, Query(q): Q| async move {
                // "sk-user" : "generic-0001" in basic auth.
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Basic c2stdXNlcjpnZW5lcmljLTAwMDE=") {
                    return deny();
                }
                let from: usize = q.get("from").and_then(|a| a.parse().ok()).unwrap_or(0);
                let mut resp = axum::Json(serde_json::json!({"data": items(from, 7)})).into_response();
                if from + 7 < 25 {
                    let link = format!("</link?from={}>; rel=\"next\", </link?from=0>; rel=\"first\"", from + 7);
                    resp.headers_mut().insert("link", link.parse().unwrap());
                }
                resp
            }),
        )
        .route(
            "/broken",
            get(move |State(s): State<S>, h: HeaderMap, Query(q): Q| async move {
                if !bearer_ok(&h) {
                    return deny();
                }
                let page: usize = q["page"].parse().unwrap();
                if page == 3 && s.broken.load(Ordering::SeqCst) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
                }
                axum::Json(serde_json::json!({"data": items((page - 1) * 5, 5)})).into_response()
            }),
        )
        .with_state(S {
            calls: Arc::new(AtomicU32::new(0)),
            broken: broken.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), broken)
}

#[tokio::test]
async fn the_generic_extractor_pages_authenticates_retries_and_keeps_progress() {
    let (api, _broken) = rest_api().await;
    // The stored OpenAI credential is only sent to OpenAI's base URL: here, the test API.
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &api)],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "gen").await;
    let (s, b) = app
        .setup(
            &key,
            "gen",
            "openai",
            serde_json::json!({"credential": "sk-generic-0001", "skip_validation": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let step = |name: &str, config: &str| {
        format!(
            "pipeline_id: gen_{name}\nsteps:\n  - step_id: extract\n    ps_type: generic.api_extractor\n    config:\n      \
             dataset: \"{{dataset}}\"\n      date: \"{{date}}\"\n      url: \"{api}/{name}\"\n      {config}\n"
        )
    };
    let records = |table: &'static str| {
        let wh = ctx.warehouse.clone();
        async move {
            let rows = wh
                .query(
                    "gen_local",
                    &format!("SELECT record FROM {{{{{table}}}}} ORDER BY extracted_at"),
                    &Default::default(),
                )
                .await
                .unwrap();
            let mut ids: Vec<i64> = rows
                .iter()
                .map(|r| r.json("record").unwrap()["id"].as_i64().unwrap())
                .collect();
            ids.sort();
            ids
        }
    };
    let all: Vec<i64> = (0..25).collect();
    let cases = [
        ("cursor", "pagination: {type: cursor, param: after, response_path: meta.next_cursor}\n      auth: {type: bearer, provider: openai}\n      rate_limit: {requests_per_second: 50}\n      destination: {table: ext_cursor}", "ext_cursor", 3),
        ("offset", "data_path: results.rows\n      pagination: {type: offset, param: offset, limit: 10, limit_param: limit}\n      auth: {type: header, provider: openai, header_name: X-Token}\n      destination: {table: ext_offset}", "ext_offset", 3),
        ("page", "data_path: \"\"\n      pagination: {type: page, param: page, limit: 10, limit_param: per_page}\n      auth: {type: query, provider: openai, param_name: api_key}\n      destination: {table: ext_page}", "ext_page", 3),
    ];
    for (name, config, table, pages) in cases {
        for _ in 0..2 {
            let report = run_inline(&ctx, "gen", &step(name, config)).await;
            assert_eq!(report.status, RunStatus::Completed, "{name}: {report:?}");
            assert_eq!(
                report.steps[0].output["pages"], pages,
                "{name}: {:?}",
                report.steps[0].output
            );
            assert_eq!(
                records(table).await,
                all,
                "{name}: every record once, also after a rerun"
            );
        }
    }
    // Basic auth: the credential is "user:password".
    let report = run_inline(
        &ctx,
        "gen",
        &step("link", "pagination: {type: link}\n      auth: {type: basic, provider: openai}\n      destination: {table: ext_link}"),
    )
    .await;
    assert_eq!(
        report.status,
        RunStatus::Failed,
        "sk-generic-0001 has no ':' → user only; the API refuses"
    );
    let (s, _) = app
        .setup(
            &key,
            "gen",
            "openai",
            serde_json::json!({"credential": "sk-user:generic-0001", "skip_validation": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let report = run_inline(
        &ctx,
        "gen",
        &step("link", "pagination: {type: link}\n      auth: {type: basic, provider: openai}\n      destination: {table: ext_link}"),
    )
    .await;
    assert_eq!(report.status, RunStatus::Completed, "{report:?}");
    assert_eq!(report.steps[0].output["pages"], 4);
    assert_eq!(records("ext_link").await, all);
    // The credential never goes to another origin than its provider's.
    let elsewhere = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let page_yaml = |auth: &str| {
        step(
            "page",
            &format!("data_path: \"\"\n      pagination: {{type: page, param: page, limit: 10, limit_param: per_page}}\n      {auth}destination: {{table: ext_dead}}"),
        )
        .replace(&api, &elsewhere)
    };
    let report = run_inline(
        &ctx,
        "gen",
        &page_yaml("auth: {type: query, provider: openai, param_name: api_key}\n      "),
    )
    .await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("only sent to") && !error.contains("generic-0001"),
        "{error}"
    );
    // Without credentials, any API: an unreachable one fails saying so.
    let report = run_inline(&ctx, "gen", &page_yaml("")).await;
    assert!(
        report.error.clone().unwrap_or_default().contains("unreachable"),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_failed_extraction_keeps_merged_progress_and_a_rerun_completes_without_duplicates() {
    let (api, broken) = rest_api().await;
    let app = spawn_with_clock(
        Arc::new(cloudact_core::clock::SystemClock),
        &[("OPENAI_BASE_URL", &api)],
    )
    .await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "mrg").await;
    let (s, _) = app
        .setup(
            &key,
            "mrg",
            "openai",
            serde_json::json!({"credential": "sk-generic-0001", "skip_validation": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let yaml = |table: &str, mode: &str| {
        format!(
            "pipeline_id: broken\nsteps:\n  - step_id: extract\n    ps_type: generic.api_extractor\n    config:\n      \
             dataset: \"{{dataset}}\"\n      date: \"{{date}}\"\n      url: \"{api}/broken\"\n      \
             pagination: {{type: page, param: page, limit: 5}}\n      auth: {{type: bearer, provider: openai}}\n      \
             destination: {{table: {table}, write_mode: {mode}, key_fields: [id]}}\n"
        )
    };
    let count = |table: &'static str| {
        let wh = ctx.warehouse.clone();
        async move {
            let r = wh
                .query(
                    "mrg_local",
                    &format!("SELECT COUNT(*) AS n FROM {{{{{table}}}}}"),
                    &Default::default(),
                )
                .await
                .unwrap();
            r[0].int("n").unwrap()
        }
    };
    let merge = run_inline(&ctx, "mrg", &yaml("ext_merge", "merge")).await;
    assert_eq!(merge.status, RunStatus::Failed);
    let error = merge.error.clone().unwrap_or_default();
    assert!(
        error.contains("page 3") && error.contains("10 records from 2 pages") && error.contains("10 are kept"),
        "{error}"
    );
    assert_eq!(count("ext_merge").await, 10, "merged progress is kept");
    let day = run_inline(&ctx, "mrg", &yaml("ext_day", "replace_day")).await;
    assert_eq!(day.status, RunStatus::Failed);
    assert!(day
        .error
        .clone()
        .unwrap_or_default()
        .contains("the day keeps its previous rows"));
    assert_eq!(count("ext_day").await, 0, "a failed replace_day load changes nothing");
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    for table in ["ext_merge", "ext_day"] {
        let mode = if table == "ext_merge" { "merge" } else { "replace_day" };
        for _ in 0..2 {
            let report = run_inline(&ctx, "mrg", &yaml(table, mode)).await;
            assert_eq!(report.status, RunStatus::Completed, "{report:?}");
            assert_eq!(count(table).await, 25, "{table}: every record once");
        }
    }
}

#[tokio::test]
async fn a_sql_transform_and_data_quality_checks_run_inside_the_org_dataset() {
    let app = spawn_with_sandbox().await;
    let ctx = app.server.ctx.clone();
    let key = onboarded(&ctx, "dqorg").await;
    let (_, b) = app
        .setup(
            &key,
            "dqorg",
            "openai",
            serde_json::json!({"credential": "sk-admin-dqorg-000001"}),
        )
        .await;
    assert_eq!(b["validation_status"], "VALID");
    for url in [
        "/api/v1/pipelines/run/dqorg/openai/cost/usage_cost",
        "/api/v1/pipelines/run/dqorg/openai/cost/daily_summary",
    ] {
        for _ in 0..2 {
            let (s, b, _) = app.post_run(&key, url, serde_json::json!({"date": "2026-01-10"})).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
            let run = app.finished(&key, b["pipeline_logging_id"].as_str().unwrap()).await;
            assert_eq!(run["status"], "COMPLETED", "{run}");
        }
    }
    // The summary equals the cost rows summed here, and a rerun replaced (not appended) the day.
    let summary = ctx
        .warehouse
        .query(
            "dqorg_local",
            "SELECT COUNT(*) AS n, SUM(total_cost) AS total, SUM(requests) AS r FROM {{openai_model_daily_summary}}",
            &Default::default(),
        )
        .await
        .unwrap();
    let costs = ctx
        .warehouse
        .query("dqorg_local", "SELECT total_cost, num_model_requests, COALESCE(priced_model_id, model) AS m, usage_type FROM {{openai_cost_daily}}", &Default::default())
        .await
        .unwrap();
    let mut groups = std::collections::BTreeSet::new();
    let mut total = rust_decimal::Decimal::ZERO;
    let mut requests = 0;
    for r in &costs {
        groups.insert((r.string("usage_type"), r.string("m")));
        total += r.numeric("total_cost").unwrap();
        requests += r.int("num_model_requests").unwrap();
    }
    assert_eq!(summary[0].int("n"), Some(groups.len() as i64));
    assert_eq!(summary[0].int("r"), Some(requests));
    let got = summary[0]
        .numeric("total")
        .or_else(|| {
            summary[0]
                .float("total")
                .map(|f| rust_decimal::Decimal::try_from(f).unwrap())
        })
        .unwrap();
    assert!(
        (got - total).abs() < rust_decimal::Decimal::new(1, 6),
        "{got} vs {total}"
    );
    // Two DQ results, both PASS, with every expectation passed.
    let dq = ctx
        .warehouse
        .query(
            cloudact_core::meta::CENTRAL_DATASET,
            "SELECT overall_status, expectations_passed, expectations_failed FROM {{org_meta_dq_results}} WHERE org_slug = 'dqorg'",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(dq.len(), 2);
    assert!(dq
        .iter()
        .all(|r| r.string("overall_status").as_deref() == Some("PASS") && r.int("expectations_passed") == Some(5)));

    // A warn failure is recorded and the step passes; a fail failure fails the step.
    let suite = |severity: &str| {
        format!(
            "pipeline_id: dq_check\nsteps:\n  - step_id: check\n    ps_type: data_quality.expectations\n    config:\n      \
             dataset: \"{{dataset}}\"\n      table: openai_cost_daily\n      suite: strict\n      expectations:\n        \
             - {{type: row_count, max: 3, severity: {severity}}}\n        - {{type: not_null, column: model}}\n"
        )
    };
    let warn = run_inline(&ctx, "dqorg", &suite("warn")).await;
    assert_eq!(warn.status, RunStatus::Completed, "{warn:?}");
    assert_eq!(warn.steps[0].output["status"], "WARNING");
    let fail = run_inline(&ctx, "dqorg", &suite("fail")).await;
    assert_eq!(fail.status, RunStatus::Failed);
    assert!(
        fail.error
            .clone()
            .unwrap()
            .contains("row_count (observed {\"rows\":14})"),
        "{:?}",
        fail.error
    );
    let last = ctx
        .warehouse
        .query(
            cloudact_core::meta::CENTRAL_DATASET,
            "SELECT overall_status, failed_expectations FROM {{org_meta_dq_results}} WHERE org_slug = 'dqorg' AND dq_config_id = 'strict' ORDER BY executed_at",
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last[1].string("overall_status").as_deref(), Some("FAIL"));
    assert_eq!(last[1].json("failed_expectations").unwrap()[0]["observed"]["rows"], 14);
    // Checks read only the org's own dataset: the central one (keys, credentials) is refused.
    let central = suite("warn").replace("dataset: \"{dataset}\"", "dataset: organizations");
    assert!(central.contains("dataset: organizations"), "{central}");
    let refused = run_inline(&ctx, "dqorg", &central).await;
    assert_eq!(refused.status, RunStatus::Failed, "{refused:?}");
    assert!(
        refused.error.clone().unwrap().contains("org's dataset only"),
        "{:?}",
        refused.error
    );

    // Append adds on every run; truncate replaces the whole table.
    let transform = |mode: &str| {
        format!(
            "pipeline_id: modes\nsteps:\n  - step_id: t\n    ps_type: generic.local_bq_transformer\n    config:\n      \
             dataset: \"{{dataset}}\"\n      sql: SELECT org_slug, usage_date, usage_type, model, total_cost FROM {{{{openai_cost_daily}}}} WHERE total_cost > @min\n      \
             params: {{min: 0}}\n      destination: {{table: cost_copy, schema: openai/schemas/openai_model_daily_summary.json, \
             columns: [org_slug, usage_date, usage_type, model, total_cost], write_mode: {mode}}}\n"
        )
    };
    let copies = |n: i64| {
        let wh = ctx.warehouse.clone();
        async move {
            let r = wh
                .query(
                    "dqorg_local",
                    "SELECT COUNT(*) AS n FROM {{cost_copy}}",
                    &Default::default(),
                )
                .await
                .unwrap();
            assert_eq!(r[0].int("n"), Some(n));
        }
    };
    for (mode, expected) in [("append", 14), ("append", 28), ("truncate", 14), ("truncate", 14)] {
        let report = run_inline(&ctx, "dqorg", &transform(mode)).await;
        assert_eq!(report.status, RunStatus::Completed, "{report:?}");
        copies(expected).await;
    }

    // A transform may only read the org's own tables: a qualified name, or a catalogue
    // table behind an alias (`AS` used to count as a CTE name), fails before any SQL runs.
    for sql in [
        "SELECT * FROM organizations.org_api_keys",
        "SELECT * FROM {{cost_copy}} JOIN organizations.org_api_keys AS k ON TRUE",
        "SELECT * FROM {{cost_copy}} JOIN sqlite_master AS sqlite_master ON TRUE",
        "SELECT (SELECT sql FROM sqlite_master) AS m FROM {{cost_copy}}",
    ] {
        let spec = cloudact_pipeline::PipelineSpec::from_yaml(&format!(
            "pipeline_id: sneaky\nsteps:\n  - step_id: t\n    ps_type: generic.local_bq_transformer\n    config:\n      dataset: x\n      \
             sql: \"{sql}\"\n      destination: {{table: t, columns: [a], write_mode: append}}\n"
        ))
        .unwrap();
        let report = ctx
            .executor
            .run(
                &spec,
                RunRequest {
                    org_slug: Some("dqorg".into()),
                    ..Default::default()
                },
                CancellationToken::new(),
            )
            .await;
        assert_eq!(report.status, RunStatus::Failed, "{sql}");
        let error = report.error.clone().unwrap();
        assert!(
            error.contains("the org's own dataset") || error.contains("tables of the org's dataset only"),
            "{sql}: {error}"
        );
    }
}
