//! The pipeline-service binary itself: in production it refuses to start on unsafe settings and names
//! every one of them (exit code 1, nothing listening). Being an integration test of this
//! package, it also makes `cargo test --workspace` build the binary that the black-box tests
//! in `tests/` start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::process::Command;

#[test]
fn production_refuses_to_start_naming_each_unsafe_setting() {
    let data_dir = std::env::temp_dir().join(format!("pipeline-service-binary-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline-service"))
        .env_clear()
        .env("ENVIRONMENT", "production")
        .env("DATA_DIR", &data_dir)
        .env("CONFIGS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))
        .env("PORT", "0")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for setting in ["CA_ROOT_API_KEY", "KMS=local", "WAREHOUSE=embedded", "GCP_PROJECT_ID"] {
        assert!(stderr.contains(setting), "{setting} not named:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}
