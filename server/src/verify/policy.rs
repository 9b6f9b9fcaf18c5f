//! The pull policy: with `enforce`, `GET` of a manifest without a valid signature (its
//! own, or one on an index in the repository that lists it) answers 403 `DENIED`; with
//! `audit` it is served and logged (tracing target `audit`). Attachments, the referrers
//! API and blobs stay readable, so clients can still fetch signatures. `HEAD` is always
//! answered: it tells only the digest, and signers (cosign, the `sigstore` crate)
//! resolve what they sign with it — refusing it would make unsigned images unsignable.
//!
//! An attachment is what a manifest is, not what it is called: it is readable without a
//! signature only when it is attached to a manifest of the same repository (by its
//! `subject`, a cosign tag or the referrers fallback tag) and nothing in it could run as
//! a container ([`signet_storage::manifest::image_is_runnable`], for an index: any
//! child). An image pushed with a made-up subject, an `artifactType` or under a
//! `sha256-<hex>.sig` tag needs a signature like any other.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use signet_storage::attachments::{
    is_sbom_predicate, kind_of_statements, AttachmentFormat, AttachmentKind,
};
use signet_storage::coverage::coverage;
use signet_storage::manifest::{
    buildkit_attestations, image_is_runnable, kind_of_media_type, parse_manifest,
    statement_predicate_types, ManifestKind,
};
use signet_storage::meta::StoredManifest;
use signet_storage::{Digest, Reference, RepoName};

use super::requirements;
use super::{PolicyMode, Verdict};
use crate::error::ApiError;
use crate::request::Downstream;
use crate::request::{target_of, Area, Route};
use crate::state::AppState;

pub async fn enforce(
    req: ServiceRequest,
    next: impl Downstream,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let pass = move |req| async move {
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
    // The request's one reading: the manifest judged is the one the handler serves. A
    // request without one never gets here (`request::refuse_unreadable`).
    let Some(target) = target_of(&req) else {
        let refused = ApiError::Internal("the policy found no request target".into());
        return Ok(req.error_response(refused).map_into_right_body());
    };
    let Route::Repository {
        repo,
        area: Area::Manifest { reference, .. },
    } = &target.route
    else {
        return pass(req).await;
    };
    let mode = state.verifier.trust.policy_for(repo.as_str());
    if mode == PolicyMode::Off {
        return pass(req).await;
    }
    // Boxed: an evaluation's state is kilobytes, and held inline it would be moved and
    // allocated with every request's future, evaluated or not.
    let refusal = match Box::pin(evaluate(&state, repo, reference)).await {
        Ok(Some(e)) if !e.passes => Some((e.message(mode), Some(e.digest))),
        Ok(_) => None,
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
    if state.events.enabled() {
        use actix_web::HttpMessage;
        use signet_storage::events::{EventData, EventType, NewEvent};
        let actor = req
            .extensions()
            .get::<crate::auth::Actor>()
            .map(|a| a.0.clone());
        state.events.note(NewEvent::new(
            EventType::PullRefused,
            EventData {
                repository: repo.to_string(),
                digest: Some(digest.clone()).filter(|d| !d.is_empty()),
                tag: match &reference {
                    signet_storage::names::Reference::Tag(t) => Some(t.to_string()),
                    signet_storage::names::Reference::Digest(_) => None,
                },
                actor: Some(actor.unwrap_or_else(|| "anonymous".into())),
                reason: Some(message.clone()),
                detail: Some(json!({"policy": "enforce"})),
                ..EventData::default()
            },
        ));
    }
    let body = json!({"errors": [{
        "code": "DENIED",
        "message": message,
        "detail": {"repository": repo.as_str(), "digest": digest, "policy": "enforce"},
    }]});
    let response = HttpResponse::build(StatusCode::FORBIDDEN).json(body);
    Ok(req.into_response(response).map_into_right_body())
}

/// One attachment looked at by the policy: a signature or attestation with its
/// verdict, or an SBOM.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// The manifest it is attached to: the evaluated one, or an index listing it.
    pub subject: Digest,
    /// Attached to an index listing the manifest (counted with `inherit_from_index`).
    #[serde(rename = "viaIndex")]
    pub via_index: bool,
    pub attachment: Digest,
    pub kind: AttachmentKind,
    pub format: signet_storage::attachments::AttachmentFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verdict>,
    /// Unsigned in-toto statements (BuildKit): what each states.
    #[serde(rename = "predicateTypes", skip_serializing_if = "Vec::is_empty")]
    pub predicate_types: Vec<String>,
    /// The index carrying unsigned statements: its valid signatures vouch for them.
    #[serde(rename = "carriedBy", skip_serializing_if = "Option::is_none")]
    pub carried_by: Option<Digest>,
}

/// The policy's view of one manifest: the evidence found and what is missing.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub repository: String,
    pub digest: Digest,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The manifest is itself an attachment: readable under any policy.
    #[serde(rename = "isAttachment")]
    pub is_attachment: bool,
    #[serde(rename = "inheritFromIndex")]
    pub inherit_from_index: bool,
    /// Indexes in the repository that list the manifest.
    #[serde(rename = "coveredBy")]
    pub covered_by: Vec<Digest>,
    /// A valid signature from a root covering the repository was found.
    pub signed: bool,
    /// The evidence meets every rule (signature and requirements).
    pub passes: bool,
    /// What is missing, one sentence each; empty when it passes.
    pub missing: Vec<String>,
    pub evidence: Vec<Evidence>,
}

