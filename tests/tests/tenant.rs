//! Tenant isolation generated from the routers: both real binaries on one DATA_DIR; every
//! route of either service's route table whose path has `{org_slug}` is called for org A
//! with no key (401) and with org B's key (403), on every method it serves. Then
//! revocation across processes: a key rotated through the api-service stops working on the
//! pipeline-service within the revalidation interval even with an hour-long cache TTL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use cloudact_e2e::{Service, ROOT_KEY};
use cloudact_web::route_table::RouteEntry;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

/// A plausible value for every path parameter other than the org (so a 401/403 can only
/// come from the tenant check, not from a 404 on a nonsense id).
fn fill(path: &str, org: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| open + c).unwrap();
        let value = match &rest[open + 1..close] {
            "org_slug" => org,
            "provider" => "openai",
            "domain" => "cost",
            "pipeline" => "usage_cost",
            "model_id" => "gpt-4o",
            "plan_name" => "TEAM",
            "config_id" => "00000000-0000-0000-0000-000000000000",
            other => panic!("the tenant test has no sample value for path parameter {{{other}}} of {path}"),
        };
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

async fn call(c: &Client, svc: &Service, route: &RouteEntry, org: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = c.request(route.method.clone(), svc.url(&fill(&route.path, org)));
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    if route.method == Method::POST || route.method == Method::PUT || route.method == Method::PATCH {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn onboard(c: &Client, api: &Service, slug: &str) -> String {
    let body = json!({"org_slug": slug, "company_name": slug, "admin_email": format!("ops@{}.example", slug.replace('_', "-"))});
    let resp = c
        .post(api.url("/api/v1/organizations/onboard"))
        .header("X-CA-Root-Key", ROOT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let b: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{b}");
    b["api_key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_org_route_of_both_routers_refuses_other_orgs_and_anonymous_callers() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = HashMap::new();
    // An hour-long cache: only revalidation can make the other process notice a rotation.
    env.insert("AUTH_CACHE_TTL_SECONDS", "3600".to_string());
    env.insert("AUTH_REVALIDATE_SECONDS", "1".to_string());
    env.insert("RATE_LIMIT_REQUESTS_PER_MINUTE", "100000".to_string());
    let api = Service::start("api-service", dir.path(), &env);
    let pipe = Service::start("pipeline-service", dir.path(), &env);
    let c = Client::new();
    let resp = c
        .post(api.url("/api/v1/admin/bootstrap"))
        .header("X-CA-Root-Key", ROOT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let alpha = onboard(&c, &api, "tenant_alpha").await;
    let beta = onboard(&c, &api, "tenant_beta").await;

    let tables = [
        (&api, api_service::routes::api_routes()),
        (&pipe, pipeline_service::routes::api_routes()),
    ];
    let mut checked = 0;
    for (svc, table) in &tables {
        let org_routes: Vec<&RouteEntry> = table.entries().iter().filter(|r| r.is_org_scoped()).collect();
        assert!(org_routes.len() >= 5, "the route table lists its org routes");
        for route in org_routes {
            let (s, b) = call(&c, svc, route, "tenant_alpha", None).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{} {} without a key: {b}",
                route.method,
                route.path
            );
            assert!(b["request_id"].is_string() && b["detail"].is_string(), "{b}");
            let (s, b) = call(&c, svc, route, "tenant_alpha", Some(&beta)).await;
            assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{} {} with another org's key: {b}",
                route.method,
                route.path
            );
            assert!(
                matches!(b["error"].as_str(), Some("ORG_MISMATCH" | "ROOT_KEY_REQUIRED")),
                "{} {}: {b}",
                route.method,
                route.path
            );
            checked += 1;
        }
    }
    println!("tenant check: {checked} org-scoped routes (method × path) refuse other orgs and anonymous callers");
    assert!(checked >= 37, "both route tables were walked ({checked})");

    // Nothing of alpha changed: its key still works and its org still has no integrations.
    let resp = c
        .get(pipe.url("/api/v1/integrations/tenant_alpha"))
        .header("X-API-Key", &alpha)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let b: Value = resp.json().await.unwrap();
    assert!(
        b["integrations"]
            .as_array()
            .map(|a| a
                .iter()
                .all(|i| i["status"] != "VALID" && i["validation_status"] != "VALID"))
            .unwrap_or(true),
        "{b}"
    );

    // Revocation across processes: alpha's key is cached by the pipeline-service (TTL one
    // hour); rotating it on the api-service makes it fail there within the revalidation.
    let whoami = |key: &str| {
        c.get(pipe.url("/api/v1/organizations/tenant_alpha/whoami"))
            .header("X-API-Key", key.to_string())
            .send()
    };
    assert_eq!(whoami(&alpha).await.unwrap().status(), StatusCode::OK);
    let resp = c
        .post(api.url("/api/v1/organizations/tenant_alpha/api-key/rotate"))
        .header("X-API-Key", &alpha)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let fresh: Value = resp.json().await.unwrap();
    let fresh = fresh["api_key"].as_str().unwrap().to_string();
    let rotated_at = Instant::now();
    let deadline = rotated_at + Duration::from_secs(30);
    loop {
        let s = whoami(&alpha).await.unwrap().status();
        if s == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(s, StatusCode::OK);
        assert!(
            Instant::now() < deadline,
            "the rotated key still works on the other process after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "old key refused by the other process {:?} after rotation",
        rotated_at.elapsed()
    );
    assert_eq!(whoami(&fresh).await.unwrap().status(), StatusCode::OK);
}

/// Every route either router serves is in its OpenAPI document with the same method (so
/// schemathesis and clients see the whole API), and the document has no route the router
/// lacks.
#[test]
fn every_served_route_is_documented_and_every_documented_route_served() {
    let services = [
        ("api-service", api_service::openapi(), api_service::routes::api_routes()),
        (
            "pipeline-service",
            pipeline_service::openapi(),
            pipeline_service::routes::api_routes(),
        ),
    ];
    for (name, doc, table) in services {
        let doc = serde_json::to_value(doc).unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if path.starts_with("/api/v1/") && ["get", "post", "put", "delete", "patch"].contains(&method.as_str())
                {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = table
            .entries()
            .iter()
            .map(|r| (r.method.to_string(), r.path.clone()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served, "{name}: OpenAPI paths differ from the route table");
    }
}
