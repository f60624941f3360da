//! Crash safety of a multi-day load, black-box: the real pipeline-service is killed with
//! SIGKILL at five different moments of a six-day run (straight after it is accepted, and
//! while the usage step of day 2, 3, 4 and 6 is in progress), restarted on the same `DATA_DIR`, and then:
//! no run of the org is left PENDING/RUNNING once the sweep has run, the org's concurrency
//! slots are back to zero, each day the killed run touched is either absent or complete
//! (never half-loaded), and a rerun completes with per-day row counts, token sums and costs
//! equal to a clean run's (no duplicates, nothing lost). The clean run is made on a separate
//! data directory by a separate pair of services: synthetic usage depends only on the org,
//! the date and the seed, so both hold the same rows when nothing went wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{collections::BTreeMap, collections::HashMap, path::Path, time::Duration};

use cloudact_core::warehouse::{embedded::EmbeddedWarehouse, Params, Warehouse};
use cloudact_e2e::{Service, ROOT_KEY};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const ORG: &str = "crashco";
const DAYS: i64 = 6;
/// Steps the run has logged when it is killed (2 per day: usage, then cost): none (killed
/// as soon as it is accepted), then 2, 4, 6 and 10 — each while the next day's usage step
/// sleeps its `pause_ms`, so the kill lands inside a step, not between runs.
const MOMENTS: [usize; 5] = [0, 2, 4, 6, 10];

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}")),
    )
}

fn env() -> HashMap<&'static str, String> {
    [
        ("RUN_HEARTBEAT_SECONDS", "1".to_string()),
        ("RUN_STALE_SECONDS", "3".to_string()),
        ("RATE_LIMIT_REQUESTS_PER_MINUTE", "100000".to_string()),
    ]
    .into_iter()
    .collect()
}

