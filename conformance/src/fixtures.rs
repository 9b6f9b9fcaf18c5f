//! Content the runner pushes: random blobs and the manifests that name them.
//!
//! Every blob carries fresh random bytes, so one run never finds what an
//! earlier run left behind and "unknown before push" stays true.

use rand::RngCore;
use serde_json::{json, Value};

use crate::client::{sha256, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};

/// A blob and its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub data: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

impl Blob {
    pub fn new(data: Vec<u8>, media_type: &str) -> Self {
        Self {
            digest: sha256(&data),
            data,
            media_type: media_type.to_owned(),
        }
    }

    pub fn random(len: usize, media_type: &str) -> Self {
        Self::new(random_bytes(len), media_type)
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.data.len(),
        })
    }
}

/// A manifest's bytes, digest and media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
}

impl Manifest {
    pub fn from_json(v: &Value) -> Self {
        let bytes = serde_json::to_vec(v).expect("JSON values serialise");
        Self::from_bytes(bytes, v)
    }

    /// Keeps `bytes` exactly as given (formatting included).
    pub fn from_bytes(bytes: Vec<u8>, v: &Value) -> Self {
        Self {
            digest: sha256(&bytes),
            media_type: v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_owned(),
            artifact_type: v["artifactType"].as_str().map(str::to_owned),
            bytes,
        }
    }

    pub fn descriptor(&self) -> Value {
        let mut d = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        });
        if let Some(a) = &self.artifact_type {
            d["artifactType"] = json!(a);
        }
        d
    }
}

/// An image: config, layers and the manifest naming them.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Manifest,
}

impl Image {
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

pub fn random_hex(bytes: usize) -> String {
    hex::encode(random_bytes(bytes))
}

/// A digest nobody has pushed.
pub fn unknown_digest() -> String {
    sha256(&random_bytes(32))
}

/// A config blob unique to this call.
pub fn config_blob(media_type: &str, platform: (&str, &str)) -> Blob {
    let cfg = json!({
        "architecture": platform.0,
        "os": platform.1,
        "config": {"Labels": {"org.signet.conformance.nonce": random_hex(8)}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    Blob::new(serde_json::to_vec(&cfg).expect("JSON"), media_type)
}

/// An OCI image with `layers` random layers of `layer_size` bytes each.
pub fn oci_image(layers: usize, layer_size: usize) -> Image {
    image_with(
        OCI_MANIFEST,
        OCI_CONFIG,
        OCI_LAYER,
        layers,
        layer_size,
        None,
    )
}

/// An image whose manifest has extra top-level fields merged in
/// (`subject`, `artifactType`, `annotations`, ...).
pub fn image_with(
    manifest_type: &str,
    config_type: &str,
    layer_type: &str,
    layers: usize,
    layer_size: usize,
    extra: Option<Value>,
) -> Image {
    let config = config_blob(config_type, ("amd64", "linux"));
    let layers: Vec<Blob> = (0..layers)
        .map(|_| Blob::random(layer_size, layer_type))
        .collect();
    let manifest = manifest_for(manifest_type, &config, &layers, extra);
    Image {
        config,
        layers,
        manifest,
    }
}

pub fn manifest_for(
    manifest_type: &str,
    config: &Blob,
    layers: &[Blob],
    extra: Option<Value>,
) -> Manifest {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    merge(&mut m, extra);
    Manifest::from_json(&m)
}

/// An index (OCI or docker list) over `children`, each with a platform.
pub fn index_for(
    index_type: &str,
    children: &[(&Manifest, &str)],
    extra: Option<Value>,
) -> Manifest {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(m, arch)| {
            let mut d = m.descriptor();
            d["platform"] = json!({"architecture": arch, "os": "linux"});
            d
        })
        .collect();
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": manifests,
    });
    merge(&mut v, extra);
    Manifest::from_json(&v)
}

fn merge(target: &mut Value, extra: Option<Value>) {
    if let (Some(Value::Object(extra)), Value::Object(t)) = (extra, target) {
        for (k, v) in extra {
            t.insert(k, v);
        }
    }
}
