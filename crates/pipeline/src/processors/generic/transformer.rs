//! `generic.local_bq_transformer`: a SQL transform inside the org's dataset.
//!
//! The step's `sql` is one `SELECT` (or `WITH … SELECT`) whose tables are named only as
//! `{{table}}` (qualified to the org's dataset by the warehouse; any other table reference,
//! backtick, `;` or statement keyword is refused when the step is built). Values come in as bound
//! parameters (`@name`, from `params`), never spliced into the text. The result is written to
//! `destination.table` (created from `destination.schema` if missing) with a write mode:
//! `append`, `replace_partition` (the org's rows of `destination.date` in `partition_column`
//! replaced atomically; result rows of other orgs or days are never written), or `truncate`
//! (the table's rows replaced atomically).

use async_trait::async_trait;
use chrono::NaiveDate;
use cloudact_core::warehouse::{check_name, Params, Statement, Value};
use serde::Deserialize;

use crate::{
    context::StepContext,
    processors::example::{ensure_day_table, parse_day},
    registry::{Processor, ProcessorDef, ProcessorError, StepOutput},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    pub dataset: String,
    pub sql: String,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, Param>,
    pub destination: Destination,
}

/// A bound parameter: a JSON scalar (string, integer, float, bool), or `{type, value}` with
/// `type` one of STRING, INT64, FLOAT64, NUMERIC, BOOL, DATE.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Param {
    Typed {
        #[serde(rename = "type")]
        kind: String,
        value: serde_json::Value,
    },
    Scalar(serde_json::Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    Append,
    ReplacePartition,
    Truncate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub table: String,
    /// Schema file (under `configs/`) to create the table from if it does not exist.
    pub schema: Option<String>,
    pub write_mode: WriteMode,
    /// DATE column the partition is replaced by (`replace_partition`).
    pub partition_column: Option<String>,
    /// The day replaced (`replace_partition`).
    pub date: Option<String>,
    /// Columns the SELECT produces, in order (default: every column of the schema file).
    #[serde(default)]
    pub columns: Vec<String>,
}

pub struct Transformer(TransformConfig);

const FORBIDDEN: [&str; 16] = [
    "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "DROP", "ALTER", "TRUNCATE", "GRANT", "REVOKE", "EXPORT", "LOAD",
    "CALL", "EXECUTE", "DECLARE", "ATTACH",
];

