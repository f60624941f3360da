//! Typed cell values and rows exchanged with every warehouse backend.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;

/// One cell. The variant carries the BigQuery type, so a backend can bind it as a typed
/// query parameter or convert it to its own storage form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Numeric(Decimal),
    String(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    /// JSON columns and REPEATED/RECORD fields.
    Json(serde_json::Value),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Canonical text form of a timestamp: fixed width, so text order is time order.
    pub fn timestamp_text(ts: &DateTime<Utc>) -> String {
        ts.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Short name of the BigQuery type this value carries.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "BOOL",
            Value::Int(_) => "INT64",
            Value::Float(_) => "FLOAT64",
            Value::Numeric(_) => "NUMERIC",
            Value::String(_) => "STRING",
            Value::Bytes(_) => "BYTES",
            Value::Date(_) => "DATE",
            Value::Timestamp(_) => "TIMESTAMP",
            Value::Json(_) => "JSON",
        }
    }

    /// A JSON rendering for API responses (bytes as base64 are never needed there, so they
    /// are reported by length only).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Numeric(d) => J::String(d.to_string()),
            Value::String(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(format!("<{} bytes>", b.len())),
            Value::Date(d) => J::String(d.to_string()),
            Value::Timestamp(t) => J::String(Value::timestamp_text(t)),
            Value::Json(j) => j.clone(),
        }
    }
}

macro_rules! from_impl {
    ($t:ty, $v:ident, $e:expr) => {
        impl From<$t> for Value {
            fn from($v: $t) -> Self {
                $e
            }
        }
    };
}
from_impl!(bool, v, Value::Bool(v));
from_impl!(i64, v, Value::Int(v));
from_impl!(i32, v, Value::Int(i64::from(v)));
from_impl!(u32, v, Value::Int(i64::from(v)));
from_impl!(f64, v, Value::Float(v));
from_impl!(Decimal, v, Value::Numeric(v));
from_impl!(String, v, Value::String(v));
from_impl!(&str, v, Value::String(v.to_string()));
from_impl!(&String, v, Value::String(v.clone()));
from_impl!(Vec<u8>, v, Value::Bytes(v));
from_impl!(NaiveDate, v, Value::Date(v));
from_impl!(DateTime<Utc>, v, Value::Timestamp(v));
from_impl!(serde_json::Value, v, Value::Json(v));

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// One row: column name → value. Used both for inserts and for query results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub BTreeMap<String, Value>);

impl Row {
    pub fn new() -> Self {
        Row(BTreeMap::new())
    }

    /// Builder-style setter: `Row::new().with("org_slug", "acme")`.
    pub fn with(mut self, column: &str, value: impl Into<Value>) -> Self {
        self.0.insert(column.to_string(), value.into());
        self
    }

    pub fn set(&mut self, column: &str, value: impl Into<Value>) {
        self.0.insert(column.to_string(), value.into());
    }

    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.get(column)
    }

    pub fn columns(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn string(&self, column: &str) -> Option<String> {
        match self.get(column)? {
            Value::String(s) => Some(s.clone()),
            Value::Json(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn int(&self, column: &str) -> Option<i64> {
        match self.get(column)? {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            Value::String(s) => s.parse().ok(),
            Value::Numeric(d) => i64::try_from(*d).ok(),
            _ => None,
        }
    }

    pub fn float(&self, column: &str) -> Option<f64> {
        match self.get(column)? {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Numeric(d) => f64::try_from(*d).ok(),
            _ => None,
        }
    }

    pub fn boolean(&self, column: &str) -> Option<bool> {
        match self.get(column)? {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    pub fn timestamp(&self, column: &str) -> Option<DateTime<Utc>> {
        match self.get(column)? {
            Value::Timestamp(t) => Some(*t),
            Value::String(s) => DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc)),
            _ => None,
        }
    }

    pub fn date(&self, column: &str) -> Option<NaiveDate> {
        match self.get(column)? {
            Value::Date(d) => Some(*d),
            Value::String(s) => s.parse().ok(),
            Value::Timestamp(t) => Some(t.date_naive()),
            _ => None,
        }
    }

    pub fn bytes(&self, column: &str) -> Option<Vec<u8>> {
        match self.get(column)? {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }

    pub fn json(&self, column: &str) -> Option<serde_json::Value> {
        match self.get(column)? {
            Value::Null => None,
            Value::Json(j) => Some(j.clone()),
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.to_json()),
        }
    }

    pub fn numeric(&self, column: &str) -> Option<Decimal> {
        match self.get(column)? {
            Value::Numeric(d) => Some(*d),
            Value::Int(i) => Some(Decimal::from(*i)),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// Named query parameters (`@name` in SQL).
#[derive(Debug, Clone, Default)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn new() -> Self {
        Params(BTreeMap::new())
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.insert(name.to_string(), value.into());
        self
    }
}
