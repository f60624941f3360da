//! The pipeline catalogue: every spec under `configs/`, loaded and validated together.
//!
//! Paths map to specs one to one: `configs/{provider}/{domain}/{pipeline}.yml` and
//! `configs/{provider}/{pipeline}.yml` are data pipelines; `configs/setup/**/pipeline.yml`
//! are the setup pipelines (bootstrap, dryrun, onboarding). `configs/system/`, `tables.yml`
//! files and `schemas/`/`seed/` folders are not specs.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

use crate::{registry::Registry, spec::PipelineSpec};

/// One spec in the catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogEntry {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `setup` or `data`.
    pub kind: &'static str,
    pub provider: String,
    pub domain: Option<String>,
    pub pipeline: String,
    /// Path relative to `configs/`.
    pub path: String,
    pub schedule: Option<String>,
    pub required_integration: Option<String>,
    pub enabled: bool,
    /// Other run paths of this spec (without `.yml`).
    pub aliases: Vec<String>,
    pub steps: usize,
    pub timeout_minutes: u32,
    #[serde(skip)]
    pub spec: Arc<PipelineSpec>,
}

/// All specs, by relative path.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    by_path: HashMap<String, usize>,
    /// `{alias}.yml` → entry.
    by_alias: HashMap<String, usize>,
}

impl Catalog {
    /// Loads and validates every spec under `configs_dir`; returns all problems at once.
    pub fn load(configs_dir: &Path, registry: &Registry) -> Result<Self, Vec<String>> {
        let mut files = Vec::new();
        if let Err(e) = collect_specs(configs_dir, configs_dir, &mut files) {
            return Err(vec![format!("{}: {e}", configs_dir.display())]);
        }
        files.sort();
        let mut problems = Vec::new();
        let mut catalog = Catalog::default();
        let mut ids: HashMap<String, String> = HashMap::new();
        for rel in files {
            let full = configs_dir.join(&rel);
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            let text = match std::fs::read_to_string(&full) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{rel_str}: {e}"));
                    continue;
                }
            };
            let spec = match PipelineSpec::from_yaml(&text) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{rel_str}: {e}"));
                    continue;
                }
            };
            for p in spec.validate(registry) {
                problems.push(format!("{rel_str}: {p}"));
            }
            if let Some(other) = ids.insert(spec.pipeline_id.clone(), rel_str.clone()) {
                problems.push(format!(
                    "{rel_str}: pipeline_id {} is also used by {other}",
                    spec.pipeline_id
                ));
            }
            let segments: Vec<&str> = rel_str
                .trim_end_matches(".yml")
                .trim_end_matches(".yaml")
                .split('/')
                .collect();
            let kind = if segments.first() == Some(&"setup") {
                "setup"
            } else {
                "data"
            };
            if kind == "data" && !(2..=3).contains(&segments.len()) {
                problems.push(format!(
                    "{rel_str}: data pipelines live at {{provider}}/{{pipeline}}.yml or {{provider}}/{{domain}}/{{pipeline}}.yml"
                ));
                continue;
            }
            let (provider, domain, pipeline) = match (kind, segments.as_slice()) {
                ("setup", s) => ("setup".to_string(), None, s[s.len().saturating_sub(2)].to_string()),
                (_, [p, n]) => (p.to_string(), None, n.to_string()),
                (_, [p, d, n]) => (p.to_string(), Some(d.to_string()), n.to_string()),
                _ => continue,
            };
            let entry = CatalogEntry {
                id: spec.pipeline_id.clone(),
                name: spec.name.clone().unwrap_or_else(|| spec.pipeline_id.clone()),
                description: spec.description.clone(),
                kind,
                provider,
                domain,
                pipeline,
                path: rel_str.clone(),
                schedule: spec.schedule.clone(),
                required_integration: spec.required_integration.clone(),
                enabled: spec.enabled,
                aliases: spec.aliases.clone(),
                steps: spec.steps.len(),
                timeout_minutes: spec.timeout_minutes,
                spec: Arc::new(spec),
            };
            catalog.by_path.insert(rel_str, catalog.entries.len());
            catalog.entries.push(entry);
        }
        // Aliases, once every real path is known: an alias never shadows a spec's own path
        // or another alias.
        let mut alias_owner: HashMap<String, String> = HashMap::new();
        for (i, entry) in catalog.entries.iter().enumerate() {
            for alias in &entry.spec.aliases {
                let key = format!("{alias}.yml");
                if catalog.by_path.contains_key(&key) {
                    problems.push(format!("{}: alias {alias} is the path of configs/{key}", entry.path));
                } else if let Some(other) = alias_owner.insert(key.clone(), entry.path.clone()) {
                    problems.push(format!("{}: alias {alias} is also an alias of {other}", entry.path));
                } else {
                    catalog.by_alias.insert(key, i);
                }
            }
        }
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(problems)
        }
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The spec at a path relative to `configs/` (e.g. `setup/bootstrap/pipeline.yml`).
    pub fn by_path(&self, rel: &str) -> Option<&CatalogEntry> {
        self.by_path.get(rel).map(|&i| &self.entries[i])
    }

    /// The spec a run path names: its own path (`openai/cost/usage_cost.yml`) or one of its
    /// aliases (`openai/usage_cost.yml`).
    pub fn by_run_path(&self, rel: &str) -> Option<&CatalogEntry> {
        self.by_path
            .get(rel)
            .or_else(|| self.by_alias.get(rel))
            .map(|&i| &self.entries[i])
    }

    pub fn by_id(&self, id: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// A setup spec that must exist (a start-up invariant, checked by `require`).
    pub fn require(&self, rel: &str) -> Result<Arc<PipelineSpec>, String> {
        self.by_path(rel)
            .map(|e| e.spec.clone())
            .ok_or_else(|| format!("configs/{rel} is missing"))
    }
}