/// The names a `WITH` clause defines: `WITH a AS (…), b AS (…)` (optionally `RECURSIVE`),
/// at any nesting depth. Only these may follow FROM/JOIN unbraced; an alias (`x AS k`) is
/// not a table and never counts.
fn cte_names(words: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if !w.eq_ignore_ascii_case("WITH") {
            continue;
        }
        // Walk the definitions: name AS ( … ) [, name AS ( … )]*
        let mut j = i + 1;
        if words.get(j).is_some_and(|w| w.eq_ignore_ascii_case("RECURSIVE")) {
            j += 1;
        }
        while let (Some(name), Some(as_kw), Some(open)) = (words.get(j), words.get(j + 1), words.get(j + 2)) {
            if !as_kw.eq_ignore_ascii_case("AS") || *open != "(" {
                break;
            }
            names.push(name.to_ascii_lowercase());
            // Skip the parenthesised body.
            let mut depth = 0usize;
            let mut k = j + 2;
            while let Some(t) = words.get(k) {
                match *t {
                    "(" => depth += 1,
                    ")" => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            if words.get(k + 1) == Some(&",") {
                j = k + 2;
            } else {
                break;
            }
        }
    }
    names
}

/// Refuses anything but one SELECT over `{{table}}` references (and the CTEs it defines).
pub fn check_select(sql: &str) -> Result<(), String> {
    // Drop string literals and comments before looking at words.
    let mut text = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let quote = c;
                let mut closed = false;
                while let Some(n) = chars.next() {
                    if n == '\\' {
                        chars.next();
                    } else if n == quote {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err("unterminated string literal".into());
                }
                text.push_str(" '' ");
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                text.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => return Err("block comments are not allowed".into()),
            '`' => return Err("backtick identifiers are not allowed; name tables as {{table}}".into()),
            ';' => return Err("one statement only (no ';')".into()),
            _ => text.push(c),
        }
    }
    let spaced = text.replace('(', " ( ").replace(')', " ) ").replace(',', " , ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let first = words.first().map(|w| w.to_ascii_uppercase()).unwrap_or_default();
    if first != "SELECT" && first != "WITH" {
        return Err("the transform must be a SELECT (or WITH … SELECT)".into());
    }
    let ctes = cte_names(&words);
    // FROM lists are tracked (by parenthesis depth) so a comma join cannot name a table.
    let mut depth = 0usize;
    let mut from_depths: Vec<usize> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let upper = w.to_ascii_uppercase();
        if FORBIDDEN.contains(&upper.as_str()) {
            return Err(format!("{upper} is not allowed in a transform"));
        }
        match upper.as_str() {
            "(" => depth += 1,
            ")" => {
                from_depths.retain(|d| *d < depth);
                depth = depth.saturating_sub(1);
            }
            "WHERE" | "GROUP" | "ORDER" | "HAVING" | "LIMIT" | "WINDOW" | "QUALIFY" | "UNION" | "EXCEPT"
            | "INTERSECT" => from_depths.retain(|d| *d != depth),
            "," if from_depths.contains(&depth) => {
                return Err("comma joins are not allowed; use JOIN {{table}}".into());
            }
            _ => {}
        }
        if upper == "FROM" || upper == "JOIN" {
            if upper == "FROM" {
                from_depths.push(depth);
            }
            let Some(next) = words.get(i + 1) else {
                return Err(format!("{upper} without a table"));
            };
            // A parenthesis after FROM/JOIN must open a subquery (a parenthesised join list
            // would hide its table names from these checks).
            let subquery = *next == "("
                && words
                    .get(i + 2)
                    .is_some_and(|w| w.eq_ignore_ascii_case("SELECT") || w.eq_ignore_ascii_case("WITH"));
            if !next.starts_with("{{") && next.contains(['.', '-', '[', ':']) {
                return Err(format!(
                    "{upper} {next}: qualified or dashed table names are not allowed; name tables as {{{{table}}}} (the org's own dataset)"
                ));
            }
            let ok = (next.starts_with("{{") && next.ends_with("}}") && !next[2..next.len() - 2].contains(['{', '}']))
                || subquery
                || next.eq_ignore_ascii_case("UNNEST")
                || ctes.contains(&next.to_ascii_lowercase());
            if !ok && *next == "(" {
                return Err(format!("a parenthesis after {upper} must open a subquery (SELECT …)"));
            }
            if !ok {
                return Err(format!(
                    "table {next:?} must be written {{{{{next}}}}} (tables of the org's dataset only)"
                ));
            }
        }
    }
    Ok(())
}

fn to_value(name: &str, p: &Param) -> Result<Value, String> {
    use serde_json::Value as J;
    let bad = |why: &str| format!("parameter {name}: {why}");
    Ok(match p {
        Param::Scalar(J::String(s)) => Value::String(s.clone()),
        Param::Scalar(J::Bool(b)) => Value::Bool(*b),
        Param::Scalar(J::Number(n)) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or_else(|| bad("not a number"))?),
        },
        Param::Scalar(_) => return Err(bad("must be a string, number or bool")),
        Param::Typed { kind, value } => {
            let text = match value {
                J::String(s) => s.clone(),
                other => other.to_string(),
            };
            match kind.to_ascii_uppercase().as_str() {
                "STRING" => Value::String(text),
                "INT64" | "INTEGER" => Value::Int(text.parse().map_err(|_| bad("not an integer"))?),
                "FLOAT64" | "FLOAT" => Value::Float(text.parse().map_err(|_| bad("not a number"))?),
                "NUMERIC" => Value::Numeric(text.parse().map_err(|_| bad("not a decimal"))?),
                "BOOL" | "BOOLEAN" => Value::Bool(text.parse().map_err(|_| bad("not true/false"))?),
                "DATE" => Value::Date(NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| bad("not YYYY-MM-DD"))?),
                other => return Err(bad(&format!("type {other} is not supported"))),
            }
        }
    })
}

