//! Extensions beyond the distribution spec. The core API does not know they exist; each
//! registers its own routes.

pub mod attachments;
pub mod signatures;
pub mod tags;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    attachments::configure(cfg);
    signatures::configure(cfg);
    tags::configure(cfg);
    crate::sync::api::configure(cfg);
}
