//! The web UI: static files from `ui/`, compiled into the binary, served under `/ui/`.
//!
//! The UI is read-only and speaks only the public HTTP API (the distribution API and
//! the `_signet` extensions), with the caller's own credentials: these files hold no
//! data, so they need no authentication (`auth::middleware::classify` knows them).
//!
//! `/ui` redirects to `/ui/`. A path that names no file and has no extension is a page
//! of the UI (a deep link such as `/ui/image?name=...`) and gets `index.html`, whose
//! script routes on the location; anything else unknown is a 404. Every file carries a
//! strong `ETag` (its SHA-256) and `Cache-Control: no-cache`, so browsers revalidate
//! with `If-None-Match` and get `304` until the binary changes.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::request::{Route, Target};

/// The UI's files: path below `/ui/`, content type, bytes.
const FILES: [(&str, &str, &[u8]); 9] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/api.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/views.js"),
    ),
    (
        "tree.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/tree.js"),
    ),
    (
        "x509.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/x509.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/dom.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/favicon.svg"),
    ),
];

/// Scripts and styles come only from these files; data only from this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    etag: String,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(path, content_type, bytes)| Asset {
            path,
            content_type,
            bytes,
            etag: format!("\"{}\"", hex::encode(Sha256::digest(bytes))),
        })
        .collect()
});

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        crate::request::resource(crate::request::Kind::Ui)
            .on(Method::GET, serve)
            .on(Method::HEAD, serve),
    );
}

fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// What a path below `/ui/` names: a file, the UI's page (deep links), or nothing.
fn resolve(path: &str) -> Option<&'static Asset> {
    let assets = &*ASSETS;
    if let Some(asset) = assets.iter().find(|a| a.path == path) {
        return Some(asset);
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        // A file name this build does not have: a stale link or a typo, not a page.
        return None;
    }
    assets.iter().find(|a| a.path == "index.html")
}

async fn serve(req: HttpRequest, target: Target) -> Result<HttpResponse, ApiError> {
    let Route::Ui(path) = target.route else {
        return Err(ApiError::RouteNotFound);
    };
    // `/ui` itself: the pages live below `/ui/`, where their relative links resolve.
    let Some(path) = path else {
        return Ok(redirect());
    };
    let asset = resolve(&path).ok_or(ApiError::RouteNotFound)?;
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.trim_start_matches("W/") == asset.etag)
        });
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, asset.etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if asset.content_type.starts_with("text/html") {
        response
            .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    }
    if fresh {
        return Ok(response.finish());
    }
    response.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    ));
    if req.method() == Method::HEAD {
        return Ok(response.body(crate::api::HeadBody(asset.bytes.len() as u64)));
    }
    Ok(response.body(asset.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_pages_and_unknown_names() {
        assert_eq!(resolve("app.js").unwrap().path, "app.js");
        assert_eq!(resolve("").unwrap().path, "index.html");
        assert_eq!(resolve("image").unwrap().path, "index.html");
        assert_eq!(resolve("repo/deep/link").unwrap().path, "index.html");
        assert!(resolve("missing.js").is_none());
        assert!(resolve("x/app.js").is_none());
    }

    #[test]
    fn etags_are_distinct_and_quoted() {
        let tags: std::collections::HashSet<&str> =
            ASSETS.iter().map(|a| a.etag.as_str()).collect();
        assert_eq!(tags.len(), ASSETS.len());
        assert!(ASSETS
            .iter()
            .all(|a| a.etag.starts_with('"') && a.etag.ends_with('"')));
    }
}
