//! Conversions between our typed [`Value`]s and BigQuery's REST JSON: query parameters,
//! streaming-insert rows, and result cells (decoded by the result schema).

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value as J};

use crate::warehouse::{FieldMode, FieldSchema, FieldType, Row, Value, WarehouseError};

/// BigQuery type name of a value used as a query parameter (NULL binds as STRING, or as the
/// column type when the caller knows it).
fn param_type(v: &Value, hint: Option<&FieldSchema>) -> J {
    if let Some(f) = hint {
        if f.mode == FieldMode::Repeated {
            return json!({"type": "ARRAY", "arrayType": {"type": scalar_type_name(f.field_type)}});
        }
        if v.is_null() || matches!(f.field_type, FieldType::Json | FieldType::Numeric | FieldType::Float) {
            return json!({"type": scalar_type_name(f.field_type)});
        }
    }
    let t = match v {
        Value::Null | Value::String(_) => "STRING",
        Value::Bool(_) => "BOOL",
        Value::Int(_) => "INT64",
        Value::Float(_) => "FLOAT64",
        Value::Numeric(_) => "NUMERIC",
        Value::Bytes(_) => "BYTES",
        Value::Date(_) => "DATE",
        Value::Timestamp(_) => "TIMESTAMP",
        Value::Json(J::Array(items)) if hint.is_none() => {
            let inner = items.first().map(json_scalar_type).unwrap_or("STRING");
            return json!({"type": "ARRAY", "arrayType": {"type": inner}});
        }
        Value::Json(_) => "JSON",
    };
    json!({"type": t})
}

fn json_scalar_type(v: &J) -> &'static str {
    match v {
        J::Bool(_) => "BOOL",
        J::Number(n) if n.is_i64() => "INT64",
        J::Number(_) => "FLOAT64",
        _ => "STRING",
    }
}

/// The standard-SQL name of a column type (a RECORD as JSON).
pub(crate) fn scalar_type_name(t: FieldType) -> &'static str {
    match t {
        FieldType::String => "STRING",
        FieldType::Integer => "INT64",
        FieldType::Float => "FLOAT64",
        FieldType::Numeric => "NUMERIC",
        FieldType::Bignumeric => "BIGNUMERIC",
        FieldType::Boolean => "BOOL",
        FieldType::Bytes => "BYTES",
        FieldType::Date => "DATE",
        FieldType::Timestamp => "TIMESTAMP",
        FieldType::Datetime => "DATETIME",
        FieldType::Json => "JSON",
        FieldType::Record => "JSON",
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Numeric(d) => d.to_string(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => B64.encode(b),
        Value::Date(d) => d.to_string(),
        Value::Timestamp(t) => Value::timestamp_text(t),
        Value::Json(j) => j.to_string(),
    })
}

/// One named query parameter in REST form.
pub fn query_param(name: &str, v: &Value, hint: Option<&FieldSchema>) -> J {
    let ty = param_type(v, hint);
    let value = match v {
        Value::Json(J::Array(items)) if ty["type"] == "ARRAY" => {
            let values: Vec<J> = items
                .iter()
                .map(|i| match i {
                    J::String(s) => json!({"value": s}),
                    other => json!({"value": other.to_string()}),
                })
                .collect();
            json!({"arrayValues": values})
        }
        other => match scalar_text(other) {
            Some(t) => json!({"value": t}),
            None => json!({}),
        },
    };
    json!({"name": name, "parameterType": ty, "parameterValue": value})
}

/// A row as the JSON object `tabledata.insertAll` expects.
pub fn insert_json(row: &Row) -> J {
    let mut obj = serde_json::Map::new();
    for (k, v) in &row.0 {
        let j = match v {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::String(i.to_string()),
            Value::Float(f) => json!(f),
            Value::Json(J::Array(a)) => J::Array(a.clone()),
            Value::Json(j) => J::String(j.to_string()),
            other => scalar_text(other).map(J::String).unwrap_or(J::Null),
        };
        obj.insert(k.clone(), j);
    }
    J::Object(obj)
}

/// A schema field as returned by the API (lenient: the API adds keys we do not model).
#[derive(Debug, Clone, Deserialize)]
pub struct ApiField {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub fields: Vec<ApiField>,
}

impl ApiField {
    pub fn to_field(&self) -> Result<FieldSchema, WarehouseError> {
        let field_type: FieldType = serde_json::from_value(J::String(self.field_type.to_ascii_uppercase()))
            .map_err(|_| WarehouseError::Schema(format!("unknown BigQuery type {}", self.field_type)))?;
        let mode = match self.mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("REQUIRED") => FieldMode::Required,
            Some("REPEATED") => FieldMode::Repeated,
            _ => FieldMode::Nullable,
        };
        Ok(FieldSchema {
            name: self.name.clone(),
            field_type,
            mode,
            description: self.description.clone(),
            fields: self.fields.iter().map(ApiField::to_field).collect::<Result<_, _>>()?,
        })
    }
}

