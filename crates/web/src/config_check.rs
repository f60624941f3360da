//! Start-up checks of the backend settings: their form (URLs that parse, the BigQuery REST
//! root ending in `/bigquery/v2`) and a cheap probe of each backend (the warehouse answers a
//! query, the KMS key encrypts and decrypts). In production a problem refuses the start,
//! naming the setting. Elsewhere the service starts degraded: `/health/ready` is 503 with
//! the reasons and every other request gets a 503 `CONFIGURATION_ERROR` naming them (never a
//! 500 from deep inside a handler); probes are retried, so a backend that comes up later
//! clears its problem.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use cloudact_core::settings::{Settings, WarehouseKind};
use secrecy::ExposeSecret;

use crate::context::AppContext;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a degraded service re-probes its backends.
const REPROBE_EVERY: Duration = Duration::from_secs(10);

/// The configuration problems found so far (empty: healthy).
#[derive(Debug, Default)]
pub struct ConfigHealth {
    form: RwLock<Vec<String>>,
    probes: RwLock<Vec<String>>,
}

impl ConfigHealth {
    /// Every current problem, form first.
    pub fn problems(&self) -> Vec<String> {
        let mut all = self.form.read().map(|p| p.clone()).unwrap_or_default();
        all.extend(self.probes.read().map(|p| p.clone()).unwrap_or_default());
        all
    }

    pub fn is_healthy(&self) -> bool {
        self.problems().is_empty()
    }

    fn set_form(&self, problems: Vec<String>) {
        if let Ok(mut f) = self.form.write() {
            *f = problems;
        }
    }

    fn set_probes(&self, problems: Vec<String>) {
        if let Ok(mut p) = self.probes.write() {
            *p = problems;
        }
    }
}

fn check_url(problems: &mut Vec<String>, name: &str, value: &str) -> Option<reqwest::Url> {
    match reqwest::Url::parse(value.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        Ok(_) => {
            problems.push(format!("{name}={value:?} must be an http(s) URL with a host"));
            None
        }
        Err(e) => {
            problems.push(format!("{name}={value:?} is not a URL: {e}"));
            None
        }
    }
}

/// Problems of form: settings that cannot work whatever the backends do.
pub fn form_problems(settings: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(bq) = &settings.bigquery_base_url {
        if let Some(u) = check_url(&mut problems, "BIGQUERY_BASE_URL", bq) {
            if !u.path().trim_end_matches('/').ends_with("/bigquery/v2") {
                problems.push(format!(
                    "BIGQUERY_BASE_URL={bq:?} must be the BigQuery REST root, ending in /bigquery/v2 (e.g. http://localhost:9050/bigquery/v2)"
                ));
            }
        }
    }
    if let Some(kms) = &settings.kms_endpoint {
        check_url(&mut problems, "KMS_ENDPOINT", kms);
    }
    let mut providers: Vec<(&String, &String)> = settings.provider_base_urls.iter().collect();
    providers.sort();
    for (name, url) in providers {
        check_url(&mut problems, name, url);
    }
    check_url(&mut problems, "GCP_OAUTH_TOKEN_URL", &settings.gcp_token_url);
    check_url(&mut problems, "API_SERVICE_URL", &settings.api_service_url);
    problems
}

/// Probes each backend once: a query on the warehouse, an encrypt/decrypt round trip on the KMS.
pub async fn probe(ctx: &AppContext) -> Vec<String> {
    let mut problems = Vec::new();
    let warehouse_setting = match ctx.settings.warehouse {
        WarehouseKind::BigQuery => format!(
            "WAREHOUSE=bigquery (GCP_PROJECT_ID={}, BIGQUERY_BASE_URL={})",
            ctx.settings.gcp_project_id.as_deref().unwrap_or("-"),
            ctx.settings
                .bigquery_base_url
                .as_deref()
                .unwrap_or("https://bigquery.googleapis.com/bigquery/v2")
        ),
        WarehouseKind::Embedded => format!("WAREHOUSE=embedded (DATA_DIR={})", ctx.settings.data_dir.display()),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, ctx.warehouse.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!(
            "{warehouse_setting}: the warehouse does not answer a query: {e}"
        )),
        Err(_) => problems.push(format!(
            "{warehouse_setting}: the warehouse did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
    let kms_setting = match &ctx.settings.kms_key_name {
        Some(key) if ctx.kms.backend_name() != "local" => format!(
            "KMS=gcp (KMS_KEY_NAME={key}{})",
            ctx.settings
                .kms_endpoint
                .as_deref()
                .map(|e| format!(", KMS_ENDPOINT={e}"))
                .unwrap_or_default()
        ),
        _ => format!("KMS=local (DATA_DIR={})", ctx.settings.data_dir.display()),
    };
    let sample = b"cloudact start-up probe";
    let aad = b"cloudact:startup-probe";
    let round_trip = async {
        let ciphertext = ctx
            .kms
            .encrypt(sample, aad)
            .await
            .map_err(|e| format!("encrypt: {e}"))?;
        let plain = ctx
            .kms
            .decrypt(&ciphertext, aad)
            .await
            .map_err(|e| format!("decrypt: {e}"))?;
        if plain.expose_secret().as_slice() == sample {
            Ok(())
        } else {
            Err("decrypt returned other bytes than were encrypted".to_string())
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, round_trip).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("{kms_setting}: the key cannot encrypt and decrypt: {e}")),
        Err(_) => problems.push(format!(
            "{kms_setting}: the KMS did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
    problems
}

/// Runs the form checks and the probes, records them, and returns every problem. When some
/// probe failed, keeps re-probing in the background until the backends answer (or shutdown).
pub async fn run_startup_checks(ctx: &Arc<AppContext>) -> Vec<String> {
    ctx.config_health.set_form(form_problems(&ctx.settings));
    let probes = probe(ctx).await;
    let failing = !probes.is_empty();
    ctx.config_health.set_probes(probes);
    if failing {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REPROBE_EVERY) => {}
                    _ = ctx.shutdown.cancelled() => return,
                }
                let probes = probe(&ctx).await;
                let healthy = probes.is_empty();
                ctx.config_health.set_probes(probes);
                if healthy {
                    tracing::info!("backends answer again; configuration problems cleared");
                    return;
                }
            }
        });
    }
    ctx.config_health.problems()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_map(&env, 8000).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_bigquery_root_without_the_api_path_is_named() {
        let p = form_problems(&settings(&[("BIGQUERY_BASE_URL", "http://127.0.0.1:9050")]));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("BIGQUERY_BASE_URL=") && p[0].contains("/bigquery/v2"),
            "{p:?}"
        );
        assert!(form_problems(&settings(&[(
            "BIGQUERY_BASE_URL",
            "http://127.0.0.1:9050/bigquery/v2/"
        )]))
        .is_empty());
    }

    #[test]
    fn unparsable_urls_are_named() {
        let p = form_problems(&settings(&[
            ("OPENAI_BASE_URL", "not a url"),
            ("KMS_ENDPOINT", "ftp://x"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1"),
        ]));
        let text = p.join("\n");
        assert!(
            text.contains("OPENAI_BASE_URL") && text.contains("KMS_ENDPOINT"),
            "{text}"
        );
        assert!(!text.contains("ANTHROPIC_BASE_URL"), "{text}");
    }
}
