//! The pull policy: with `enforce`, `GET` of a manifest without a valid signature (its
//! own, or one on an index in the repository that lists it) answers 403 `DENIED`; with
//! `audit` it is served and logged (tracing target `audit`). Attachments, the referrers
//! API and blobs stay readable, so clients can still fetch signatures. `HEAD` is always
//! answered: it tells only the digest, and signers (cosign, the `sigstore` crate)
//! resolve what they sign with it — refusing it would make unsigned images unsignable.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use signet_storage::attachments::AttachmentTag;
use signet_storage::coverage::coverage;
use signet_storage::{Digest, Reference, RepoName};

use super::cosign::{DSSE, SIMPLESIGNING};
use super::PolicyMode;
use crate::state::AppState;

pub async fn enforce(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let pass = |req| async {
        next.call(req)
            .await
            .map(ServiceResponse::map_into_left_body)
    };
    if req.method() != Method::GET {
        return pass(req).await;
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return pass(req).await;
    };
    let Some((name, reference)) = req
        .path()
        .strip_prefix("/v2/")
        .and_then(|p| p.rsplit_once("/manifests/"))
    else {
        return pass(req).await;
    };
    let mode = state.verifier.trust.policy_for(name);
    if mode == PolicyMode::Off {
        return pass(req).await;
    }
    let (Ok(repo), Ok(reference)) = (name.parse::<RepoName>(), reference.parse::<Reference>())
    else {
        return pass(req).await;
    };
    let refusal = match check(&state, &repo, &reference).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "policy check failed");
            Some((
                "the signature policy could not be evaluated".to_string(),
                None,
            ))
        }
    };
    let Some((message, digest)) = refusal else {
        return pass(req).await;
    };
    let digest = digest.map(|d| d.to_string()).unwrap_or_default();
    tracing::warn!(
        target: "audit",
        event = "policy",
        mode = mode.as_str(),
        repository = %repo,
        digest = %digest,
        reason = %message,
        "manifest without a valid signature"
    );
    if mode == PolicyMode::Audit {
        return pass(req).await;
    }
    let body = json!({"errors": [{
        "code": "DENIED",
        "message": message,
        "detail": {"repository": repo.as_str(), "digest": digest, "policy": "enforce"},
    }]});
    let response = HttpResponse::build(StatusCode::FORBIDDEN).json(body);
    Ok(req.into_response(response).map_into_right_body())
}

/// `None` when the manifest may be served; otherwise why not.
async fn check(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
) -> anyhow::Result<Option<(String, Option<Digest>)>> {
    if let Reference::Tag(tag) = reference {
        if AttachmentTag::parse(tag.as_str()).is_some() {
            return Ok(None);
        }
    }
    let Some(stored) = state.meta.get_manifest(repo, reference).await? else {
        // The handler answers 404.
        return Ok(None);
    };
    if is_attachment(&stored.content) {
        return Ok(None);
    }
    let Some(report) = coverage(state.meta.as_ref(), repo, reference, false).await? else {
        return Ok(None);
    };
    let mut seen = Vec::new();
    let mut candidates: Vec<(Digest, &signet_storage::coverage::Attachment)> = report
        .attachments
        .signature
        .iter()
        .map(|a| (report.digest.clone(), a))
        .collect();
    let inherited = if state.verifier.trust.inherit_from_index {
        report.covered_by.as_slice()
    } else {
        &[]
    };
    for covering in inherited {
        candidates.extend(
            covering
                .attachments
                .signature
                .iter()
                .map(|a| (covering.index.clone(), a)),
        );
    }
    for (subject, a) in candidates {
        let v = state
            .verifier
            .verdict(
                state.meta.as_ref(),
                &state.blobs,
                repo.as_str(),
                &subject,
                &a.digest,
                &a.format,
            )
            .await;
        if v.is_valid() {
            return Ok(None);
        }
        seen.push(format!(
            "{}: {}",
            a.digest,
            v.reason.unwrap_or_else(|| "not valid".into())
        ));
    }
    let message = if seen.is_empty() {
        let scope = if state.verifier.trust.inherit_from_index {
            "on itself or on an index listing it"
        } else {
            "on itself; inherit_from_index is off"
        };
        format!(
            "policy enforce: {}@{} has no signature ({scope}) from a trusted root",
            repo, report.digest
        )
    } else {
        format!(
            "policy enforce: {}@{} has no valid signature from a trusted root ({})",
            repo,
            report.digest,
            seen.join("; ")
        )
    };
    Ok(Some((message, Some(report.digest))))
}

/// A manifest that is itself an attachment (a subject, an artifact type, or only
/// signature layers): readable under any policy.
fn is_attachment(content: &[u8]) -> bool {
    let Ok(m) = serde_json::from_slice::<Value>(content) else {
        return false;
    };
    if m.get("subject").is_some() || m.get("artifactType").is_some() {
        return true;
    }
    let layers = m["layers"].as_array();
    layers.is_some_and(|l| {
        !l.is_empty()
            && l.iter()
                .all(|x| matches!(x["mediaType"].as_str(), Some(SIMPLESIGNING) | Some(DSSE)))
    })
}
