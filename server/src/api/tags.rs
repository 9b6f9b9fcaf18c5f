//! `GET /v2/<name>/tags/list`: tags in lexical order, paginated with `n`/`last`.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::PageQuery;
use crate::cache::{Listing, ListingKind};
use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Target};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(Kind::Tags).on(Method::GET, list_tags));
}

async fn list_tags(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let (repo, Area::Tags(page)) = target.into_repository()? else {
        return Err(ApiError::RouteNotFound);
    };
    let name = repo.as_str();
    let page = PageQuery::new(&page);
    // The response depends on the repository's tags and on `n`/`last` only.
    let key = format!("n={:?}&last={:?}", page.n, page.last);
    let version = state.manifest_cache.version().await;
    if let Some(cached) = state
        .manifest_cache
        .listing(&version, ListingKind::Tags, name, &key)
    {
        return Ok(respond(cached));
    }
    let store_page = if page.n == Some(0) {
        signet_storage::meta::Page {
            last: Some("\u{10FFFF}"),
            limit: Some(0),
        }
    } else {
        page.store_page()
    };
    let mut tags = state
        .meta
        .list_tags(&repo, store_page)
        .await?
        .ok_or(ApiError::NameUnknown)?;
    let link = page.finish(&mut tags, &format!("/v2/{repo}/tags/list"));
    let listing = Listing {
        body: serde_json::to_vec(&json!({ "name": repo.as_str(), "tags": tags }))
            .map_err(ApiError::internal)?
            .into(),
        headers: link.map(|l| ("Link", l)).into_iter().collect(),
    };
    state
        .manifest_cache
        .insert_listing(ListingKind::Tags, name, &key, version, &listing);
    Ok(respond(listing))
}

fn respond(listing: Listing) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    for (name, value) in listing.headers {
        response.insert_header((name, value));
    }
    response.body(listing.body)
}
