//! `GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is `<digest>`, as
//! an OCI image index, optionally filtered by `artifactType`.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use signet_storage::manifest::OCI_INDEX;

use crate::cache::{Listing, ListingKind};
use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Target};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(Kind::Referrers).on(Method::GET, list_referrers));
}

async fn list_referrers(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let (
        repo,
        Area::Referrers {
            subject,
            artifact_type: filter,
        },
    ) = target.into_repository()?
    else {
        return Err(ApiError::RouteNotFound);
    };
    // The response depends on the subject's attachment rows and on the filter only.
    let key = format!("{subject} {}", filter.as_deref().unwrap_or(""));
    let version = state.manifest_cache.version().await;
    if let Some(cached) =
        state
            .manifest_cache
            .listing(&version, ListingKind::Referrers, repo.as_str(), &key)
    {
        return Ok(respond(cached));
    }
    let with_tags = state.config.attachments.tag_attachments_in_referrers;
    let referrers = state
        .meta
        .list_referrers(&repo, &subject, with_tags)
        .await?;
    let manifests: Vec<Value> = referrers
        .into_iter()
        .filter(|r| {
            filter
                .as_deref()
                .is_none_or(|f| r.artifact_type.as_deref() == Some(f))
        })
        .map(|r| {
            let mut d = Map::new();
            d.insert("mediaType".into(), r.media_type.into());
            d.insert("digest".into(), r.digest.to_string().into());
            d.insert("size".into(), r.size.into());
            if let Some(t) = r.artifact_type {
                d.insert("artifactType".into(), t.into());
            }
            if !r.annotations.is_empty() {
                d.insert("annotations".into(), json!(r.annotations));
            }
            Value::Object(d)
        })
        .collect();
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .map_err(ApiError::internal)?;
    let listing = Listing {
        body: body.into(),
        headers: filter
            .is_some()
            .then_some(("OCI-Filters-Applied", "artifactType".to_string()))
            .into_iter()
            .collect(),
    };
    state.manifest_cache.insert_listing(
        ListingKind::Referrers,
        repo.as_str(),
        &key,
        version,
        &listing,
    );
    Ok(respond(listing))
}

fn respond(listing: Listing) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.content_type(OCI_INDEX);
    for (name, value) in listing.headers {
        response.insert_header((name, value));
    }
    response.body(listing.body)
}
