//! The distribution-spec HTTP API: one module per area, each with its `configure`.

mod base;
mod blobs;
mod catalog;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web;
use bytes::Bytes;
use signet_storage::meta::Page;

/// On every answer from the routes inward (the distribution spec's SHOULD).
pub const API_VERSION_HEADER: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub const API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");
// Names made once, lower case as HTTP/1.1 sends them: from a `&str` every response would
// parse (and, for the mixed case, copy) the name again.
pub const DIGEST_HEADER: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID_HEADER: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// Registers every route's handlers, by route kind (`crate::request`). Each kind is
/// tried in this order, one guard each: pulls first (manifests, then blobs), as they are
/// most of the traffic.
pub fn configure(cfg: &mut web::ServiceConfig) {
    manifests::configure(cfg);
    blobs::configure(cfg);
    uploads::configure(cfg);
    base::configure(cfg);
    tags::configure(cfg);
    referrers::configure(cfg);
    catalog::configure(cfg);
}

/// The `Range` header of an upload: the bytes received so far, inclusive.
pub(crate) fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Most entries one page may hold, whatever `n` asks for.
const MAX_PAGE: u32 = 10_000;

/// `n` (capped at [`MAX_PAGE`]) and `last` of a listing.
pub(crate) struct PageQuery {
    pub n: Option<u32>,
    pub last: Option<String>,
}

impl PageQuery {
    pub fn new(page: &crate::request::Page) -> Self {
        Self {
            n: page.n.map(|n| n.min(MAX_PAGE)),
            last: page.last.clone(),
        }
    }

    /// The store query: one more than asked, to know whether a next page exists.
    pub fn store_page(&self) -> Page<'_> {
        Page {
            last: self.last.as_deref(),
            limit: self.n.map(|n| n + 1),
        }
    }

    /// Trims the extra entry and returns the `Link` header for the next page, if any.
    pub fn finish(&self, entries: &mut Vec<String>, path: &str) -> Option<String> {
        let n = self.n? as usize;
        if entries.len() <= n {
            return None;
        }
        entries.truncate(n);
        let last = entries.last()?;
        Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""))
    }
}

/// The body of a HEAD response: announces the length of what a GET would send, sends
/// nothing.
pub(crate) struct HeadBody(pub u64);

impl MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.0)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}
