//! `sandbox-providers [--port P] [--seed S]`: serves the sandbox provider APIs (a test and
//! demo tool; production never talks to it).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let port: u16 = value("--port").and_then(|p| p.parse().ok()).unwrap_or(8090);
    let seed: u64 = value("--seed").and_then(|s| s.parse().ok()).unwrap_or(42);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sandbox-providers: cannot listen on 127.0.0.1:{port}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("sandbox-providers (TEST/DEMO ONLY) on http://127.0.0.1:{port} seed={seed}");
    match axum::serve(listener, sandbox_providers::router(seed)).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox-providers: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
