//! Logs as Cloud Logging reads them, from the real binary: every line one JSON object with
//! `severity`, `message` and `timestamp`; a request's lines carry its `request_id` at the top
//! level and the trace Cloud Logging links (`logging.googleapis.com/trace`,
//! `logging.googleapis.com/spanId`) from `X-Cloud-Trace-Context` or `traceparent`; and a
//! pipeline-service that is not bootstrapped yet says so once instead of warning every tick.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::HashMap, time::Duration};

use cloudact_e2e::Service;
use serde_json::Value;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn lines(svc: &Service) -> Vec<Value> {
    std::fs::read_to_string(&svc.log)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn json_logs_carry_severity_request_id_and_the_cloud_trace() {
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = [
        ("GCP_PROJECT_ID", "test-proj".to_string()),
        ("RUN_HEARTBEAT_SECONDS", "1".to_string()),
        ("LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .collect();
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    let c = reqwest::Client::new();
    let resp = c
        .get(pipe.url("/health"))
        .header("X-Request-ID", "log-req-cloud")
        .header("X-Cloud-Trace-Context", format!("{TRACE}/1234567;o=1"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let resp = c
        .get(pipe.url("/api/v1/no-such-route"))
        .header("X-Request-ID", "log-req-w3c")
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Several heartbeat/sweep ticks pass before bootstrap.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let all = lines(&pipe);
    assert!(!all.is_empty());
    for l in &all {
        assert!(
            matches!(l["severity"].as_str(), Some("DEBUG" | "INFO" | "WARNING" | "ERROR")),
            "{l}"
        );
        assert!(l["message"].is_string() && l["timestamp"].is_string(), "{l}");
    }
    let noisy: Vec<&Value> = all
        .iter()
        .filter(|l| matches!(l["severity"].as_str(), Some("WARNING" | "ERROR")))
        .collect();
    assert!(noisy.is_empty(), "warnings before bootstrap: {noisy:?}");
    let told = all
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not bootstrapped yet")
        })
        .count();
    assert_eq!(told, 1, "said once, not every tick");

    let by_request = |id: &str| -> Vec<&Value> { all.iter().filter(|l| l["request_id"] == id).collect() };
    let cloud = by_request("log-req-cloud");
    let finished = cloud
        .iter()
        .find(|l| l["message"] == "request finished")
        .unwrap_or_else(|| panic!("{cloud:?}"));
    assert_eq!(finished["severity"], "INFO");
    assert_eq!(
        finished["logging.googleapis.com/trace"],
        format!("projects/test-proj/traces/{TRACE}")
    );
    assert_eq!(
        finished["logging.googleapis.com/spanId"], "000000000012d687",
        "1234567 in hex"
    );
    assert_eq!(finished["path"], "/health");
    let w3c = by_request("log-req-w3c");
    let finished = w3c
        .iter()
        .find(|l| l["message"] == "request finished")
        .unwrap_or_else(|| panic!("{w3c:?}"));
    assert_eq!(
        finished["logging.googleapis.com/trace"],
        format!("projects/test-proj/traces/{TRACE}")
    );
    assert_eq!(finished["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    assert_eq!(finished["status"], 404);
    assert!(pipe.terminate().success());
}

/// With the Pub/Sub queue, the consumer too waits quietly for bootstrap: no warning every
/// few seconds from its relay and settle loops.
#[tokio::test]
async fn the_pubsub_consumer_waits_quietly_for_bootstrap() {
    let emu = cloudact_e2e::PubSubEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = [
        ("GCP_PROJECT_ID", emu.project.clone()),
        ("SCHEDULER_QUEUE", "pubsub".to_string()),
        ("PUBSUB_EMULATOR_HOST", emu.host.clone()),
        ("RUN_HEARTBEAT_SECONDS", "1".to_string()),
        ("LOG_FORMAT", "json".to_string()),
    ]
    .into_iter()
    .collect();
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    // More than one relay period (5 s) and many consume/settle rounds.
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let all = lines(&pipe);
    let noisy: Vec<&Value> = all
        .iter()
        .filter(|l| matches!(l["severity"].as_str(), Some("WARNING" | "ERROR")))
        .collect();
    assert!(noisy.is_empty(), "warnings before bootstrap: {noisy:?}");
    let told = all
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not bootstrapped yet")
        })
        .count();
    assert!(
        (1..=2).contains(&told),
        "said once per loop (runs, consumer), not every round: {told}"
    );
}
