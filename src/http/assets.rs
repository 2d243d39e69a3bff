//! Serving the web client's embedded files (`embedded.rs` beside it embeds them): content types,
//! ETags, and the cache and security headers.

use actix_web::{HttpRequest, HttpResponse};

use super::embedded as web;

/// Every path that serves one of the files.
pub(super) const PATHS: &[&str] = web::ASSET_PATHS;

/// One of the web client's embedded files. `no-cache` makes the browser revalidate each time
/// (cheap: a matching `If-None-Match` gets `304` without a body), so an upgraded server never
/// runs with an old script.
pub(super) async fn serve(req: HttpRequest) -> HttpResponse {
    let Some(asset) = web::asset_at(req.path()) else {
        return super::not_found().await;
    };
    let fresh = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("ETag", asset.etag))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        // The page's URL may carry `?token=`: never send it on as a referrer.
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Content-Security-Policy", web::CONTENT_SECURITY_POLICY));
    if fresh {
        response.finish()
    } else {
        response.content_type(asset.content_type).body(asset.body)
    }
}
