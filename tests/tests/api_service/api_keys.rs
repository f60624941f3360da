//! Org API keys: rotation kills the old key at once; no plaintext key in any data file.

use crate::prelude::*;

#[tokio::test]
async fn rotation_kills_the_old_key_at_once() {
    let app = spawn_api().await;
    app.bootstrap().await;
    let old = app.onboard("rot").await;
    let (s, _) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&old), None)
        .await;
    assert_eq!(s, StatusCode::OK, "key is cached now");
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/rot/api-key/rotate",
            Auth::Key(&old),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let new = b["api_key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(b["previous_key_revoked"], true);
    let (s, b) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&old), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_error_shape(s, &b, "INVALID_API_KEY");
    let (s, b) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&new), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["api_key_fingerprint"], json!(&new[new.len() - 4..]));
    // Root can rotate too.
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/rot/api-key/rotate",
            Auth::Root,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(Method::GET, "/api/v1/organizations/rot/api-key", Auth::Key(&new), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let newest = b["api_key"].as_str().unwrap();
    let rows = app.central_count("org_api_keys", "rot").await;
    assert_eq!(rows, 3, "old keys kept, revoked");
    let (s, _) = app
        .call(
            Method::GET,
            "/api/v1/organizations/rot/api-key",
            Auth::Key(newest),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/organizations/nobody/api-key/rotate",
            Auth::Root,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn no_plaintext_key_in_data_files() {
    let app = spawn_api().await;
    app.bootstrap().await;
    let key = app.onboard("secretive").await;
    let (_, b) = app
        .call(
            Method::POST,
            "/api/v1/organizations/secretive/api-key/rotate",
            Auth::Key(&key),
            None,
        )
        .await;
    let rotated = b["api_key"].as_str().unwrap().to_string();
    app.server.ctx.warehouse.ping().await.unwrap();
    let mut files = Vec::new();
    let mut stack = vec![app.data_dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for secret in [&key, &rotated] {
            let needle = &secret.as_bytes()["secretive_api_".len()..];
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains a key",
                f.display()
            );
        }
    }
}
