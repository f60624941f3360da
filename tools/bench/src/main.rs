//! Benchmarks (see `bench/README.md`):
//!
//! - `cloudact-bench [runs] [RUNS] [MAX_CONCURRENT_RUNS]` — run throughput ([`runs`]).
//! - `cloudact-bench ingest [--pages N] [--rows-per-page N] [--pages-url URL]` — OpenAI usage
//!   ingestion and pricing ([`ingest`]).
//! - `cloudact-bench pages DIR PORT` — the plain static page server ([`pages`]).

mod ingest;
mod pages;
mod runs;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ingest") => ingest::run(&args[1..]).await,
        Some("pages") => pages::run(&args[1..]).await,
        Some("runs") => runs::run(&args[1..]).await,
        _ => runs::run(&args).await,
    }
}
