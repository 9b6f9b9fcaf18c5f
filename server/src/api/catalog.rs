//! `GET /v2/_catalog`: repositories in lexical order, paginated with `n`/`last`.

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::json;

use signet_storage::meta::Page;

use super::PageQuery;
use crate::auth::CatalogFilter;
use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Kind, Route, Target};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(Kind::Catalog).on(Method::GET, catalog));
}

async fn catalog(
    state: web::Data<AppState>,
    req: HttpRequest,
    target: Target,
) -> ApiResult<HttpResponse> {
    let Route::Catalog(page) = &target.route else {
        return Err(ApiError::RouteNotFound);
    };
    let page = PageQuery::new(page);
    // With authentication on, only what the caller may pull.
    let filter = req.extensions().get::<CatalogFilter>().cloned();
    let mut repositories = if page.n == Some(0) {
        Vec::new()
    } else if let Some(filter) = filter {
        visible(&state, &page, &filter).await?
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

/// One page (plus one entry, as `store_page` asks) of the repositories `filter` lets
/// through, reading the store in batches.
async fn visible(
    state: &AppState,
    page: &PageQuery,
    filter: &CatalogFilter,
) -> ApiResult<Vec<String>> {
    const BATCH: u32 = 1000;
    let want = page.n.map(|n| n as usize + 1);
    let mut last = page.last.clone();
    let mut out = Vec::new();
    loop {
        let batch = state
            .meta
            .list_repositories(Page {
                last: last.as_deref(),
                limit: Some(BATCH),
            })
            .await?;
        let done = batch.len() < BATCH as usize;
        last = batch.last().cloned();
        out.extend(batch.into_iter().filter(|r| filter.allows(r)));
        if done || want.is_some_and(|w| out.len() >= w) {
            break;
        }
    }
    if let Some(w) = want {
        out.truncate(w);
    }
    Ok(out)
}
