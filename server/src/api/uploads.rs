//! Blob uploads: `POST` opens a session (or completes a monolithic upload, or mounts),
//! `PATCH` appends a chunk, `PUT ?digest=` verifies and commits, `GET` reports progress,
//! `DELETE` cancels. Bodies stream straight to the blob store.

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use signet_storage::meta::UploadSession;
use signet_storage::range::parse_chunk_range;
use signet_storage::{Digest, RepoName, StorageError};

use super::{upload_range, DIGEST_HEADER, UPLOAD_UUID_HEADER};
use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Mount, Target};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(Kind::UploadStart).on(Method::POST, start_upload))
        .service(
            resource(Kind::Upload)
                .on(Method::PATCH, append_chunk)
                .on(Method::PUT, finish_upload)
                .on(Method::GET, upload_status)
                .on(Method::DELETE, cancel_upload),
        );
}

fn session_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// 201 for a blob now present in `repo`.
fn blob_created(repo: &RepoName, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v2/{repo}/blobs/{digest}")))
        .insert_header((DIGEST_HEADER, digest.to_string()))
        .finish()
}

/// 202 describing a session in progress.
fn session_accepted(state: &AppState, session: &UploadSession) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header((
            header::LOCATION,
            session_location(&session.repo, &session.id),
        ))
        .insert_header((header::RANGE, upload_range(session.size)))
        .insert_header((UPLOAD_UUID_HEADER, session.id.as_str()))
        .insert_header((
            "OCI-Chunk-Min-Length",
            state.config.uploads.chunk_min_length.to_string(),
        ))
        .finish()
}

async fn start_upload(
    state: web::Data<AppState>,
    target: Target,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let (repo, Area::UploadStart(start)) = target.into_repository()? else {
        return Err(ApiError::RouteNotFound);
    };
    if let Some(mount) = &start.mount {
        if try_mount(&state, &repo, mount).await? {
            return Ok(blob_created(&repo, &mount.digest));
        }
        // Not mountable: the client uploads instead, into a new session.
    } else if let Some(digest) = &start.digest {
        let size = state.uploads.put_monolithic(&repo, digest, body).await?;
        tracing::info!(repository = %repo, %digest, size, "blob pushed");
        return Ok(blob_created(&repo, digest));
    }
    let session = state.uploads.start_with(&repo, &start.algorithms).await?;
    Ok(session_accepted(&state, &session))
}

/// Links a blob another repository holds into `repo`. With `from`, only that
/// repository's blobs qualify; without it, any blob the registry holds does. With
/// authentication on, the gate has already dropped a mount whose `from` is absent or not
/// pullable by the caller (`auth::middleware`), so a mount here only ever links from a
/// repository the caller may pull.
async fn try_mount(state: &AppState, repo: &RepoName, mount: &Mount) -> ApiResult<bool> {
    let digest = &mount.digest;
    let size = match &mount.from {
        Some(source) => state.meta.blob_in_repository(source, digest).await?,
        None => state.meta.blob_size(digest).await?,
    };
    if size.is_none() {
        return Ok(false);
    }
    // Only a blob row that still exists is linked (never re-created: its bytes may be
    // gone); while garbage collection deletes it, the client uploads instead.
    match state.registry.mount_blob(repo, digest).await {
        Ok(Some(_)) => {}
        Ok(None) | Err(StorageError::BlobBeingDeleted(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let from = mount.from.as_ref().map(RepoName::as_str);
    tracing::info!(repository = %repo, %digest, from, "blob mounted");
    Ok(true)
}

/// The repository, session id and `?digest=` the request names.
fn session_of(target: Target) -> ApiResult<(RepoName, String, Option<Digest>)> {
    match target.into_repository()? {
        (repo, Area::Upload { session, digest }) => Ok((repo, session, digest)),
        _ => Err(ApiError::RouteNotFound),
    }
}

/// The session the request names.
async fn find_session(state: &AppState, target: Target) -> ApiResult<UploadSession> {
    let (repo, id, _) = session_of(target)?;
    state
        .uploads
        .get(&repo, &id)
        .await?
        .ok_or(ApiError::BlobUploadUnknown)
}

/// Where the chunk says it starts (`Content-Range`), checked against `Content-Length`.
fn chunk_start(req: &HttpRequest) -> ApiResult<Option<u64>> {
    let Some(value) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = value
        .to_str()
        .ok()
        .and_then(parse_chunk_range)
        .ok_or_else(|| ApiError::BlobUploadInvalid("malformed Content-Range".into()))?;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|l| l != end - start + 1) {
        return Err(ApiError::BlobUploadInvalid(
            "Content-Range and Content-Length disagree".into(),
        ));
    }
    Ok(Some(start))
}

async fn append(
    state: &AppState,
    session: &UploadSession,
    start: Option<u64>,
    body: web::Payload,
) -> ApiResult<UploadSession> {
    append_error(session, state.uploads.append(session, start, body).await)
}

/// What appending to `session` answers: a chunk that does not follow on (or a session
/// busy with another request) is told where the session ends; a session gone is unknown.
fn append_error<T>(session: &UploadSession, outcome: Result<T, StorageError>) -> ApiResult<T> {
    match outcome {
        Ok(value) => Ok(value),
        Err(StorageError::OutOfOrder { size, .. }) => Err(ApiError::ChunkOutOfOrder {
            location: session_location(&session.repo, &session.id),
            size,
        }),
        Err(StorageError::NotFound) => Err(ApiError::BlobUploadUnknown),
        Err(e) => Err(e.into()),
    }
}

async fn append_chunk(
    state: web::Data<AppState>,
    req: HttpRequest,
    target: Target,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let session = find_session(&state, target).await?;
    let start = chunk_start(&req)?;
    let updated = append(&state, &session, start, body).await?;
    Ok(session_accepted(&state, &updated))
}

async fn finish_upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    target: Target,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let (repo, id, digest) = session_of(target)?;
    let digest = digest
        .ok_or_else(|| ApiError::DigestInvalid("the digest query parameter is required".into()))?;
    let session = state
        .uploads
        .get(&repo, &id)
        .await?
        .ok_or(ApiError::BlobUploadUnknown)?;
    let empty_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    let size = if !empty_body && !state.uploads.already_holds(&session, &digest) {
        let start = chunk_start(&req)?;
        let finished = state
            .uploads
            .append_and_finish(&session, start, body, &digest)
            .await;
        append_error(&session, finished)?
    } else {
        state.uploads.finish(&session, &digest).await?
    };
    tracing::info!(repository = %session.repo, %digest, size, "blob pushed");
    Ok(blob_created(&session.repo, &digest))
}

async fn upload_status(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let session = find_session(&state, target).await?;
    Ok(HttpResponse::NoContent()
        .insert_header((
            header::LOCATION,
            session_location(&session.repo, &session.id),
        ))
        .insert_header((header::RANGE, upload_range(session.size)))
        .insert_header((UPLOAD_UUID_HEADER, session.id.as_str()))
        .finish())
}

async fn cancel_upload(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let session = find_session(&state, target).await?;
    state.uploads.cancel(&session).await?;
    Ok(HttpResponse::NoContent().finish())
}
