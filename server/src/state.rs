//! What every request handler can reach: the stores and the configuration.

use std::sync::Arc;

use signet_storage::uploads::Uploads;
use signet_storage::{BlobStore, MetadataStore};

use crate::cache::ManifestCache;
use crate::config::Config;

pub struct AppState {
    pub blobs: BlobStore,
    pub meta: Arc<dyn MetadataStore>,
    pub uploads: Uploads,
    pub config: Arc<Config>,
    /// Manifest lookups; see [`crate::cache`] (disabled unless opened by [`AppState::open`]).
    pub manifest_cache: ManifestCache,
    /// Trust roots and verdicts; see [`crate::verify`] (no roots unless opened by
    /// [`AppState::open`]).
    pub verifier: Arc<crate::verify::Verifier>,
}

impl AppState {
    /// Opens the stores the configuration names, running metadata migrations.
    pub async fn open(config: Arc<Config>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.storage.data_dir)?;
        let blobs = if config.storage.s3.enabled() {
            BlobStore::s3(&config.storage.s3)?
        } else {
            BlobStore::local(config.storage.blob_dir())?
        };
        let url = config.storage.metadata_url();
        let meta = signet_storage::open_metadata(&url).await?;
        let trust = crate::verify::Trust::load(&config.trust)?;
        let mut state = Self::from_parts(blobs, meta, config);
        state.verifier = Arc::new(crate::verify::Verifier::new(trust));
        // Only here is it known which database the metadata store reads.
        state.manifest_cache = ManifestCache::for_metadata_url(&url);
        Ok(state)
    }

    pub fn from_parts(blobs: BlobStore, meta: Arc<dyn MetadataStore>, config: Arc<Config>) -> Self {
        let uploads = Uploads::new(blobs.clone(), meta.clone());
        Self {
            blobs,
            meta,
            uploads,
            config,
            manifest_cache: ManifestCache::default(),
            verifier: Arc::default(),
        }
    }
}
