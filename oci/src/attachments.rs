//! What makes a manifest an attachment of another, and of which kind.
//!
//! An attachment reaches a registry in one of four ways:
//! - a cosign tag `<alg>-<hex>.sig`, `.att` or `.sbom`, which names its subject;
//! - an OCI 1.1 `subject` field (cosign v3 bundles, notation, oras, ...);
//! - an entry of the referrers fallback tag `<alg>-<hex>`, an OCI index;
//! - an atomic ("simple signing") signature stored through the signatures extension;
//! - an entry of an image index that BuildKit marks as the attestation manifest of
//!   another entry (`vnd.docker.reference.type: attestation-manifest`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    Signature,
    Attestation,
    Sbom,
    Other,
}

impl AttachmentKind {
    pub const ALL: [AttachmentKind; 4] = [
        AttachmentKind::Signature,
        AttachmentKind::Attestation,
        AttachmentKind::Sbom,
        AttachmentKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentKind::Signature => "signature",
            AttachmentKind::Attestation => "attestation",
            AttachmentKind::Sbom => "sbom",
            AttachmentKind::Other => "other",
        }
    }
}

impl fmt::Display for AttachmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachmentKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttachmentKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown attachment kind {s:?}"))
    }
}

/// How an attachment arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttachmentSource {
    /// The attachment manifest's `subject` field.
    Subject,
    /// A cosign tag `<alg>-<hex>.sig|.att|.sbom`.
    Tag,
    /// An entry of the referrers fallback tag `<alg>-<hex>`.
    FallbackTag,
    /// The signatures extension (atomic signatures).
    Extension,
    /// An attestation-manifest entry of an image index (BuildKit's attestation storage):
    /// the index carries it, the entry it names is its subject.
    Buildkit,
}

impl AttachmentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentSource::Subject => "subject",
            AttachmentSource::Tag => "tag",
            AttachmentSource::FallbackTag => "fallback-tag",
            AttachmentSource::Extension => "extension",
            AttachmentSource::Buildkit => "buildkit",
        }
    }
}

impl FromStr for AttachmentSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AttachmentSource::Subject,
            AttachmentSource::Tag,
            AttachmentSource::FallbackTag,
            AttachmentSource::Extension,
            AttachmentSource::Buildkit,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown attachment source {s:?}"))
    }
}

/// The format an attachment is written in, which says how it is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachmentFormat {
    /// cosign's `.sig`/`.att`/`.sbom` manifests (simple signing, DSSE, SBOM documents).
    Cosign,
    /// A Sigstore bundle as an OCI referrer (cosign v3, sigstore-js).
    SigstoreBundle,
    /// A Notary Project (notation) signature.
    Notation,
    /// A containers/image "simple signing" signature of the signatures extension.
    Atomic,
    /// Unsigned in-toto statements as layers (BuildKit's attestation manifests): no
    /// signature of their own; they count through a signature on the index that
    /// carries them.
    InToto,
    /// Any other OCI artifact.
    Oci,
}

impl AttachmentFormat {
    pub const ALL: [AttachmentFormat; 6] = [
        AttachmentFormat::Cosign,
        AttachmentFormat::SigstoreBundle,
        AttachmentFormat::Notation,
        AttachmentFormat::Atomic,
        AttachmentFormat::InToto,
        AttachmentFormat::Oci,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentFormat::Cosign => "cosign",
            AttachmentFormat::SigstoreBundle => "sigstore-bundle",
            AttachmentFormat::Notation => "notation",
            AttachmentFormat::Atomic => "atomic",
            AttachmentFormat::InToto => "in-toto",
            AttachmentFormat::Oci => "oci",
        }
    }
}

impl fmt::Display for AttachmentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachmentFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttachmentFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown attachment format {s:?}"))
    }
}

/// What verifying an attachment concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    Valid,
    Invalid,
    NoTrustRoot,
    Unsupported,
    /// Evidence with no signature of its own (an in-toto statement BuildKit stored).
    Unsigned,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Valid => "valid",
            VerdictKind::Invalid => "invalid",
            VerdictKind::NoTrustRoot => "no-trust-root",
            VerdictKind::Unsupported => "unsupported",
            VerdictKind::Unsigned => "unsigned",
        }
    }

    /// The kind named `s` (as [`VerdictKind::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        [
            VerdictKind::Valid,
            VerdictKind::Invalid,
            VerdictKind::NoTrustRoot,
            VerdictKind::Unsupported,
            VerdictKind::Unsigned,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