impl Evaluation {
    /// The refusal (or audit) message: names what is missing.
    pub fn message(&self, mode: PolicyMode) -> String {
        format!(
            "policy {}: {}@{}: {}",
            mode.as_str(),
            self.repository,
            self.digest,
            self.missing.join("; ")
        )
    }
}

/// Evaluates the policy's rules for `reference` in `repo`, whatever the mode;
/// `None` when the manifest does not exist.
///
/// The answer is kept in memory while the store's change token is unchanged (it has
/// committed nothing since it was read, see [`crate::cache`]) and the trust
/// configuration is the same: a new attachment, a tag move or a stored verdict
/// is a commit, so nothing is served after a change that might alter it. An evaluation
/// that met a storage read failure is not kept.
pub async fn evaluate(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
) -> anyhow::Result<Option<Evaluation>> {
    // Both read before the evaluation, so a change during it makes the entry stale.
    let version = state.manifest_cache.version().await;
    let generation = state.verifier.trust.generation();
    let key = reference.to_string();
    if let Some(v) = &version {
        if let Some(hit) = state.verifier.evaluation(repo.as_str(), &key, v) {
            return Ok(hit);
        }
    }
    let evaluation = evaluate_uncached(state, repo, reference).await?;
    let settled = evaluation.as_ref().is_none_or(|e| {
        e.evidence
            .iter()
            .filter_map(|x| x.verification.as_ref())
            .all(|v| v.checked_at.is_some())
    });
    if let (Some(v), true) = (version, settled) {
        state
            .verifier
            .keep_evaluation(repo.as_str(), &key, v, generation, &evaluation);
    }
    Ok(evaluation)
}

