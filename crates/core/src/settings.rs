//! Typed settings read once from the environment and passed in explicitly (no globals).
//!
//! Secrets are wrapped in [`secrecy::SecretString`] so they never reach a log or a `Debug`
//! print. [`Settings::production_problems`] lists every reason a production start must be
//! refused, so the operator sees them all in one message.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// Deployment environment; also decides the per-org dataset suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    /// Suffix of per-org datasets: `{org_slug}_{suffix}`.
    pub fn dataset_suffix(self) -> &'static str {
        match self {
            Environment::Development => "local",
            Environment::Staging => "stage",
            Environment::Production => "prod",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

/// Which warehouse backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarehouseKind {
    Embedded,
    BigQuery,
}

/// Which key service to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsKind {
    Local,
    Gcp,
}

/// Who drives the scheduler: the pipeline-service itself every tick, or Cloud Scheduler
/// calling the trigger and queue endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerMode {
    Internal,
    External,
}

/// Where due occurrences wait to be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerQueue {
    /// The `org_pipeline_execution_queue` table, claimed atomically.
    Warehouse,
    /// A Cloud Pub/Sub topic with a pull subscription shared by every instance.
    PubSub,
}

/// Scheduler settings (`SCHEDULER*`, `PUBSUB_*`).
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub mode: SchedulerMode,
    pub queue: SchedulerQueue,
    /// Internal mode: how often trigger + process run (`SCHEDULER_TICK_SECONDS`, 60).
    pub tick: Duration,
    /// How many days back missed occurrences are still run (`SCHEDULER_CATCHUP_DAYS`, 7).
    pub catchup_days: u32,
    /// Per-org start spread: an occurrence becomes claimable within this window after its
    /// time, at a deterministic offset per org and schedule (`SCHEDULER_JITTER_SECONDS`, 300).
    pub jitter: Duration,
    /// Retries of a failed scheduled run before it stays FAILED (`SCHEDULER_MAX_RETRIES`, 3).
    pub max_retries: u32,
    /// First retry delay, doubled per retry up to one hour (`SCHEDULER_RETRY_BASE_SECONDS`, 60).
    pub retry_base: Duration,
    /// A claimed item not admitted within this is claimable again (`SCHEDULER_CLAIM_LEASE_SECONDS`, 120).
    pub claim_lease: Duration,
    /// Longest a queue-process call keeps claiming (`SCHEDULER_PROCESS_SECONDS`, 50).
    pub process_budget: Duration,
    /// Pub/Sub project (`PUBSUB_PROJECT_ID`, else `GCP_PROJECT_ID`).
    pub pubsub_project: Option<String>,
    pub pubsub_topic: String,
    pub pubsub_subscription: String,
    /// `PUBSUB_EMULATOR_HOST` (host:port), as every Google client library reads it.
    pub pubsub_emulator_host: Option<String>,
}

