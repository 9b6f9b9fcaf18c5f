//! What every request handler can reach: the stores, the write path over them, and the
//! configuration.

use std::sync::Arc;

use signet_storage::uploads::Uploads;
use signet_storage::{BlobStore, MetadataStore, Registry};

use crate::cache::ManifestCache;
use crate::config::{Config, ReplicaConsistency};
use crate::retention::pulls::PullLog;
use crate::verify::Verifier;

pub struct AppState {
    pub blobs: BlobStore,
    /// Reads. Writes of manifests, tags, links and signatures go through `registry`.
    pub meta: Arc<dyn MetadataStore>,
    /// The one write path, with the server's hooks (the verifier's wake-up).
    pub registry: Registry,
    pub uploads: Uploads,
    pub config: Arc<Config>,
    /// Manifest lookups; see [`crate::cache`].
    pub manifest_cache: ManifestCache,
    /// Trust roots and verdicts; see [`crate::verify`].
    pub verifier: Arc<Verifier>,
    /// Manifest pulls not yet written; see [`crate::retention::pulls`].
    pub pulls: PullLog,
    /// Events outside the write path; see [`crate::notify`].
    pub events: crate::notify::EventLog,
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
        let meta = signet_storage::open_metadata(&config.storage.metadata_url()).await?;
        let trust = crate::verify::Trust::load(&config.trust)?;
        Ok(Self::assemble(blobs, meta, config, Verifier::new(trust)))
    }

    /// The stores as they are, with no trust roots (the command-line tools, tests).
    pub fn from_parts(blobs: BlobStore, meta: Arc<dyn MetadataStore>, config: Arc<Config>) -> Self {
        Self::assemble(blobs, meta, config, Verifier::default())
    }

    fn assemble(
        blobs: BlobStore,
        meta: Arc<dyn MetadataStore>,
        config: Arc<Config>,
        mut verifier: Verifier,
    ) -> Self {
        let events =
            crate::notify::EventLog::new(config.notifications.enabled().then(|| meta.clone()));
        verifier.events = events.clone();
        let verifier = Arc::new(verifier);
        let mut registry = Registry::new(meta.clone()).with_hook(verifier.clone());
        if let Some(rules) = crate::retention::ImmutableTags::of(&config.retention) {
            registry = registry.with_tag_rules(Arc::new(rules));
        }
        if events.enabled() {
            registry = registry
                .recording_events()
                .with_hook(Arc::new(crate::notify::log::WakeOnWrite(events.wake())));
        }
        Self {
            uploads: Uploads::new(blobs.clone(), meta.clone()),
            manifest_cache: ManifestCache::new(
                meta.clone(),
                config.storage.replica_consistency == ReplicaConsistency::ReadAfterWrite,
            ),
            blobs,
            meta,
            registry,
            config,
            verifier,
            pulls: PullLog::default(),
            events,
        }
    }
}

impl AppState {
    /// The write path naming `actor` in the events it records.
    pub fn registry_as(&self, actor: &crate::auth::Actor) -> std::borrow::Cow<'_, Registry> {
        if self.registry.records_events() {
            std::borrow::Cow::Owned(self.registry.acting_as(&actor.0))
        } else {
            std::borrow::Cow::Borrowed(&self.registry)
        }
    }
}