fn collect_specs(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type()?.is_dir() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            if rel == Path::new("system") || name == "schemas" || name == "seed" || name.starts_with('.') {
                continue;
            }
            collect_specs(root, &path, out)?;
        } else if (name.ends_with(".yml") || name.ends_with(".yaml")) && name != "tables.yml" {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processors::register_all;

    /// Every spec shipped in `configs/` loads and validates.
    #[test]
    fn every_shipped_spec_is_valid() {
        let mut registry = Registry::default();
        register_all(&mut registry);
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let catalog = Catalog::load(&configs, &registry).unwrap_or_else(|p| panic!("invalid specs:\n{}", p.join("\n")));
        for setup in [
            "setup/bootstrap/pipeline.yml",
            "setup/organizations/dryrun/pipeline.yml",
            "setup/organizations/onboarding/pipeline.yml",
        ] {
            assert!(catalog.require(setup).is_ok(), "{setup}");
        }
    }

    /// The run paths the original system documented resolve to their canonical specs.
    #[test]
    fn documented_run_paths_resolve_through_aliases() {
        let mut registry = Registry::default();
        register_all(&mut registry);
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let catalog = Catalog::load(&configs, &registry).unwrap_or_else(|p| panic!("invalid specs:\n{}", p.join("\n")));
        for (path, id) in [
            ("gcp/cost/billing", "gcp_billing"),
            ("gcp/cost/cost_billing", "gcp_billing"),
            ("gcp/billing", "gcp_billing"),
            ("openai/cost/usage_cost", "openai_usage_cost"),
            ("openai/usage_cost", "openai_usage_cost"),
            ("anthropic/usage_cost", "anthropic_usage_cost"),
            ("anthropic/cost/usage_cost", "anthropic_usage_cost"),
        ] {
            let e = catalog
                .by_run_path(&format!("{path}.yml"))
                .unwrap_or_else(|| panic!("{path}"));
            assert_eq!(e.id, id, "{path}");
        }
        assert!(
            catalog.by_path("gcp/billing.yml").is_none(),
            "an alias is not a spec path"
        );
    }

    #[test]
    fn an_alias_colliding_with_a_path_or_another_alias_is_refused() {
        let mut registry = Registry::default();
        register_all(&mut registry);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("example")).unwrap();
        let spec = |id: &str, aliases: &str| {
            format!("pipeline_id: {id}\naliases: {aliases}\nsteps:\n  - {{step_id: s, ps_type: example.noop}}\n")
        };
        std::fs::write(
            dir.path().join("example/a.yml"),
            spec("a", "[example/b, example/shared]"),
        )
        .unwrap();
        std::fs::write(dir.path().join("example/b.yml"), spec("b", "[example/shared]")).unwrap();
        std::fs::write(dir.path().join("example/c.yml"), spec("c", "[Example/Bad]")).unwrap();
        let text = Catalog::load(dir.path(), &registry).unwrap_err().join("\n");
        assert!(
            text.contains("alias example/b is the path of configs/example/b.yml"),
            "{text}"
        );
        assert!(
            text.contains("alias example/shared is also an alias of example/a.yml"),
            "{text}"
        );
        assert!(text.contains("alias \"Example/Bad\" must be"), "{text}");
    }

    #[test]
    fn problems_from_many_files_are_reported_together() {
        let mut registry = Registry::default();
        register_all(&mut registry);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("openai/cost")).unwrap();
        std::fs::write(dir.path().join("openai/cost/a.yml"), "pipeline_id: a\nsteps: []\n").unwrap();
        std::fs::write(
            dir.path().join("openai/b.yml"),
            "pipeline_id: b\nsteps:\n  - {step_id: s, ps_type: nope}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("top.yml"),
            "pipeline_id: c\nsteps:\n  - {step_id: s, ps_type: nope}\n",
        )
        .unwrap();
        let problems = Catalog::load(dir.path(), &registry).unwrap_err();
        let text = problems.join("\n");
        assert!(
            text.contains("openai/cost/a.yml") && text.contains("openai/b.yml") && text.contains("top.yml"),
            "{text}"
        );
    }
}

