//! Manifest parsing and validation. A manifest is kept byte for byte as pushed; parsing
//! only extracts what the registry must know about it (its kind, the blobs and child
//! manifests it references, its subject and artifact type).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Layers of these types live outside the registry (Windows base layers): their blobs
/// need not be present.
const FOREIGN_LAYER_TYPES: [&str; 2] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// A single image or artifact: a config and layers.
    Image,
    /// A list of manifests (multi-platform image, or an artifact index).
    Index,
}

pub fn kind_of_media_type(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// Every manifest media type Signet serves, for `Accept` negotiation.
pub const SUPPORTED_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidManifest(pub String);

fn invalid(msg: impl Into<String>) -> InvalidManifest {
    InvalidManifest(msg.into())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A content descriptor as found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub platform: Option<Platform>,
    pub urls: Vec<String>,
    pub annotations: BTreeMap<String, String>,
}

/// What the registry knows about a manifest once it has been validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    /// The media type the manifest is served with.
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: BTreeMap<String, String>,
}

impl ParsedManifest {
    /// Blobs that must be present in the repository before this manifest is accepted.
    pub fn required_blobs(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self
            .config
            .iter()
            .chain(self.layers.iter().filter(|l| !is_foreign(l)))
            .map(|d| d.digest.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Child manifests that must be present (for an index).
    pub fn required_children(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self.children.iter().map(|d| d.digest.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The size each descriptor of a blob or child declares, for the registry to check
    /// against what it stores (foreign layers, stored elsewhere, left out).
    pub fn declared_sizes(&self) -> Vec<(Digest, u64)> {
        let mut out: Vec<(Digest, u64)> = self
            .config
            .iter()
            .chain(self.layers.iter().filter(|l| !is_foreign(l)))
            .chain(self.children.iter())
            .map(|d| (d.digest.clone(), d.size))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The artifact type a referrers listing reports: `artifactType`, falling back to
    /// the config's media type.
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }
}

fn is_foreign(d: &Descriptor) -> bool {
    !d.urls.is_empty() || FOREIGN_LAYER_TYPES.contains(&d.media_type.as_str())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
    fs_layers: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    artifact_type: Option<String>,
    platform: Option<Platform>,
    urls: Option<Vec<String>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl RawDescriptor {
    fn validate(self, field: &str) -> Result<Descriptor, InvalidManifest> {
        let media_type = self
            .media_type
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid(format!("{field}: descriptor without mediaType")))?;
        let digest = self
            .digest
            .ok_or_else(|| invalid(format!("{field}: descriptor without digest")))?
            .parse::<Digest>()
            .map_err(|e| invalid(format!("{field}: {e}")))?;
        let size = self
            .size
            .ok_or_else(|| invalid(format!("{field}: descriptor without size")))?;
        let size =
            u64::try_from(size).map_err(|_| invalid(format!("{field}: negative size {size}")))?;
        Ok(Descriptor {
            media_type,
            digest,
            size,
            artifact_type: self.artifact_type,
            platform: self.platform,
            urls: self.urls.unwrap_or_default(),
            annotations: self.annotations.unwrap_or_default(),
        })
    }
}

/// Validates `body` pushed with `content_type` (the request's `Content-Type`, without
/// parameters) and extracts what the registry needs to know.
pub fn parse_manifest(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, InvalidManifest> {
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty());
    if matches!(content_type, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)) {
        return Err(schema1_refused());
    }
    // JSON is UTF-8 (RFC 8259), and serde_json does not check the strings it skips:
    // without this, bytes no strict client can read would be stored and served.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(invalid(format!("manifest is not valid UTF-8: {e}")));
    }
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if raw.fs_layers.is_some()
        || matches!(
            raw.media_type.as_deref(),
            Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
        )
    {
        return Err(schema1_refused());
    }
    if raw.schema_version.as_ref().and_then(|v| v.as_i64()) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }

    let media_type = resolve_media_type(&raw, content_type)?;
    let kind = kind_of_media_type(&media_type)
        .ok_or_else(|| invalid(format!("unsupported manifest media type {media_type:?}")))?;

    let subject = raw.subject.map(|s| s.validate("subject")).transpose()?;
    let mut parsed = ParsedManifest {
        kind,
        media_type,
        artifact_type: raw.artifact_type.filter(|a| !a.is_empty()),
        config: None,
        layers: Vec::new(),
        children: Vec::new(),
        subject,
        annotations: raw.annotations.unwrap_or_default(),
    };
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest has no \"manifests\""));
            }
            let config = raw
                .config
                .ok_or_else(|| invalid("image manifest without config"))?;
            parsed.config = Some(config.validate("config")?);
            let layers = raw
                .layers
                .ok_or_else(|| invalid("image manifest without layers"))?;
            parsed.layers = layers
                .into_iter()
                .enumerate()
                .map(|(i, l)| l.validate(&format!("layers[{i}]")))
                .collect::<Result<_, _>>()?;
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index has no config or layers"));
            }
            let manifests = raw
                .manifests
                .ok_or_else(|| invalid("index without \"manifests\""))?;
            parsed.children = manifests
                .into_iter()
                .enumerate()
                .map(|(i, m)| m.validate(&format!("manifests[{i}]")))
                .collect::<Result<_, _>>()?;
        }
    }
    Ok(parsed)
}

