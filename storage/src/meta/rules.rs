//! The metadata decisions that are not SQL, made once for every backend: which rows of
//! the attachment index a write adds, which manifests a delete with attachments takes
//! along, and how attachment rows become a referrers listing. Pure functions; the SQL
//! that reads their inputs and writes their outputs is in [`super::sql`].
//!
//! (The tag preconditions are [`super::TagCondition::check`]; the GC mark rules are one
//! recursive query, [`super::sql`]'s `UNREACHABLE_MANIFESTS`, run as is by every engine.)

use std::collections::{BTreeMap, HashSet};

use super::{AttachmentRecord, ManifestPut, Referrer};
use crate::attachments::{
    classify, kind_of_statements, AttachmentFormat, AttachmentKind, AttachmentSource,
    AttachmentTag, BUILDKIT_ATTESTATION_ARTIFACT,
};
use crate::digest::Digest;
use crate::manifest::{buildkit_attestations, kind_of_media_type, parse_manifest, ManifestKind};
use crate::names::Tag;

/// One row of the attachment index, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttachmentRow {
    pub subject: Digest,
    pub attachment: Digest,
    pub kind: AttachmentKind,
    pub source: AttachmentSource,
    pub format: AttachmentFormat,
    pub artifact_type: Option<String>,
    pub tag: Option<String>,
    /// The manifest whose presence keeps the row.
    pub carrier: Digest,
}

/// What an index entry says of itself, read from its stored manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryDescription {
    pub digest: Digest,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// The predicate types of the in-toto statements it holds as layers
    /// ([`crate::manifest::statement_predicate_types`]).
    pub predicate_types: Vec<String>,
}

/// The index entries [`put_rows`] needs described: those of a referrers fallback index
/// when one of the `moved` tags is a fallback tag, and BuildKit's attestation manifests.
/// Entries absent from the repository are left undescribed.
pub(crate) fn entries_to_describe(put: &ManifestPut, moved: &[Tag]) -> Vec<Digest> {
    let fallback = moved.iter().any(|t| {
        matches!(
            AttachmentTag::parse(t.as_str()),
            Some(AttachmentTag::Fallback { .. })
        )
    });
    if fallback {
        put.children.clone()
    } else {
        buildkit_entries(put)
            .into_iter()
            .map(|(entry, _)| entry)
            .collect()
    }
}

/// The attestation-manifest entries of an index PUT, each with the entry it attests.
fn buildkit_entries(put: &ManifestPut) -> Vec<(Digest, Digest)> {
    let m = &put.manifest;
    if kind_of_media_type(&m.media_type) != Some(ManifestKind::Index) {
        return Vec::new();
    }
    parse_manifest(&m.content, Some(&m.media_type))
        .map(|parsed| buildkit_attestations(&parsed))
        .unwrap_or_default()
}

/// The attachment rows a manifest PUT writes: the row of its `subject` field, and for
/// each of the `moved` tags (those that moved to it) that is an attachment tag, what
/// that tag attaches. (The rows a tag's previous target attached are removed before
/// these are written.)
pub(crate) fn put_rows(
    put: &ManifestPut,
    moved: &[Tag],
    entries: &[EntryDescription],
) -> Vec<AttachmentRow> {
    let m = &put.manifest;
    let mut rows = Vec::new();
    if let Some(subject) = &m.subject {
        let (kind, format) = classify(m.artifact_type.as_deref(), &m.annotations);
        rows.push(AttachmentRow {
            subject: subject.clone(),
            attachment: m.digest.clone(),
            kind,
            source: AttachmentSource::Subject,
            format,
            artifact_type: m.artifact_type.clone(),
            tag: None,
            carrier: m.digest.clone(),
        });
    }
    for tag in moved {
        rows.extend(tag_rows(put, tag, entries));
    }
    // BuildKit's attestation manifests: attestations of the entry they name, kept by
    // the index (it is what a signature on the image covers).
    // Only what the index's edges hold: a mirror that left a platform out stores the
    // index with fewer children than its bytes list.
    for (entry, subject) in buildkit_entries(put) {
        let Some(described) = entries.iter().find(|e| e.digest == entry) else {
            continue;
        };
        if !put.children.contains(&entry) || !put.children.contains(&subject) {
            continue;
        }
        let predicate_types = &described.predicate_types;
        rows.push(AttachmentRow {
            subject,
            attachment: entry,
            kind: kind_of_statements(predicate_types),
            source: AttachmentSource::Buildkit,
            format: AttachmentFormat::InToto,
            artifact_type: Some(BUILDKIT_ATTESTATION_ARTIFACT.to_string()),
            tag: None,
            carrier: m.digest.clone(),
        });
    }
    rows
}

