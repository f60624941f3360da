//! The warehouse conformance suite: behaviour every backend must show, written against the
//! trait only. Each backend's tests call [`run_all`] (embedded in `embedded.rs`, BigQuery
//! against the emulator). Every check uses its own dataset named from `prefix`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test suite: panics are its failure reports

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use super::{
    schema::parse_schema_json, Params, PartitionKey, Row, Statement, TableDef, Value, Warehouse, WarehouseError,
};

/// Runs every check of the suite.
pub async fn run_all(wh: Arc<dyn Warehouse>, prefix: &str) {
    dataset_lifecycle(&*wh, &format!("{prefix}_ds")).await;
    tables_are_created_once(&*wh, &format!("{prefix}_tables")).await;
    values_round_trip(&*wh, &format!("{prefix}_values")).await;
    bad_rows_are_refused_whole(&*wh, &format!("{prefix}_badrows")).await;
    queries_bind_named_params(&*wh, &format!("{prefix}_params")).await;
    replace_partition_is_idempotent(&*wh, &format!("{prefix}_replace")).await;
    staged_load_swaps_in_one_step(&*wh, &format!("{prefix}_staged")).await;
    exact_sums_keep_every_digit(&*wh, &format!("{prefix}_sums")).await;
    atomic_batches_roll_back(&*wh, &format!("{prefix}_atomic")).await;
    missing_things_are_typed_errors(&*wh, &format!("{prefix}_missing")).await;
    conditional_updates_never_overshoot(wh.clone(), &format!("{prefix}_quota")).await;
    tables_evolve_to_their_schema(&*wh, &format!("{prefix}_evolve")).await;
}

/// A table made from an older schema is brought up to the new one: new columns added (old
/// rows read them as null, new rows fill them); an incompatible change is refused whole.
pub async fn tables_evolve_to_their_schema(wh: &dyn Warehouse, ds: &str) {
    use super::schema::{evolve_table, Evolution};
    fresh(wh, ds).await;
    let new = sample_table("usage");
    let mut old = new.clone();
    old.fields
        .retain(|f| !["cost", "tags", "details"].contains(&f.name.as_str()));
    assert_eq!(
        evolve_table(wh, ds, &old).await.unwrap_or_else(|e| panic!("{e}")),
        Evolution::Created
    );
    wh.insert_rows(ds, "usage", &[usage_row("acme", 1, "m", 5)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(wh
        .insert_rows(
            ds,
            "usage",
            &[usage_row("acme", 2, "m", 5).with("cost", rust_decimal::Decimal::ONE)]
        )
        .await
        .is_err());
    // An incompatible file (a type change) changes nothing.
    let mut retyped = new.clone();
    for f in &mut retyped.fields {
        if f.name == "tokens" {
            f.field_type = super::FieldType::String;
        }
    }
    let err = evolve_table(wh, ds, &retyped)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("usage.tokens") && err.contains("type"), "{err}");
    assert_eq!(
        wh.table_schema(ds, "usage")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .len(),
        old.fields.len()
    );
    let added = evolve_table(wh, ds, &new).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        added,
        Evolution::Added(vec!["cost".into(), "details".into(), "tags".into()])
    );
    let names: Vec<String> = wh
        .table_schema(ds, "usage")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|f| f.name)
        .collect();
    for c in ["cost", "details", "tags"] {
        assert!(names.iter().any(|n| n == c), "{c} in {names:?}");
    }
    wh.insert_rows(
        ds,
        "usage",
        &[usage_row("acme", 2, "m", 7)
            .with("cost", "1.5".parse::<rust_decimal::Decimal>().unwrap_or_default())
            .with("tags", serde_json::json!(["a"]))],
    )
    .await
    .unwrap_or_else(|e| panic!("insert after evolution: {e}"));
    let rows = wh
        .query(
            ds,
            "SELECT usage_date, cost FROM {{usage}} ORDER BY usage_date",
            &Params::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].numeric("cost"), None, "old rows read the new column as null");
    assert_eq!(rows[1].numeric("cost"), "1.5".parse().ok());
    assert_eq!(
        evolve_table(wh, ds, &new).await.unwrap_or_else(|e| panic!("{e}")),
        Evolution::Added(vec![]),
        "up to date: nothing to do"
    );
}

