//! The JSON log line format Cloud Logging understands: one object per line with `severity`
//! (`DEBUG`/`INFO`/`WARNING`/`ERROR`), `message`, `timestamp`, `target`, the fields of the
//! event and of every enclosing span flattened to the top level (so `request_id`,
//! `run_id`, `org_slug` are top-level and `gcloud logging read 'jsonPayload.request_id="…"'`
//! finds a request's lines), and — when the request carried `X-Cloud-Trace-Context` or
//! `traceparent` — `logging.googleapis.com/trace` (`projects/{project}/traces/{id}`) and
//! `logging.googleapis.com/spanId`, which Cloud Logging links to the trace.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{
    field::{Field, Visit},
    Event, Subscriber,
};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields, FormattedFields},
    registry::LookupSpan,
};

/// Span field names the request span uses for the trace (set by the request layer).
pub const TRACE_FIELD: &str = "trace_id";
pub const SPAN_FIELD: &str = "span_id";

/// The Cloud Logging event format. `project` is the GCP project traces belong to (from
/// `GCP_PROJECT_ID` or `GOOGLE_CLOUD_PROJECT`); without it the trace id is logged as
/// `trace_id` only.
#[derive(Debug, Clone, Default)]
pub struct CloudLoggingFormat {
    pub project: Option<String>,
}

/// Google's severity names for tracing's levels.
pub fn severity(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "ERROR",
        tracing::Level::WARN => "WARNING",
        tracing::Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for CloudLoggingFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = Map::new();
        let meta = event.metadata();
        line.insert("severity".into(), Value::from(severity(meta.level())));
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("target".into(), Value::from(meta.target()));
        // Span fields, outermost first, so an inner span's field wins. The layer is built with
        // `JsonFields`, so each span's formatted fields are a JSON object.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields.as_str()) {
                        line.extend(map);
                    }
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        line.extend(fields);
        if let Some(Value::String(trace)) = line.get(TRACE_FIELD).cloned() {
            if let Some(project) = &self.project {
                line.insert(
                    "logging.googleapis.com/trace".into(),
                    Value::from(format!("projects/{project}/traces/{trace}")),
                );
            }
            if let Some(span) = line.remove(SPAN_FIELD) {
                line.insert("logging.googleapis.com/spanId".into(), span);
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The trace and span ids of an incoming request: `X-Cloud-Trace-Context`
/// (`TRACE_ID/SPAN_ID;o=1`, span id decimal, given back as 16 hex digits) or W3C
/// `traceparent` (`00-TRACE_ID-SPAN_ID-FLAGS`, span id hex). Malformed values are ignored.
pub fn trace_context(cloud: Option<&str>, traceparent: Option<&str>) -> Option<(String, Option<String>)> {
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0');
    if let Some(v) = cloud {
        let (trace, rest) = v.split_once('/').unwrap_or((v, ""));
        if hex32(trace) {
            // The header's span id is decimal; Cloud Logging's spanId is 16 hex digits.
            let span = rest
                .split(';')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|n| format!("{n:016x}"));
            return Some((trace.to_ascii_lowercase(), span));
        }
    }
    if let Some(v) = traceparent {
        let parts: Vec<&str> = v.trim().split('-').collect();
        if let [version, trace, span, _flags] = parts.as_slice() {
            let span_ok = span.len() == 16 && span.bytes().all(|b| b.is_ascii_hexdigit());
            if version.len() == 2 && hex32(trace) && span_ok {
                return Some((trace.to_ascii_lowercase(), Some(span.to_ascii_lowercase())));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_of_both_forms_are_read_and_bad_ones_ignored() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_context(Some(&format!("{t}/12345;o=1")), None),
            Some((t.to_string(), Some("0000000000003039".into())))
        );
        assert_eq!(trace_context(Some(t), None), Some((t.to_string(), None)));
        assert_eq!(
            trace_context(None, Some(&format!("00-{t}-00f067aa0ba902b7-01"))),
            Some((t.to_string(), Some("00f067aa0ba902b7".into())))
        );
        assert_eq!(trace_context(Some("nope/1"), Some("00-xyz-1-01")), None);
        assert_eq!(
            trace_context(Some(&"0".repeat(32)), None),
            None,
            "all-zero trace id is invalid"
        );
    }
}
