//! `signet attachments <repo>@<digest|tag>`: the attachment tree of one manifest, as the
//! `_signet/attachments` endpoint reports it.

use std::fmt::Write;

use signet_storage::attachments::AttachmentKind;
use signet_storage::coverage::{coverage, Attachment, ByKind, Coverage};
use signet_storage::{Digest, Reference, RepoName};

use crate::state::AppState;
use crate::verify::report::Verdicts;

/// Splits `repo@digest` or `repo:tag`.
pub fn parse_target(target: &str) -> anyhow::Result<(RepoName, Reference)> {
    let (repo, reference) = if let Some((repo, digest)) = target.split_once('@') {
        (repo, digest)
    } else {
        let (repo, tag) = target.rsplit_once(':').ok_or_else(|| {
            anyhow::anyhow!("expected <repository>@<digest> or <repository>:<tag>")
        })?;
        (repo, tag)
    };
    Ok((repo.parse()?, reference.parse()?))
}

pub async fn run(
    state: &AppState,
    target: &str,
    recursive: bool,
    json: bool,
) -> anyhow::Result<String> {
    let (repo, reference) = parse_target(target)?;
    let report = coverage(state.meta.as_ref(), &repo, &reference, recursive)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{target}: no such manifest"))?;
    // With the verdicts of the trust configuration (`crate::verify`).
    let mut value = serde_json::to_value(&report)?;
    if json {
        crate::verify::report::annotate(state, repo.as_str(), &mut value).await;
        Ok(serde_json::to_string_pretty(&value)? + "\n")
    } else {
        let verdicts = crate::verify::report::verdicts(state, repo.as_str(), &value).await;
        Ok(render_verified(&repo, &report, &verdicts))
    }
}

/// The report as a tree.
pub fn render(repo: &RepoName, report: &Coverage) -> String {
    render_verified(repo, report, &Verdicts::new())
}

/// The report as a tree, each signature and attestation followed by its verdict.
pub fn render_verified(repo: &RepoName, report: &Coverage, verdicts: &Verdicts) -> String {
    let mut out = format!("{repo}@{} ({})\n", report.digest, report.media_type);
    render_coverage(&mut out, report, "", verdicts);
    out
}

/// One entry of a tree level, drawn given its prefix and whether it is the last.
type TreeLine<'a> = Box<dyn Fn(&mut String, &str, bool) + 'a>;

fn render_coverage(out: &mut String, c: &Coverage, prefix: &str, v: &Verdicts) {
    let mut lines: Vec<TreeLine<'_>> = Vec::new();
    for a in kinds(&c.attachments) {
        lines.push(Box::new(move |out, p, last| {
            render_attachment(out, a, &c.digest, p, last, v)
        }));
    }
    for covering in &c.covered_by {
        lines.push(Box::new(move |out, p, last| {
            let (branch, child) = branches(last);
            let _ = writeln!(out, "{p}{branch}covered by index {}", covering.index);
            let nested: Vec<&Attachment> = kinds(&covering.attachments).collect();
            if nested.is_empty() {
                let _ = writeln!(out, "{p}{child}└─ (no attachments)");
            }
            for (i, a) in nested.iter().enumerate() {
                render_attachment(
                    out,
                    a,
                    &covering.index,
                    &format!("{p}{child}"),
                    i + 1 == nested.len(),
                    v,
                );
            }
        }));
    }
    for child in &c.children {
        lines.push(Box::new(move |out, p, last| {
            let (branch, next) = branches(last);
            let platform = child
                .platform
                .as_ref()
                .map(|pl| format!("{pl} "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{p}{branch}{platform}{} ({})",
                child.digest, child.media_type
            );
            render_coverage(out, child, &format!("{p}{next}"), v);
        }));
    }
    if lines.is_empty() {
        let _ = writeln!(out, "{prefix}└─ (no attachments)");
    }
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        line(out, prefix, i + 1 == n);
    }
}

fn render_attachment(
    out: &mut String,
    a: &Attachment,
    subject: &Digest,
    prefix: &str,
    last: bool,
    v: &Verdicts,
) {
    let (branch, next) = branches(last);
    let mut via = match &a.tag {
        Some(tag) => format!("{}, {} {tag}", a.format, a.source),
        None => format!("{}, {}", a.format, a.source),
    };
    if let Some(index) = &a.carried_by {
        via.push_str(&format!(" in index {index}"));
    }
    if !a.predicate_types.is_empty() {
        via.push_str(&format!("; {}", a.predicate_types.join(", ")));
    }
    let verdict = v
        .get(&(subject.to_string(), a.digest.to_string()))
        .map(|v| format!(" — {}", v.summary()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{prefix}{branch}{} {} ({via}){verdict}",
        a.kind, a.digest
    );
    let nested: Vec<&Attachment> = kinds(&a.attachments).collect();
    for (i, n) in nested.iter().enumerate() {
        render_attachment(
            out,
            n,
            &a.digest,
            &format!("{prefix}{next}"),
            i + 1 == nested.len(),
            v,
        );
    }
}

fn kinds(by_kind: &ByKind) -> impl Iterator<Item = &Attachment> {
    AttachmentKind::ALL
        .into_iter()
        .flat_map(move |k| by_kind.of(k).iter())
}

fn branches(last: bool) -> (&'static str, &'static str) {
    if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_storage::coverage::CoveringIndex;

    fn attachment(kind: AttachmentKind, seed: &[u8]) -> Attachment {
        Attachment {
            digest: Digest::sha256_of(seed),
            kind,
            source: "tag",
            format: signet_storage::attachments::AttachmentFormat::Cosign,
            artifact_type: None,
            media_type: None,
            size: None,
            tag: Some("sha256-x.sig".into()),
            created: 0,
            predicate_types: Vec::new(),
            carried_by: None,
            attachments: ByKind::default(),
        }
    }

    #[test]
    fn targets() {
        let (repo, reference) = parse_target("a/b:v1").unwrap();
        assert_eq!(repo.as_str(), "a/b");
        assert!(matches!(reference, Reference::Tag(_)));
        let d = Digest::sha256_of(b"x");
        let (_, reference) = parse_target(&format!("a@{d}")).unwrap();
        assert_eq!(reference, Reference::Digest(d));
        assert!(parse_target("nothing").is_err());
    }

    #[test]
    fn renders_a_tree() {
        let index = Digest::sha256_of(b"index");
        let mut own = ByKind::default();
        own.signature
            .push(attachment(AttachmentKind::Signature, b"sig"));
        let mut on_index = ByKind::default();
        on_index
            .signature
            .push(attachment(AttachmentKind::Signature, b"isig"));
        let report = Coverage {
            digest: Digest::sha256_of(b"child"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            platform: None,
            attachments: own,
            covered_by: vec![CoveringIndex {
                index: index.clone(),
                path: vec![index.clone(), Digest::sha256_of(b"child")],
                attachments: on_index,
            }],
            children: vec![],
        };
        let text = render(&"team/app".parse().unwrap(), &report);
        assert!(
            text.contains(&format!("├─ signature {}", Digest::sha256_of(b"sig"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("└─ covered by index {index}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("   └─ signature {}", Digest::sha256_of(b"isig"))),
            "{text}"
        );
    }
}
