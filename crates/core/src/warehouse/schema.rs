//! Table definitions in BigQuery's JSON schema format (name/type/mode/fields), plus the
//! partitioning and clustering that come from the table list in `configs/`.

use serde::{Deserialize, Serialize};

use super::{Row, Value, WarehouseError};

/// A BigQuery column type (legacy and standard SQL names both accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FieldType {
    #[serde(alias = "STRING")]
    String,
    #[serde(alias = "INT64", alias = "INTEGER")]
    Integer,
    #[serde(alias = "FLOAT64", alias = "FLOAT")]
    Float,
    Numeric,
    Bignumeric,
    #[serde(alias = "BOOL", alias = "BOOLEAN")]
    Boolean,
    Bytes,
    Date,
    Timestamp,
    Datetime,
    Json,
    #[serde(alias = "STRUCT", alias = "RECORD")]
    Record,
}

/// NULLABLE / REQUIRED / REPEATED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FieldMode {
    #[default]
    Nullable,
    Required,
    Repeated,
}

/// One column of a table schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSchema {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub mode: FieldMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldSchema>,
}

/// A table to create: columns plus optional DAY partitioning and clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub name: String,
    pub description: Option<String>,
    pub fields: Vec<FieldSchema>,
    /// Column partitioned by DAY (a DATE or TIMESTAMP column).
    pub partition_field: Option<String>,
    pub clustering: Vec<String>,
    /// Columns looked up one row at a time (ids, claim tokens): the embedded backend gives
    /// each its own index; BigQuery has no indexes and ignores them.
    pub lookup_keys: Vec<String>,
}

