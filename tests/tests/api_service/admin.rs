//! Bootstrap: root key only, idempotent.

use crate::prelude::*;

#[tokio::test]
async fn bootstrap_needs_the_root_key_and_is_idempotent() {
    let app = spawn_api().await;
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error_shape(s, &b, "ROOT_KEY_REQUIRED");
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::RootValue("wrong"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error_shape(s, &b, "INVALID_ROOT_KEY");
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["tables_created"].as_array().unwrap().len(), 15);
    assert_eq!(b["total_tables"], 15);
    let (s, b) = app
        .call(Method::POST, "/api/v1/admin/bootstrap", Auth::Root, Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["tables_created"].as_array().unwrap().len(), 0);
    assert_eq!(b["tables_existed"].as_array().unwrap().len(), 15);
    let (s, b) = app
        .call(
            Method::POST,
            "/api/v1/admin/bootstrap",
            Auth::Root,
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error_shape(s, &b, "VALIDATION_ERROR");
}