pub const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const COSIGN_ATT_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
pub const COSIGN_SBOM_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sbom.v1+json";
pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
/// The annotation cosign v3 puts on a bundle referrer: the predicate type of an
/// attestation, or cosign's own type for a plain signature.
const BUNDLE_PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// BuildKit's attestation storage: an index entry annotated with this type is the
/// attestation manifest of the entry whose digest [`BUILDKIT_REFERENCE_DIGEST`] names.
pub const BUILDKIT_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const BUILDKIT_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const BUILDKIT_ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The artifact type BuildKit gives an attestation manifest it stores as an OCI artifact.
pub const BUILDKIT_ATTESTATION_ARTIFACT: &str =
    "application/vnd.docker.attestation.manifest.v1+json";
/// A layer holding one in-toto statement, and the annotation naming its predicate type.
pub const IN_TOTO_LAYER: &str = "application/vnd.in-toto+json";
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// The entry an index entry's annotations name as the one it attests (BuildKit's
/// attestation storage); `None` for any other entry.
pub fn buildkit_subject(annotations: &BTreeMap<String, String>) -> Option<Digest> {
    if annotations.get(BUILDKIT_REFERENCE_TYPE).map(String::as_str)
        != Some(BUILDKIT_ATTESTATION_MANIFEST)
    {
        return None;
    }
    annotations.get(BUILDKIT_REFERENCE_DIGEST)?.parse().ok()
}

/// Whether an in-toto predicate type is a software bill of materials (SPDX, CycloneDX).
pub fn is_sbom_predicate(predicate_type: &str) -> bool {
    let p = predicate_type.to_ascii_lowercase();
    p.starts_with("https://spdx.dev/") || p.starts_with("https://cyclonedx.org/")
}

/// The kind of an attestation manifest holding statements of these predicate types: an
/// SBOM when every statement is one, else an attestation (BuildKit puts a platform's
/// provenance and SBOM in one manifest; its predicate types say what each statement is).
pub fn kind_of_statements<S: AsRef<str>>(predicate_types: &[S]) -> AttachmentKind {
    if !predicate_types.is_empty()
        && predicate_types
            .iter()
            .all(|p| is_sbom_predicate(p.as_ref()))
    {
        AttachmentKind::Sbom
    } else {
        AttachmentKind::Attestation
    }
}

/// A tag that names a subject digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentTag {
    /// `<alg>-<hex>.sig|.att|.sbom`.
    Cosign {
        subject: Digest,
        kind: AttachmentKind,
    },
    /// `<alg>-<hex>`: the OCI referrers fallback index.
    Fallback { subject: Digest },
}

impl AttachmentTag {
    /// Recognises the attachment tag grammar; `None` for any other tag.
    pub fn parse(tag: &str) -> Option<AttachmentTag> {
        let (stem, kind) = match tag.rsplit_once('.') {
            Some((stem, "sig")) => (stem, Some(AttachmentKind::Signature)),
            Some((stem, "att")) => (stem, Some(AttachmentKind::Attestation)),
            Some((stem, "sbom")) => (stem, Some(AttachmentKind::Sbom)),
            Some(_) => return None,
            None => (tag, None),
        };
        let (alg, hex) = stem.split_once('-')?;
        let subject: Digest = format!("{alg}:{hex}").parse().ok()?;
        Some(match kind {
            Some(kind) => AttachmentTag::Cosign { subject, kind },
            None => AttachmentTag::Fallback { subject },
        })
    }

    pub fn subject(&self) -> &Digest {
        match self {
            AttachmentTag::Cosign { subject, .. } | AttachmentTag::Fallback { subject } => subject,
        }
    }

    /// The artifact type the referrers API reports for a cosign tag attachment.
    pub fn cosign_artifact_type(kind: AttachmentKind) -> &'static str {
        match kind {
            AttachmentKind::Attestation => COSIGN_ATT_ARTIFACT,
            AttachmentKind::Sbom => COSIGN_SBOM_ARTIFACT,
            _ => COSIGN_SIG_ARTIFACT,
        }
    }
}

