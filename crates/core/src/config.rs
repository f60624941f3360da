//! Loader for `configs/`: table lists (name, schema file, DAY partition field, clustering,
//! optional seed CSV) and their JSON schemas. No schema is written in Rust code.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::warehouse::{schema::parse_schema_json, FieldMode, FieldType, Row, TableDef, Value};

/// Problems with a config file; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

impl ConfigError {
    fn at(path: &Path, message: impl std::fmt::Display) -> Self {
        ConfigError::File {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// A `tables.yml` file: the dataset and the tables to create in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableListFile {
    pub dataset: DatasetEntry,
    pub tables: Vec<TableEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// Fixed name (`organizations`), or absent for per-org datasets named `{org_slug}_{env}`.
    #[serde(default)]
    pub name: Option<String>,
    pub description: String,
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableEntry {
    pub name: String,
    pub description: String,
    /// Schema file, relative to the table list's folder.
    pub schema: String,
    #[serde(default)]
    pub partition: Option<PartitionEntry>,
    #[serde(default)]
    pub clustering: Vec<String>,
    /// Columns looked up one row at a time (indexed on the embedded backend).
    #[serde(default)]
    pub lookup: Vec<String>,
    /// Seed CSV loaded into an empty table, relative to the table list's folder.
    #[serde(default)]
    pub seed: Option<String>,
    /// More seed CSVs, relative to `configs/` (e.g. one per provider: `openai/seed/pricing.csv`).
    #[serde(default)]
    pub seeds: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEntry {
    #[serde(rename = "type")]
    pub kind: PartitionKind,
    pub field: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum PartitionKind {
    #[serde(rename = "DAY")]
    Day,
}

/// A loaded table list: definitions ready for the warehouse, plus seed files.
#[derive(Debug, Clone)]
pub struct TableList {
    pub dataset: DatasetEntry,
    pub tables: Vec<LoadedTable>,
}

#[derive(Debug, Clone)]
pub struct LoadedTable {
    pub def: TableDef,
    /// Every seed CSV of the table, as full paths.
    pub seeds: Vec<PathBuf>,
}

impl TableList {
    /// Loads `{configs_dir}/{relative}` and every schema it names; all problems are reported.
    pub fn load(configs_dir: &Path, relative: &str) -> Result<Self, Vec<ConfigError>> {
        let path = configs_dir.join(relative);
        let text = std::fs::read_to_string(&path).map_err(|e| vec![ConfigError::at(&path, e)])?;
        let file: TableListFile = serde_saphyr::from_str(&text).map_err(|e| vec![ConfigError::at(&path, e)])?;
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut errors = Vec::new();
        let mut tables = Vec::new();
        for entry in &file.tables {
            let schema_path = folder.join(&entry.schema);
            let fields = match std::fs::read_to_string(&schema_path) {
                Ok(t) => match parse_schema_json(&t) {
                    Ok(f) => f,
                    Err(e) => {
                        errors.push(ConfigError::at(&schema_path, e));
                        continue;
                    }
                },
                Err(e) => {
                    errors.push(ConfigError::at(&schema_path, e));
                    continue;
                }
            };
            let def = TableDef {
                name: entry.name.clone(),
                description: Some(entry.description.clone()),
                fields,
                partition_field: entry.partition.as_ref().map(|p| p.field.clone()),
                clustering: entry.clustering.clone(),
                lookup_keys: entry.lookup.clone(),
            };
            if let Err(e) = def.validate() {
                errors.push(ConfigError::at(&path, e));
                continue;
            }
            let mut seeds: Vec<PathBuf> = entry.seed.iter().map(|s| folder.join(s)).collect();
            seeds.extend(entry.seeds.iter().map(|s| configs_dir.join(s)));
            for s in &seeds {
                if let Err(e) = load_seed_rows(s, &def, Utc::now()) {
                    errors.push(e);
                }
            }
            tables.push(LoadedTable { def, seeds });
        }
        if errors.is_empty() {
            Ok(TableList {
                dataset: file.dataset,
                tables,
            })
        } else {
            Err(errors)
        }
    }

    pub fn table(&self, name: &str) -> Option<&LoadedTable> {
        self.tables.iter().find(|t| t.def.name == name)
    }

    /// Every seed row of a table, optionally only those whose `provider` column matches.
    pub fn seed_rows(&self, table: &str, provider: Option<&str>) -> Result<Vec<Row>, ConfigError> {
        let Some(t) = self.table(table) else {
            return Ok(Vec::new());
        };
        let now = Utc::now();
        let mut rows = Vec::new();
        for path in &t.seeds {
            for row in load_seed_rows(path, &t.def, now)? {
                if provider.is_none_or(|p| row.string("provider").as_deref() == Some(p)) {
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }
}

/// Reads a seed CSV into typed rows: headers must be columns of the table; each cell is
/// parsed as its column's type (empty = NULL). `created_at`/`updated_at` TIMESTAMP columns
/// the CSV leaves out are set to `now`.
pub fn load_seed_rows(path: &Path, def: &TableDef, now: DateTime<Utc>) -> Result<Vec<Row>, ConfigError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| ConfigError::at(path, e))?;
    let headers = reader.headers().map_err(|e| ConfigError::at(path, e))?.clone();
    for h in &headers {
        if !def.has_column(h) {
            return Err(ConfigError::at(
                path,
                format!("column {h} is not in table {}", def.name),
            ));
        }
    }
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| ConfigError::at(path, e))?;
        let mut row = Row::new();
        for stamp in ["created_at", "updated_at"] {
            if def.field(stamp).is_some_and(|f| f.field_type == FieldType::Timestamp) {
                row.set(stamp, now);
            }
        }
        for (header, cell) in headers.iter().zip(record.iter()) {
            let Some(field) = def.field(header) else {
                continue;
            };
            let value = parse_cell(cell, field.field_type, field.mode)
                .map_err(|m| ConfigError::at(path, format!("row {}, column {header}: {m}", line + 2)))?;
            row.set(header, value);
        }
        def.check_row(&row)
            .map_err(|e| ConfigError::at(path, format!("row {}: {e}", line + 2)))?;
        rows.push(row);
    }
    Ok(rows)
}

fn parse_cell(cell: &str, ty: FieldType, mode: FieldMode) -> Result<Value, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    if mode == FieldMode::Repeated {
        return serde_json::from_str(cell)
            .map(Value::Json)
            .map_err(|e| format!("not a JSON array: {e}"));
    }
    Ok(match ty {
        FieldType::String => Value::String(cell.to_string()),
        FieldType::Integer => Value::Int(cell.parse().map_err(|_| format!("{cell:?} is not an integer"))?),
        FieldType::Float => Value::Float(cell.parse().map_err(|_| format!("{cell:?} is not a number"))?),
        FieldType::Numeric | FieldType::Bignumeric => {
            Value::Numeric(cell.parse().map_err(|_| format!("{cell:?} is not a decimal"))?)
        }
        FieldType::Boolean => match cell.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("{cell:?} is not true/false")),
        },
        FieldType::Date => {
            Value::Date(NaiveDate::parse_from_str(cell, "%Y-%m-%d").map_err(|_| format!("{cell:?} is not YYYY-MM-DD"))?)
        }
        FieldType::Timestamp | FieldType::Datetime => Value::Timestamp(
            DateTime::parse_from_rfc3339(cell)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("{cell:?} is not an RFC 3339 timestamp"))?,
        ),
        FieldType::Json | FieldType::Record => {
            Value::Json(serde_json::from_str(cell).map_err(|e| format!("not JSON: {e}"))?)
        }
        FieldType::Bytes => return Err("BYTES columns cannot be seeded from CSV".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_configs() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn shipped_table_lists_load() {
        let boot = TableList::load(&repo_configs(), "setup/bootstrap/tables.yml").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(boot.dataset.name.as_deref(), Some("organizations"));
        assert_eq!(boot.tables.len(), 15);
        let quotas = boot.table("org_usage_quotas").unwrap();
        assert_eq!(quotas.def.partition_field.as_deref(), Some("usage_date"));
        let onboard = TableList::load(&repo_configs(), "setup/organizations/onboarding/tables.yml")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(onboard.tables.iter().any(|t| !t.seeds.is_empty()));
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tables.yml"),
            "dataset: {description: d}\ntables:\n  - {name: a, description: x, schema: missing.json}\n  - {name: b, description: x, schema: b.json, clustering: [nope]}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.json"), r#"[{"name":"id","type":"STRING"}]"#).unwrap();
        let errors = TableList::load(dir.path(), "tables.yml").unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tables.yml"),
            "dataset: {description: d, colour: red}\ntables: []\n",
        )
        .unwrap();
        assert!(TableList::load(dir.path(), "tables.yml").is_err());
    }
}

/// `configs/system/providers.yml`: how each provider's credential looks and is validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRegistry {
    pub providers: Vec<ProviderEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Canonical stored name (`OPENAI`, `ANTHROPIC`, `DEEPSEEK`, `GCP_SA`).
    pub name: String,
    /// Lower-case names accepted in URLs.
    pub aliases: Vec<String>,
    /// `API_KEY` or `SERVICE_ACCOUNT_JSON`.
    pub credential_type: String,
    #[serde(default)]
    pub key_prefixes: Vec<String>,
    #[serde(default)]
    pub admin_key_prefix: Option<String>,
    pub base_url: String,
    pub base_url_env: String,
    pub validation_timeout_seconds: u64,
}

