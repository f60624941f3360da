//! The plain static page server: `GET <any path>?page=N` answers the file `DIR/page-N.json`
//! (no `page`: `page-1.json`) as it is on disk, so CloudAct and other tools read identical
//! input. Prints `listening on http://ADDR` on its first line.

use std::{path::PathBuf, process::ExitCode};

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

pub async fn run(args: &[String]) -> ExitCode {
    let (Some(dir), port) = (
        args.first(),
        args.get(1).and_then(|p| p.parse::<u16>().ok()).unwrap_or(0),
    ) else {
        eprintln!("usage: cloudact-bench pages DIR [PORT]");
        return ExitCode::FAILURE;
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let app = axum::Router::new().fallback(page).with_state(PathBuf::from(dir));
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn page(State(dir): State<PathBuf>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let n = query
        .iter()
        .find(|(k, _)| k == "page")
        .map(|(_, v)| v.as_str())
        .unwrap_or("1");
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return (StatusCode::BAD_REQUEST, "page must be a number").into_response();
    }
    match tokio::fs::read(dir.join(format!("page-{n}.json"))).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}