/// What one attachment tag pointing at the PUT's manifest attaches.
fn tag_rows(put: &ManifestPut, tag: &Tag, entries: &[EntryDescription]) -> Vec<AttachmentRow> {
    let m = &put.manifest;
    let mut rows = Vec::new();
    match AttachmentTag::parse(tag.as_str()) {
        Some(AttachmentTag::Cosign { subject, kind }) => rows.push(AttachmentRow {
            subject,
            attachment: m.digest.clone(),
            kind,
            source: AttachmentSource::Tag,
            format: AttachmentFormat::Cosign,
            artifact_type: Some(AttachmentTag::cosign_artifact_type(kind).to_string()),
            tag: Some(tag.to_string()),
            carrier: m.digest.clone(),
        }),
        // The referrers fallback index: each entry is a referrer of the subject.
        Some(AttachmentTag::Fallback { subject }) => {
            for child in &put.children {
                let Some(entry) = entries.iter().find(|e| &e.digest == child) else {
                    continue;
                };
                let (kind, format) = classify(entry.artifact_type.as_deref(), &entry.annotations);
                rows.push(AttachmentRow {
                    subject: subject.clone(),
                    attachment: child.clone(),
                    kind,
                    source: AttachmentSource::FallbackTag,
                    format,
                    artifact_type: entry.artifact_type.clone(),
                    tag: Some(tag.to_string()),
                    carrier: m.digest.clone(),
                });
            }
        }
        None => {}
    }
    rows
}

/// The attachment row of an atomic signature: named by the digest of its bytes, kept by
/// its subject manifest.
pub(crate) fn atomic_signature_row(manifest: &Digest, content: &[u8]) -> AttachmentRow {
    AttachmentRow {
        subject: manifest.clone(),
        attachment: Digest::sha256_of(content),
        kind: AttachmentKind::Signature,
        source: AttachmentSource::Extension,
        format: AttachmentFormat::Atomic,
        artifact_type: None,
        tag: None,
        carrier: manifest.clone(),
    }
}

/// The breadth-first walk of a delete: the manifest and, with attachments, its
/// attachments, theirs, and so on, each once, in the order they were found.
#[derive(Debug)]
pub(crate) struct AttachmentWalk {
    found: Vec<String>,
    next: usize,
    with_attachments: bool,
}

impl AttachmentWalk {
    pub fn new(root: &Digest, with_attachments: bool) -> Self {
        Self {
            found: vec![root.to_string()],
            next: 0,
            with_attachments,
        }
    }

    /// The next manifest whose attachments the walk needs; `None` when done.
    pub fn next_subject(&mut self) -> Option<String> {
        if !self.with_attachments {
            return None;
        }
        let subject = self.found.get(self.next).cloned();
        self.next += 1;
        subject
    }

    /// The attachments of the manifest [`Self::next_subject`] returned last.
    pub fn attached(&mut self, attachments: Vec<String>) {
        for a in attachments {
            if !self.found.contains(&a) {
                self.found.push(a);
            }
        }
    }

    /// Everything found, the root first.
    pub fn into_found(self) -> Vec<String> {
        self.found
    }
}

