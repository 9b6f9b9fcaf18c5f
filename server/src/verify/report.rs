//! Adds each signature's and attestation's verdict (`"verification"`) to a serialized
//! coverage report, so the storage layer's coverage stays free of crypto.

use std::collections::HashMap;

use serde_json::Value;
use signet_storage::attachments::AttachmentFormat;
use signet_storage::Digest;

use super::Verdict;

use crate::state::AppState;

const VERIFIED_KINDS: [&str; 2] = ["signature", "attestation"];
const ALL_KINDS: [&str; 4] = ["signature", "attestation", "sbom", "other"];

/// One verifiable entry: (subject, attachment, format).
type Job = (String, String, String);

/// Visits every signature/attestation entry of a coverage node with its subject.
fn walk(node: &mut Value, visit: &mut dyn FnMut(&str, &mut Value)) {
    let subject = node["digest"].as_str().unwrap_or_default().to_string();
    walk_by_kind(&mut node["attachments"], &subject, visit);
    if let Some(covering) = node["coveredBy"].as_array_mut() {
        for c in covering {
            let index = c["index"].as_str().unwrap_or_default().to_string();
            walk_by_kind(&mut c["attachments"], &index, visit);
        }
    }
    if let Some(children) = node["children"].as_array_mut() {
        for child in children {
            walk(child, visit);
        }
    }
}

fn walk_by_kind(by_kind: &mut Value, subject: &str, visit: &mut dyn FnMut(&str, &mut Value)) {
    for kind in ALL_KINDS {
        let Some(entries) = by_kind.get_mut(kind).and_then(Value::as_array_mut) else {
            continue;
        };
        for entry in entries {
            if VERIFIED_KINDS.contains(&kind) {
                visit(subject, entry);
            }
            let digest = entry["digest"].as_str().unwrap_or_default().to_string();
            if let Some(nested) = entry.get_mut("attachments") {
                walk_by_kind(nested, &digest, visit);
            }
        }
    }
}

/// Verdicts by (subject, attachment) digest strings.
pub type Verdicts = HashMap<(String, String), Verdict>;

/// Fills `verification` on every signature and attestation of the report.
pub async fn annotate(state: &AppState, repo: &str, report: &mut Value) {
    let verdicts = verdicts(state, repo, report).await;
    walk(report, &mut |subject, entry| {
        let attachment = entry["digest"].as_str().unwrap_or_default().to_string();
        if let Some(v) = verdicts.get(&(subject.to_string(), attachment)) {
            entry["verification"] = serde_json::to_value(v).unwrap_or(Value::Null);
        }
    });
}

/// The verdict on every signature and attestation of a serialized coverage report.
pub async fn verdicts(state: &AppState, repo: &str, report: &Value) -> Verdicts {
    let mut report = report.clone();
    let mut jobs: Vec<Job> = Vec::new();
    walk(&mut report, &mut |subject, entry| {
        jobs.push((
            subject.to_string(),
            entry["digest"].as_str().unwrap_or_default().to_string(),
            entry["format"].as_str().unwrap_or_default().to_string(),
        ));
    });
    let mut verdicts = HashMap::new();
    for (subject, attachment, format) in jobs {
        let (Ok(s), Ok(a), Ok(format)) = (
            subject.parse::<Digest>(),
            attachment.parse::<Digest>(),
            format.parse::<AttachmentFormat>(),
        ) else {
            continue;
        };
        let verdict = state
            .verifier
            .verdict(state.meta.as_ref(), &state.blobs, repo, &s, &a, format)
            .await;
        verdicts.insert((subject, attachment), verdict);
    }
    verdicts
}