impl ProviderRegistry {
    pub fn load(configs_dir: &Path) -> Result<Self, ConfigError> {
        let path = configs_dir.join("system/providers.yml");
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::at(&path, e))?;
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::at(&path, e))
    }

    /// The provider a URL segment names (case-sensitive lower-case alias).
    pub fn by_alias(&self, alias: &str) -> Option<&ProviderEntry> {
        self.providers.iter().find(|p| p.aliases.iter().any(|a| a == alias))
    }

    /// Every alias, for error messages.
    pub fn aliases(&self) -> Vec<&str> {
        self.providers
            .iter()
            .flat_map(|p| p.aliases.iter().map(String::as_str))
            .collect()
    }
}

impl ProviderRegistry {
    /// Applies base-URL overrides (variable name → URL, from the settings).
    pub fn with_overrides(mut self, overrides: &std::collections::HashMap<String, String>) -> Self {
        for p in &mut self.providers {
            if let Some(url) = overrides.get(&p.base_url_env) {
                p.base_url = url.clone();
            }
        }
        self
    }
}

impl ProviderEntry {
    /// The base URL to call (the real service unless overridden in the settings), as the
    /// host root the processors append `/v1/…` (or `/user/balance`) to. Each SDK's own
    /// `*_BASE_URL` form is accepted: the OpenAI SDK's `https://api.openai.com/v1` (and the
    /// same for DeepSeek's OpenAI-compatible `https://api.deepseek.com/v1`), the Anthropic
    /// SDK's bare `https://api.anthropic.com` — a trailing `/v1` (or `/v1/`) is dropped for
    /// API-key providers, so both forms reach the same endpoints. For the service-account
    /// provider (BigQuery), the client libraries' `…/bigquery/v2` form and the bare host both
    /// work: the processors append `/bigquery/v2/…` themselves.
    pub fn effective_base_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        if self.credential_type == "API_KEY" {
            base.strip_suffix("/v1").unwrap_or(base).to_string()
        } else {
            base.strip_suffix("/bigquery/v2").unwrap_or(base).to_string()
        }
    }
}

