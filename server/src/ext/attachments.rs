//! The attachments extension, `_signet`: for one manifest, in one call, what is attached
//! to it, what is attached to every index that covers it, and (`?recursive=true`, for an
//! index) the same for each child. Discoverable through the OCI extensions API
//! (`GET /v2/_oci/ext/discover`).

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde_json::json;
use signet_storage::coverage::coverage;
use signet_storage::names::InvalidReference;
use signet_storage::Reference;

use crate::api::repo_name;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub const EXTENSION: &str = "_signet";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/v2/_oci/ext/discover", "/v2/{name:.+}/_oci/ext/discover"])
            .route(web::get().to(discover)),
    )
    .service(
        web::resource("/v2/{name:.+}/_signet/attachments/{reference}")
            .route(web::get().to(attachments)),
    );
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

async fn attachments(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<HashMap<String, String>>,
) -> ApiResult<HttpResponse> {
    let repo = repo_name(&path.0)?;
    let reference: Reference = path.1.parse().map_err(|e| match e {
        InvalidReference::Digest(d) => ApiError::DigestInvalid(d.to_string()),
        InvalidReference::Tag(_) => ApiError::ManifestUnknown,
    })?;
    let recursive = query
        .get("recursive")
        .is_some_and(|v| v == "true" || v == "1");
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