/// Everything both services read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub root_api_key: Option<SecretString>,
    pub disable_auth: bool,
    pub rate_limit_enabled: bool,
    pub rate_limit_per_org_per_minute: u32,
    pub rate_limit_global_per_minute: u32,
    /// Per-org and service-wide limits per hour (`RATE_LIMIT_REQUESTS_PER_HOUR`, default 1000;
    /// `RATE_LIMIT_GLOBAL_REQUESTS_PER_HOUR`, default 100 000), next to the per-minute ones.
    pub rate_limit_per_org_per_hour: u32,
    pub rate_limit_global_per_hour: u32,
    /// `MAINTENANCE_MODE=true`: every route but health and metrics answers 503.
    pub maintenance_mode: bool,
    /// Bearer token `/metrics` requires when set (`METRICS_TOKEN`).
    pub metrics_token: Option<SecretString>,
    pub cors_origins: Vec<String>,
    pub enable_api_docs: bool,
    pub host: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub configs_dir: PathBuf,
    pub warehouse: WarehouseKind,
    pub kms: KmsKind,
    pub gcp_project_id: Option<String>,
    pub bigquery_location: String,
    pub bigquery_base_url: Option<String>,
    pub kms_key_name: Option<String>,
    pub kms_endpoint: Option<String>,
    pub api_service_url: String,
    /// How long a key lookup is cached (at most 30 s in production).
    pub auth_cache_ttl: Duration,
    /// How often each process re-checks every cached key in one query, so a key rotated,
    /// revoked or expired elsewhere (the other service) stops working within this time.
    pub auth_revalidate_every: Duration,
    pub log_format: LogFormat,
    /// Pipeline runs executing at once in one pipeline-service process.
    pub max_concurrent_runs: usize,
    /// How often a process refreshes the heartbeat of its runs (and sweeps stale ones).
    pub run_heartbeat: Duration,
    /// A PENDING/RUNNING run whose heartbeat is older than this is failed by the sweeper.
    pub run_stale_after: Duration,
    /// Provider base-URL overrides (`OPENAI_BASE_URL`, … — tests and demos only): variable → URL.
    pub provider_base_urls: HashMap<String, String>,
    /// Overrides every provider's validation timeout (`PROVIDER_VALIDATION_TIMEOUT_SECONDS`).
    pub provider_validation_timeout: Option<Duration>,
    /// Timeout of one provider HTTP request made by a pipeline (`PROVIDER_HTTP_TIMEOUT_SECONDS`,
    /// default 120): a hung provider becomes a retried, then failed, step.
    pub provider_http_timeout: Duration,
    /// Outgoing mail for email notifications (`SMTP_HOST` and friends); `None` when unset.
    pub smtp: Option<SmtpSettings>,
    /// Slack incoming webhook for Slack notifications (`SLACK_WEBHOOK_URL`).
    pub slack_webhook_url: Option<SecretString>,
    /// Google's OAuth2 token endpoint for service accounts (`GCP_OAUTH_TOKEN_URL`, tests and
    /// demos only). A service-account JSON's own `token_uri` is never used: it would let an org
    /// make the service call any URL.
    pub gcp_token_url: String,
    pub scheduler: SchedulerSettings,
}

/// Google's OAuth2 token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required), usually port 587.
    Starttls,
    /// TLS from the first byte, usually port 465.
    Tls,
    /// No encryption (local relays and tests only; refused in production).
    None,
}

/// SMTP relay settings: `SMTP_HOST`, `SMTP_PORT` (587), `SMTP_TLS` (starttls | tls | none),
/// `SMTP_USERNAME`, `SMTP_PASSWORD`, `SMTP_FROM`.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub from: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Settings that could not be parsed; every problem is listed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct SettingsError(pub Vec<String>);

impl Settings {
    /// Reads settings from the process environment. `default_port` differs per service.
    pub fn from_env(default_port: u16) -> Result<Self, SettingsError> {
        Self::from_map(&std::env::vars().collect(), default_port)
    }

    /// Reads settings from a map of variables (tests use this instead of mutating the process env).
    pub fn from_map(env: &HashMap<String, String>, default_port: u16) -> Result<Self, SettingsError> {
        let mut problems = Vec::new();
        let get = |name: &str| env.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());

