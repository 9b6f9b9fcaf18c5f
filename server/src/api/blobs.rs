//! `HEAD`/`GET`/`DELETE /v2/<name>/blobs/<digest>`: blobs are served from the blob
//! store as a stream, whole or by `Range`, or on a plain-HTTP connection straight from
//! the page cache when it holds them (`send_file`); the metadata store says whether the
//! repository may serve them.

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use signet_storage::range::{parse_range_header, ResolvedRange};
use signet_storage::{Digest, RepoName, StorageError};

use super::{HeadBody, DIGEST_HEADER};
use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Target};
use crate::send_file::{FileBody, SendSlot};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(Kind::Blob)
            .on(Method::GET, get_blob)
            .on(Method::HEAD, head_blob)
            .on(Method::DELETE, delete_blob),
    );
}

/// The repository and digest the request names.
fn blob_of(target: Target) -> ApiResult<(RepoName, Digest)> {
    match target.into_repository()? {
        (repo, Area::Blob(digest)) => Ok((repo, digest)),
        _ => Err(ApiError::RouteNotFound),
    }
}

/// Resolves the request's blob: its digest, size and the range asked for.
async fn locate(
    state: &AppState,
    req: &HttpRequest,
    target: Target,
) -> ApiResult<(Digest, u64, Option<ResolvedRange>)> {
    let (repo, digest) = blob_of(target)?;
    let size = held_size(state, &repo, &digest).await?;
    let range = match req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range_header)
    {
        Some(spec) => Some(
            spec.resolve(size)
                .ok_or(ApiError::RangeNotSatisfiable { size })?,
        ),
        None => None,
    };
    Ok((digest, size, range))
}

/// The size of `digest` if `repo` holds it: cached while the store commits nothing, as
/// the manifest lookups are (a client reading a blob in ranges asks once per range).
async fn held_size(state: &AppState, repo: &RepoName, digest: &Digest) -> ApiResult<u64> {
    let key = digest.to_string();
    // Taken before the store is read (see crate::cache).
    let version = state.manifest_cache.version().await;
    if let Some(size) = state
        .manifest_cache
        .blob_size(&version, repo.as_str(), &key)
    {
        return Ok(size);
    }
    let size = state
        .meta
        .blob_in_repository(repo, digest)
        .await?
        .ok_or(ApiError::BlobUnknown)?;
    state
        .manifest_cache
        .insert_blob_size(repo.as_str(), &key, version, size);
    Ok(size)
}

fn blob_headers(digest: &Digest, size: u64, range: Option<ResolvedRange>) -> HttpResponseBuilder {
    let mut response = match range {
        Some(r) => {
            let mut b = HttpResponse::PartialContent();
            b.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end, size),
            ));
            b
        }
        None => HttpResponse::Ok(),
    };
    response
        .content_type("application/octet-stream")
        .insert_header((DIGEST_HEADER, digest.to_string()))
        .insert_header((header::ETAG, format!("\"{digest}\"")))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        // Content under a digest never changes.
        .insert_header((header::CACHE_CONTROL, "max-age=31536000"));
    response
}

async fn get_blob(
    state: web::Data<AppState>,
    req: HttpRequest,
    target: Target,
) -> ApiResult<HttpResponse> {
    let (digest, size, range) = locate(&state, &req, target).await?;
    let length = range.map_or(size, |r| r.len());
    if let Some(slot) = req.conn_data::<SendSlot>().filter(|_| length > 0) {
        let start = range.map_or(0, |r| r.start);
        if let Some(file) = state.blobs.open_resident(&digest, start, length) {
            return Ok(blob_headers(&digest, size, range)
                .no_chunking(length)
                .body(FileBody::new(slot.clone(), file, start, length)));
        }
    }
    let body = match state.blobs.get(&digest, range).await {
        Ok(body) => body,
        Err(StorageError::NotFound) => {
            tracing::error!(%digest, "blob is in the metadata but missing from the blob store");
            return Err(ApiError::BlobUnknown);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(blob_headers(&digest, size, range).body(SizedStream::new(length, body.stream)))
}

async fn head_blob(
    state: web::Data<AppState>,
    req: HttpRequest,
    target: Target,
) -> ApiResult<HttpResponse> {
    let (digest, size, range) = locate(&state, &req, target).await?;
    let length = range.map_or(size, |r| r.len());
    Ok(blob_headers(&digest, size, range).body(HeadBody(length)))
}

async fn delete_blob(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let (repo, digest) = blob_of(target)?;
    if state.registry.unlink_blob(&repo, &digest).await? {
        tracing::info!(repository = %repo, %digest, "blob deleted");
        Ok(HttpResponse::Accepted()
            .insert_header((DIGEST_HEADER, digest.to_string()))
            .finish())
    } else {
        Err(ApiError::BlobUnknown)
    }
}