impl ProcessorDef for Transformer {
    const PS_TYPE: &'static str = "generic.local_bq_transformer";
    type Config = TransformConfig;

    fn build(config: TransformConfig) -> Result<Self, String> {
        check_select(&config.sql)?;
        let d = &config.destination;
        check_name(&d.table).map_err(|e| e.to_string())?;
        for c in d.columns.iter().chain(&d.partition_column) {
            check_name(c).map_err(|e| e.to_string())?;
        }
        if d.schema.is_none() && d.columns.is_empty() {
            return Err("destination needs schema (to create the table) or columns".into());
        }
        if d.write_mode == WriteMode::ReplacePartition && (d.partition_column.is_none() || d.date.is_none()) {
            return Err("replace_partition needs destination.partition_column and destination.date".into());
        }
        for name in config.params.keys() {
            check_name(name).map_err(|e| e.to_string())?;
            if name.starts_with("__") {
                return Err(format!("parameter {name}: names starting with __ are reserved"));
            }
        }
        Ok(Transformer(config))
    }
}

#[async_trait]
impl Processor for Transformer {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, ProcessorError> {
        let c = &self.0;
        let d = &c.destination;
        let org = ctx.require_org()?;
        // Values are typed here, after placeholders were substituted.
        let mut bound = Params::new();
        for (name, p) in &c.params {
            bound
                .0
                .insert(name.clone(), to_value(name, p).map_err(ProcessorError::Invalid)?);
        }
        let day = match (d.write_mode, &d.date) {
            (WriteMode::ReplacePartition, Some(date)) => Some(parse_day(date)?),
            _ => None,
        };
        if c.dataset != ctx.services.settings.org_dataset(&org) {
            return Err(ProcessorError::Invalid(format!(
                "a transform runs in its org's dataset only, not {}",
                c.dataset
            )));
        }
        let wh = ctx.warehouse();
        let columns: Vec<String> = match &d.schema {
            Some(schema) => {
                let partition = d.partition_column.as_deref().unwrap_or("");
                let def = ensure_day_table(ctx, &c.dataset, &d.table, schema, partition, &["org_slug"]).await?;
                if d.columns.is_empty() {
                    def.fields.iter().map(|f| f.name.clone()).collect()
                } else {
                    d.columns.clone()
                }
            }
            None => d.columns.clone(),
        };
        if !wh.table_exists(&c.dataset, &d.table).await? {
            return Err(ProcessorError::Invalid(format!(
                "destination table {} does not exist and no schema was given",
                d.table
            )));
        }
        let cols = columns.join(", ");
        let params = bound.with("__org", org.as_str());
        let (t, sql) = (&d.table, &c.sql);
        let statements = match (d.write_mode, &d.partition_column, day) {
            (WriteMode::Append, _, _) => vec![Statement::new(
                format!("INSERT INTO {{{{{t}}}}} ({cols}) {sql}"),
                params,
            )],
            (WriteMode::Truncate, _, _) => vec![
                Statement::new(format!("DELETE FROM {{{{{t}}}}} WHERE TRUE"), Params::new()),
                Statement::new(format!("INSERT INTO {{{{{t}}}}} ({cols}) {sql}"), params),
            ],
            (WriteMode::ReplacePartition, Some(pc), Some(day)) => {
                let params = params.with("__day", day);
                vec![
                    Statement::new(
                        format!("DELETE FROM {{{{{t}}}}} WHERE org_slug = @__org AND {pc} = @__day"),
                        params.clone(),
                    ),
                    Statement::new(
                        format!(
                            "INSERT INTO {{{{{t}}}}} ({cols}) SELECT {cols} FROM ({sql}) AS transformed \
                             WHERE transformed.org_slug = @__org AND transformed.{pc} = @__day"
                        ),
                        params,
                    ),
                ]
            }
            _ => {
                return Err(ProcessorError::Invalid(
                    "replace_partition needs partition_column and date".into(),
                ))
            }
        };
        let counts = wh.execute_atomic(&c.dataset, &statements).await?;
        let inserted = counts.last().copied().unwrap_or(0);
        let replaced = if statements.len() > 1 {
            counts.first().copied().unwrap_or(0)
        } else {
            0
        };
        ctx.add_rows(inserted);
        Ok(StepOutput {
            rows_processed: inserted,
            output: serde_json::json!({"table": t, "write_mode": format!("{:?}", d.write_mode).to_lowercase(),
                                       "inserted": inserted, "replaced": replaced, "date": d.date}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_over_qualified_tables_pass() {
        assert!(check_select(
            "SELECT org_slug, SUM(x) AS s FROM {{t}} u JOIN {{p}} p ON u.a = p.a WHERE d = @day GROUP BY 1"
        )
        .is_ok());
        assert!(check_select("WITH x AS (SELECT * FROM {{t}}) SELECT * FROM x").is_ok());
        assert!(check_select(
            "WITH a AS (SELECT * FROM {{t}} WHERE (b IN (1, 2))), c AS (SELECT * FROM a) SELECT * FROM c JOIN a ON TRUE"
        )
        .is_ok());
        assert!(check_select("SELECT * FROM (WITH x AS (SELECT 1 AS n FROM {{t}}) SELECT * FROM x) AS y").is_ok());
        assert!(check_select("SELECT a, b FROM {{t}} WHERE c IN (1, 2) GROUP BY a, b ORDER BY a, b").is_ok());
        assert!(check_select("SELECT COALESCE(a, 0), SUM(b) FROM (SELECT a, b FROM {{t}}) AS x GROUP BY 1").is_ok());
        assert!(
            check_select("SELECT 'DELETE FROM other' AS s FROM {{t}}").is_ok(),
            "words in strings are data"
        );
        for bad in [
            "DELETE FROM {{t}}",
            "SELECT * FROM other_dataset.t",
            "SELECT * FROM `proj.ds.t`",
            "SELECT * FROM {{t}}; DROP TABLE {{t}}",
            "SELECT * FROM {{t}} JOIN secrets s ON TRUE",
            "SELECT * FROM {{t}} /* hidden */",
            "SELECT * FROM {{t}} WHERE a = 'open",
            "INSERT INTO {{t}} SELECT 1",
            "SELECT * FROM {{t}} u, other_ds.secrets s",
            "SELECT * FROM (SELECT a FROM {{t}}), secrets",
            "SELECT * FROM (other_ds.secrets CROSS JOIN {{t}})",
            "SELECT * FROM ({{t}}, other_ds.secrets)",
            // An alias is not a CTE: these used to pass because `k` / `m` precede `AS`.
            "SELECT * FROM {{t}} JOIN organizations.org_api_keys AS k ON TRUE",
            "SELECT * FROM {{t}} JOIN org_api_keys AS org_api_keys ON TRUE",
            "SELECT (SELECT sql FROM sqlite_master) AS m FROM {{t}}",
            "SELECT * FROM {{t}} JOIN pragma_table_info AS p ON TRUE",
            "SELECT * FROM {{t}} JOIN sqlite_master AS sqlite_master ON TRUE",
            "SELECT * FROM `other-project.ds.t`",
            "SELECT * FROM other-project.ds.t",
            "WITH x AS (SELECT * FROM {{t}}) SELECT * FROM x JOIN ds.x AS y ON TRUE",
            "SELECT * FROM {{t}}.x",
        ] {
            assert!(check_select(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_are_typed() {
        let p: Param = serde_json::from_value(serde_json::json!({"type": "DATE", "value": "2026-01-02"})).unwrap();
        assert_eq!(
            to_value("d", &p).unwrap(),
            Value::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())
        );
        let p: Param = serde_json::from_value(serde_json::json!(5)).unwrap();
        assert_eq!(to_value("n", &p).unwrap(), Value::Int(5));
        let p: Param = serde_json::from_value(serde_json::json!({"type": "DATE", "value": "x' OR 1=1"})).unwrap();
        assert!(to_value("d", &p).is_err());
    }
}
