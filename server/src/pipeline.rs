//! The layers every request passes on its way to a handler, in order, run as one
//! middleware: each layer calls the next directly ([`crate::request::Layer`]), so a
//! request allocates one future for all of them, not one per layer.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::ResponseError;

use crate::api;
use crate::error::ApiError;
use crate::request::{Downstream, Layer};

/// Runs the layers, outermost first, then the handlers.
pub async fn run(
    req: ServiceRequest,
    handlers: Next<impl MessageBody + Unpin + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Built from the inside out: each layer around the ones after it.
    let chain = Layer::new(crate::verify::policy::enforce, handlers);
    // After authorisation (only a caller who may pull fetches), before the policy
    // (which judges what was fetched).
    let chain = Layer::new(crate::sync::pull_through::fetch_on_miss, chain);
    let chain = Layer::new(crate::auth::middleware::authorize, chain);
    let chain = Layer::new(api_answer, chain);
    let chain = Layer::new(crate::auth::limits::enforce, chain);
    // What did not read is answered here: after metrics and logs count it, before rate
    // limits, authorisation and handlers could act on it.
    let chain = Layer::new(crate::request::refuse_unreadable, chain);
    let chain = Layer::new(crate::telemetry::request_span, chain);
    let chain = Layer::new(crate::ops::metrics::track, chain);
    // Outermost: every layer inside reads this one reading of the request.
    crate::request::read(req, chain).await
}

/// What every answer from authorisation inward carries: the API version header, and
/// for a 405 (a method the resource does not take) the OCI error body.
async fn api_answer(
    req: ServiceRequest,
    next: impl Downstream,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let response = next.call(req).await?;
    let mut response = if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        method_not_allowed(response)
    } else {
        response.map_into_left_body()
    };
    let headers = response.headers_mut();
    if !headers.contains_key(api::API_VERSION_HEADER) {
        headers.insert(api::API_VERSION_HEADER, api::API_VERSION);
    }
    Ok(response)
}

/// A resource's 405 with the OCI error body like every other error, keeping actix's
/// `Allow` header.
fn method_not_allowed<B>(response: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> {
    let (req, response) = response.into_parts();
    let mut replaced = ApiError::MethodNotAllowed.error_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        replaced.headers_mut().insert(header::ALLOW, allow.clone());
    }
    ServiceResponse::new(req, replaced).map_into_right_body()
}