fn schema1_refused() -> InvalidManifest {
    invalid("Docker schema 1 manifests are not supported; push schema 2 or OCI")
}

/// The media type is the request's `Content-Type` when it names a manifest type, else
/// the body's `mediaType`, else what the body's shape says. When both are given they
/// must agree.
fn resolve_media_type(
    raw: &RawManifest,
    content_type: Option<&str>,
) -> Result<String, InvalidManifest> {
    let declared = raw.media_type.as_deref().filter(|m| !m.is_empty());
    let header = content_type.filter(|c| kind_of_media_type(c).is_some());
    match (header, declared) {
        (Some(h), Some(d)) if h != d => Err(invalid(format!(
            "Content-Type {h:?} does not match the manifest's mediaType {d:?}"
        ))),
        (Some(h), _) => Ok(h.to_string()),
        // A specific Content-Type that is not a manifest type cannot agree with the
        // manifest's mediaType; only the generic JSON types defer to the body.
        (None, Some(d)) => match content_type {
            Some(c) if c != "application/json" && c != "application/octet-stream" => Err(invalid(
                format!("Content-Type {c:?} does not match the manifest's mediaType {d:?}"),
            )),
            _ => Ok(d.to_string()),
        },
        (None, None) => match content_type {
            Some(c) if c != "application/json" && c != "application/octet-stream" => {
                Err(invalid(format!("unsupported manifest media type {c:?}")))
            }
            _ if raw.manifests.is_some() => Ok(OCI_INDEX.to_string()),
            _ => Ok(OCI_MANIFEST.to_string()),
        },
    }
}

/// Config media types a container runtime starts a container from.
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media types of signatures, attestations and SBOMs as the clients that make them
/// write them: cosign (simple signing, DSSE, SBOM documents), Sigstore bundles, in-toto,
/// SPDX, CycloneDX, syft, notation (JWS, COSE) and the OCI empty descriptor. No runtime
/// unpacks these into a file system.
const ATTACHMENT_LAYER_TYPES: [&str; 17] = [
    "application/vnd.dev.cosign.simplesigning.v1+json",
    "application/vnd.dsse.envelope.v1+json",
    "application/vnd.in-toto+json",
    "application/vnd.oci.empty.v1+json",
    "text/spdx",
    "text/spdx+json",
    "text/spdx+xml",
    "application/spdx+json",
    "application/vnd.spdx+json",
    "application/vnd.cyclonedx",
    "application/vnd.cyclonedx+json",
    "application/vnd.cyclonedx+xml",
    "application/vnd.syft+json",
    "application/jose+json",
    "application/cose",
    "application/vnd.cncf.notary.signature",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
];

/// The predicate types of the in-toto statements a manifest holds as layers (BuildKit's
/// attestation manifests name each in the layer's `in-toto.io/predicate-type`), in layer
/// order; empty for anything else, or bytes that do not parse.
pub fn statement_predicate_types(content: &[u8]) -> Vec<String> {
    use crate::attachments::{IN_TOTO_LAYER, PREDICATE_TYPE_ANNOTATION};
    let Ok(parsed) = parse_manifest(content, None) else {
        return Vec::new();
    };
    parsed
        .layers
        .iter()
        .filter(|l| media_type_essence(&l.media_type) == IN_TOTO_LAYER)
        .filter_map(|l| l.annotations.get(PREDICATE_TYPE_ANNOTATION).cloned())
        .collect()
}

/// BuildKit's attestation manifests in an index: each attestation-manifest entry with
/// the entry it attests, when that entry is in the same index (as BuildKit writes it:
/// an index's signature then covers both).
pub fn buildkit_attestations(parsed: &ParsedManifest) -> Vec<(Digest, Digest)> {
    parsed
        .children
        .iter()
        .filter_map(|entry| {
            let subject = crate::attachments::buildkit_subject(&entry.annotations)?;
            let listed = parsed
                .children
                .iter()
                .any(|c| c.digest == subject && c.digest != entry.digest);
            listed.then(|| (entry.digest.clone(), subject))
        })
        .collect()
}

/// Whether a container runtime could run this image manifest: its config is an image
/// config, and a layer is anything but signature, attestation or SBOM content (a tar
/// layer in any compression, a Docker rootfs diff, a foreign or non-distributable
/// layer, or a type no one knows, which some runtimes still unpack). An image config
/// without layers counts as runnable too: nothing that attaches makes one. Indexes are
/// runnable when a child is; that needs the children, so it is the caller's walk.
pub fn image_is_runnable(parsed: &ParsedManifest) -> bool {
    let image_config = parsed
        .config
        .as_ref()
        .is_some_and(|c| IMAGE_CONFIG_TYPES.contains(&media_type_essence(&c.media_type)));
    image_config
        && (parsed.layers.is_empty()
            || parsed
                .layers
                .iter()
                .any(|l| !is_attachment_layer(&l.media_type)))
}

