//! `GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is `<digest>`, as
//! an OCI image index, optionally filtered by `artifactType`.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use signet_storage::manifest::OCI_INDEX;

use super::{parse_digest, repo_name};
use crate::error::ApiResult;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v2/{name:.+}/referrers/{digest}").route(web::get().to(list_referrers)),
    );
}

async fn list_referrers(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<HashMap<String, String>>,
) -> ApiResult<HttpResponse> {
    let repo = repo_name(&path.0)?;
    let subject = parse_digest(&path.1)?;
    // Media types have no spaces but often a `+`, which form decoding turns into a
    // space when a client leaves it unescaped.
    let filter = query
        .get("artifactType")
        .filter(|a| !a.is_empty())
        .map(|a| a.replace(' ', "+"));
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
    let mut response = HttpResponse::Ok();
    response.content_type(OCI_INDEX);
    if filter.is_some() {
        response.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    Ok(response.json(json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })))
}
