//! BuildKit's attestation storage written by hand, byte for byte in its format, into an
//! OCI image layout (the docker engine here cannot build attestations): an image index
//! whose `unknown/unknown` entries are attestation manifests (`vnd.docker.reference.type:
//! attestation-manifest`) of the platform entries they name, each holding unsigned
//! in-toto statements as layers.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::oci::{OCI_INDEX, OCI_MANIFEST};
use crate::{random_bytes, run, sha256, skopeo, Registry};

pub const PROVENANCE: &str = "https://slsa.dev/provenance/v0.2";
pub const SPDX: &str = "https://spdx.dev/Document";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// An OCI image layout being written.
pub struct Layout(pub PathBuf);

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout(dir.to_path_buf())
    }

    /// Stores `bytes`; their descriptor as `media_type`.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.0.join("blobs/sha256").join(hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    fn json(&self, media_type: &str, value: &Value) -> Value {
        self.blob(media_type, &serde_json::to_vec(value).unwrap())
    }

    /// `index.json` naming `index` as `tag`.
    fn tag(&self, tag: &str, index: &Value) {
        let mut entry = index.clone();
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let top = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]});
        std::fs::write(self.0.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    }
}

/// What the layout holds: the index, and per platform its manifest and attestation.
pub struct Built {
    pub index: String,
    /// (architecture, manifest digest), amd64 then arm64.
    pub platforms: Vec<(String, String)>,
    /// Each platform's attestation manifest, in the same order.
    pub attestations: Vec<String>,
}

/// A two-platform image with a provenance and an SPDX statement per platform, laid out
/// as BuildKit's attestation storage describes it.
pub fn buildkit_image(layout: &Layout) -> Built {
    let mut entries = Vec::new();
    let mut platforms = Vec::new();
    let mut attestations = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = layout.blob(LAYER, &random_bytes(4096));
        let config = layout.json(
            IMAGE_CONFIG,
            &json!({"architecture": arch, "os": "linux", "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}),
        );
        let manifest = layout.json(
            OCI_MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
        );
        let platform_digest = manifest["digest"].as_str().unwrap().to_string();
        let mut platform_entry = manifest.clone();
        platform_entry["platform"] = json!({"architecture": arch, "os": "linux"});
        entries.push(platform_entry);

        let statement = |predicate_type: &str, predicate: Value| {
            json!({
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": predicate_type,
                "subject": [{
                    "name": format!("pkg:docker/signet/app@v1?platform=linux%2F{arch}"),
                    "digest": {"sha256": platform_digest.trim_start_matches("sha256:")},
                }],
                "predicate": predicate,
            })
        };
        let mut sbom = layout.json(
            IN_TOTO,
            &statement(
                SPDX,
                json!({"spdxVersion": "SPDX-2.3", "name": "sbom", "packages": []}),
            ),
        );
        sbom["annotations"] = json!({"in-toto.io/predicate-type": SPDX});
        let mut provenance = layout.json(
            IN_TOTO,
            &statement(
                PROVENANCE,
                json!({"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1"}),
            ),
        );
        provenance["annotations"] = json!({"in-toto.io/predicate-type": PROVENANCE});
        let config = layout.json(
            IMAGE_CONFIG,
            &json!({"architecture": "unknown", "os": "unknown", "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [sbom["digest"], provenance["digest"]]}}),
        );
        let attestation = layout.json(
            OCI_MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                    "layers": [sbom, provenance]}),
        );
        attestations.push(attestation["digest"].as_str().unwrap().to_string());
        platforms.push((arch.to_string(), platform_digest.clone()));
        let mut attestation_entry = attestation.clone();
        attestation_entry["annotations"] = json!({
            "vnd.docker.reference.digest": platform_digest,
            "vnd.docker.reference.type": "attestation-manifest",
        });
        attestation_entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        entries.push(attestation_entry);
    }
    // BuildKit lists the platforms first, then their attestation manifests.
    entries.sort_by_key(|e| e["platform"]["os"] == "unknown");
    let index = layout.json(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    );
    layout.tag("v1", &index);
    Built {
        index: index["digest"].as_str().unwrap().to_string(),
        platforms,
        attestations,
    }
}

/// `skopeo copy --all --preserve-digests` of the layout's `v1` to `repo:v1` (skopeo's
/// configuration under `work`).
pub fn push_all(work: &Path, layout: &Layout, registry: &Registry, repo: &str) {
    run(skopeo(work)
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:v1", layout.0.display()))
        .arg(format!("docker://{}/{repo}:v1", registry.host)));
}
