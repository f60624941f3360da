//! pipeline-service (:8001): pipeline runs, scheduler, integrations, pricing, cost queries.
//! Everything lives in the library; this only starts it.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cloudact_web::server::run_service("pipeline-service", 8001, pipeline_service::router).await
}