#[cfg(test)]
mod provider_tests {
    use super::*;

    #[test]
    fn shipped_provider_registry_loads() {
        let r = ProviderRegistry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")).unwrap();
        assert_eq!(r.by_alias("claude").map(|p| p.name.as_str()), Some("ANTHROPIC"));
        assert_eq!(r.by_alias("gcp_sa").map(|p| p.name.as_str()), Some("GCP_SA"));
        assert!(r.by_alias("OPENAI").is_none(), "aliases are lower case");
    }

    #[test]
    fn each_sdks_base_url_form_reaches_the_same_root() {
        let r = ProviderRegistry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")).unwrap();
        let with = |alias: &str, url: &str| {
            let mut p = r.by_alias(alias).unwrap().clone();
            p.base_url = url.to_string();
            p.effective_base_url()
        };
        for url in [
            "https://api.openai.com/v1",
            "https://api.openai.com/v1/",
            "https://api.openai.com",
            "https://api.openai.com/",
        ] {
            assert_eq!(with("openai", url), "https://api.openai.com", "{url}");
        }
        assert_eq!(
            with("anthropic", "https://api.anthropic.com"),
            "https://api.anthropic.com"
        );
        assert_eq!(
            with("deepseek", "https://api.deepseek.com/v1"),
            "https://api.deepseek.com"
        );
        for url in [
            "https://bigquery.googleapis.com/bigquery/v2",
            "https://bigquery.googleapis.com/",
        ] {
            assert_eq!(with("gcp_sa", url), "https://bigquery.googleapis.com", "{url}");
        }
        assert_eq!(
            with("openai", "http://127.0.0.1:9/proxy/v1"),
            "http://127.0.0.1:9/proxy"
        );
        assert_eq!(
            with("gcp", "https://bigquery.googleapis.com/v1"),
            "https://bigquery.googleapis.com/v1",
            "not an SDK base"
        );
    }
}
