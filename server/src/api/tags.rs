//! `GET /v2/<name>/tags/list`: tags in lexical order, paginated with `n`/`last`.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{repo_name, PageQuery};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v2/{name:.+}/tags/list").route(web::get().to(list_tags)));
}

async fn list_tags(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> ApiResult<HttpResponse> {
    let repo = repo_name(&name)?;
    let page = PageQuery::parse(&query)?;
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
    let mut response = HttpResponse::Ok();
    if let Some(link) = link {
        response.insert_header((header::LINK, link));
    }
    Ok(response.json(json!({ "name": repo.as_str(), "tags": tags })))
}
