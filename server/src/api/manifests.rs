//! `HEAD`/`GET`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`. Manifests are answered
//! from the metadata store, byte for byte as they were pushed.

use std::borrow::Cow;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures::StreamExt;
use signet_storage::manifest::parse_manifest;
use signet_storage::meta::{ManifestPut, TagCondition};
use signet_storage::{Algorithm, Digest, Reference, Registry, RepoName, Tag};

use super::{HeadBody, DIGEST_HEADER};
use crate::auth::Actor;
use crate::cache::ManifestAnswer;
use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Target};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(Kind::Manifest)
            .on(Method::GET, get_manifest)
            .on(Method::HEAD, head_manifest)
            .on(Method::PUT, put_manifest)
            .on(Method::DELETE, delete_manifest),
    );
}

/// What a manifest request names.
struct ManifestTarget {
    repo: RepoName,
    reference: Reference,
    /// `?tag=` values.
    tags: Vec<Tag>,
    /// `?override_immutable=true`, which authorisation let through only for an
    /// administrator.
    override_immutable: bool,
}

fn manifest_of(target: Target) -> ApiResult<ManifestTarget> {
    match target.into_repository()? {
        (
            repo,
            Area::Manifest {
                reference,
                tags,
                override_immutable,
            },
        ) => Ok(ManifestTarget {
            repo,
            reference,
            tags,
            override_immutable,
        }),
        _ => Err(ApiError::RouteNotFound),
    }
}

/// The write path a manifest request goes through: without the immutable-tag rules when
/// an administrator overrides them.
fn registry_for<'a>(
    state: &'a AppState,
    target: &ManifestTarget,
    actor: &Actor,
) -> Cow<'a, Registry> {
    let registry = state.registry_as(actor);
    if target.override_immutable {
        tracing::info!(target: "audit", event = "immutable-override", repository = %target.repo, reference = %target.reference, "an administrator overrides the immutable-tag rules");
        Cow::Owned(registry.overriding_tag_rules())
    } else {
        registry
    }
}

async fn lookup(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
) -> ApiResult<Arc<ManifestAnswer>> {
    let key = reference.to_string();
    // Taken before the store is read, so an answer that raced a commit is never served
    // after it (see crate::cache).
    let version = state.manifest_cache.version().await;
    if let Some(m) = state.manifest_cache.get(&version, repo.as_str(), &key) {
        return Ok(m);
    }
    match state.meta.get_manifest(repo, reference).await? {
        Some(m) => {
            let m = Arc::new(ManifestAnswer::new(m).map_err(|_| {
                ApiError::Internal("a stored media type is not a header value".into())
            })?);
            state
                .manifest_cache
                .insert(repo.as_str(), &key, version, &m);
            Ok(m)
        }
        None if !state.meta.repository_exists(repo).await? => Err(ApiError::NameUnknown),
        None => Err(ApiError::ManifestUnknown),
    }
}

fn manifest_headers(m: &ManifestAnswer) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, m.content_type.clone()))
        .insert_header((DIGEST_HEADER, m.digest.clone()))
        .insert_header((header::ETAG, m.etag.clone()));
    response
}

async fn get_manifest(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let ManifestTarget {
        repo, reference, ..
    } = manifest_of(target)?;
    let m = lookup(&state, &repo, &reference).await?;
    state.pulls.note(repo.as_str(), &m.manifest.digest);
    Ok(manifest_headers(&m).body(m.manifest.content.clone()))
}

async fn head_manifest(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let ManifestTarget {
        repo, reference, ..
    } = manifest_of(target)?;
    let m = lookup(&state, &repo, &reference).await?;
    Ok(manifest_headers(&m).body(HeadBody(m.manifest.content.len() as u64)))
}

