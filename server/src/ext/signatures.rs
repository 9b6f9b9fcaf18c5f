//! The signatures extension (containers/image "simple signing", type `atomic`):
//! `GET`/`PUT /extensions/v2/<name>/signatures/<digest>` and, for administrators,
//! `DELETE /extensions/v2/<name>/signatures/<digest>/<id>`.
//!
//! containers/image (skopeo, podman, buildah, CRI-O) uses it instead of lookaside
//! storage when `GET /v2/` answers with `X-Registry-Supports-Signatures: 1`. It treats
//! any status but 200 on GET as a failed copy, so a manifest without signatures is an
//! empty list, not a 404.

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use bytes::BytesMut;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use signet_storage::meta::{AtomicSignature, SignatureStored};
use signet_storage::{Digest, StorageError};

use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Target};
use crate::state::AppState;

pub const SUPPORTS_SIGNATURES_HEADER: (&str, &str) = ("X-Registry-Supports-Signatures", "1");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(Kind::Signatures)
            .on(Method::GET, list_signatures)
            .on(Method::PUT, put_signature),
    )
    .service(resource(Kind::SignatureDelete).on(Method::DELETE, delete_signature));
}

/// The repository and manifest digest the request names.
fn signatures_of(target: Target) -> ApiResult<(signet_storage::RepoName, Digest)> {
    match target.into_repository()? {
        (repo, Area::Signatures(digest)) => Ok((repo, digest)),
        _ => Err(ApiError::RouteNotFound),
    }
}

async fn list_signatures(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let (repo, digest) = signatures_of(target)?;
    if !state.meta.repository_exists(&repo).await? {
        return Err(ApiError::NameUnknown);
    }
    let signatures: Vec<_> = state
        .meta
        .list_atomic_signatures(&repo, &digest)
        .await?
        .into_iter()
        .map(|s| {
            // containers/image reads the version from "schemaVersion" (the field it
            // also writes on PUT); other readers expect "version". Both are given.
            json!({
                "schemaVersion": 2,
                "version": 2,
                "type": "atomic",
                "name": format!("{digest}@{}", s.id),
                "content": base64::engine::general_purpose::STANDARD.encode(&s.content),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "signatures": signatures })))
}

/// The body containers/image PUTs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignatureUpload {
    schema_version: i64,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    content: String,
}

/// Checks an upload against the manifest digest of the URL; returns the signature.
/// A pure function of the body, public so the fuzz targets can reach it.
pub fn validate(
    body: &[u8],
    digest: &Digest,
    max_content: usize,
) -> Result<AtomicSignature, ApiError> {
    let invalid = |m: String| ApiError::SignatureInvalid(m);
    let upload: SignatureUpload = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("malformed signature upload: {e}")))?;
    if upload.schema_version != 2 {
        return Err(invalid(format!(
            "schemaVersion must be 2, not {}",
            upload.schema_version
        )));
    }
    if upload.kind != "atomic" {
        return Err(invalid(format!(
            "only type \"atomic\" is supported, not {:?}",
            upload.kind
        )));
    }
    let (name_digest, id) = upload
        .name
        .rsplit_once('@')
        .ok_or_else(|| invalid("name must be <digest>@<id>".into()))?;
    if name_digest != digest.to_string() {
        return Err(invalid(format!(
            "the name's digest {name_digest:?} is not the URL's {digest}"
        )));
    }
    let id_ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !id_ok {
        return Err(invalid(format!(
            "the signature id {id:?} must be 32 hex characters"
        )));
    }
    let content = base64::engine::general_purpose::STANDARD
        .decode(upload.content.as_bytes())
        .map_err(|e| invalid(format!("content is not base64: {e}")))?;
    if content.is_empty() {
        return Err(invalid("content is empty".into()));
    }
    if content.len() > max_content {
        return Err(ApiError::SignatureTooLarge { limit: max_content });
    }
    Ok(AtomicSignature {
        id: id.to_ascii_lowercase(),
        content: content.into(),
    })
}