/// The referrers listing of a subject from its attachment rows: attachments that are
/// manifests, cosign tag attachments and BuildKit's attestation manifests (no `subject`
/// field: known by a convention, as cosign's tags are) only with
/// `include_tag_attachments`, each once (the
/// subject-field row, when present, says best what it is), by digest.
pub(crate) fn referrers(
    attachments: &[AttachmentRecord],
    include_tag_attachments: bool,
) -> Vec<Referrer> {
    let mut rows: Vec<&AttachmentRecord> = attachments
        .iter()
        .filter(|a| match a.source {
            AttachmentSource::Extension => false,
            AttachmentSource::Tag | AttachmentSource::Buildkit => include_tag_attachments,
            _ => true,
        })
        .collect();
    rows.sort_by_key(|a| (a.source != AttachmentSource::Subject, a.created_at));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for a in rows {
        let (Some(media_type), Some(size)) = (&a.media_type, a.size) else {
            continue;
        };
        if !seen.insert(a.attachment.clone()) {
            continue;
        }
        out.push(Referrer {
            digest: a.attachment.clone(),
            media_type: media_type.clone(),
            size,
            artifact_type: a.artifact_type.clone(),
            annotations: a.annotations.clone(),
        });
    }
    out.sort_by(|x, y| x.digest.cmp(&y.digest));
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::meta::ManifestRecord;

    fn put(body: &str, subject: Option<&Digest>, children: &[&Digest], tag: &str) -> ManifestPut {
        ManifestPut {
            repo: "r/x".parse().unwrap(),
            manifest: ManifestRecord {
                digest: Digest::sha256_of(body.as_bytes()),
                media_type: crate::manifest::OCI_MANIFEST.into(),
                content: Bytes::from(body.to_string()),
                artifact_type: Some("application/spdx+json".into()),
                subject: subject.cloned(),
                annotations: BTreeMap::new(),
            },
            blobs: vec![],
            children: children.iter().map(|d| (*d).clone()).collect(),
            sizes: Vec::new(),
            tags: vec![tag.parse().unwrap()],
            condition: None,
            immutable: Vec::new(),
        }
    }

    #[test]
    fn a_subject_field_and_a_cosign_tag_each_make_a_row() {
        let subject = Digest::sha256_of(b"subject");
        let p = put("{}", Some(&subject), &[], "latest");
        let rows = put_rows(&p, &p.tags, &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].source, AttachmentSource::Subject);
        assert_eq!(rows[0].kind, AttachmentKind::Sbom);

        let sig_tag = format!("sha256-{}.sig", subject.hex());
        let p = put("{}", None, &[], &sig_tag);
        assert!(put_rows(&p, &[], &[]).is_empty(), "the tag did not move");
        let rows = put_rows(&p, &p.tags, &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].subject, subject);
        assert_eq!(rows[0].source, AttachmentSource::Tag);
        assert_eq!(rows[0].tag.as_deref(), Some(sig_tag.as_str()));
        assert!(entries_to_describe(&p, &p.tags).is_empty());
    }

    #[test]
    fn a_fallback_tag_attaches_the_described_entries() {
        let subject = Digest::sha256_of(b"subject");
        let (known, unknown) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        let p = put(
            "{}",
            None,
            &[&known, &unknown],
            &format!("sha256-{}", subject.hex()),
        );
        assert_eq!(
            entries_to_describe(&p, &p.tags),
            vec![known.clone(), unknown]
        );
        assert!(entries_to_describe(&p, &[]).is_empty());
        let described = [EntryDescription {
            digest: known.clone(),
            artifact_type: Some(crate::attachments::SIGSTORE_BUNDLE.into()),
            annotations: BTreeMap::new(),
            predicate_types: Vec::new(),
        }];
        let rows = put_rows(&p, &p.tags, &described);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].attachment, known);
        assert_eq!(rows[0].carrier, p.manifest.digest);
        assert_eq!(rows[0].kind, AttachmentKind::Signature);
        assert_eq!(rows[0].format, AttachmentFormat::SigstoreBundle);
    }

    #[test]
    fn buildkit_attestation_entries_attest_the_entry_they_name() {
        let (image, attestation, stray) = (
            Digest::sha256_of(b"image"),
            Digest::sha256_of(b"attestation"),
            Digest::sha256_of(b"stray"),
        );
        let entry = |d: &Digest, platform: &str, names: Option<&Digest>| {
            let (os, arch) = platform.split_once('/').unwrap();
            let annotations = names
                .map(|n| {
                    format!(
                        r#","annotations":{{"vnd.docker.reference.digest":"{n}","vnd.docker.reference.type":"attestation-manifest"}}"#
                    )
                })
                .unwrap_or_default();
            format!(
                r#"{{"mediaType":"{}","digest":"{d}","size":5,"platform":{{"architecture":"{arch}","os":"{os}"}}{annotations}}}"#,
                crate::manifest::OCI_MANIFEST
            )
        };
        // An attestation naming an entry the index does not list attests nothing.
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{},{}]}}"#,
            crate::manifest::OCI_INDEX,
            entry(&image, "linux/amd64", None),
            entry(&attestation, "unknown/unknown", Some(&image)),
            entry(
                &stray,
                "unknown/unknown",
                Some(&Digest::sha256_of(b"elsewhere"))
            ),
        );
        let mut p = put(&body, None, &[&image, &attestation, &stray], "latest");
        p.manifest.media_type = crate::manifest::OCI_INDEX.into();
        p.manifest.artifact_type = None;
        assert_eq!(entries_to_describe(&p, &p.tags), vec![attestation.clone()]);
        let described = |predicates: &[&str]| EntryDescription {
            digest: attestation.clone(),
            artifact_type: None,
            annotations: BTreeMap::new(),
            predicate_types: predicates.iter().map(|s| s.to_string()).collect(),
        };
        let rows = put_rows(
            &p,
            &p.tags,
            &[described(&[
                "https://slsa.dev/provenance/v0.2",
                "https://spdx.dev/Document",
            ])],
        );
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].subject, image);
        assert_eq!(rows[0].attachment, attestation);
        assert_eq!(rows[0].carrier, p.manifest.digest);
        assert_eq!(rows[0].source, AttachmentSource::Buildkit);
        assert_eq!(rows[0].format, AttachmentFormat::InToto);
        assert_eq!(rows[0].kind, AttachmentKind::Attestation);
        let rows = put_rows(&p, &p.tags, &[described(&["https://spdx.dev/Document"])]);
        assert_eq!(rows[0].kind, AttachmentKind::Sbom);
    }

    #[test]
    fn the_walk_visits_each_attachment_once() {
        let root = Digest::sha256_of(b"root");
        let mut alone = AttachmentWalk::new(&root, false);
        assert_eq!(alone.next_subject(), None);
        assert_eq!(alone.into_found(), vec![root.to_string()]);

        let mut walk = AttachmentWalk::new(&root, true);
        assert_eq!(walk.next_subject(), Some(root.to_string()));
        walk.attached(vec!["a".into(), "b".into()]);
        assert_eq!(walk.next_subject().as_deref(), Some("a"));
        walk.attached(vec!["b".into(), root.to_string(), "c".into()]);
        assert_eq!(walk.next_subject().as_deref(), Some("b"));
        assert_eq!(walk.next_subject().as_deref(), Some("c"));
        assert_eq!(walk.next_subject(), None);
        assert_eq!(
            walk.into_found(),
            vec![root.to_string(), "a".into(), "b".into(), "c".into()]
        );
    }
}