async fn evaluate_uncached(
    state: &AppState,
    repo: &RepoName,
    reference: &Reference,
) -> anyhow::Result<Option<Evaluation>> {
    let Some(stored) = state.meta.get_manifest(repo, reference).await? else {
        return Ok(None);
    };
    let trust = state.verifier.trust.current();
    let mut evaluation = Evaluation {
        repository: repo.to_string(),
        digest: stored.digest.clone(),
        media_type: stored.media_type.clone(),
        is_attachment: is_attachment(state, repo, &stored).await?,
        inherit_from_index: trust.inherit_from_index,
        covered_by: Vec::new(),
        signed: false,
        passes: true,
        missing: Vec::new(),
        evidence: Vec::new(),
    };
    // Attachments are readable under any policy: no coverage walk for them (clients
    // fetch signatures right before the image).
    if evaluation.is_attachment {
        return Ok(Some(evaluation));
    }
    // By digest: a tag moved since the lookup above must not mix two manifests.
    let by_digest = Reference::Digest(stored.digest.clone());
    let Some(report) = coverage(state.meta.as_ref(), repo, &by_digest, false).await? else {
        return Ok(None);
    };
    evaluation.covered_by = report.covered_by.iter().map(|c| c.index.clone()).collect();
    let mut sources = vec![(report.digest.clone(), false, &report.attachments)];
    for covering in &report.covered_by {
        sources.push((covering.index.clone(), true, &covering.attachments));
    }
    for (subject, via_index, by_kind) in sources {
        for kind in [
            AttachmentKind::Signature,
            AttachmentKind::Attestation,
            AttachmentKind::Sbom,
        ] {
            for a in by_kind.of(kind) {
                let verification = if kind == AttachmentKind::Sbom {
                    None
                } else {
                    Some(
                        state
                            .verifier
                            .verdict(
                                state.meta.as_ref(),
                                &state.blobs,
                                repo.as_str(),
                                &subject,
                                &a.digest,
                                a.format,
                            )
                            .await,
                    )
                };
                evaluation.evidence.push(Evidence {
                    subject: subject.clone(),
                    via_index,
                    attachment: a.digest.clone(),
                    kind,
                    format: a.format,
                    verification,
                    predicate_types: a.predicate_types.clone(),
                    carried_by: a.carried_by.clone(),
                });
            }
        }
    }
    // An index carries its platforms' BuildKit statements: they are its evidence too (a
    // pull reads the index first, then each platform is judged on its own).
    if kind_of_media_type(&stored.media_type) == Some(ManifestKind::Index) {
        evaluation
            .evidence
            .extend(carried_statements(state, repo, &stored).await?);
    }
    // What counts: the manifest's own evidence, and its indexes' when inherited.
    let counted: Vec<&Evidence> = evaluation
        .evidence
        .iter()
        .filter(|e| !e.via_index || trust.inherit_from_index)
        .collect();
    let signatures: Vec<&&Evidence> = counted
        .iter()
        .filter(|e| e.kind == AttachmentKind::Signature)
        .collect();
    evaluation.signed = signatures
        .iter()
        .any(|e| e.verification.as_ref().is_some_and(Verdict::is_valid));
    if !evaluation.signed {
        let scope = if trust.inherit_from_index {
            "on itself or on an index listing it"
        } else {
            "on itself; inherit_from_index is off"
        };
        if signatures.is_empty() {
            evaluation
                .missing
                .push(format!("no signature ({scope}) from a trusted root"));
        } else {
            let seen: Vec<String> = signatures
                .iter()
                .map(|e| {
                    let reason = e
                        .verification
                        .as_ref()
                        .and_then(|v| v.reason.clone())
                        .unwrap_or_else(|| "not valid".into());
                    format!("{}: {reason}", e.attachment)
                })
                .collect();
            evaluation.missing.push(format!(
                "no valid signature from a trusted root ({})",
                seen.join("; ")
            ));
        }
    }
    let vouched = statement_verdicts(&evaluation.evidence);
    let facts: Vec<requirements::Evidence<'_>> = counted
        .iter()
        .filter(|e| e.format != AttachmentFormat::InToto)
        .map(|e| requirements::Evidence {
            kind: e.kind,
            verdict: e.verification.as_ref(),
        })
        .chain(
            vouched
                .iter()
                .map(|(kind, verdict)| requirements::Evidence {
                    kind: *kind,
                    verdict: verdict.as_ref(),
                }),
        )
        .collect();
    let unmet = requirements::missing(trust.requirements_for(repo.as_str()), &facts);
    evaluation.missing.extend(unmet);
    evaluation.passes = evaluation.missing.is_empty();
    Ok(Some(evaluation))
}