/// Reads the whole manifest body, refusing more than `limit` bytes (413).
async fn read_limited(
    req: &HttpRequest,
    mut body: web::Payload,
    limit: usize,
) -> ApiResult<bytes::Bytes> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|l| l > limit as u64) {
        return Err(ApiError::ManifestTooLarge { limit });
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(4096).min(limit as u64) as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::ManifestInvalid(format!("reading body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::ManifestTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn put_manifest(
    state: web::Data<AppState>,
    req: HttpRequest,
    target: Target,
    actor: Actor,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let named = manifest_of(target)?;
    let registry = registry_for(&state, &named, &actor);
    let ManifestTarget {
        repo,
        reference,
        tags: extra_tags,
        ..
    } = named;
    let tags = tags_to_move(&state, &reference, extra_tags)?;
    let content = read_limited(&req, body, state.config.limits.max_manifest_bytes).await?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let digest = Digest::of(algorithm, &content);
    if let Reference::Digest(expected) = &reference {
        if *expected != digest {
            return Err(ApiError::DigestInvalid(format!(
                "the manifest hashes to {digest}, not {expected}"
            )));
        }
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed =
        parse_manifest(&content, content_type).map_err(|e| ApiError::ManifestInvalid(e.0))?;

    let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
    let condition = match &reference {
        Reference::Tag(_) => tag_condition(&req)?,
        Reference::Digest(_) => None,
    };
    let put = ManifestPut {
        condition,
        tags: tags.clone(),
        ..ManifestPut::derived(repo.clone(), digest.clone(), &parsed, content)
    };
    registry.put_manifest(&put).await?;
    tracing::info!(repository = %repo, reference = %reference, %digest, media_type = %parsed.media_type, "manifest pushed");

    let mut response = HttpResponse::Created();
    response
        .insert_header((header::LOCATION, format!("/v2/{repo}/manifests/{digest}")))
        .insert_header((DIGEST_HEADER, digest.to_string()));
    if let Some(subject) = subject {
        response.insert_header(("OCI-Subject", subject.to_string()));
    }
    if matches!(reference, Reference::Digest(_)) {
        for tag in &tags {
            response.append_header(("OCI-Tag", tag.as_str()));
        }
    }
    Ok(response.finish())
}

/// The tags a PUT moves: the one it is pushed by, or the `?tag=` values of a PUT by
/// digest (at most `[limits] max_tags_per_push`, 414 beyond; a PUT by tag takes none).
fn tags_to_move(state: &AppState, reference: &Reference, extra: Vec<Tag>) -> ApiResult<Vec<Tag>> {
    match reference {
        Reference::Tag(t) if extra.is_empty() => Ok(vec![t.clone()]),
        Reference::Tag(_) => Err(ApiError::TagInvalid(
            "tag query parameters need a PUT by digest".into(),
        )),
        Reference::Digest(_) => {
            let mut tags: Vec<Tag> = Vec::with_capacity(extra.len());
            for tag in extra {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            let limit = state.config.limits.max_tags_per_push;
            if tags.len() > limit {
                return Err(ApiError::TooManyTags { limit });
            }
            Ok(tags)
        }
    }
}

async fn delete_manifest(
    state: web::Data<AppState>,
    target: Target,
    actor: Actor,
) -> ApiResult<HttpResponse> {
    let named = manifest_of(target)?;
    let registry = registry_for(&state, &named, &actor);
    let ManifestTarget {
        repo, reference, ..
    } = named;
    let with_attachments = state.config.attachments.delete_with_subject;
    let deleted = match &reference {
        Reference::Digest(d) => {
            let gone = registry.delete_manifest(&repo, d, with_attachments).await?;
            if gone.len() > 1 {
                tracing::info!(repository = %repo, digest = %d, attachments = gone.len() - 1, "attachments deleted with their subject");
            }
            !gone.is_empty()
        }
        Reference::Tag(t) => registry.delete_tag(&repo, t).await?,
    };
    if deleted {
        tracing::info!(repository = %repo, %reference, "manifest deleted");
        Ok(HttpResponse::Accepted().finish())
    } else if !state.meta.repository_exists(&repo).await? {
        Err(ApiError::NameUnknown)
    } else {
        Err(ApiError::ManifestUnknown)
    }
}

/// `If-Match` / `If-None-Match` on a PUT by tag: conditions on the tag's current
/// digest (its ETag), so two signers appending to one `.sig` cannot silently drop a
/// signature.
fn tag_condition(req: &HttpRequest) -> ApiResult<Option<TagCondition>> {
    let parse = |name: header::HeaderName| -> ApiResult<Option<Vec<Digest>>> {
        let Some(value) = req.headers().get(name) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::ManifestInvalid("unreadable precondition header".into()))?;
        if value.trim() == "*" {
            return Ok(Some(Vec::new()));
        }
        value
            .split(',')
            .map(|tag| {
                let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
                tag.parse::<Digest>()
                    .map_err(|e| ApiError::PreconditionFailed(format!("{tag:?}: {e}")))
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some)
    };
    if let Some(digests) = parse(header::IF_MATCH)? {
        return Ok(Some(TagCondition::PointsAt(digests)));
    }
    Ok(parse(header::IF_NONE_MATCH)?.map(TagCondition::NotAt))
}