/// Parses a TIMESTAMP cell in any form the service returns: float seconds
/// (`"1.767323045123456E9"`), integer microseconds (`useInt64Timestamp`, and the emulator),
/// or RFC 3339 text.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        let micros: i64 = s.parse().ok()?;
        return DateTime::from_timestamp_micros(micros);
    }
    let secs: f64 = s.parse().ok()?;
    // Round to microseconds: float seconds carry exactly that precision.
    DateTime::from_timestamp_micros((secs * 1_000_000.0).round() as i64)
}

/// Decodes one result cell (`{"v": ...}`) by its schema field.
pub fn decode_cell(field: &ApiField, cell: &J) -> Result<Value, WarehouseError> {
    let v = &cell["v"];
    let bad = |what: &str| WarehouseError::Backend(format!("column {}: cannot read {what} from {v}", field.name));
    if v.is_null() {
        return Ok(if field.mode.as_deref() == Some("REPEATED") {
            Value::Json(json!([]))
        } else {
            Value::Null
        });
    }
    if field.mode.as_deref() == Some("REPEATED") {
        let items = v.as_array().ok_or_else(|| bad("an array"))?;
        let scalar = ApiField {
            mode: None,
            ..field.clone()
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(decode_cell(&scalar, item)?.to_json());
        }
        return Ok(Value::Json(J::Array(out)));
    }
    let text = || v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    Ok(match field.field_type.to_ascii_uppercase().as_str() {
        "STRING" => Value::String(text()),
        "INTEGER" | "INT64" => Value::Int(text().parse().map_err(|_| bad("INT64"))?),
        "FLOAT" | "FLOAT64" => Value::Float(text().parse().map_err(|_| bad("FLOAT64"))?),
        "NUMERIC" | "BIGNUMERIC" => Value::Numeric(text().parse().map_err(|_| bad("NUMERIC"))?),
        "BOOLEAN" | "BOOL" => Value::Bool(text().eq_ignore_ascii_case("true")),
        "DATE" => Value::Date(NaiveDate::parse_from_str(&text(), "%Y-%m-%d").map_err(|_| bad("DATE"))?),
        "TIMESTAMP" | "DATETIME" => Value::Timestamp(parse_timestamp(&text()).ok_or_else(|| bad("TIMESTAMP"))?),
        "BYTES" => Value::Bytes(B64.decode(text()).map_err(|_| bad("BYTES"))?),
        "JSON" => Value::Json(serde_json::from_str(&text()).map_err(|_| bad("JSON"))?),
        "RECORD" | "STRUCT" => {
            let cells = v["f"].as_array().ok_or_else(|| bad("a RECORD"))?;
            let mut obj = serde_json::Map::new();
            for (f, c) in field.fields.iter().zip(cells) {
                obj.insert(f.name.clone(), decode_cell(f, c)?.to_json());
            }
            Value::Json(J::Object(obj))
        }
        _ => Value::String(text()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_form() {
        let expected = DateTime::from_timestamp_micros(1_767_323_045_123_456).unwrap();
        for s in [
            "1.767323045123456E9",
            "1767323045123456",
            "2026-01-02T03:04:05.123456Z",
            "2026-01-02 03:04:05.123456",
        ] {
            assert_eq!(parse_timestamp(s), Some(expected), "{s}");
        }
    }

    #[test]
    fn cells_decode_by_schema() {
        let f = |t: &str, m: Option<&str>| ApiField {
            name: "c".into(),
            field_type: t.into(),
            mode: m.map(str::to_string),
            description: None,
            fields: vec![],
        };
        assert_eq!(
            decode_cell(&f("NUMERIC", None), &json!({"v": "12.345678900"})).unwrap(),
            Value::Numeric("12.3456789".parse().unwrap())
        );
        assert_eq!(
            decode_cell(&f("INTEGER", None), &json!({"v": "5"})).unwrap(),
            Value::Int(5)
        );
        assert_eq!(
            decode_cell(&f("BOOLEAN", None), &json!({"v": "true"})).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            decode_cell(&f("STRING", Some("REPEATED")), &json!({"v": [{"v": "x"}, {"v": "y"}]})).unwrap(),
            Value::Json(json!(["x", "y"]))
        );
        assert_eq!(
            decode_cell(&f("STRING", None), &json!({"v": null})).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn params_carry_types() {
        let p = query_param("d", &Value::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()), None);
        assert_eq!(p["parameterType"]["type"], "DATE");
        assert_eq!(p["parameterValue"]["value"], "2026-01-02");
        let p = query_param("tags", &Value::Json(json!(["a"])), None);
        assert_eq!(p["parameterType"]["arrayType"]["type"], "STRING");
        let p = query_param("n", &Value::Null, None);
        assert_eq!(p["parameterValue"], json!({}));
    }
}