/// The catalogue a running service serves from: a [`Catalog`] that can be replaced whole
/// (`POST /api/v1/admin/reload-configs`, SIGHUP). Readers get owned entries (their specs are
/// `Arc`s), so a run keeps the spec it started with while a reload swaps in the next one.
#[derive(Debug)]
pub struct LiveCatalog {
    current: std::sync::RwLock<Arc<Catalog>>,
}

/// What a reload changed.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub pipelines: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl LiveCatalog {
    pub fn new(catalog: Catalog) -> Self {
        LiveCatalog {
            current: std::sync::RwLock::new(Arc::new(catalog)),
        }
    }

    /// The catalogue as it is now.
    pub fn snapshot(&self) -> Arc<Catalog> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn entries(&self) -> Vec<CatalogEntry> {
        self.snapshot().entries().to_vec()
    }

    pub fn by_path(&self, rel: &str) -> Option<CatalogEntry> {
        self.snapshot().by_path(rel).cloned()
    }

    pub fn by_run_path(&self, rel: &str) -> Option<CatalogEntry> {
        self.snapshot().by_run_path(rel).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<CatalogEntry> {
        self.snapshot().by_id(id).cloned()
    }

    pub fn require(&self, rel: &str) -> Result<Arc<PipelineSpec>, String> {
        self.snapshot().require(rel)
    }

    /// Loads and validates every spec again; swaps the new catalogue in only if all of them
    /// are valid (the old one stays on any problem, and every problem is returned).
    pub fn reload(&self, configs_dir: &Path, registry: &Registry) -> Result<ReloadReport, Vec<String>> {
        let next = Catalog::load(configs_dir, registry)?;
        let old = self.snapshot();
        let ids = |c: &Catalog| -> HashMap<String, String> {
            c.entries()
                .iter()
                .map(|e| (e.path.clone(), format!("{:?}", e.spec)))
                .collect()
        };
        let (before, after) = (ids(&old), ids(&next));
        let mut added: Vec<String> = after.keys().filter(|k| !before.contains_key(*k)).cloned().collect();
        let mut removed: Vec<String> = before.keys().filter(|k| !after.contains_key(*k)).cloned().collect();
        let mut changed: Vec<String> = after
            .iter()
            .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
            .map(|(k, _)| k.clone())
            .collect();
        added.sort();
        removed.sort();
        changed.sort();
        let report = ReloadReport {
            pipelines: next.entries().len(),
            added,
            removed,
            changed,
        };
        match self.current.write() {
            Ok(mut c) => *c = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        Ok(report)
    }
}