/// The kind and format of a referrer, from its artifact type and annotations.
pub fn classify(
    artifact_type: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> (AttachmentKind, AttachmentFormat) {
    use AttachmentFormat::{Cosign, Notation, Oci, SigstoreBundle};
    let Some(t) = artifact_type else {
        return (AttachmentKind::Other, Oci);
    };
    let lower = t.to_ascii_lowercase();
    match t {
        SIGSTORE_BUNDLE => {
            let attestation = annotations
                .get(BUNDLE_PREDICATE_ANNOTATION)
                .is_some_and(|p| p != COSIGN_SIGN_PREDICATE);
            let kind = if attestation {
                AttachmentKind::Attestation
            } else {
                AttachmentKind::Signature
            };
            (kind, SigstoreBundle)
        }
        NOTARY_SIGNATURE => (AttachmentKind::Signature, Notation),
        COSIGN_SIG_ARTIFACT => (AttachmentKind::Signature, Cosign),
        COSIGN_ATT_ARTIFACT => (AttachmentKind::Attestation, Cosign),
        COSIGN_SBOM_ARTIFACT => (AttachmentKind::Sbom, Cosign),
        BUILDKIT_ATTESTATION_ARTIFACT => (AttachmentKind::Attestation, AttachmentFormat::InToto),
        _ if lower.contains("spdx") || lower.contains("cyclonedx") || lower.contains("syft") => {
            (AttachmentKind::Sbom, Oci)
        }
        _ if lower.contains("in-toto")
            || lower.contains("dsse")
            || lower.contains("provenance") =>
        {
            (AttachmentKind::Attestation, Oci)
        }
        _ if lower.contains("signature") => (AttachmentKind::Signature, Oci),
        _ => (AttachmentKind::Other, Oci),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn attachment_tags() {
        let subject: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(
            AttachmentTag::parse(&format!("sha256-{HEX}.sig")),
            Some(AttachmentTag::Cosign {
                subject: subject.clone(),
                kind: AttachmentKind::Signature
            })
        );
        assert_eq!(
            AttachmentTag::parse(&format!("sha256-{HEX}.att")).map(|t| t.subject().clone()),
            Some(subject.clone())
        );
        assert!(matches!(
            AttachmentTag::parse(&format!("sha256-{HEX}.sbom")),
            Some(AttachmentTag::Cosign {
                kind: AttachmentKind::Sbom,
                ..
            })
        ));
        assert_eq!(
            AttachmentTag::parse(&format!("sha256-{HEX}")),
            Some(AttachmentTag::Fallback { subject })
        );
        for other in [
            "latest",
            "v1.0",
            "sha256-abc.sig",
            &format!("sha256-{HEX}.txt"),
            &format!("sha256-{HEX}.sig.sig"),
            &format!("md5-{HEX}.sig"),
            &format!("sha256-{}.sig", HEX.to_uppercase()),
        ] {
            assert_eq!(AttachmentTag::parse(other), None, "{other}");
        }
    }

    #[test]
    fn kinds_by_artifact_type() {
        let none = BTreeMap::new();
        assert_eq!(
            classify(Some(NOTARY_SIGNATURE), &none).0,
            AttachmentKind::Signature
        );
        assert_eq!(
            classify(Some(SIGSTORE_BUNDLE), &none).0,
            AttachmentKind::Signature
        );
        let attest = BTreeMap::from([(
            BUNDLE_PREDICATE_ANNOTATION.to_string(),
            "https://slsa.dev/provenance/v1".to_string(),
        )]);
        assert_eq!(
            classify(Some(SIGSTORE_BUNDLE), &attest).0,
            AttachmentKind::Attestation
        );
        assert_eq!(
            classify(Some("application/spdx+json"), &none).0,
            AttachmentKind::Sbom
        );
        assert_eq!(
            classify(Some("application/vnd.cyclonedx+json"), &none).0,
            AttachmentKind::Sbom
        );
        assert_eq!(
            classify(Some("application/vnd.in-toto+json"), &none).0,
            AttachmentKind::Attestation
        );
        assert_eq!(
            classify(Some("application/x-custom"), &none).0,
            AttachmentKind::Other
        );
        assert_eq!(classify(None, &none).0, AttachmentKind::Other);
        assert_eq!(
            classify(Some(BUILDKIT_ATTESTATION_ARTIFACT), &none),
            (AttachmentKind::Attestation, AttachmentFormat::InToto)
        );
    }

    #[test]
    fn buildkit_entries_and_their_statements() {
        let subject: Digest = format!("sha256:{HEX}").parse().unwrap();
        let entry = |kind: &str, digest: &str| {
            BTreeMap::from([
                (BUILDKIT_REFERENCE_TYPE.to_string(), kind.to_string()),
                (BUILDKIT_REFERENCE_DIGEST.to_string(), digest.to_string()),
            ])
        };
        assert_eq!(
            buildkit_subject(&entry(BUILDKIT_ATTESTATION_MANIFEST, &subject.to_string())),
            Some(subject.clone())
        );
        assert_eq!(
            buildkit_subject(&entry("other", &subject.to_string())),
            None
        );
        assert_eq!(
            buildkit_subject(&entry(BUILDKIT_ATTESTATION_MANIFEST, "sha256:zz")),
            None
        );
        assert_eq!(buildkit_subject(&BTreeMap::new()), None);

        let spdx = "https://spdx.dev/Document";
        let slsa = "https://slsa.dev/provenance/v0.2";
        assert_eq!(kind_of_statements(&[spdx]), AttachmentKind::Sbom);
        assert_eq!(
            kind_of_statements(&[spdx, slsa]),
            AttachmentKind::Attestation
        );
        assert_eq!(kind_of_statements(&[slsa]), AttachmentKind::Attestation);
        assert_eq!(kind_of_statements::<&str>(&[]), AttachmentKind::Attestation);
        assert!(is_sbom_predicate("https://cyclonedx.org/bom"));
    }
}
