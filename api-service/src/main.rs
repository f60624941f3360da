//! api-service (:8000): bootstrap, org dryrun/onboarding, subscriptions, org API keys,
//! pipeline catalogue. Everything lives in the library; this only starts it.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cloudact_web::server::run_service("api-service", 8000, api_service::router).await
}
