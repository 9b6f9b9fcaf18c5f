//! The attachments extension, `_signet`: for one manifest, in one call, what is attached
//! to it, what is attached to every index that covers it, and (`?recursive=true`, for an
//! index) the same for each child. Discoverable through the OCI extensions API
//! (`GET /v2/_oci/ext/discover`).

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;
use signet_storage::coverage::coverage;

use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Target};
use crate::state::AppState;

pub const EXTENSION: &str = "_signet";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(Kind::Discover).on(Method::GET, discover))
        .service(resource(Kind::RepositoryDiscover).on(Method::GET, discover))
        .service(resource(Kind::Attachments).on(Method::GET, attachments));
}

async fn discover() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "extensions": [{
            "name": EXTENSION,
            "url": "README.md#attachments-extension",
            "description": "Attachments (signatures, attestations, SBOMs, referrers) of a manifest and of the indexes that cover it; tags with their manifests' details",
            "endpoints": ["_signet/attachments", "_signet/tags"],
        }]
    }))
}

async fn attachments(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let (
        repo,
        Area::Attachments {
            reference,
            recursive,
        },
    ) = target.into_repository()?
    else {
        return Err(ApiError::RouteNotFound);
    };
    match coverage(state.meta.as_ref(), &repo, &reference, recursive).await? {
        Some(report) => {
            let mut body = serde_json::to_value(&report).map_err(ApiError::internal)?;
            body["repository"] = json!(repo.as_str());
            crate::verify::report::annotate(&state, repo.as_str(), &mut body).await;
            Ok(HttpResponse::Ok().json(body))
        }
        None if !state.meta.repository_exists(&repo).await? => Err(ApiError::NameUnknown),
        None => Err(ApiError::ManifestUnknown),
    }
}