fn is_attachment_layer(media_type: &str) -> bool {
    let essence = media_type_essence(media_type);
    ATTACHMENT_LAYER_TYPES.contains(&essence)
        // Bundle media types carry their version: `...bundle+json;version=0.2`, `...v0.3+json`.
        || essence.starts_with("application/vnd.dev.sigstore.bundle")
}

/// A media type without its parameters, as compared.
fn media_type_essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const D2: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":0}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D1}","size":2}}]{extra}}}"#
        )
    }

    /// Found by the `manifest` fuzz target: invalid UTF-8 inside a string of a field
    /// the registry does not read was accepted.
    #[test]
    fn invalid_utf8_in_an_ignored_field_is_refused() {
        let body = |text: &[u8]| {
            let mut b = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"x":"lin"#
            )
            .into_bytes();
            b.extend_from_slice(text);
            b.extend_from_slice(br#"ux"}]}"#);
            b
        };
        assert!(parse_manifest(&body("é".as_bytes()), Some(OCI_INDEX)).is_ok());
        let err = parse_manifest(&body(&[0xff, 0xfe, 0x80]), Some(OCI_INDEX)).unwrap_err();
        assert!(format!("{err:?}").contains("UTF-8"), "{err:?}");
    }

    fn with(config: &str, layers: &[&str]) -> ParsedManifest {
        let layers: Vec<String> = layers
            .iter()
            .map(|t| format!(r#"{{"mediaType":"{t}","digest":"{D2}","size":0}}"#))
            .collect();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"{config}","digest":"{D1}","size":2}},
            "layers":[{}]}}"#,
            layers.join(",")
        );
        parse_manifest(body.as_bytes(), Some(OCI_MANIFEST)).unwrap()
    }

    #[test]
    fn runnable_is_what_a_runtime_could_start() {
        let oci = "application/vnd.oci.image.config.v1+json";
        let docker = "application/vnd.docker.container.image.v1+json";
        for layer in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/octet-stream",
        ] {
            assert!(image_is_runnable(&with(oci, &[layer])), "{layer}");
            assert!(image_is_runnable(&with(docker, &[layer])), "{layer}");
            // One container layer among signatures is enough.
            let mixed = ["application/vnd.dev.cosign.simplesigning.v1+json", layer];
            assert!(image_is_runnable(&with(oci, &mixed)), "{layer}");
        }
        assert!(image_is_runnable(&with(oci, &[])), "an image config alone");
        for layers in [
            &["application/vnd.dev.cosign.simplesigning.v1+json"][..],
            &["application/vnd.dsse.envelope.v1+json"],
            &["text/spdx+json", "application/vnd.cyclonedx+json"],
            &["application/vnd.dev.sigstore.bundle+json;version=0.2"],
            &["application/vnd.in-toto+json"],
        ] {
            assert!(!image_is_runnable(&with(oci, layers)), "{layers:?}");
        }
        // Not an image config: no runtime starts it, whatever its layers.
        let tar = "application/vnd.oci.image.layer.v1.tar+gzip";
        assert!(!image_is_runnable(&with(
            "application/vnd.oci.empty.v1+json",
            &[tar]
        )));
        assert!(!image_is_runnable(&with(
            "application/vnd.cncf.notary.signature",
            &["application/jose+json"]
        )));
    }

    #[test]
    fn image_manifest_references() {
        let m = parse_manifest(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().len(), 2);
        assert!(m.subject.is_none());
        assert_eq!(
            m.effective_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sbom","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":10}}"#
        );
        let m = parse_manifest(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.subject.unwrap().digest.to_string(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sbom"));
    }

    #[test]
    fn index_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let m = parse_manifest(body.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.required_children().len(), 1);
        assert_eq!(
            m.children[0].platform.as_ref().unwrap().architecture,
            "amd64"
        );
    }

    #[test]
    fn refusals() {
        let cases: Vec<(String, Option<&str>)> = vec![
            ("not json".into(), Some(OCI_MANIFEST)),
            (image(""), Some(OCI_INDEX)),
            (r#"{"schemaVersion":1,"fsLayers":[]}"#.into(), None),
            (
                image("").replace("\"schemaVersion\":2", "\"schemaVersion\":3"),
                None,
            ),
            (image(""), Some(DOCKER_SCHEMA1_SIGNED)),
            (image(""), Some("application/vnd.example.other+json")),
            (image("").replace(D1, "sha256:short"), None),
            (image("").replace("\"size\":2", "\"size\":-2"), None),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
                None,
            ),
        ];
        for (body, ct) in cases {
            assert!(parse_manifest(body.as_bytes(), ct).is_err(), "{body}");
        }
    }

    #[test]
    fn media_type_inferred_when_absent() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"a/b","digest":"{D1}","size":2}},"layers":[]}}"#
        );
        let m = parse_manifest(body.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        let m = parse_manifest(body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"a/b","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"{}","digest":"{D2}","size":9,"urls":["https://example.invalid/l"]}}]}}"#,
            FOREIGN_LAYER_TYPES[0]
        );
        let m = parse_manifest(body.as_bytes(), None).unwrap();
        assert_eq!(m.required_blobs().len(), 1);
    }
}