async fn put_signature(
    state: web::Data<AppState>,
    req: HttpRequest,
    target: Target,
    actor: crate::auth::Actor,
    mut payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (repo, digest) = signatures_of(target)?;
    let max_content = state.config.signatures.max_content_bytes;
    // base64 grows content by 4/3; leave room for the JSON around it.
    let max_body = max_content / 3 * 4 + 8 * 1024;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|l| l > max_body) {
        return Err(ApiError::SignatureTooLarge { limit: max_content });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::SignatureInvalid(format!("reading body: {e}")))?;
        if body.len() + chunk.len() > max_body {
            return Err(ApiError::SignatureTooLarge { limit: max_content });
        }
        body.extend_from_slice(&chunk);
    }
    let signature = validate(&body, &digest, max_content)?;
    match state
        .registry_as(&actor)
        .put_atomic_signature(&repo, &digest, &signature)
        .await
    {
        Ok(stored) => {
            if stored == SignatureStored::Created {
                tracing::info!(repository = %repo, %digest, id = %signature.id, "atomic signature stored");
            }
            Ok(HttpResponse::Created()
                .insert_header((
                    header::LOCATION,
                    format!("/extensions/v2/{repo}/signatures/{digest}"),
                ))
                .finish())
        }
        Err(StorageError::NotFound) => Err(ApiError::ManifestUnknown),
        Err(StorageError::Conflict(msg)) => Err(ApiError::SignatureConflict(msg)),
        Err(e) => Err(e.into()),
    }
}

async fn delete_signature(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let (repo, Area::SignatureDelete { digest, id }) = target.into_repository()? else {
        return Err(ApiError::RouteNotFound);
    };
    if state
        .registry
        .delete_atomic_signature(&repo, &digest, &id)
        .await?
    {
        tracing::info!(repository = %repo, %digest, %id, "atomic signature deleted");
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ApiError::SignatureUnknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::sha256_of(b"manifest")
    }

    fn body(name: &str, kind: &str, content: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "name": name, "type": kind, "content": content}),
        )
        .unwrap()
    }

    #[test]
    fn accepts_what_containers_image_sends() {
        let name = format!("{}@{}", digest(), "0123456789abcdef0123456789ABCDEF");
        let sig = validate(&body(&name, "atomic", "aGVsbG8="), &digest(), 1024).unwrap();
        assert_eq!(sig.id, "0123456789abcdef0123456789abcdef");
        assert_eq!(&sig.content[..], b"hello");
    }

    #[test]
    fn refuses_everything_else() {
        let good_id = "a".repeat(32);
        let other = Digest::sha256_of(b"other");
        let cases = vec![
            b"not json".to_vec(),
            body(&format!("{}@{good_id}", digest()), "cosign", "aGVsbG8="),
            body(&format!("{other}@{good_id}"), "atomic", "aGVsbG8="),
            body(&format!("{}@{}", digest(), "a".repeat(31)), "atomic", "aGVsbG8="),
            body(&format!("{}@{}", digest(), "g".repeat(32)), "atomic", "aGVsbG8="),
            body(&digest().to_string(), "atomic", "aGVsbG8="),
            body(&format!("{}@{good_id}", digest()), "atomic", "not base64!"),
            body(&format!("{}@{good_id}", digest()), "atomic", ""),
            serde_json::to_vec(&json!({"schemaVersion": 1, "name": format!("{}@{good_id}", digest()), "type": "atomic", "content": "aGVsbG8="})).unwrap(),
        ];
        for case in cases {
            assert!(
                matches!(
                    validate(&case, &digest(), 1024),
                    Err(ApiError::SignatureInvalid(_))
                ),
                "{}",
                String::from_utf8_lossy(&case)
            );
        }
        let big = base64::engine::general_purpose::STANDARD.encode(vec![1u8; 2000]);
        assert!(matches!(
            validate(
                &body(&format!("{}@{good_id}", digest()), "atomic", &big),
                &digest(),
                1024
            ),
            Err(ApiError::SignatureTooLarge { .. })
        ));
    }
}
