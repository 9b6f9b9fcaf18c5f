//! Every error the API answers with, and the one table that turns each into an OCI
//! error body (`{"errors":[{"code","message","detail"}]}`) and a status code.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use signet_storage::StorageError;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// A chunk that does not continue the upload where it stands.
    #[error("chunk out of order: the upload holds {size} bytes")]
    ChunkOutOfOrder { location: String, size: u64 },
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("manifest references unknown content")]
    ManifestBlobUnknown(Vec<String>),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest exceeds the {limit}-byte limit")]
    ManifestTooLarge { limit: usize },
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    SizeInvalid(String),
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    /// More `?tag=` values on one manifest PUT than `[limits] max_tags_per_push`.
    #[error("at most {limit} tags may be given in one push")]
    TooManyTags { limit: usize },
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
    #[error("signature content exceeds the {limit}-byte limit")]
    SignatureTooLarge { limit: usize },
    #[error("signature conflict: {0}")]
    SignatureConflict(String),
    #[error("signature unknown")]
    SignatureUnknown,
    /// `If-Match`/`If-None-Match` on a manifest PUT did not hold: the tag moved.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("requested access to the resource is denied")]
    Denied,
    #[error("too many requests")]
    TooManyRequests,
    #[error("not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A fetch would take a pull-through prefix beyond its configured quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A push would move, or a delete remove, a tag an immutable-tag rule protects; or a
    /// caller without the admin role asked to override the rules.
    #[error("{0}")]
    TagImmutable(String),
    /// A pull-through repository's upstream could not be reached and nothing is cached.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// A store ran out of room (disk full, quota): the push can be retried once an
    /// operator frees space (garbage collection) or grows the store.
    #[error("the registry's storage is full; nothing was stored, retry once space is freed")]
    StorageFull(String),
    /// Every database connection stayed busy for the whole acquire timeout: the
    /// request did nothing and can be retried (here in a moment, or on another replica).
    #[error("the registry is busy; nothing was changed, retry in a moment")]
    Busy(String),
    /// Anything that is the server's fault. Logged in full, answered without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The one table: status and OCI code of every error.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BlobUnknown => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            BlobUploadUnknown => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            ChunkOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID"),
            ManifestUnknown => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            NameUnknown => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID"),
            SizeInvalid(_) => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
            TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            TooManyTags { .. } => (StatusCode::URI_TOO_LONG, "TAG_INVALID"),
            Unsupported(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            // Codes of the signatures extension (the core spec has none for signatures).
            SignatureInvalid(_) => (StatusCode::BAD_REQUEST, "SIGNATURE_INVALID"),
            SignatureTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIGNATURE_INVALID"),
            SignatureConflict(_) => (StatusCode::CONFLICT, "SIGNATURE_CONFLICT"),
            SignatureUnknown => (StatusCode::NOT_FOUND, "SIGNATURE_UNKNOWN"),
            PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Denied => (StatusCode::FORBIDDEN, "DENIED"),
            TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            RouteNotFound => (StatusCode::NOT_FOUND, "UNSUPPORTED"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            UpstreamUnavailable(_) => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
            // As Harbor answers a quota: the client learns why, and retrying will not help.
            QuotaExceeded(_) => (StatusCode::FORBIDDEN, "DENIED"),
            TagImmutable(_) => (StatusCode::FORBIDDEN, "DENIED"),
            // No OCI code names it; the status says it (RFC 4918's 507).
            StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN"),
            Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            ApiError::ManifestBlobUnknown(digests) => json!({ "missing": digests }),
            ApiError::ChunkOutOfOrder { size, .. } => json!({ "size": size }),
            ApiError::RangeNotSatisfiable { size } => json!({ "size": size }),
            _ => serde_json::Value::Null,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        let message = match self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal server error".to_string()
            }
            ApiError::StorageFull(detail) => {
                tracing::error!(error = %detail, "storage full");
                self.to_string()
            }
            ApiError::Busy(detail) => {
                tracing::warn!(error = %detail, "busy: answered 503");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut error = json!({ "code": code, "message": message });
        let detail = self.detail();
        if !detail.is_null() {
            error["detail"] = detail;
        }
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::ChunkOutOfOrder { location, size } => {
                response.insert_header((header::LOCATION, location.as_str()));
                response.insert_header((header::RANGE, crate::api::upload_range(*size)));
            }
            ApiError::RangeNotSatisfiable { size } => {
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            ApiError::TooManyRequests | ApiError::Busy(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(json!({ "errors": [error] }))
    }
}

/// Storage failures by meaning; `NotFound` is mapped by each handler, which knows what
/// was not found.
impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::DigestMismatch { expected, actual } => {
                ApiError::DigestInvalid(format!("expected {expected}, content hashes to {actual}"))
            }
            StorageError::MissingReferences(missing) => {
                ApiError::ManifestBlobUnknown(missing.iter().map(ToString::to_string).collect())
            }
            e @ StorageError::SizeMismatch { .. } => ApiError::ManifestInvalid(e.to_string()),
            StorageError::RangeNotSatisfiable { size } => ApiError::RangeNotSatisfiable { size },
            StorageError::BodyRead(msg) => ApiError::BlobUploadInvalid(msg),
            StorageError::PreconditionFailed(msg) => ApiError::PreconditionFailed(msg),
            e @ StorageError::TagImmutable { .. } => ApiError::TagImmutable(e.to_string()),
            // Garbage collection is deleting the blob's old bytes: retry in a moment.
            StorageError::BlobBeingDeleted(_) => ApiError::TooManyRequests,
            other if other.is_out_of_space() => ApiError::StorageFull(other.to_string()),
            other if other.is_busy() => ApiError::Busy(other.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_store_answers_503_with_retry_after() {
        let response = ApiError::Busy("pool timed out".into()).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(
            ApiError::Busy(String::new()).status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        );
    }
}