/// Bootstraps and onboards [`ORG`] on a fresh pair of services; returns the org key.
async fn onboard(c: &Client, api: &Service) -> String {
    let (s, b) = call(
        c.post(api.url("/api/v1/admin/bootstrap"))
            .header("X-CA-Root-Key", ROOT_KEY),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let body = json!({"org_slug": ORG, "company_name": "Crash Co", "admin_email": "ops@crash.example",
                      "subscription_plan": "SCALE"});
    let (s, b) = call(
        c.post(api.url("/api/v1/organizations/onboard"))
            .header("X-CA-Root-Key", ROOT_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["api_key"].as_str().unwrap().to_string()
}

async fn submit(c: &Client, pipe: &Service, key: &str, body: Value) -> String {
    let url = pipe.url(&format!("/api/v1/pipelines/run/{ORG}/example/synthetic_usage"));
    let (s, b) = call(c.post(url).header("X-API-Key", key).json(&body)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    b["pipeline_logging_id"].as_str().unwrap().to_string()
}

async fn status(c: &Client, pipe: &Service, key: &str, id: &str) -> Value {
    let (s, b) = call(
        c.get(pipe.url(&format!("/api/v1/pipelines/runs/{id}")))
            .header("X-API-Key", key),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn finished(c: &Client, pipe: &Service, key: &str, id: &str) -> Value {
    for _ in 0..1200 {
        let b = status(c, pipe, key, id).await;
        if !matches!(b["status"].as_str(), Some("PENDING") | Some("RUNNING")) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} did not finish");
}

fn window(moment: usize) -> (String, String) {
    // Each moment loads its own six days (March 1–6, March 8–13, …).
    let start = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + chrono::Duration::days(7 * moment as i64);
    let end = start + chrono::Duration::days(DAYS - 1);
    (start.to_string(), end.to_string())
}

/// Per day: usage rows, usage input-token sum, cost rows, cost sum (exact decimal text).
type Figures = BTreeMap<String, (i64, i64, i64, String)>;

async fn figures(dir: &Path, start: &str, end: &str) -> Figures {
    let wh = EmbeddedWarehouse::open(dir).unwrap();
    let ds = format!("{ORG}_local");
    let p = Params::new()
        .with("s", chrono::NaiveDate::parse_from_str(start, "%Y-%m-%d").unwrap())
        .with("e", chrono::NaiveDate::parse_from_str(end, "%Y-%m-%d").unwrap());
    let mut out = Figures::new();
    let usage = wh
        .query(
            &ds,
            "SELECT CAST(usage_date AS TEXT) AS d, COUNT(*) AS n, SUM(input_tokens) AS t FROM {{example_usage_daily}} \
             WHERE usage_date BETWEEN @s AND @e GROUP BY usage_date",
            &p,
        )
        .await
        .unwrap_or_default();
    for r in usage {
        let e = out.entry(r.string("d").unwrap()).or_insert((0, 0, 0, "0".into()));
        (e.0, e.1) = (r.int("n").unwrap(), r.int("t").unwrap());
    }
    let cost = wh
        .query(
            &ds,
            "SELECT CAST(usage_date AS TEXT) AS d, total_cost FROM {{example_cost_daily}} \
             WHERE usage_date BETWEEN @s AND @e",
            &p,
        )
        .await
        .unwrap_or_default();
    let mut sums: BTreeMap<String, rust_decimal::Decimal> = BTreeMap::new();
    for r in cost {
        let d = r.string("d").unwrap();
        *sums.entry(d.clone()).or_default() += r.numeric("total_cost").unwrap_or_default();
        out.entry(d).or_insert((0, 0, 0, "0".into())).2 += 1;
    }
    for (d, s) in sums {
        out.get_mut(&d).unwrap().3 = s.normalize().to_string();
    }
    out
}

/// (runs of the org still PENDING/RUNNING, the org's concurrency slots in use).
async fn leftovers(dir: &Path) -> (i64, i64) {
    let wh = EmbeddedWarehouse::open(dir).unwrap();
    let p = Params::new().with("org", ORG);
    let open = wh
        .query(
            "organizations",
            "SELECT COUNT(*) AS n FROM {{org_meta_pipeline_runs}} WHERE org_slug = @org AND status IN ('PENDING', 'RUNNING')",
            &p,
        )
        .await
        .unwrap();
    let slots = wh
        .query(
            "organizations",
            "SELECT COALESCE(SUM(concurrent_pipelines_running), 0) AS n FROM {{org_usage_quotas}} WHERE org_slug = @org",
            &p,
        )
        .await
        .unwrap();
    (open[0].int("n").unwrap(), slots[0].int("n").unwrap())
}

#[tokio::test]
async fn sigkill_at_five_moments_of_a_multi_day_load_loses_and_duplicates_nothing() {
    let c = Client::new();
    // The clean reference: every window loaded once, nothing killed.
    let clean_dir = tempfile::tempdir().unwrap();
    let reference: Vec<Figures> = {
        let api = Service::start("api-service", clean_dir.path(), &env());
        let pipe = Service::start("pipeline-service", clean_dir.path(), &env());
        let key = onboard(&c, &api).await;
        let mut out = Vec::new();
        for moment in 0..MOMENTS.len() {
            let (start, end) = window(moment);
            let id = submit(&c, &pipe, &key, json!({"start_date": start, "end_date": end})).await;
            assert_eq!(finished(&c, &pipe, &key, &id).await["status"], "COMPLETED");
            let f = figures(clean_dir.path(), &start, &end).await;
            assert_eq!(f.len() as i64, DAYS, "{f:?}");
            assert!(f.values().all(|d| d.0 == 12 && d.2 == 12 && d.1 > 0), "{f:?}");
            out.push(f);
        }
        assert!(api.terminate().success());
        assert!(pipe.terminate().success());
        out
    };

    let dir = tempfile::tempdir().unwrap();
    let api = Service::start("api-service", dir.path(), &env());
    let mut pipe = Service::start("pipeline-service", dir.path(), &env());
    let key = onboard(&c, &api).await;
    let mut report = Vec::new();
    for (moment, &steps_before_kill) in MOMENTS.iter().enumerate() {
        let (start, end) = window(moment);
        let body = json!({"start_date": start, "end_date": end, "parameters": {"pause_ms": 300}});
        let id = submit(&c, &pipe, &key, body).await;
        let mut seen = 0;
        if steps_before_kill > 0 {
            for _ in 0..400 {
                let b = status(&c, &pipe, &key, &id).await;
                seen = b["steps"].as_array().map(Vec::len).unwrap_or(0);
                if seen >= steps_before_kill {
                    break;
                }
                assert!(
                    matches!(b["status"].as_str(), Some("PENDING") | Some("RUNNING")),
                    "the run ended before the kill: {b}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                seen >= steps_before_kill,
                "the run never reached {steps_before_kill} steps"
            );
        }
        pipe.kill9();
        pipe = Service::start("pipeline-service", dir.path(), &env());

        // The sweep fails the run with a message saying the process stopped.
        let run = finished(&c, &pipe, &key, &id).await;
        assert_eq!(run["status"], "FAILED", "moment {moment}: {run}");
        assert!(
            run["error_message"].as_str().unwrap_or_default().contains("stopped"),
            "moment {moment}: {run}"
        );
        assert_eq!(
            leftovers(dir.path()).await,
            (0, 0),
            "moment {moment}: runs or slots left behind"
        );

        // Every day the killed run touched is absent or whole, and a day's cost never
        // precedes its usage.
        let partial = figures(dir.path(), &start, &end).await;
        for (day, got) in &partial {
            let want = &reference[moment][day];
            assert!(
                got.0 == 0 || (got.0, got.1) == (want.0, want.1),
                "moment {moment}, {day}: usage {got:?} vs {want:?}"
            );
            assert!(
                got.2 == 0 || (got.2, &got.3) == (want.2, &want.3),
                "moment {moment}, {day}: cost {got:?} vs {want:?}"
            );
            assert!(got.2 == 0 || got.0 > 0, "moment {moment}, {day}: cost without usage");
        }
        let days_loaded_before_kill = partial.values().filter(|d| d.2 > 0).count();
        assert!(
            (days_loaded_before_kill as i64) < DAYS,
            "moment {moment}: the kill came too late to interrupt anything"
        );

        // The rerun completes and equals the clean run.
        let id = submit(&c, &pipe, &key, json!({"start_date": start, "end_date": end})).await;
        let rerun = finished(&c, &pipe, &key, &id).await;
        assert_eq!(rerun["status"], "COMPLETED", "moment {moment}: {rerun}");
        assert_eq!(
            figures(dir.path(), &start, &end).await,
            reference[moment],
            "moment {moment}"
        );
        assert_eq!(leftovers(dir.path()).await, (0, 0));
        report.push(format!(
            "moment {moment}: killed after {seen} steps, {days_loaded_before_kill} whole days before the kill"
        ));
    }
    println!("{}", report.join("\n"));
    assert!(api.terminate().success());
    assert!(pipe.terminate().success());
}
