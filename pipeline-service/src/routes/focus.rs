//! `GET /api/v1/costs/{org}/focus?start_date&end_date&format=csv|json` (org key): the org's
//! charges as FOCUS 1.3 rows ([`cloudact_pipeline::focus`]), streamed one day at a time —
//! the response never holds more than one day's rows, whatever the range.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use chrono::NaiveDate;
use cloudact_pipeline::focus::{self, FocusDay};
use cloudact_web::{ApiError, AppContext, OrgPath};
use futures::StreamExt;
use serde::Deserialize;
use tracing::Instrument;
use utoipa::IntoParams;

use super::costs::date_range;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FocusQuery {
    /// First day (YYYY-MM-DD).
    pub start_date: String,
    /// Last day (YYYY-MM-DD); at most 366 days after start_date.
    pub end_date: String,
    /// `csv` (default; RFC 4180 with a header line) or `json`.
    pub format: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    Json,
}

/// Where the stream is: the next day to read, and what has been written.
struct Cursor {
    ctx: Arc<AppContext>,
    dataset: String,
    org: String,
    next: Option<NaiveDate>,
    end: NaiveDate,
    format: Format,
    /// The org's cost tables, checked once.
    present: Vec<&'static str>,
    rows: u64,
    unpriced: u64,
    first: Option<FocusDay>,
    done: bool,
}

impl Cursor {
    /// One day's rows as bytes (a JSON row after the first is preceded by a comma).
    fn render(&mut self, day: &FocusDay) -> Vec<u8> {
        let mut out = Vec::new();
        for row in &day.rows {
            match self.format {
                Format::Csv => out.extend(focus::csv_row(row)),
                Format::Json => {
                    if self.rows > 0 {
                        out.push(b',');
                    }
                    out.extend(focus::json_row(row).into_bytes());
                }
            }
            self.rows += 1;
        }
        self.unpriced += day.unpriced_rows;
        out
    }

    /// The next chunk: the next day's rows, then (JSON) the closing summary; `None` at the end.
    async fn chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Cursor)> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            let bytes = self.render(&first);
            return Some((Ok(Bytes::from(bytes)), self));
        }
        let Some(day) = self.next else {
            self.done = true;
            if self.format == Format::Json {
                let tail = format!("],\"row_count\":{},\"unpriced_rows\":{}}}", self.rows, self.unpriced);
                return Some((Ok(Bytes::from(tail)), self));
            }
            return None;
        };
        self.next = day.succ_opt().filter(|d| *d <= self.end);
        match focus::focus_day_of(
            self.ctx.warehouse.as_ref(),
            &self.dataset,
            &self.org,
            day,
            &self.present,
        )
        .await
        {
            Ok(rows) => {
                let bytes = self.render(&rows);
                Some((Ok(Bytes::from(bytes)), self))
            }
            Err(e) => {
                // The status line is gone: end the body early so the client sees a broken
                // transfer, never a silently short export.
                tracing::error!(error = %e, %day, "FOCUS export failed mid-stream");
                self.done = true;
                Some((Err(std::io::Error::other("FOCUS export failed")), self))
            }
        }
    }
}

/// The org's charges as FOCUS 1.3 rows (CSV or JSON), streamed day by day. Unpriced usage is
/// left out (a FOCUS cost is never null, an unknown cost never $0); JSON reports how many.
#[utoipa::path(get, path = "/api/v1/costs/{org_slug}/focus", tag = "costs", params(("org_slug" = String, Path), FocusQuery),
    security(("api_key" = [])), responses((status = 200, description = "text/csv or application/json, streamed"), (status = 400), (status = 401), (status = 403)))]
pub async fn focus_export(
    State(ctx): State<Arc<AppContext>>,
    OrgPath(org): OrgPath,
    query: Result<Query<FocusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let (start, end) = date_range(&q.start_date, &q.end_date)?;
    let format = match q.format.as_deref().unwrap_or("csv") {
        "csv" => Format::Csv,
        "json" => Format::Json,
        other => {
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                format!("format {other:?} must be csv or json"),
            ))
        }
    };
    // The first day is read before the status line, so a warehouse that cannot answer gets
    // a proper error response rather than a broken body.
    let present = focus::present_tables(ctx.warehouse.as_ref(), &org.org_dataset_id).await?;
    let first = focus::focus_day_of(
        ctx.warehouse.as_ref(),
        &org.org_dataset_id,
        &org.org_slug,
        start,
        &present,
    )
    .await?;
    let head = match format {
        Format::Csv => focus::csv_header(),
        Format::Json => format!(
            "{{\"org_slug\":{},\"focus_version\":\"{}\",\"start_date\":\"{start}\",\"end_date\":\"{end}\",\"rows\":[",
            serde_json::Value::String(org.org_slug.clone()),
            focus::FOCUS_VERSION
        )
        .into_bytes(),
    };
    let cursor = Cursor {
        ctx: ctx.clone(),
        dataset: org.org_dataset_id.clone(),
        org: org.org_slug.clone(),
        next: start.succ_opt().filter(|d| *d <= end),
        end,
        format,
        present,
        rows: 0,
        unpriced: 0,
        first: Some(first),
        done: false,
    };
    let span = tracing::Span::current();
    let body = futures::stream::iter([Ok::<Bytes, std::io::Error>(Bytes::from(head))])
        .chain(futures::stream::unfold(cursor, move |c| {
            c.chunk().instrument(span.clone())
        }));
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8; header=present", "csv"),
        Format::Json => ("application/json", "json"),
    };
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"focus-{}-{start}-{end}.{ext}\"",
        org.org_slug
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