impl TableDef {
    pub fn field(&self, name: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn has_column(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    /// Checks names, duplicate columns, and that partition/clustering columns exist.
    pub fn validate(&self) -> Result<(), WarehouseError> {
        super::check_name(&self.name)?;
        let mut seen = std::collections::HashSet::new();
        for f in &self.fields {
            super::check_column_name(&f.name)?;
            if !seen.insert(f.name.to_ascii_lowercase()) {
                return Err(WarehouseError::Schema(format!(
                    "table {}: column {} is declared twice",
                    self.name, f.name
                )));
            }
        }
        if self.fields.is_empty() {
            return Err(WarehouseError::Schema(format!("table {} has no columns", self.name)));
        }
        if let Some(p) = &self.partition_field {
            match self.field(p) {
                Some(f)
                    if matches!(
                        f.field_type,
                        FieldType::Date | FieldType::Timestamp | FieldType::Datetime
                    ) => {}
                Some(_) => {
                    return Err(WarehouseError::Schema(format!(
                        "table {}: partition column {p} must be DATE or TIMESTAMP",
                        self.name
                    )))
                }
                None => {
                    return Err(WarehouseError::Schema(format!(
                        "table {}: partition column {p} does not exist",
                        self.name
                    )))
                }
            }
        }
        for c in self.clustering.iter().chain(&self.lookup_keys) {
            if !self.has_column(c) {
                return Err(WarehouseError::Schema(format!(
                    "table {}: clustering column {c} does not exist",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Checks that the table has the org and date columns a partition load names.
    pub fn check_partition_columns(&self, key: &super::PartitionKey) -> Result<(), WarehouseError> {
        for column in [&key.org_column, &key.date_column] {
            if !self.has_column(column) {
                return Err(WarehouseError::Schema(format!(
                    "table {} has no column {column}",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Checks one row against the schema before it is sent: no unknown columns, REQUIRED
    /// columns present and non-null, and each value of a type the column can hold.
    pub fn check_row(&self, row: &Row) -> Result<(), WarehouseError> {
        self.plan_columns(row.columns())?.check(row)
    }

    /// Resolves a row shape (its column names, in row order) once, for checking many rows of
    /// that shape with [`ColumnPlan::check`]: unknown columns and missing REQUIRED columns are
    /// refused here.
    pub fn plan_columns<'a, 'c>(
        &'a self,
        columns: impl Iterator<Item = &'c String>,
    ) -> Result<ColumnPlan<'a>, WarehouseError> {
        let invalid = |reason: String| WarehouseError::InvalidRow {
            table: self.name.clone(),
            reason,
        };
        let mut fields = Vec::new();
        for column in columns {
            let Some(field) = self.field(column) else {
                return Err(invalid(format!("unknown column {column}")));
            };
            fields.push(field);
        }
        for field in &self.fields {
            if field.mode == FieldMode::Required && !fields.iter().any(|f| f.name == field.name) {
                return Err(invalid(format!("required column {} is missing or null", field.name)));
            }
        }
        Ok(ColumnPlan { table: self, fields })
    }
}

/// The fields of one row shape, in row order (see [`TableDef::plan_columns`]).
pub struct ColumnPlan<'a> {
    table: &'a TableDef,
    fields: Vec<&'a FieldSchema>,
}

impl ColumnPlan<'_> {
    /// Whether `row` has this plan's shape (same columns in the same order).
    pub fn matches(&self, row: &Row) -> bool {
        row.0.len() == self.fields.len() && self.fields.iter().zip(row.columns()).all(|(f, c)| f.name == *c)
    }

    /// Checks the values of a row of this plan's shape.
    pub fn check(&self, row: &Row) -> Result<(), WarehouseError> {
        for (field, value) in self.fields.iter().zip(row.0.values()) {
            if value.is_null() {
                if field.mode == FieldMode::Required {
                    return Err(WarehouseError::InvalidRow {
                        table: self.table.name.clone(),
                        reason: format!("required column {} is missing or null", field.name),
                    });
                }
            } else if !value_fits(field, value) {
                return Err(WarehouseError::InvalidRow {
                    table: self.table.name.clone(),
                    reason: format!(
                        "column {} is {:?} but got a {} value",
                        field.name,
                        field.field_type,
                        value.type_name()
                    ),
                });
            }
        }
        Ok(())
    }
}

fn value_fits(field: &FieldSchema, value: &Value) -> bool {
    if value.is_null() {
        return true;
    }
    if field.mode == FieldMode::Repeated {
        return matches!(value, Value::Json(serde_json::Value::Array(_)));
    }
    match field.field_type {
        FieldType::String => matches!(value, Value::String(_)),
        FieldType::Integer => matches!(value, Value::Int(_)),
        FieldType::Float => matches!(value, Value::Float(_) | Value::Int(_)),
        FieldType::Numeric | FieldType::Bignumeric => {
            matches!(value, Value::Numeric(_) | Value::Int(_))
        }
        FieldType::Boolean => matches!(value, Value::Bool(_)),
        FieldType::Bytes => matches!(value, Value::Bytes(_)),
        FieldType::Date => matches!(value, Value::Date(_)),
        FieldType::Timestamp | FieldType::Datetime => matches!(value, Value::Timestamp(_)),
        FieldType::Json | FieldType::Record => matches!(value, Value::Json(_)),
    }
}

/// Parses a schema file: a bare list of fields, or an object with `schema` or `fields`.
pub fn parse_schema_json(text: &str) -> Result<Vec<FieldSchema>, WarehouseError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SchemaFile {
        Bare(Vec<FieldSchema>),
        Wrapped {
            #[serde(alias = "schema")]
            fields: Vec<FieldSchema>,
        },
    }
    let parsed: SchemaFile =
        serde_json::from_str(text).map_err(|e| WarehouseError::Schema(format!("schema JSON is invalid: {e}")))?;
    Ok(match parsed {
        SchemaFile::Bare(f) => f,
        SchemaFile::Wrapped { fields } => fields,
    })
}

/// How an existing table differs from its schema file, and whether it can be brought up to it
/// without losing or reinterpreting data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvolutionPlan {
    /// Columns of the file the table lacks, to add (a REQUIRED one is added as NULLABLE:
    /// existing rows have no value for it).
    pub add: Vec<FieldSchema>,
    /// Why the table cannot be brought up to the file (nothing is changed then).
    pub problems: Vec<String>,
}

/// Compares a table's columns with the schema file's. Compatible: columns the file adds
/// (added, NULLABLE); columns the table has beyond the file, if NULLABLE or REPEATED (kept).
/// Incompatible: a column whose type or repetition changed, a REQUIRED column of the table
/// the file no longer has (writers would stop filling it), and new RECORD columns.
pub fn plan_evolution(table: &str, existing: &[FieldSchema], wanted: &[FieldSchema]) -> EvolutionPlan {
    let mut plan = EvolutionPlan::default();
    for w in wanted {
        match existing.iter().find(|e| e.name == w.name) {
            Some(e) if e.field_type != w.field_type => plan.problems.push(format!(
                "{table}.{}: type is {:?} in the table but {:?} in the schema file (a type change needs a manual migration)",
                w.name, e.field_type, w.field_type
            )),
            Some(e) if (e.mode == FieldMode::Repeated) != (w.mode == FieldMode::Repeated) => plan.problems.push(format!(
                "{table}.{}: mode is {:?} in the table but {:?} in the schema file",
                w.name, e.mode, w.mode
            )),
            Some(_) => {}
            None if w.field_type == FieldType::Record => plan.problems.push(format!(
                "{table}.{}: a new RECORD column cannot be added by migration",
                w.name
            )),
            None => {
                let mut add = w.clone();
                if add.mode == FieldMode::Required {
                    add.mode = FieldMode::Nullable;
                }
                plan.add.push(add);
            }
        }
    }
    for e in existing.iter().filter(|e| e.mode == FieldMode::Required) {
        if !wanted.iter().any(|w| w.name == e.name) {
            plan.problems.push(format!(
                "{table}.{}: a REQUIRED column of the table is not in the schema file (writers would stop filling it)",
                e.name
            ));
        }
    }
    plan
}

/// What [`evolve_table`] did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evolution {
    Created,
    /// Columns added (empty: already up to date).
    Added(Vec<String>),
}

/// Creates the table, or brings an existing one up to `def`'s columns ([`plan_evolution`]):
/// new columns added in one change, or nothing changed and every problem reported.
pub async fn evolve_table(
    wh: &dyn super::Warehouse,
    dataset: &str,
    def: &TableDef,
) -> Result<Evolution, WarehouseError> {
    if wh.create_table(dataset, def).await? {
        return Ok(Evolution::Created);
    }
    let existing = wh.table_schema(dataset, &def.name).await?;
    let plan = plan_evolution(&def.name, &existing, &def.fields);
    if !plan.problems.is_empty() {
        return Err(WarehouseError::Schema(plan.problems.join("; ")));
    }
    if !plan.add.is_empty() {
        wh.add_columns(dataset, &def.name, &plan.add).await?;
    }
    Ok(Evolution::Added(plan.add.into_iter().map(|f| f.name).collect()))
}

/// What [`migrate_tables`] did to a dataset's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    pub created: Vec<String>,
    pub existed: Vec<String>,
    /// Table → columns added (only tables that gained some).
    pub columns_added: std::collections::BTreeMap<String, Vec<String>>,
}

/// Brings every table of a dataset up to its definition: all tables are compared first, and
/// if any cannot be evolved ([`plan_evolution`]) nothing is changed and every problem is
/// reported (`WarehouseError::Schema`); otherwise missing tables are created and new columns
/// added.
pub async fn migrate_tables(
    wh: &dyn super::Warehouse,
    dataset: &str,
    defs: &[&TableDef],
) -> Result<MigrationReport, WarehouseError> {
    let mut plans = Vec::with_capacity(defs.len());
    let mut problems = Vec::new();
    for def in defs {
        if wh.table_exists(dataset, &def.name).await? {
            let existing = wh.table_schema(dataset, &def.name).await?;
            let plan = plan_evolution(&def.name, &existing, &def.fields);
            problems.extend(plan.problems.iter().cloned());
            plans.push(Some(plan));
        } else {
            plans.push(None);
        }
    }
    if !problems.is_empty() {
        return Err(WarehouseError::Schema(format!(
            "nothing was changed: {}",
            problems.join("; ")
        )));
    }
    let mut report = MigrationReport::default();
    for (def, plan) in defs.iter().zip(plans) {
        match plan {
            None => {
                if wh.create_table(dataset, def).await? {
                    report.created.push(def.name.clone());
                } else {
                    report.existed.push(def.name.clone());
                }
            }
            Some(plan) => {
                report.existed.push(def.name.clone());
                if !plan.add.is_empty() {
                    wh.add_columns(dataset, &def.name, &plan.add).await?;
                    report
                        .columns_added
                        .insert(def.name.clone(), plan.add.into_iter().map(|f| f.name).collect());
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evolution_adds_new_columns_and_refuses_incompatible_changes() {
        let f = |json: &str| parse_schema_json(json).unwrap();
        let old = f(
            r#"[{"name":"id","type":"STRING","mode":"REQUIRED"},{"name":"n","type":"INT64"},{"name":"gone","type":"STRING"}]"#,
        );
        let new = f(
            r#"[{"name":"id","type":"STRING","mode":"REQUIRED"},{"name":"n","type":"INT64"},{"name":"x","type":"NUMERIC","mode":"REQUIRED"}]"#,
        );
        let plan = plan_evolution("t", &old, &new);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert_eq!(plan.add.len(), 1);
        assert_eq!(
            (plan.add[0].name.as_str(), plan.add[0].mode),
            ("x", FieldMode::Nullable)
        );
        let retyped = f(r#"[{"name":"id","type":"STRING","mode":"REQUIRED"},{"name":"n","type":"STRING"}]"#);
        let plan = plan_evolution("t", &old, &retyped);
        assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
        assert!(plan.problems[0].contains("t.n") && plan.problems[0].contains("type"));
        let dropped = f(r#"[{"name":"n","type":"INT64"}]"#);
        let plan = plan_evolution("t", &old, &dropped);
        assert!(
            plan.problems
                .iter()
                .any(|p| p.contains("t.id") && p.contains("REQUIRED")),
            "{:?}",
            plan.problems
        );
    }

    fn def() -> TableDef {
        TableDef {
            name: "t".into(),
            description: None,
            fields: parse_schema_json(
                r#"[{"name":"id","type":"STRING","mode":"REQUIRED"},{"name":"n","type":"INT64"},{"name":"tags","type":"STRING","mode":"REPEATED"}]"#,
            )
            .unwrap(),
            partition_field: None,
            clustering: vec![],
            lookup_keys: vec![],
        }
    }

    #[test]
    fn required_and_unknown_columns_are_checked() {
        let d = def();
        assert!(d.check_row(&Row::new().with("id", "a").with("n", 1i64)).is_ok());
        assert!(d.check_row(&Row::new().with("n", 1i64)).is_err());
        assert!(d.check_row(&Row::new().with("id", "a").with("zzz", 1i64)).is_err());
        assert!(d.check_row(&Row::new().with("id", "a").with("n", "text")).is_err());
        assert!(d
            .check_row(&Row::new().with("id", "a").with("tags", serde_json::json!(["x"])))
            .is_ok());
    }

    #[test]
    fn partition_column_must_exist_and_be_a_date() {
        let mut d = def();
        d.partition_field = Some("n".into());
        assert!(d.validate().is_err());
        d.partition_field = Some("missing".into());
        assert!(d.validate().is_err());
    }
}
