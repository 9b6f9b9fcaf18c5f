//! `GET /v2/_catalog`: repositories in lexical order, paginated with `n`/`last`.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::PageQuery;
use crate::error::ApiResult;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v2/_catalog").route(web::get().to(catalog)));
}

async fn catalog(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
) -> ApiResult<HttpResponse> {
    let page = PageQuery::parse(&query)?;
    let mut repositories = if page.n == Some(0) {
        Vec::new()
    } else {
        state.meta.list_repositories(page.store_page()).await?
    };
    let link = page.finish(&mut repositories, "/v2/_catalog");
    let mut response = HttpResponse::Ok();
    if let Some(link) = link {
        response.insert_header((header::LINK, link));
    }
    Ok(response.json(json!({ "repositories": repositories })))
}
