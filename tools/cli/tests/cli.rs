//! The `cloudact` binary end to end in a temporary DATA_DIR (embedded warehouse, local KMS):
//! bootstrap, onboard, validate-configs, run with progress, runs, keys, subscription,
//! reset-pricing, migrate; `--json` output parsed; failures exit non-zero.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{path::Path, process::Command};

use serde_json::Value;

const CONFIGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");

fn cloudact(data_dir: &Path, configs: &str, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudact"))
        .env_clear()
        .env("DATA_DIR", data_dir)
        .env("CONFIGS_DIR", configs)
        .env("LOG_FORMAT", "pretty")
        .env("RUST_LOG", "error")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.success(), json, stderr)
}

#[test]
fn the_cli_runs_the_operator_tasks_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let help = Command::new(env!("CARGO_BIN_EXE_cloudact"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--wait"));

    let (ok, b, err) = cloudact(d, CONFIGS, &["validate-configs"]);
    assert!(ok, "{b} {err}");
    assert!(b["pipelines"].as_u64().unwrap() > 5, "{b}");

    let (ok, b, err) = cloudact(d, CONFIGS, &["bootstrap"]);
    assert!(ok, "{b} {err}");
    assert_eq!(b["status"], "SUCCESS");
    let (ok, b, err) = cloudact(
        d,
        CONFIGS,
        &[
            "onboard",
            "clico",
            "--company-name",
            "CLI Co",
            "--admin-email",
            "ops@cli.example",
            "--plan",
            "PROFESSIONAL",
        ],
    );
    assert!(ok, "{b} {err}");
    let key = b["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("clico_"), "{b}");

    // A run, waited for with progress on stderr.
    let (ok, b, err) = cloudact(
        d,
        CONFIGS,
        &[
            "run",
            "clico",
            "example/synthetic_usage",
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-02",
            "--wait",
        ],
    );
    assert!(ok, "{b} {err}");
    assert_eq!(b["status"], "COMPLETED", "{b}");
    assert!(err.contains("step "), "progress is shown: {err}");
    let (ok, b, _) = cloudact(d, CONFIGS, &["runs", "clico"]);
    assert!(ok);
    assert!(
        b["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "COMPLETED" && r["trigger_type"] == "cli"),
        "{b}"
    );
    let (ok, b, _) = cloudact(d, CONFIGS, &["run", "clico", "no/such/pipeline"]);
    assert!(!ok, "unknown pipeline exits non-zero: {b}");

    let (ok, b, err) = cloudact(d, CONFIGS, &["subscription", "set", "clico", "--plan", "SCALE"]);
    assert!(ok, "{b} {err}");
    assert_eq!(b["plan_name"], "SCALE", "{b}");
    let (ok, b, _) = cloudact(d, CONFIGS, &["subscription", "set", "clico", "--plan", "GOLD"]);
    assert!(!ok, "a bad plan exits non-zero: {b}");

    let (ok, b, err) = cloudact(d, CONFIGS, &["reset-pricing", "clico", "openai"]);
    assert!(ok, "{b} {err}");
    assert!(b["count"].as_u64().unwrap() > 0);

    let (ok, b, err) = cloudact(d, CONFIGS, &["rotate-key", "clico", "--scopes", "pipelines:read"]);
    assert!(ok, "{b} {err}");
    assert_eq!(b["scopes"], serde_json::json!(["pipelines:read"]));
    assert_ne!(b["api_key"].as_str().unwrap(), key);
    let (ok, b, err) = cloudact(d, CONFIGS, &["revoke-key", "clico"]);
    assert!(ok, "{b} {err}");
    assert_eq!(b["revoked"], 1);

    // FOCUS export to a file: the FOCUS header and what was written (the example pipeline's
    // synthetic usage is not a provider charge, so the org has none yet).
    let csv = d.join("focus.csv");
    let csv_arg = csv.to_str().unwrap();
    let (ok, b, err) = cloudact(
        d,
        CONFIGS,
        &[
            "focus",
            "clico",
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-02",
            "--out",
            csv_arg,
        ],
    );
    assert!(ok, "{b} {err}");
    assert_eq!(
        (b["rows"].as_u64(), b["focus_version"].as_str()),
        (Some(0), Some("1.3")),
        "{b}"
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("AvailabilityZone,BilledCost,BillingAccountId,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    let (ok, _, err) = cloudact(
        d,
        CONFIGS,
        &[
            "focus",
            "clico",
            "--start",
            "2026-01-02",
            "--end",
            "2026-01-01",
            "--out",
            csv_arg,
        ],
    );
    assert!(!ok, "a reversed range exits non-zero: {err}");

    let (ok, b, err) = cloudact(d, CONFIGS, &["migrate"]);
    assert!(ok, "{b} {err}");
    assert_eq!(b["columns_added"], 0, "already up to date: {b}");
    assert!(b["datasets"]["clico_local"].is_object(), "{b}");

    // A broken spec: validate-configs lists it and exits non-zero.
    let configs = tempfile::tempdir().unwrap();
    let copy = configs.path().join("configs");
    assert!(Command::new("cp")
        .arg("-r")
        .arg(CONFIGS)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    std::fs::write(copy.join("example/broken.yml"), "pipeline_id: [oops\n").unwrap();
    let (ok, b, _) = cloudact(d, copy.to_str().unwrap(), &["validate-configs"]);
    assert!(!ok);
    assert!(
        b["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("broken.yml")),
        "{b}"
    );
}