        let environment = match get("ENVIRONMENT").as_deref() {
            None | Some("development") | Some("dev") | Some("local") => Environment::Development,
            Some("staging") | Some("stage") => Environment::Staging,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                problems.push(format!(
                    "ENVIRONMENT={other:?} is not one of development, staging, production"
                ));
                Environment::Development
            }
        };
        let mut bool_var = |name: &str, default: bool| match get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => default,
            Some("true") | Some("1") | Some("yes") => true,
            Some("false") | Some("0") | Some("no") => false,
            Some(other) => {
                problems.push(format!("{name}={other:?} is not a boolean (true/false)"));
                default
            }
        };
        let disable_auth = bool_var("DISABLE_AUTH", false);
        let rate_limit_enabled = bool_var("RATE_LIMIT_ENABLED", true);
        let enable_api_docs = bool_var("ENABLE_API_DOCS", true);
        let maintenance_mode = bool_var("MAINTENANCE_MODE", false);

        let mut number = |name: &str, default: u64, min: u64, max: u64| -> u64 {
            match get(name) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        problems.push(format!("{name}={v:?} must be a whole number from {min} to {max}"));
                        default
                    }
                },
            }
        };
        let rate_limit_per_org_per_minute = number("RATE_LIMIT_REQUESTS_PER_MINUTE", 100, 1, 1_000_000) as u32;
        let rate_limit_global_per_minute =
            number("RATE_LIMIT_GLOBAL_REQUESTS_PER_MINUTE", 10_000, 1, 100_000_000) as u32;
        let rate_limit_per_org_per_hour = number("RATE_LIMIT_REQUESTS_PER_HOUR", 1_000, 1, 100_000_000) as u32;
        let rate_limit_global_per_hour =
            number("RATE_LIMIT_GLOBAL_REQUESTS_PER_HOUR", 100_000, 1, 1_000_000_000) as u32;
        let port = number("PORT", u64::from(default_port), 0, 65_535) as u16;
        let auth_cache_ttl = Duration::from_secs(number("AUTH_CACHE_TTL_SECONDS", 30, 0, 3_600));
        let auth_revalidate_every = Duration::from_secs(number("AUTH_REVALIDATE_SECONDS", 5, 1, 300));
        let max_concurrent_runs = number("MAX_CONCURRENT_RUNS", 8, 1, 1_000) as usize;
        let provider_validation_timeout = get("PROVIDER_VALIDATION_TIMEOUT_SECONDS")
            .map(|_| Duration::from_secs(number("PROVIDER_VALIDATION_TIMEOUT_SECONDS", 15, 1, 300)));
        let provider_http_timeout = Duration::from_secs(number("PROVIDER_HTTP_TIMEOUT_SECONDS", 120, 1, 3_600));
        let smtp_port = number("SMTP_PORT", 587, 1, 65_535) as u16;
        let run_heartbeat = Duration::from_secs(number("RUN_HEARTBEAT_SECONDS", 10, 1, 600));
        let run_stale_after = Duration::from_secs(number("RUN_STALE_SECONDS", 60, 2, 86_400));
        let scheduler_tick = Duration::from_secs(number("SCHEDULER_TICK_SECONDS", 60, 1, 3_600));
        let catchup_days = number("SCHEDULER_CATCHUP_DAYS", 7, 0, 90) as u32;
        let jitter = Duration::from_secs(number("SCHEDULER_JITTER_SECONDS", 300, 0, 3_600));
        let max_retries = number("SCHEDULER_MAX_RETRIES", 3, 0, 10) as u32;
        let retry_base = Duration::from_secs(number("SCHEDULER_RETRY_BASE_SECONDS", 60, 1, 3_600));
        let claim_lease = Duration::from_secs(number("SCHEDULER_CLAIM_LEASE_SECONDS", 120, 5, 3_600));
        let process_budget = Duration::from_secs(number("SCHEDULER_PROCESS_SECONDS", 50, 1, 600));

        let smtp = get("SMTP_HOST").map(|host| {
            let tls = match get("SMTP_TLS").map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("starttls") => SmtpTls::Starttls,
                Some("tls") => SmtpTls::Tls,
                Some("none") => SmtpTls::None,
                Some(other) => {
                    problems.push(format!("SMTP_TLS={other:?} is not one of starttls, tls, none"));
                    SmtpTls::Starttls
                }
            };
            SmtpSettings {
                host,
                port: smtp_port,
                tls,
                username: get("SMTP_USERNAME"),
                password: get("SMTP_PASSWORD").map(SecretString::from),
                from: get("SMTP_FROM").unwrap_or_else(|| "CloudAct <noreply@cloudact.local>".to_string()),
            }
        });
        let host = match get("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => v.parse().unwrap_or_else(|_| {
                problems.push(format!("HOST={v:?} is not an IP address"));
                IpAddr::from([0, 0, 0, 0])
            }),
        };
        let warehouse = match get("WAREHOUSE").as_deref() {
            None | Some("embedded") => WarehouseKind::Embedded,
            Some("bigquery") => WarehouseKind::BigQuery,
            Some(other) => {
                problems.push(format!("WAREHOUSE={other:?} is not one of embedded, bigquery"));
                WarehouseKind::Embedded
            }
        };
        let kms = match get("KMS").as_deref() {
            None | Some("local") => KmsKind::Local,
            Some("gcp") => KmsKind::Gcp,
            Some(other) => {
                problems.push(format!("KMS={other:?} is not one of local, gcp"));
                KmsKind::Local
            }
        };
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                problems.push(format!("LOG_FORMAT={other:?} is not one of json, pretty"));
                LogFormat::Json
            }
        };
        let kms_key_name = get("KMS_KEY_NAME").or_else(|| {
            match (
                get("KMS_PROJECT_ID"),
                get("KMS_LOCATION"),
                get("KMS_KEYRING"),
                get("KMS_KEY"),
            ) {
                (Some(p), Some(l), Some(r), Some(k)) => {
                    Some(format!("projects/{p}/locations/{l}/keyRings/{r}/cryptoKeys/{k}"))
                }
                _ => None,
            }
        });
        let scheduler_mode = match get("SCHEDULER").map(|v| v.to_ascii_lowercase()).as_deref() {
            None if environment == Environment::Production => SchedulerMode::External,
            None | Some("internal") => SchedulerMode::Internal,
            Some("external") => SchedulerMode::External,
            Some(other) => {
                problems.push(format!("SCHEDULER={other:?} is not one of internal, external"));
                SchedulerMode::External
            }
        };
        let scheduler_queue = match get("SCHEDULER_QUEUE").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("warehouse") => SchedulerQueue::Warehouse,
            Some("pubsub") => SchedulerQueue::PubSub,
            Some(other) => {
                problems.push(format!("SCHEDULER_QUEUE={other:?} is not one of warehouse, pubsub"));
                SchedulerQueue::Warehouse
            }
        };
        let pubsub_project = get("PUBSUB_PROJECT_ID").or_else(|| get("GCP_PROJECT_ID"));
        if scheduler_queue == SchedulerQueue::PubSub && pubsub_project.is_none() {
            problems.push("SCHEDULER_QUEUE=pubsub needs PUBSUB_PROJECT_ID (or GCP_PROJECT_ID)".to_string());
        }
        let pubsub_name = |name: &str, default: &str| -> String { get(name).unwrap_or_else(|| default.to_string()) };
        let pubsub_topic = pubsub_name("PUBSUB_TOPIC", "cloudact-scheduled-runs");
        let pubsub_subscription = pubsub_name("PUBSUB_SUBSCRIPTION", "cloudact-scheduled-runs-workers");
        for (name, value) in [
            ("PUBSUB_TOPIC", &pubsub_topic),
            ("PUBSUB_SUBSCRIPTION", &pubsub_subscription),
        ] {
            let ok = (3..=255).contains(&value.len())
                && value.starts_with(|c: char| c.is_ascii_alphabetic())
                && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
            if !ok {
                problems.push(format!(
                    "{name}={value:?} is not a Pub/Sub id (3-255 letters, digits, - _ . ~ + %, starting with a letter)"
                ));
            }
        }
        let scheduler = SchedulerSettings {
            mode: scheduler_mode,
            queue: scheduler_queue,
            tick: scheduler_tick,
            catchup_days,
            jitter,
            max_retries,
            retry_base,
            claim_lease,
            process_budget,
            pubsub_project,
            pubsub_topic,
            pubsub_subscription,
            pubsub_emulator_host: get("PUBSUB_EMULATOR_HOST"),
        };
        let cors_origins = match get("CORS_ORIGINS") {
            None => vec!["http://localhost:3000".to_string(), "http://localhost:8080".to_string()],
            Some(v) => parse_origins(&v).unwrap_or_else(|e| {
                problems.push(e);
                Vec::new()
            }),
        };

        if !problems.is_empty() {
            return Err(SettingsError(problems));
        }
        Ok(Settings {
            environment,
            root_api_key: get("CA_ROOT_API_KEY").map(SecretString::from),
            disable_auth,
            rate_limit_enabled,
            rate_limit_per_org_per_minute,
            rate_limit_global_per_minute,
            rate_limit_per_org_per_hour,
            rate_limit_global_per_hour,
            maintenance_mode,
            metrics_token: get("METRICS_TOKEN").map(SecretString::from),
            cors_origins,
            enable_api_docs,
            host,
            port,
            data_dir: PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "./data".to_string())),
            configs_dir: PathBuf::from(get("CONFIGS_DIR").unwrap_or_else(|| "./configs".to_string())),
            warehouse,
            kms,
            gcp_project_id: get("GCP_PROJECT_ID"),
            bigquery_location: get("BIGQUERY_LOCATION").unwrap_or_else(|| "US".to_string()),
            bigquery_base_url: get("BIGQUERY_BASE_URL"),
            kms_key_name,
            kms_endpoint: get("KMS_ENDPOINT"),
            api_service_url: get("API_SERVICE_URL").unwrap_or_else(|| "http://localhost:8000".to_string()),
            auth_cache_ttl,
            auth_revalidate_every,
            log_format,
            max_concurrent_runs,
            run_heartbeat,
            run_stale_after,
            provider_base_urls: env
                .iter()
                .filter(|(k, v)| k.ends_with("_BASE_URL") && k.as_str() != "BIGQUERY_BASE_URL" && !v.trim().is_empty())
                .map(|(k, v)| (k.clone(), v.trim().to_string()))
                .collect(),
            provider_validation_timeout,
            provider_http_timeout,
            smtp,
            slack_webhook_url: get("SLACK_WEBHOOK_URL").map(SecretString::from),
            gcp_token_url: get("GCP_OAUTH_TOKEN_URL").unwrap_or_else(|| GOOGLE_TOKEN_URL.to_string()),
            scheduler,
        })
    }

    /// Every reason this configuration must not serve production traffic (empty when fine
    /// or when not in production).
    pub fn production_problems(&self) -> Vec<String> {
        if self.environment != Environment::Production {
            return Vec::new();
        }
        let mut problems = Vec::new();
        match &self.root_api_key {
            None => problems.push("CA_ROOT_API_KEY is not set".to_string()),
            Some(k) if k.expose_secret().chars().count() < 32 => {
                problems.push("CA_ROOT_API_KEY is shorter than 32 characters".to_string())
            }
            Some(_) => {}
        }
        if self.disable_auth {
            problems.push("DISABLE_AUTH=true is not allowed in production".to_string());
        }
        if !self.rate_limit_enabled {
            problems.push("RATE_LIMIT_ENABLED=false is not allowed in production".to_string());
        }
        if self.auth_cache_ttl > Duration::from_secs(30) {
            problems.push(format!(
                "AUTH_CACHE_TTL_SECONDS={} is above 30: a revoked key must stop working within 30 s in production",
                self.auth_cache_ttl.as_secs()
            ));
        }
        if self.kms == KmsKind::Local {
            problems.push("KMS=local (a key file on disk) is not allowed in production; set KMS=gcp".to_string());
        }
        if self.kms_key_name.is_none() {
            problems.push(
                "Cloud KMS key missing: set KMS_KEY_NAME or KMS_PROJECT_ID/KMS_LOCATION/KMS_KEYRING/KMS_KEY"
                    .to_string(),
            );
        }
        if self.warehouse != WarehouseKind::BigQuery {
            problems.push(
                "WAREHOUSE=embedded (SQLite files) is not allowed in production; set WAREHOUSE=bigquery".to_string(),
            );
        }
        if self.gcp_project_id.is_none() {
            problems.push("GCP_PROJECT_ID is not set (the BigQuery project)".to_string());
        }
        if self.smtp.as_ref().is_some_and(|s| s.tls == SmtpTls::None) {
            problems.push(
                "SMTP_TLS=none (mail and SMTP credentials in the clear) is not allowed in production".to_string(),
            );
        }
        if self.bigquery_base_url.is_some()
            || self.kms_endpoint.is_some()
            || !self.provider_base_urls.is_empty()
            || self.gcp_token_url != GOOGLE_TOKEN_URL
        {
            problems.push(
                "BIGQUERY_BASE_URL / KMS_ENDPOINT / *_BASE_URL / GCP_OAUTH_TOKEN_URL point at emulators or the sandbox and are for tests only"
                    .to_string(),
            );
        }
        problems
    }

    /// Name of an org's own dataset: `{org_slug}_{local|stage|prod}`.
    pub fn org_dataset(&self, org_slug: &str) -> String {
        format!("{org_slug}_{}", self.environment.dataset_suffix())
    }
}

