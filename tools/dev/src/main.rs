//! `cargo run -p cloudact-dev`: both services in one process on the embedded defaults
//! (SQLite warehouse and local AES-GCM key file under `./data`), api-service on :8000 and
//! pipeline-service on :8001. Each service gets its own context, exactly as the two
//! binaries would; they share the data directory.
//!
//! Without `CA_ROOT_API_KEY`, a random development root key is created once in
//! `{DATA_DIR}/dev_root_key` (mode 0600) and printed here, so the curl walkthrough in the
//! README works. Production never uses this launcher.
//!
//! `--sandbox` also starts the sandbox provider server (a demo tool speaking the OpenAI,
//! Anthropic and DeepSeek APIs with deterministic data) on `SANDBOX_PORT` (default 8090) and
//! points both services' provider base URLs at it, so the provider pipelines of the README
//! demo run offline.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path, process::ExitCode};

use aes_gcm::aead::{rand_core::RngCore, OsRng};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use cloudact_core::settings::Settings;
use cloudact_web::{server, AppContext};

fn dev_root_key(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("dev_root_key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_string());
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let key = format!("dev_root_{}", URL_SAFE_NO_PAD.encode(bytes));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(key.as_bytes())?;
    Ok(key)
}

fn settings_for(port_var: &str, default_port: u16, root_key: &str, sandbox: Option<&str>) -> Result<Settings, String> {
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    if let Some(url) = sandbox {
        for var in ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "DEEPSEEK_BASE_URL"] {
            env.entry(var.into()).or_insert_with(|| url.to_string());
        }
    }
    env.entry("CA_ROOT_API_KEY".into())
        .or_insert_with(|| root_key.to_string());
    env.entry("LOG_FORMAT".into()).or_insert_with(|| "pretty".into());
    let port = env.get(port_var).cloned().unwrap_or_else(|| default_port.to_string());
    env.insert("PORT".into(), port);
    Settings::from_map(&env, default_port).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let data_dir = std::env::var("DATA_DIR").unwrap_or_else(|_| "./data".into());
    let root_key = match std::env::var("CA_ROOT_API_KEY") {
        Ok(k) => k,
        Err(_) => match dev_root_key(Path::new(&data_dir)) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("cannot create a development root key in {data_dir}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let sandbox = if std::env::args().any(|a| a == "--sandbox") {
        let port: u16 = std::env::var("SANDBOX_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8090);
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => {
                tokio::spawn(async move { axum::serve(listener, sandbox_providers::router(42)).await });
                Some(format!("http://127.0.0.1:{port}"))
            }
            Err(e) => {
                eprintln!("cannot start the sandbox on 127.0.0.1:{port}: {e} (set SANDBOX_PORT)");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let (api_settings, pipe_settings) = match (
        settings_for("API_PORT", 8000, &root_key, sandbox.as_deref()),
        settings_for("PIPELINE_PORT", 8001, &root_key, sandbox.as_deref()),
    ) {
        (Ok(a), Ok(p)) => (a, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    server::init_logging(api_settings.log_format, api_settings.gcp_project_id.clone());
    let (api_ctx, pipe_ctx) = match (
        AppContext::build("api-service", api_settings).await,
        AppContext::build("pipeline-service", pipe_settings).await,
    ) {
        (Ok(a), Ok(p)) => (a, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let api = server::Server::bind(api_ctx.clone(), api_service::router(api_ctx.clone())).await;
    let pipe = server::Server::bind(pipe_ctx.clone(), pipeline_service::router(pipe_ctx.clone())).await;
    let (api, pipe) = match (api, pipe) {
        (Ok(a), Ok(p)) => (a, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot listen: {e} (set API_PORT / PIPELINE_PORT to free ports)");
            return ExitCode::FAILURE;
        }
    };
    let api_url = format!(
        "http://localhost:{}",
        api.local_addr().map(|a| a.port()).unwrap_or(8000)
    );
    let pipe_url = format!(
        "http://localhost:{}",
        pipe.local_addr().map(|a| a.port()).unwrap_or(8001)
    );
    println!(
        "\nCloudAct is running on the embedded defaults (data in {data_dir}).\n\
         \n  api-service       {api_url}   docs: {api_url}/docs\n  pipeline-service  {pipe_url}   docs: {pipe_url}/docs\n\
         \nRoot key for this data directory:\n  export ROOT_KEY='{root_key}'\n\
         \nThen follow the walkthrough in README.md (bootstrap, dryrun, onboard). Ctrl-C stops both.\n"
    );
    if let Some(url) = &sandbox {
        println!(
            "Sandbox providers (DEMO ONLY, deterministic data) on {url}: OpenAI, Anthropic and DeepSeek calls go there.\n"
        );
    }
    let (a, p) = tokio::join!(
        api.serve_until(server::shutdown_signal()),
        pipe.serve_until(server::shutdown_signal())
    );
    if a.is_err() || p.is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