/// What unsigned in-toto statements (BuildKit's) count as: an SBOM statement as an SBOM;
/// any other as an unsigned attestation of its predicate type (met where a rule accepts
/// unsigned evidence) and, for each valid signature on the index that carries it, as an
/// attestation of that predicate type signed by that signature's root.
fn statement_verdicts(evidence: &[Evidence]) -> Vec<(AttachmentKind, Option<Verdict>)> {
    let mut out = Vec::new();
    for e in evidence
        .iter()
        .filter(|e| e.format == AttachmentFormat::InToto)
    {
        let roots: Vec<&str> = evidence
            .iter()
            .filter(|s| {
                s.kind == AttachmentKind::Signature && Some(&s.subject) == e.carried_by.as_ref()
            })
            .filter_map(|s| s.verification.as_ref().filter(|v| v.is_valid()))
            .filter_map(|v| v.root.as_deref())
            .collect();
        for p in &e.predicate_types {
            if is_sbom_predicate(p) {
                out.push((AttachmentKind::Sbom, None));
                continue;
            }
            out.push((
                AttachmentKind::Attestation,
                Some(Verdict::unsigned(Some(p.clone()))),
            ));
            for root in &roots {
                out.push((
                    AttachmentKind::Attestation,
                    Some(Verdict::valid(root, Some(p.clone()))),
                ));
            }
        }
    }
    out
}

/// The BuildKit statements an index carries, as its own evidence.
async fn carried_statements(
    state: &AppState,
    repo: &RepoName,
    index: &StoredManifest,
) -> anyhow::Result<Vec<Evidence>> {
    let Ok(parsed) = parse_manifest(&index.content, Some(&index.media_type)) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (entry, _) in buildkit_attestations(&parsed) {
        let reference = Reference::Digest(entry.clone());
        let Some(stored) = state.meta.get_manifest(repo, &reference).await? else {
            continue;
        };
        let predicate_types = statement_predicate_types(&stored.content);
        out.push(Evidence {
            subject: index.digest.clone(),
            via_index: false,
            attachment: entry,
            kind: kind_of_statements(&predicate_types),
            format: AttachmentFormat::InToto,
            // Nothing to verify: the predicate types are what counts.
            verification: None,
            predicate_types,
            carried_by: Some(index.digest.clone()),
        });
    }
    Ok(out)
}

/// Whether a manifest is an attachment the policy lets through: attached to a manifest
/// of this repository, and not something a container runtime could run.
async fn is_attachment(
    state: &AppState,
    repo: &RepoName,
    stored: &StoredManifest,
) -> anyhow::Result<bool> {
    if state
        .meta
        .attached_to(repo, &stored.digest)
        .await?
        .is_empty()
    {
        return Ok(false);
    }
    Ok(!runnable(state, repo, &stored.content, 0).await?)
}

/// Deepest index nesting looked into; anything deeper counts as runnable.
const MAX_NESTING: usize = 4;

/// Whether a container runtime could run the manifest `content`, or (an index) any of
/// its children. What cannot be read or found counts as runnable.
fn runnable<'a>(
    state: &'a AppState,
    repo: &'a RepoName,
    content: &'a [u8],
    depth: usize,
) -> futures::future::BoxFuture<'a, anyhow::Result<bool>> {
    Box::pin(async move {
        let Ok(parsed) = parse_manifest(content, None) else {
            return Ok(true);
        };
        match parsed.kind {
            ManifestKind::Image => Ok(image_is_runnable(&parsed)),
            ManifestKind::Index if depth >= MAX_NESTING => Ok(true),
            ManifestKind::Index => {
                for child in &parsed.children {
                    let reference = Reference::Digest(child.digest.clone());
                    let Some(stored) = state.meta.get_manifest(repo, &reference).await? else {
                        return Ok(true);
                    };
                    if runnable(state, repo, &stored.content, depth + 1).await? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    })
}
