//! `{name}` placeholders in step configs: finding them, and substituting them before a step
//! runs. A placeholder nothing defines is an error, never left in place. `{{name}}` (a table
//! reference in SQL, qualified by the warehouse) is not a placeholder and is left as it is.

use std::{collections::BTreeMap, sync::OnceLock};

use regex::Regex;

fn placeholder_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"\{\{[a-z][a-z0-9_]*\}\}|\{([a-z][a-z0-9_]*)\}").unwrap_or_else(|e| panic!("static regex: {e}"))
    })
}

/// Placeholder names used in one string.
pub fn placeholders_in_str(s: &str) -> Vec<String> {
    placeholder_re()
        .captures_iter(s)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
        .collect()
}

/// Placeholder names used anywhere in a JSON value (strings only; keys are not templated).
pub fn placeholders(value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(value, &mut |s| out.extend(placeholders_in_str(s)));
    out.sort();
    out.dedup();
    out
}

fn walk(value: &serde_json::Value, f: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, f)),
        serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, f)),
        _ => {}
    }
}

/// Replaces every placeholder in every string of `value`. Fails listing all undefined names.
pub fn substitute(value: &serde_json::Value, vars: &BTreeMap<String, String>) -> Result<serde_json::Value, String> {
    let missing: Vec<String> = placeholders(value)
        .into_iter()
        .filter(|p| !vars.contains_key(p))
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|m| format!("{{{m}}}")).collect();
        return Err(format!("unresolved placeholders: {}", names.join(", ")));
    }
    Ok(replace(value, vars))
}

fn replace(value: &serde_json::Value, vars: &BTreeMap<String, String>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        J::String(s) => J::String(
            placeholder_re()
                .replace_all(s, |c: &regex::Captures<'_>| match c.get(1) {
                    Some(name) => vars.get(name.as_str()).cloned().unwrap_or_default(),
                    None => c[0].to_string(),
                })
                .into_owned(),
        ),
        J::Array(a) => J::Array(a.iter().map(|v| replace(v, vars)).collect()),
        J::Object(o) => J::Object(o.iter().map(|(k, v)| (k.clone(), replace(v, vars))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn double_braced_table_references_are_not_placeholders() {
        let vars: BTreeMap<String, String> = [("date".to_string(), "2026-01-02".to_string())].into();
        let cfg = json!("SELECT * FROM {{usage}} WHERE d = '{date}'");
        assert_eq!(placeholders(&cfg), vec!["date".to_string()]);
        assert_eq!(
            substitute(&cfg, &vars).unwrap(),
            json!("SELECT * FROM {{usage}} WHERE d = '2026-01-02'")
        );
    }

    #[test]
    fn substitutes_everywhere_and_reports_all_missing() {
        let vars: BTreeMap<String, String> = [("org_slug", "acme"), ("date", "2026-01-02")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cfg = json!({"table": "{org_slug}_raw", "list": ["{date}", 3], "nested": {"x": "a {org_slug} b"}});
        assert_eq!(
            substitute(&cfg, &vars).unwrap(),
            json!({"table": "acme_raw", "list": ["2026-01-02", 3], "nested": {"x": "a acme b"}})
        );
        let err = substitute(&json!({"a": "{start_date}", "b": "{end_date}"}), &vars).unwrap_err();
        assert!(err.contains("{start_date}") && err.contains("{end_date}"), "{err}");
    }

    #[test]
    fn json_braces_are_not_placeholders() {
        assert!(placeholders(&json!({"sql": "SELECT '{\"a\": 1}'"})).is_empty());
    }
}
