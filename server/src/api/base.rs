//! `GET /v2/`: the API version check every client starts with.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

use crate::request::{resource, Kind};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(Kind::Base)
            .on(Method::GET, version_check)
            .on(Method::HEAD, version_check),
    );
}

async fn version_check() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(crate::ext::signatures::SUPPORTS_SIGNATURES_HEADER)
        .body("{}")
}
