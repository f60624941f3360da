//! Black-box robustness: schemathesis (PyPI, its own venv `.venv-schemathesis`, installed by
//! `.ci/run` from `tests/requirements-schemathesis.txt`) against both real binaries'
//! `/openapi.json`, once with an org key and once with the root key, bounded in examples and
//! time. Checks: no server error, every status code and content type documented, every
//! body matching its documented schema. The org's path parameter is pinned to the org of
//! the key, so the org run goes past the tenant check into the handlers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::HashMap, path::PathBuf, process::Command};

use cloudact_e2e::{Service, ROOT_KEY};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const ORG: &str = "fuzz_org";
/// Bootstrap with `force_recreate_dataset` drops the central dataset: fuzzed alone, last and
/// with one worker, so it does not pull the platform from under the other operations (which
/// then rightly answer 503 NOT_BOOTSTRAPPED).
const BOOTSTRAP_ONLY: [&str; 2] = ["--include-path", "/api/v1/admin/bootstrap"];
const ALL_BUT_BOOTSTRAP: [&str; 2] = ["--exclude-path", "/api/v1/admin/bootstrap"];
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

fn schemathesis() -> PathBuf {
    let bin = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.venv-schemathesis/bin/schemathesis"
    ));
    assert!(
        bin.exists(),
        "schemathesis is not installed: python3 -m venv .venv-schemathesis && \
         .venv-schemathesis/bin/pip install -r tests/requirements-schemathesis.txt (.ci/run does this)"
    );
    bin
}

/// One schemathesis run; returns its summary lines. Fails the test on any failure.
fn fuzz(svc: &Service, header: &str, config: &std::path::Path, report: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(schemathesis())
        .arg("--config-file")
        .arg(config)
        .args(["--no-color", "run"])
        .arg(svc.url("/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--header", header])
        .args(["--max-examples", "12", "--max-time", "45", "--seed", "20261202"])
        .args(["--phases", "examples,coverage,fuzzing", "--request-timeout", "30"])
        .args(["--suppress-health-check", "all", "--generation-database", "none"])
        .args(["--workers", if extra.contains(&BOOTSTRAP_ONLY[1]) { "1" } else { "2" }])
        .arg("--report-dir")
        .arg(report)
        .args(["--report", "junit"])
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let label = header.split(':').next().unwrap_or_default();
    assert!(
        out.status.success(),
        "schemathesis found problems on {} with {label}:\n{text}\n--- service log ---\n{}",
        svc.name,
        std::fs::read_to_string(&svc.log).unwrap_or_default()
    );
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("API Operations")
                || l.starts_with("Selected")
                || l.starts_with("Tested")
                || l.starts_with("Test cases")
                || l.contains("generated")
                || l.contains("passed")
                || l.starts_with("Seed")
        })
        .collect();
    format!("{} with {label}:\n{}", svc.name, summary.join("\n"))
}

#[tokio::test]
async fn schemathesis_finds_no_server_errors_and_no_undocumented_responses() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = HashMap::new();
    env.insert("RATE_LIMIT_REQUESTS_PER_MINUTE", "1000000".to_string());
    env.insert("RATE_LIMIT_GLOBAL_REQUESTS_PER_MINUTE", "100000000".to_string());
    let api = Service::start("api-service", dir.path(), &env);
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    let c = Client::new();
    let root = |r: reqwest::RequestBuilder| r.header("X-CA-Root-Key", ROOT_KEY);
    let resp = root(c.post(api.url("/api/v1/admin/bootstrap"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = root(c.post(api.url("/api/v1/organizations/onboard")))
        .json(&json!({"org_slug": ORG, "company_name": "Fuzz Inc", "admin_email": "ops@fuzz.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let key = resp.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    // Some data for the read routes: a day of the example pipeline.
    let resp = c
        .post(pipe.url(&format!("/api/v1/pipelines/run/{ORG}/example/synthetic_usage")))
        .header("X-API-Key", &key)
        .json(&json!({"date": "2026-11-30"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, format!("[parameters]\n\"path.org_slug\" = \"{ORG}\"\n")).unwrap();
    let report = dir.path().join("schemathesis-report");
    let mut summaries = Vec::new();
    // Org key first: the root runs may rotate the org's key.
    for svc in [&pipe, &api] {
        summaries.push(fuzz(svc, &format!("X-API-Key: {key}"), &config, &report, &[]));
    }
    let root = format!("X-CA-Root-Key: {ROOT_KEY}");
    summaries.push(fuzz(&pipe, &root, &config, &report, &[]));
    summaries.push(fuzz(&api, &root, &config, &report, &ALL_BUT_BOOTSTRAP));
    summaries.push(fuzz(&api, &root, &config, &report, &BOOTSTRAP_ONLY));
    println!("{}", summaries.join("\n\n"));
    // The services are still healthy after the fuzzing.
    for svc in [&api, &pipe] {
        let resp = c.get(svc.url("/health/ready")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{}", svc.name);
    }
}