/// `CORS_ORIGINS`: a comma list (`https://a.example,https://b.example`) or, as the original
/// documented it, a JSON list (`["https://a.example", "https://b.example"]`).
fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    let t = v.trim();
    let list: Vec<String> = if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t).map_err(|e| {
            format!("CORS_ORIGINS looks like a JSON list but is not one ({e}); use [\"https://…\"] or a comma list")
        })?
    } else {
        t.split(',').map(str::to_string).collect()
    };
    Ok(list
        .into_iter()
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_take_a_json_list_or_a_comma_list() {
        let want = vec!["https://a.example".to_string(), "http://localhost:3000".to_string()];
        assert_eq!(
            parse_origins(r#"["https://a.example/", "http://localhost:3000"]"#).unwrap(),
            want
        );
        assert_eq!(parse_origins("https://a.example, http://localhost:3000").unwrap(), want);
        assert!(parse_origins(r#"["https://a.example""#)
            .unwrap_err()
            .contains("JSON list"));
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_the_embedded_development_setup() {
        let s = Settings::from_map(&env(&[]), 8000).unwrap();
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.port, 8000);
        assert_eq!(s.warehouse, WarehouseKind::Embedded);
        assert_eq!(s.kms, KmsKind::Local);
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.org_dataset("acme"), "acme_local");
        assert!(s.production_problems().is_empty());
    }

    #[test]
    fn production_lists_every_problem_at_once() {
        let s = Settings::from_map(
            &env(&[
                ("ENVIRONMENT", "production"),
                ("CA_ROOT_API_KEY", "short"),
                ("DISABLE_AUTH", "true"),
                ("RATE_LIMIT_ENABLED", "false"),
            ]),
            8000,
        )
        .unwrap();
        let problems = s.production_problems();
        assert_eq!(problems.len(), 7, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("WAREHOUSE=embedded")));
        assert!(problems.iter().any(|p| p.contains("GCP_PROJECT_ID")));
        assert!(problems.iter().any(|p| p.contains("KMS_KEY_NAME")));
        assert!(problems.iter().any(|p| p.contains("shorter than 32")));
        assert!(problems.iter().any(|p| p.contains("DISABLE_AUTH")));
        assert!(problems.iter().any(|p| p.contains("RATE_LIMIT_ENABLED")));
        assert!(problems.iter().any(|p| p.contains("KMS=local")));
    }

    #[test]
    fn a_complete_production_setup_passes() {
        let s = Settings::from_map(
            &env(&[
                ("ENVIRONMENT", "production"),
                ("CA_ROOT_API_KEY", "a-production-root-key-with-40-characters!"),
                ("WAREHOUSE", "bigquery"),
                ("KMS", "gcp"),
                ("GCP_PROJECT_ID", "cloudact-prod"),
                ("KMS_KEY_NAME", "projects/p/locations/us/keyRings/r/cryptoKeys/k"),
            ]),
            8000,
        )
        .unwrap();
        assert_eq!(s.production_problems(), Vec::<String>::new());
        assert_eq!(s.org_dataset("acme"), "acme_prod");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::from_map(&env(&[("CA_ROOT_API_KEY", "super-secret-root-key-value-123456")]), 8000).unwrap();
        assert!(!format!("{s:?}").contains("super-secret"));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let err = Settings::from_map(
            &env(&[("PORT", "99999"), ("WAREHOUSE", "oracle"), ("DISABLE_AUTH", "maybe")]),
            8000,
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }

    #[test]
    fn kms_key_name_is_assembled_from_parts() {
        let s = Settings::from_map(
            &env(&[
                ("KMS_PROJECT_ID", "p"),
                ("KMS_LOCATION", "us"),
                ("KMS_KEYRING", "r"),
                ("KMS_KEY", "k"),
            ]),
            8000,
        )
        .unwrap();
        assert_eq!(
            s.kms_key_name.as_deref(),
            Some("projects/p/locations/us/keyRings/r/cryptoKeys/k")
        );
    }
}
