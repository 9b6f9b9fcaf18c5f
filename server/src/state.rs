//! What every request handler can reach: the stores and the configuration.

use std::sync::Arc;

use signet_storage::uploads::Uploads;
use signet_storage::{BlobStore, MetadataStore};

use crate::config::Config;

pub struct AppState {
    pub blobs: BlobStore,
    pub meta: Arc<dyn MetadataStore>,
    pub uploads: Uploads,
    pub config: Arc<Config>,
}

impl AppState {
    /// Opens the stores the configuration names, running metadata migrations.
    pub async fn open(config: Arc<Config>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.storage.data_dir)?;
        let blobs = BlobStore::local(config.storage.blob_dir())?;
        let meta = signet_storage::open_metadata(&config.storage.metadata_url()).await?;
        Ok(Self::from_parts(blobs, meta, config))
    }

    pub fn from_parts(blobs: BlobStore, meta: Arc<dyn MetadataStore>, config: Arc<Config>) -> Self {
        let uploads = Uploads::new(blobs.clone(), meta.clone());
        Self {
            blobs,
            meta,
            uploads,
            config,
        }
    }
}
