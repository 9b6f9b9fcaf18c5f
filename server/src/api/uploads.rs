//! Blob uploads: `POST` opens a session (or completes a monolithic upload, or mounts),
//! `PATCH` appends a chunk, `PUT ?digest=` verifies and commits, `GET` reports progress,
//! `DELETE` cancels. Bodies stream straight to the blob store.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use signet_storage::meta::UploadSession;
use signet_storage::range::parse_chunk_range;
use signet_storage::{Algorithm, Digest, RepoName, StorageError};

use super::{parse_digest, repo_name, upload_range, DIGEST_HEADER, UPLOAD_UUID_HEADER};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource([
            "/v2/{name:.+}/blobs/uploads/",
            "/v2/{name:.+}/blobs/uploads",
        ])
        .route(web::post().to(start_upload)),
    )
    .service(
        web::resource("/v2/{name:.+}/blobs/uploads/{id}")
            .route(web::patch().to(append_chunk))
            .route(web::put().to(finish_upload))
            .route(web::get().to(upload_status))
            .route(web::delete().to(cancel_upload)),
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
    name: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let repo = repo_name(&name)?;
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        if try_mount(&state, &repo, &digest, query.get("from")).await? {
            return Ok(blob_created(&repo, &digest));
        }
        // Not mountable: the client uploads instead, into a new session.
    } else if let Some(digest) = query.get("digest") {
        let digest = parse_digest(digest)?;
        let size = state.uploads.put_monolithic(&repo, &digest, body).await?;
        tracing::info!(repository = %repo, %digest, size, "blob pushed");
        return Ok(blob_created(&repo, &digest));
    }
    let session = state
        .uploads
        .start_with(&repo, &session_algorithms(query.get("digest-algorithm"))?)
        .await?;
    Ok(session_accepted(&state, &session))
}

/// The hashes a new session keeps running: sha256 (the default digest), and the one the
/// client announces with `digest-algorithm` so its final digest needs no second read.
fn session_algorithms(announced: Option<&String>) -> ApiResult<Vec<Algorithm>> {
    match announced.map(String::as_str) {
        None | Some("sha256") => Ok(vec![Algorithm::Sha256]),
        Some("sha512") => Ok(vec![Algorithm::Sha256, Algorithm::Sha512]),
        Some(other) => Err(ApiError::Unsupported(format!(
            "digest algorithm {:?} is not supported (sha256 and sha512 are)",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// Links a blob another repository holds into `repo`. With `from`, only that
/// repository's blobs qualify; without it, any blob the registry holds does.
async fn try_mount(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    from: Option<&String>,
) -> ApiResult<bool> {
    let size = match from {
        Some(from) => match from.parse::<RepoName>() {
            Ok(source) => state.meta.blob_in_repository(&source, digest).await?,
            Err(_) => None,
        },
        None => state.meta.blob_size(digest).await?,
    };
    if size.is_none() {
        return Ok(false);
    }
    // Only a blob row that still exists is linked (never re-created: its bytes may be
    // gone); while garbage collection deletes it, the client uploads instead.
    match state.meta.mount_blob(repo, digest).await {
        Ok(Some(_)) => {}
        Ok(None) | Err(StorageError::BlobBeingDeleted(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(repository = %repo, %digest, from = from.map(String::as_str), "blob mounted");
    Ok(true)
}

async fn find_session(state: &AppState, path: &(String, String)) -> ApiResult<UploadSession> {
    let repo = repo_name(&path.0)?;
    state
        .uploads
        .get(&repo, &path.1)
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
    match state.uploads.append(session, start, body).await {
        Ok(updated) => Ok(updated),
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
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let session = find_session(&state, &path).await?;
    let start = chunk_start(&req)?;
    let updated = append(&state, &session, start, body).await?;
    Ok(session_accepted(&state, &updated))
}

async fn finish_upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<HashMap<String, String>>,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let digest = query
        .get("digest")
        .ok_or_else(|| ApiError::DigestInvalid("the digest query parameter is required".into()))
        .and_then(|d| parse_digest(d))?;
    let mut session = find_session(&state, &path).await?;
    let empty_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    if !empty_body {
        let start = chunk_start(&req)?;
        session = append(&state, &session, start, body).await?;
    }
    let size = state.uploads.finish(&session, &digest).await?;
    tracing::info!(repository = %session.repo, %digest, size, "blob pushed");
    Ok(blob_created(&session.repo, &digest))
}

async fn upload_status(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let session = find_session(&state, &path).await?;
    Ok(HttpResponse::NoContent()
        .insert_header((
            header::LOCATION,
            session_location(&session.repo, &session.id),
        ))
        .insert_header((header::RANGE, upload_range(session.size)))
        .insert_header((UPLOAD_UUID_HEADER, session.id.as_str()))
        .finish())
}

async fn cancel_upload(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let session = find_session(&state, &path).await?;
    state.uploads.cancel(&session).await?;
    Ok(HttpResponse::NoContent().finish())
}