/// A table with one column of every type, partitioned by day and clustered.
pub fn sample_table(name: &str) -> TableDef {
    let fields = parse_schema_json(
        r#"[
        {"name":"org_slug","type":"STRING","mode":"REQUIRED"},
        {"name":"usage_date","type":"DATE","mode":"REQUIRED"},
        {"name":"model","type":"STRING"},
        {"name":"tokens","type":"INT64"},
        {"name":"ratio","type":"FLOAT64"},
        {"name":"cost","type":"NUMERIC"},
        {"name":"active","type":"BOOLEAN"},
        {"name":"blob","type":"BYTES"},
        {"name":"seen_at","type":"TIMESTAMP"},
        {"name":"details","type":"JSON"},
        {"name":"tags","type":"STRING","mode":"REPEATED"}
    ]"#,
    )
    .unwrap_or_else(|e| panic!("sample schema: {e}"));
    TableDef {
        name: name.to_string(),
        description: Some("conformance sample".to_string()),
        fields,
        partition_field: Some("usage_date".to_string()),
        clustering: vec!["org_slug".to_string(), "model".to_string()],
        lookup_keys: Vec::new(),
    }
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, d).unwrap_or_else(|| panic!("bad day {d}"))
}

fn usage_row(org: &str, d: u32, model: &str, tokens: i64) -> Row {
    Row::new()
        .with("org_slug", org)
        .with("usage_date", day(d))
        .with("model", model)
        .with("tokens", tokens)
}

async fn fresh(wh: &dyn Warehouse, dataset: &str) {
    wh.delete_dataset(dataset)
        .await
        .unwrap_or_else(|e| panic!("delete {dataset}: {e}"));
    assert!(wh
        .create_dataset(dataset, "US")
        .await
        .unwrap_or_else(|e| panic!("create {dataset}: {e}")));
}

async fn count(wh: &dyn Warehouse, dataset: &str, table: &str, where_sql: &str, params: &Params) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {{{{{table}}}}} WHERE {where_sql}");
    let rows = wh
        .query(dataset, &sql, params)
        .await
        .unwrap_or_else(|e| panic!("count: {e}"));
    rows[0]
        .int("n")
        .unwrap_or_else(|| panic!("count is not an integer: {rows:?}"))
}

pub async fn dataset_lifecycle(wh: &dyn Warehouse, ds: &str) {
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!wh.dataset_exists(ds).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(
        wh.create_dataset(ds, "US").await.unwrap_or_else(|e| panic!("{e}")),
        "first create reports created"
    );
    assert!(
        !wh.create_dataset(ds, "US").await.unwrap_or_else(|e| panic!("{e}")),
        "second create reports existing"
    );
    assert!(wh.dataset_exists(ds).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(
        wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}")),
        "delete reports it existed"
    );
    assert!(
        !wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}")),
        "second delete reports nothing"
    );
    assert!(!wh.dataset_exists(ds).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(matches!(
        wh.create_dataset("Bad-Name", "US").await,
        Err(WarehouseError::InvalidName(_))
    ));
}

