//! Email and Slack notifications against real local peers: an `aiosmtpd` SMTP server and an
//! HTTP webhook receiver. A notification failure never changes a run's status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use cloudact_core::settings::Settings;
use cloudact_e2e::SmtpServer;
use cloudact_pipeline::{CancellationToken, PipelineSpec, RunRequest, RunStatus, StepStatus};
use cloudact_web::AppContext;
use serde_json::Value;

/// A Slack-like incoming webhook: records every body; answers 500 to the first post when
/// `flaky`, and 404 (`no_service`) to every post when `gone`.
async fn webhook(flaky: bool, gone: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/services/T000/B000/XXXX",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (store, calls) = (store.clone(), calls.clone());
            async move {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if gone {
                    return (axum::http::StatusCode::NOT_FOUND, "no_service");
                }
                if flaky && n == 0 {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops");
                }
                store.lock().unwrap().push(body);
                (axum::http::StatusCode::OK, "ok")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/services/T000/B000/XXXX"), seen)
}

async fn context(smtp_port: u16, webhook_url: &str) -> (Arc<AppContext>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("DATA_DIR".into(), dir.path().display().to_string());
    env.insert("CONFIGS_DIR".into(), cloudact_e2e::configs_dir().display().to_string());
    env.insert("SMTP_HOST".into(), "127.0.0.1".into());
    env.insert("SMTP_PORT".into(), smtp_port.to_string());
    env.insert("SMTP_TLS".into(), "none".into());
    env.insert("SMTP_FROM".into(), "CloudAct <alerts@cloudact.example>".into());
    env.insert("SLACK_WEBHOOK_URL".into(), webhook_url.into());
    let ctx = AppContext::build("pipeline-service", Settings::from_map(&env, 8001).unwrap())
        .await
        .unwrap();
    (ctx, dir)
}

const SPEC: &str = "pipeline_id: notified
steps:
  - step_id: work
    ps_type: example.noop
    config: {}
notifications:
  on_failure:
    - ps_type: notify_systems.slack_notification
      config: {title: 'Pipeline {pipeline_id}: {run_status}', message: 'It broke.', mentions: [U024BE7LH]}
    - ps_type: notify_systems.email_notification
      config: {to: 'ops@acme.example, oncall@acme.example', subject: '[CloudAct] {pipeline_id} {run_status}', message: 'Error: {run_error}'}
  on_success:
    - ps_type: notify_systems.email_notification
      config: {to: [ops@acme.example], subject: '[CloudAct] {pipeline_id} {run_status}', message: 'All good.'}
  always:
    - ps_type: notify_systems.slack_notification
      config: {title: 'Run finished: {run_status}'}
";

async fn run(ctx: &AppContext, fail: bool) -> cloudact_pipeline::RunReport {
    let yaml = if fail {
        // A step that fails: data-quality checks need an org, and this run has none.
        SPEC.replace(
            "ps_type: example.noop\n    config: {}",
            "ps_type: data_quality.expectations\n    config: {dataset: x, table: t, expectations: [{type: row_count, min: 1}]}",
        )
    } else {
        SPEC.to_string()
    };
    let spec = PipelineSpec::from_yaml(&yaml).unwrap();
    ctx.executor
        .run(&spec, RunRequest::default(), CancellationToken::new())
        .await
}

#[tokio::test]
async fn notifications_are_delivered_by_outcome_over_smtp_and_the_webhook() {
    let smtp = SmtpServer::start();
    let (url, slack) = webhook(true, false).await;
    let (ctx, _dir) = context(smtp.port, &url).await;

    let ok = run(&ctx, false).await;
    assert_eq!(ok.status, RunStatus::Completed, "{ok:?}");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "on_success: one email");
    assert!(
        mails[0].contains("Subject: [CloudAct] notified COMPLETED"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("To: ops@acme.example"));
    assert!(mails[0].contains("All good.") && mails[0].contains("Pipeline: notified"));
    {
        let posts = slack.lock().unwrap();
        assert_eq!(posts.len(), 1, "always: one Slack post (after one retried 500)");
        assert_eq!(posts[0]["blocks"][0]["text"]["text"], "Run finished: COMPLETED");
    }

    let failed = run(&ctx, true).await;
    assert_eq!(failed.status, RunStatus::Failed);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2);
    let failure_mail = mails.iter().find(|m| m.contains("notified FAILED")).unwrap();
    assert!(failure_mail.contains("oncall@acme.example"));
    let posts = slack.lock().unwrap();
    assert_eq!(posts.len(), 3, "on_failure + always");
    let alert = posts
        .iter()
        .find(|p| p["blocks"][0]["text"]["text"] == "Pipeline notified: FAILED")
        .unwrap();
    let text = alert["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(
        text.contains("It broke.") && text.contains("<@U024BE7LH>") && text.contains("*Error:*"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_notification_never_changes_the_runs_status() {
    let (url, _) = webhook(false, true).await;
    // No SMTP server on this port: email delivery fails too.
    let (ctx, _dir) = context(cloudact_e2e::free_port(), &url).await;
    let ok = run(&ctx, false).await;
    assert_eq!(ok.status, RunStatus::Completed, "{ok:?}");
    let notes: Vec<_> = ok.steps.iter().filter(|s| s.step_id.starts_with("notify_")).collect();
    assert_eq!(notes.len(), 2);
    assert!(notes.iter().all(|s| s.status == StepStatus::Failed), "{notes:?}");
    assert!(notes
        .iter()
        .any(|s| s.error.as_deref().unwrap_or("").contains("Slack returned 404")));
}
