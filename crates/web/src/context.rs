//! The application context both services share: settings, backends, auth, catalogue and
//! executor. Built once at start-up (every problem reported at once) and held as
//! `Arc<AppContext>` in the router state.

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Instant,
};

use cloudact_core::clock::{Clock, SystemClock};
use cloudact_core::{
    kms::{gcp::GcpKms, local::LocalKms, Kms},
    meta::OrgStore,
    settings::{KmsKind, Settings, WarehouseKind},
    warehouse::{
        bigquery::{BigQueryConfig, BigQueryWarehouse},
        embedded::EmbeddedWarehouse,
        Warehouse,
    },
};
use cloudact_pipeline::{
    catalog::LiveCatalog,
    processors::register_all,
    runs::{RunService, RunSettings},
    scheduler::Scheduler,
    CancellationToken, Catalog, Executor, Registry, Services,
};

use crate::{auth::AuthService, rate_limit::RateLimits};

/// Everything a handler may need.
pub struct AppContext {
    pub service_name: &'static str,
    pub version: &'static str,
    pub settings: Arc<Settings>,
    pub warehouse: Arc<dyn Warehouse>,
    pub kms: Arc<dyn Kms>,
    pub store: OrgStore,
    pub auth: AuthService,
    pub limits: RateLimits,
    /// The pipeline specs, replaceable whole by a config reload.
    pub catalog: Arc<LiveCatalog>,
    /// The processor registry the catalogue is validated against (for reloads).
    pub registry: Arc<Registry>,
    pub providers: Arc<cloudact_core::config::ProviderRegistry>,
    pub executor: Executor,
    pub runs: Arc<RunService>,
    /// Schedules, trigger, queue (pipeline-service starts its loops).
    pub scheduler: Arc<Scheduler>,
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the process begins to shut down (background loops stop).
    pub shutdown: CancellationToken,
    pub shutting_down: AtomicBool,
    /// Backend settings found unusable at start-up (503 until they work; see `config_check`).
    pub config_health: crate::config_check::ConfigHealth,
    pub started_at: Instant,
}

/// Why the context could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot start:\n  - {}", .0.join("\n  - "))]
pub struct StartupError(pub Vec<String>);

impl AppContext {
    /// Opens the configured backends and loads and validates every pipeline spec.
    pub async fn build(service_name: &'static str, settings: Settings) -> Result<Arc<Self>, StartupError> {
        Self::build_with_clock(service_name, settings, Arc::new(SystemClock)).await
    }

    /// As [`AppContext::build`], with an injected clock (tests move the day with it).
    pub async fn build_with_clock(
        service_name: &'static str,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StartupError> {
        let mut problems = settings.production_problems();
        let warehouse: Option<Arc<dyn Warehouse>> = match settings.warehouse {
            WarehouseKind::Embedded => match EmbeddedWarehouse::open(&settings.data_dir) {
                Ok(w) => Some(Arc::new(w)),
                Err(e) => {
                    problems.push(format!("embedded warehouse: {e}"));
                    None
                }
            },
            WarehouseKind::BigQuery => match &settings.gcp_project_id {
                None => {
                    problems.push("WAREHOUSE=bigquery needs GCP_PROJECT_ID".into());
                    None
                }
                Some(project) => {
                    let config = BigQueryConfig {
                        project: project.clone(),
                        location: settings.bigquery_location.clone(),
                        base_url: settings.bigquery_base_url.clone(),
                    };
                    match BigQueryWarehouse::connect(config).await {
                        Ok(w) => Some(Arc::new(w)),
                        Err(e) => {
                            problems.push(format!("BigQuery: {e}"));
                            None
                        }
                    }
                }
            },
        };
        let kms: Option<Arc<dyn Kms>> = match settings.kms {
            KmsKind::Local => match LocalKms::open(&settings.data_dir) {
                Ok(k) => Some(Arc::new(k)),
                Err(e) => {
                    problems.push(format!("local KMS: {e}"));
                    None
                }
            },
            KmsKind::Gcp => match &settings.kms_key_name {
                None => {
                    problems
                        .push("KMS=gcp needs KMS_KEY_NAME or KMS_PROJECT_ID/KMS_LOCATION/KMS_KEYRING/KMS_KEY".into());
                    None
                }
                Some(key) => match GcpKms::connect(key, settings.kms_endpoint.as_deref()).await {
                    Ok(k) => Some(Arc::new(k)),
                    Err(e) => {
                        problems.push(format!("Cloud KMS: {e}"));
                        None
                    }
                },
            },
        };
        let mut registry = Registry::default();
        register_all(&mut registry);
        let catalog = match Catalog::load(&settings.configs_dir, &registry) {
            Ok(c) => Some(c),
            Err(errors) => {
                problems.extend(errors.into_iter().map(|e| format!("configs/{e}")));
                None
            }
        };
        let providers = match cloudact_core::config::ProviderRegistry::load(&settings.configs_dir) {
            Ok(p) => {
                let mut p = p.with_overrides(&settings.provider_base_urls);
                if let Some(t) = settings.provider_validation_timeout {
                    for entry in &mut p.providers {
                        entry.validation_timeout_seconds = t.as_secs();
                    }
                }
                Some(p)
            }
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let (Some(warehouse), Some(kms), Some(catalog), Some(providers), true) =
            (warehouse, kms, catalog, providers, problems.is_empty())
        else {
            return Err(StartupError(problems));
        };
        let settings = Arc::new(settings);
        // Every warehouse call is timed and counted (`warehouse_*` metrics).
        crate::metrics::handle();
        let warehouse = cloudact_core::warehouse::metered::Metered::wrap(warehouse);
        let store = OrgStore::new(warehouse.clone());
        let http = match reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(settings.provider_http_timeout)
            .user_agent(concat!("cloudact/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => return Err(StartupError(vec![format!("HTTP client: {e}")])),
        };
        let providers = Arc::new(providers);
        let services = Services {
            warehouse: warehouse.clone(),
            kms: kms.clone(),
            settings: settings.clone(),
            http,
            providers: providers.clone(),
        };
        let registry = Arc::new(registry);
        let executor = Executor::new(registry.clone(), services);
        let run_settings = RunSettings {
            max_concurrent_runs: settings.max_concurrent_runs,
            heartbeat_every: settings.run_heartbeat,
            stale_after: settings.run_stale_after,
        };
        let runs = RunService::new(executor.clone(), store.clone(), clock.clone(), run_settings);
        let catalog = Arc::new(LiveCatalog::new(catalog));
        let scheduler = Scheduler::new(
            store.clone(),
            catalog.clone(),
            runs.clone(),
            clock.clone(),
            settings.scheduler.clone(),
        );
        Ok(Arc::new(AppContext {
            scheduler,
            service_name,
            version: env!("CARGO_PKG_VERSION"),
            auth: AuthService::new(&settings, store.clone()),
            limits: RateLimits::new(&settings),
            executor,
            runs,
            clock,
            shutdown: CancellationToken::new(),
            catalog,
            registry,
            providers,
            store,
            warehouse,
            kms,
            settings,
            shutting_down: AtomicBool::new(false),
            config_health: Default::default(),
            started_at: Instant::now(),
        }))
    }
}