pub async fn tables_are_created_once(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    let def = sample_table("usage");
    assert!(wh.create_table(ds, &def).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(
        !wh.create_table(ds, &def).await.unwrap_or_else(|e| panic!("{e}")),
        "existing table left alone"
    );
    assert!(wh.table_exists(ds, "usage").await.unwrap_or_else(|e| panic!("{e}")));
    assert!(!wh.table_exists(ds, "nope").await.unwrap_or_else(|e| panic!("{e}")));
    let schema = wh.table_schema(ds, "usage").await.unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = schema.iter().map(|f| f.name.as_str()).collect();
    let expected: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, expected);
    assert!(wh.drop_table(ds, "usage").await.unwrap_or_else(|e| panic!("{e}")));
    assert!(!wh.drop_table(ds, "usage").await.unwrap_or_else(|e| panic!("{e}")));
    assert!(!wh.table_exists(ds, "usage").await.unwrap_or_else(|e| panic!("{e}")));
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn values_round_trip(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    wh.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ts = Utc
        .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .unwrap_or_else(|| panic!("ts"))
        + chrono::Duration::microseconds(123_456);
    let cost: Decimal = "12.3456789".parse().unwrap_or_else(|e| panic!("{e}"));
    let full = usage_row("acme", 2, "gpt-4o", 1_234_567_890_123)
        .with("ratio", 0.25)
        .with("cost", cost)
        .with("active", true)
        .with("blob", vec![0u8, 1, 2, 255])
        .with("seen_at", ts)
        .with("details", json!({"k": [1, 2, {"x": "y"}]}))
        .with("tags", json!(["a", "b"]));
    let sparse = usage_row("acme", 2, "o1", 0).with("active", false);
    assert_eq!(
        wh.insert_rows(ds, "usage", &[full, sparse])
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        2
    );
    let rows = wh
        .query(
            ds,
            "SELECT * FROM {{usage}} WHERE org_slug = @org ORDER BY model",
            &Params::new().with("org", "acme"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(r.string("model").as_deref(), Some("gpt-4o"));
    assert_eq!(r.int("tokens"), Some(1_234_567_890_123));
    assert_eq!(r.float("ratio"), Some(0.25));
    assert_eq!(r.numeric("cost"), Some(cost), "NUMERIC keeps every digit");
    assert_eq!(r.boolean("active"), Some(true));
    assert_eq!(r.bytes("blob"), Some(vec![0u8, 1, 2, 255]));
    assert_eq!(r.timestamp("seen_at"), Some(ts), "TIMESTAMP keeps microseconds");
    assert_eq!(r.date("usage_date"), Some(day(2)));
    assert_eq!(r.json("details"), Some(json!({"k": [1, 2, {"x": "y"}]})));
    assert_eq!(r.json("tags"), Some(json!(["a", "b"])));
    let s = &rows[1];
    assert_eq!(s.boolean("active"), Some(false));
    assert_eq!(s.get("cost"), Some(&Value::Null));
    assert_eq!(s.get("seen_at"), Some(&Value::Null));
    // Timestamps compare in time order when bound as parameters.
    let later = count(
        wh,
        ds,
        "usage",
        "seen_at >= @t",
        &Params::new().with("t", ts - chrono::Duration::microseconds(1)),
    )
    .await;
    assert_eq!(later, 1);
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn bad_rows_are_refused_whole(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    wh.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let good = usage_row("acme", 1, "m", 1);
    let missing_required = Row::new().with("org_slug", "acme").with("model", "m");
    let unknown_column = usage_row("acme", 1, "m", 1).with("surprise", 1i64);
    let wrong_type = usage_row("acme", 1, "m", 1).with("tokens", "many");
    for bad in [missing_required, unknown_column, wrong_type] {
        let err = wh.insert_rows(ds, "usage", &[good.clone(), bad]).await.unwrap_err();
        assert!(matches!(err, WarehouseError::InvalidRow { .. }), "{err:?}");
    }
    assert_eq!(
        count(wh, ds, "usage", "1 = 1", &Params::new()).await,
        0,
        "a refused batch inserts nothing"
    );
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn queries_bind_named_params(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    wh.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let hostile = "x' OR '1'='1";
    wh.insert_rows(
        ds,
        "usage",
        &[usage_row("acme", 1, "a", 5), usage_row("acme", 1, hostile, 7)],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let p = Params::new().with("m", hostile);
    assert_eq!(
        count(wh, ds, "usage", "model = @m", &p).await,
        1,
        "a quote in a value stays a value"
    );
    let rows = wh
        .query(
            ds,
            "SELECT SUM(tokens) AS total, COUNT(*) AS n FROM {{usage}} WHERE org_slug = @org AND usage_date = @d",
            &Params::new().with("org", "acme").with("d", day(1)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows[0].int("total"), Some(12));
    assert_eq!(rows[0].int("n"), Some(2));
    let err = wh
        .query(ds, "SELECT * FROM {{usage}} WHERE model = @absent", &Params::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, WarehouseError::MissingParam(ref p) if p == "absent"),
        "{err:?}"
    );
    let err = wh
        .query(ds, "SELECT * FROM {{bad name}}", &Params::new())
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::InvalidName(_)), "{err:?}");
    let updated = wh
        .execute(
            ds,
            "UPDATE {{usage}} SET tokens = tokens + @n WHERE model = @m",
            &Params::new().with("n", 10i64).with("m", "a"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(updated, 1);
    assert_eq!(count(wh, ds, "usage", "tokens = 15", &Params::new()).await, 1);
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn replace_partition_is_idempotent(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    wh.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Neighbours that a replacement must never touch: another org same day, same org other day.
    wh.insert_rows(
        ds,
        "usage",
        &[usage_row("other", 5, "a", 1), usage_row("acme", 4, "a", 1)],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let key = PartitionKey {
        org_column: "org_slug".into(),
        org_slug: "acme".into(),
        date_column: "usage_date".into(),
        date: day(5),
    };
    let load = vec![usage_row("acme", 5, "a", 10), usage_row("acme", 5, "b", 20)];
    let first = wh
        .replace_partition(ds, "usage", &key, &load)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first.deleted, first.inserted), (0, 2));
    let second = wh
        .replace_partition(ds, "usage", &key, &load)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (second.deleted, second.inserted),
        (2, 2),
        "a rerun replaces, never duplicates"
    );
    assert_eq!(count(wh, ds, "usage", "1 = 1", &Params::new()).await, 4);
    let sum = wh
        .query(
            ds,
            "SELECT SUM(tokens) AS s FROM {{usage}} WHERE org_slug = 'acme' AND usage_date = @d",
            &Params::new().with("d", day(5)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sum[0].int("s"), Some(30));
    let outside = [usage_row("acme", 6, "a", 1)];
    let err = wh.replace_partition(ds, "usage", &key, &outside).await.unwrap_err();
    assert!(matches!(err, WarehouseError::InvalidRow { .. }), "{err:?}");
    // An empty load empties the partition.
    let emptied = wh
        .replace_partition(ds, "usage", &key, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((emptied.deleted, emptied.inserted), (2, 0));
    assert_eq!(
        count(wh, ds, "usage", "1 = 1", &Params::new()).await,
        2,
        "neighbours untouched"
    );
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn staged_load_swaps_in_one_step(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    let mut staging = sample_table("usage__staging");
    staging.clustering.clear();
    staging.partition_field = None;
    for t in [sample_table("usage"), staging] {
        wh.create_table(ds, &t).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let key = PartitionKey {
        org_column: "org_slug".into(),
        org_slug: "acme".into(),
        date_column: "usage_date".into(),
        date: day(5),
    };
    // The old day, and neighbours the swap must not touch.
    wh.insert_rows(
        ds,
        "usage",
        &[
            usage_row("acme", 5, "old", 1),
            usage_row("other", 5, "a", 1),
            usage_row("acme", 4, "a", 1),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Two batches staged, and a row of another org the swap must not take.
    for batch in [
        vec![usage_row("acme", 5, "a", 10), usage_row("acme", 5, "b", 20)],
        vec![usage_row("acme", 5, "c", 30), usage_row("other", 5, "z", 7)],
    ] {
        wh.insert_rows(ds, "usage__staging", &batch)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        count(
            wh,
            ds,
            "usage",
            "usage_date = @d AND org_slug = 'acme'",
            &Params::new().with("d", day(5))
        )
        .await,
        1,
        "staged rows are invisible until the swap"
    );
    let outcome = wh
        .swap_partition(ds, "usage__staging", "usage", &key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((outcome.deleted, outcome.inserted), (1, 3));
    let sum = wh
        .query(
            ds,
            "SELECT SUM(tokens) AS s, COUNT(*) AS n FROM {{usage}} WHERE org_slug = 'acme' AND usage_date = @d",
            &Params::new().with("d", day(5)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((sum[0].int("s"), sum[0].int("n")), (Some(60), Some(3)));
    assert_eq!(
        count(wh, ds, "usage", "1 = 1", &Params::new()).await,
        5,
        "neighbours untouched"
    );
    // Swapping an empty staging table empties the day: a load of zero rows.
    wh.drop_table(ds, "usage__staging")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut staging = sample_table("usage__staging");
    staging.clustering.clear();
    staging.partition_field = None;
    wh.create_table(ds, &staging).await.unwrap_or_else(|e| panic!("{e}"));
    let again = wh
        .swap_partition(ds, "usage__staging", "usage", &key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.deleted, again.inserted), (3, 0));
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn exact_sums_keep_every_digit(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    wh.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cost = |m: &str, c: &str| {
        usage_row("acme", 1, m, 1).with(
            "cost",
            c.parse::<rust_decimal::Decimal>().unwrap_or_else(|e| panic!("{e}")),
        )
    };
    // 0.1 + 0.2 is not 0.3 in floating point; a nano-dollar must survive a large neighbour.
    wh.insert_rows(
        ds,
        "usage",
        &[
            cost("a", "0.1"),
            cost("a", "0.2"),
            cost("b", "123456789.000000001"),
            cost("b", "0.000000001"),
            usage_row("acme", 1, "c", 1),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rows = wh
        .query(
            ds,
            &format!(
                "SELECT model, {} AS s, COUNT(*) AS n FROM {{{{usage}}}} GROUP BY model ORDER BY model",
                wh.exact_sum("cost")
            ),
            &Params::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sums: Vec<(Option<String>, Option<rust_decimal::Decimal>)> =
        rows.iter().map(|r| (r.string("model"), r.numeric("s"))).collect();
    let d = |s: &str| s.parse::<rust_decimal::Decimal>().ok();
    assert_eq!(
        sums,
        vec![
            (Some("a".into()), d("0.3")),
            (Some("b".into()), d("123456789.000000002")),
            (Some("c".into()), None),
        ],
        "exact sums; NULL when nothing to add"
    );
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn atomic_batches_roll_back(wh: &dyn Warehouse, ds: &str) {
    fresh(wh, ds).await;
    wh.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let insert = "INSERT INTO {{usage}} (org_slug, usage_date, model, tokens) \
                  SELECT @org, @d, @m, 1 FROM (SELECT 1 AS one) AS single_row WHERE NOT EXISTS (SELECT 1 FROM {{usage}} WHERE org_slug = @org)";
    let stmt =
        |m: &str| Statement::new(insert, Params::new().with("org", "acme").with("d", day(1)).with("m", m)).expecting(1);
    let counts = wh
        .execute_atomic(ds, &[stmt("first")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts, vec![1]);
    let other = Statement::new(
        "INSERT INTO {{usage}} (org_slug, usage_date, model, tokens) VALUES (@org, @d, 'x', 1)",
        Params::new().with("org", "beta").with("d", day(1)),
    );
    let err = wh.execute_atomic(ds, &[other, stmt("second")]).await.unwrap_err();
    assert!(
        matches!(
            err,
            WarehouseError::Conflict {
                index: 1,
                expected: 1,
                actual: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        count(wh, ds, "usage", "1 = 1", &Params::new()).await,
        1,
        "the whole batch rolled back"
    );
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

pub async fn missing_things_are_typed_errors(wh: &dyn Warehouse, ds: &str) {
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
    let err = wh
        .insert_rows(ds, "usage", &[usage_row("a", 1, "m", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::DatasetNotFound(_)), "{err:?}");
    assert!(!wh.table_exists(ds, "usage").await.unwrap_or_else(|e| panic!("{e}")));
    fresh(wh, ds).await;
    let err = wh
        .insert_rows(ds, "usage", &[usage_row("a", 1, "m", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::TableNotFound { .. }), "{err:?}");
    let err = wh
        .query(ds, "SELECT * FROM {{usage}}", &Params::new())
        .await
        .unwrap_err();
    assert!(matches!(err, WarehouseError::TableNotFound { .. }), "{err:?}");
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

/// The quota pattern: a conditional increment run concurrently must never pass its limit.
pub async fn conditional_updates_never_overshoot(wh: Arc<dyn Warehouse>, ds: &str) {
    fresh(&*wh, ds).await;
    wh.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wh.insert_rows(ds, "usage", &[usage_row("acme", 1, "counter", 0)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let limit = 5i64;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (wh, ds) = (wh.clone(), ds.to_string());
        tasks.push(tokio::spawn(async move {
            let p = Params::new().with("limit", limit).with("org", "acme");
            loop {
                match wh
                    .execute(
                        &ds,
                        "UPDATE {{usage}} SET tokens = tokens + 1 WHERE org_slug = @org AND tokens < @limit",
                        &p,
                    )
                    .await
                {
                    Err(e) if e.is_transient() => continue,
                    other => return other,
                }
            }
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(granted, limit as u64, "exactly `limit` reservations succeed");
    assert_eq!(
        count(&*wh, ds, "usage", "tokens = @l", &Params::new().with("l", limit)).await,
        1
    );
    wh.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}

/// What one handle writes, another handle (another process) reads.
pub async fn shared_between_handles(a: Arc<dyn Warehouse>, b: Arc<dyn Warehouse>, ds: &str) {
    fresh(&*a, ds).await;
    a.create_table(ds, &sample_table("usage"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(b.table_exists(ds, "usage").await.unwrap_or_else(|e| panic!("{e}")));
    b.insert_rows(ds, "usage", &[usage_row("acme", 1, "m", 3)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count(&*a, ds, "usage", "tokens = 3", &Params::new()).await, 1);
    a.delete_dataset(ds).await.unwrap_or_else(|e| panic!("{e}"));
}
