//! The one write path. Every writer — the distribution API, sync and pull-through, the
//! signatures extension, retention, `signet migrate`, `signet fsck --repair` — stores and deletes
//! manifests, tags, blob links and signatures through [`Registry`], which fires the
//! registered [`WriteHooks`] once for each change that committed: the verifier's wake-up
//! today, notifications next. A writer cannot forget a hook, and a new hook reaches every
//! writer. (Zot's metadata hooks are the model.)
//!
//! Uploads link their verified bytes through [`crate::uploads::Uploads`], the one path
//! by which uploaded bytes become a linked blob; a link from another repository (a
//! mount, a mirror reusing a blob it holds) goes through [`Registry::mount_blob`].
//!
//! Hooks run after the commit, in the writer's task: they must be quick and never fail
//! the write (a hook that needs I/O queues it).
//!
//! With events on ([`Registry::recording_events`]), each write also appends the events
//! describing it to the notifications outbox, in its own transaction (see
//! [`crate::events`]), naming the actor the writer set with [`Registry::acting_as`].
//!
//! The immutable-tag rules ([`TagRules`]) are applied here too, so that no writer moves
//! or deletes a protected tag; the check itself runs in the store's transaction, so a
//! concurrent push cannot slip a tag past it.

use std::borrow::Cow;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::events::Journal;
use crate::meta::{
    AtomicSignature, ManifestPut, ManifestSeen, MetadataStore, RepositoryExport, Retired,
    SignatureStored,
};
use crate::names::{RepoName, Tag};

/// What happens after a change commits. Every method has a default that does nothing.
pub trait WriteHooks: Send + Sync {
    /// A manifest was stored (and its tags moved).
    fn manifest_stored(&self, _put: &ManifestPut) {}
    /// Manifests were deleted (a subject with its attachments: every one of them).
    fn manifests_deleted(&self, _repo: &RepoName, _digests: &[Digest]) {}
    fn tag_deleted(&self, _repo: &RepoName, _tag: &Tag) {}
    /// A new atomic signature of `manifest` was stored.
    fn signature_stored(&self, _repo: &RepoName, _manifest: &Digest, _id: &str) {}
    fn signature_deleted(&self, _repo: &RepoName, _manifest: &Digest, _id: &str) {}
    /// A blob was linked into `repo` from a copy held for another repository.
    fn blob_mounted(&self, _repo: &RepoName, _digest: &Digest) {}
    fn blob_unlinked(&self, _repo: &RepoName, _digest: &Digest) {}
    /// Rows came in wholesale (`signet migrate`) or were rebuilt (`signet fsck --repair`):
    /// whatever was derived from `repo` may have changed.
    fn repository_rewritten(&self, _repo: &str) {}
}

/// Which tags may be created but never moved or deleted.
pub trait TagRules: Send + Sync {
    /// The name of the rule that makes `tag` of `repo` immutable, if one does.
    fn immutable(&self, repo: &RepoName, tag: &str) -> Option<String>;
}

/// The write path over a metadata store, with its hooks and tag rules.
#[derive(Clone)]
pub struct Registry {
    meta: Arc<dyn MetadataStore>,
    hooks: Vec<Arc<dyn WriteHooks>>,
    tag_rules: Option<Arc<dyn TagRules>>,
    record_events: bool,
    actor: Arc<str>,
}

impl Registry {
    /// The write path without hooks or tag rules (the command-line tools, tests).
    pub fn new(meta: Arc<dyn MetadataStore>) -> Self {
        Registry {
            meta,
            hooks: Vec::new(),
            tag_rules: None,
            record_events: false,
            actor: Arc::from("signet"),
        }
    }

    /// The same write path, appending events to the outbox with every change.
    pub fn recording_events(mut self) -> Self {
        self.record_events = true;
        self
    }

    /// The same write path, naming `actor` in the events it records.
    pub fn acting_as(&self, actor: &str) -> Self {
        Registry {
            actor: Arc::from(actor),
            ..self.clone()
        }
    }

    /// Whether writes append events.
    pub fn records_events(&self) -> bool {
        self.record_events
    }

    fn journal(&self) -> Journal<'_> {
        if self.record_events {
            Journal::by(&self.actor)
        } else {
            Journal::OFF
        }
    }

    /// The same write path, refusing to move or delete the tags `rules` protect.
    pub fn with_tag_rules(mut self, rules: Arc<dyn TagRules>) -> Self {
        self.tag_rules = Some(rules);
        self
    }

    /// The same write path without the tag rules: for an administrator who explicitly
    /// overrides them.
    pub fn overriding_tag_rules(&self) -> Self {
        Registry {
            tag_rules: None,
            ..self.clone()
        }
    }

    /// The rule protecting `tag` of `repo`, if any.
    fn rule_for(&self, repo: &RepoName, tag: &str) -> Option<String> {
        self.tag_rules.as_ref()?.immutable(repo, tag)
    }

    /// The store's refusal, with the rule that caused it named.
    fn named(&self, repo: &RepoName, e: StorageError) -> StorageError {
        match e {
            StorageError::TagImmutable { tag, rule } if rule.is_empty() => {
                let rule = self.rule_for(repo, &tag).unwrap_or_default();
                StorageError::TagImmutable { tag, rule }
            }
            other => other,
        }
    }

    /// The same write path, with `hook` fired too.
    pub fn with_hook(mut self, hook: Arc<dyn WriteHooks>) -> Self {
        self.hooks.push(hook);
        self
    }

    fn fire(&self, event: impl Fn(&dyn WriteHooks)) {
        for hook in &self.hooks {
            event(hook.as_ref());
        }
    }

    /// Stores a manifest, its edges and its tags in one transaction (see
    /// [`crate::meta::Manifests::put_manifest`]).
    pub async fn put_manifest(&self, put: &ManifestPut) -> StorageResult<()> {
        let immutable: Vec<Tag> = put
            .tags
            .iter()
            .filter(|t| self.rule_for(&put.repo, t.as_str()).is_some())
            .cloned()
            .collect();
        let put = if immutable.is_empty() {
            Cow::Borrowed(put)
        } else {
            Cow::Owned(ManifestPut {
                immutable,
                ..put.clone()
            })
        };
        self.meta
            .put_manifest_journaled(&put, self.journal())
            .await
            .map_err(|e| self.named(&put.repo, e))?;
        self.fire(|h| h.manifest_stored(&put));
        Ok(())
    }

    /// Deletes a manifest (with its attachments when asked); what was deleted.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_attachments: bool,
    ) -> StorageResult<Vec<Digest>> {
        let protected = |tag: &str| self.rule_for(repo, tag).is_some();
        let deleted = self
            .meta
            .delete_manifest_journaled(repo, digest, with_attachments, &protected, self.journal())
            .await
            .map_err(|e| self.named(repo, e))?;
        if !deleted.is_empty() {
            self.fire(|h| h.manifests_deleted(repo, &deleted));
        }
        Ok(deleted)
    }

    /// Deletes a manifest with its attachments if it is still as retention `seen` it
    /// (see [`crate::meta::Retention::retire_manifest`]); the tag rules hold as for any
    /// delete.
    pub async fn retire_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        seen: &ManifestSeen,
    ) -> StorageResult<Retired> {
        let protected = |tag: &str| self.rule_for(repo, tag).is_some();
        let retired = self
            .meta
            .retire_manifest_journaled(repo, digest, seen, &protected, self.journal())
            .await
            .map_err(|e| self.named(repo, e))?;
        if let Retired::Deleted(deleted) = &retired {
            self.fire(|h| h.manifests_deleted(repo, deleted));
        }
        Ok(retired)
    }

    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<bool> {
        if let Some(rule) = self.rule_for(repo, tag.as_str()) {
            return Err(StorageError::TagImmutable {
                tag: tag.to_string(),
                rule,
            });
        }
        let deleted = self
            .meta
            .delete_tag_journaled(repo, tag, self.journal())
            .await?;
        if deleted {
            self.fire(|h| h.tag_deleted(repo, tag));
        }
        Ok(deleted)
    }

    pub async fn put_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        signature: &AtomicSignature,
    ) -> StorageResult<SignatureStored> {
        let stored = self
            .meta
            .put_atomic_signature_journaled(repo, manifest, signature, self.journal())
            .await?;
        if stored == SignatureStored::Created {
            self.fire(|h| h.signature_stored(repo, manifest, &signature.id));
        }
        Ok(stored)
    }

    pub async fn delete_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        id: &str,
    ) -> StorageResult<bool> {
        let deleted = self
            .meta
            .delete_atomic_signature(repo, manifest, id)
            .await?;
        if deleted {
            self.fire(|h| h.signature_deleted(repo, manifest, id));
        }
        Ok(deleted)
    }

    /// Links a blob the registry holds into `repo` (see [`crate::meta::BlobLinks::mount_blob`]).
    /// The caller has established that the acting party may read it where it is held.
    pub async fn mount_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<Option<u64>> {
        let mounted = self.meta.mount_blob(repo, digest).await?;
        if mounted.is_some() {
            self.fire(|h| h.blob_mounted(repo, digest));
        }
        Ok(mounted)
    }

    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        let unlinked = self.meta.unlink_blob(repo, digest).await?;
        if unlinked {
            self.fire(|h| h.blob_unlinked(repo, digest));
        }
        Ok(unlinked)
    }

    /// Rebuilds the rows derived from a stored manifest (`fsck --repair`).
    pub async fn rebuild_manifest_rows(&self, put: &ManifestPut) -> StorageResult<bool> {
        let rebuilt = self.meta.rebuild_manifest_rows(put).await?;
        if rebuilt {
            self.fire(|h| h.repository_rewritten(put.repo.as_str()));
        }
        Ok(rebuilt)
    }

    /// Imports a repository's rows as exported by another store (`signet migrate`).
    pub async fn import_repository(&self, export: &RepositoryExport) -> StorageResult<u64> {
        let inserted = self.meta.import_repository(export).await?;
        if inserted > 0 {
            self.fire(|h| h.repository_rewritten(&export.name));
        }
        Ok(inserted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::meta::ManifestRecord;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl WriteHooks for Recorder {
        fn manifest_stored(&self, put: &ManifestPut) {
            self.0
                .lock()
                .unwrap()
                .push(format!("stored {}", put.manifest.digest));
        }
        fn manifests_deleted(&self, _: &RepoName, digests: &[Digest]) {
            self.0
                .lock()
                .unwrap()
                .push(format!("deleted {}", digests.len()));
        }
        fn tag_deleted(&self, _: &RepoName, tag: &Tag) {
            self.0.lock().unwrap().push(format!("untagged {tag}"));
        }
        fn signature_stored(&self, _: &RepoName, _: &Digest, id: &str) {
            self.0.lock().unwrap().push(format!("signed {id}"));
        }
    }

    #[tokio::test]
    async fn hooks_fire_once_for_each_change_that_committed() {
        let meta = crate::open_metadata("sqlite::memory:").await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let registry = Registry::new(meta).with_hook(recorder.clone());
        let repo: RepoName = "hooks/app".parse().unwrap();
        let content = Bytes::from_static(b"{\"m\":1}");
        let digest = Digest::sha256_of(&content);
        let put = ManifestPut {
            repo: repo.clone(),
            manifest: ManifestRecord {
                digest: digest.clone(),
                media_type: crate::manifest::OCI_MANIFEST.into(),
                content,
                artifact_type: None,
                subject: None,
                annotations: Default::default(),
            },
            blobs: vec![],
            children: vec![],
            sizes: vec![],
            tags: vec!["v1".parse().unwrap()],
            condition: None,
            immutable: Vec::new(),
        };
        registry.put_manifest(&put).await.unwrap();
        let signature = AtomicSignature {
            id: "a".repeat(32),
            content: Bytes::from_static(b"sig"),
        };
        registry
            .put_atomic_signature(&repo, &digest, &signature)
            .await
            .unwrap();
        // The same signature again changes nothing: no hook.
        registry
            .put_atomic_signature(&repo, &digest, &signature)
            .await
            .unwrap();
        let tag: Tag = "v1".parse().unwrap();
        assert!(registry.delete_tag(&repo, &tag).await.unwrap());
        assert!(!registry.delete_tag(&repo, &tag).await.unwrap());
        registry
            .delete_manifest(&repo, &digest, true)
            .await
            .unwrap();
        // A failed write fires nothing.
        let missing = ManifestPut {
            blobs: vec![Digest::sha256_of(b"absent")],
            ..put
        };
        assert!(registry.put_manifest(&missing).await.is_err());
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                format!("stored {digest}"),
                format!("signed {}", "a".repeat(32)),
                "untagged v1".to_string(),
                "deleted 1".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn events_are_appended_with_each_committed_change_in_order() {
        use crate::events::EventType::*;

        let meta = crate::open_metadata("sqlite::memory:").await.unwrap();
        let repo: RepoName = "events/app".parse().unwrap();
        let put_of = |content: &'static [u8], subject: Option<Digest>, tag: &str| {
            let content = Bytes::from_static(content);
            ManifestPut {
                repo: repo.clone(),
                manifest: ManifestRecord {
                    digest: Digest::sha256_of(&content),
                    media_type: crate::manifest::OCI_MANIFEST.into(),
                    content,
                    artifact_type: subject.as_ref().map(|_| "application/spdx+json".into()),
                    subject,
                    annotations: Default::default(),
                },
                blobs: vec![],
                children: vec![],
                sizes: vec![],
                tags: vec![tag.parse().unwrap()],
                condition: None,
                immutable: Vec::new(),
            }
        };
        // Without events on, nothing is recorded.
        Registry::new(meta.clone())
            .put_manifest(&put_of(b"{\"quiet\":1}", None, "quiet"))
            .await
            .unwrap();
        assert_eq!(meta.latest_event_id().await.unwrap(), 0);

        let registry = Registry::new(meta.clone())
            .recording_events()
            .acting_as("alice");
        let first = put_of(b"{\"m\":1}", None, "v1");
        let second = put_of(b"{\"m\":2}", None, "v1");
        registry.put_manifest(&first).await.unwrap();
        registry.put_manifest(&second).await.unwrap();
        let sbom = put_of(b"{\"sbom\":1}", Some(second.manifest.digest.clone()), "s");
        registry.put_manifest(&sbom).await.unwrap();
        // A failed write records nothing.
        let missing = ManifestPut {
            blobs: vec![Digest::sha256_of(b"absent")],
            ..put_of(b"{\"m\":3}", None, "v3")
        };
        assert!(registry.put_manifest(&missing).await.is_err());
        registry
            .delete_manifest(&repo, &second.manifest.digest, true)
            .await
            .unwrap();

        let events = meta.events_after(0, 100).await.unwrap();
        let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            types,
            [
                ManifestPushed,
                TagMoved,
                ManifestPushed,
                TagMoved,
                ManifestPushed,
                TagMoved,
                SbomStored,
                TagDeleted,
                TagDeleted,
                ManifestDeleted,
                ManifestDeleted,
            ]
        );
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=11).collect::<Vec<_>>());
        // The second push moved v1 from the first manifest.
        assert_eq!(
            events[3].data.previous,
            Some(first.manifest.digest.to_string())
        );
        assert_eq!(events[1].data.previous, None);
        assert!(events
            .iter()
            .all(|e| e.data.actor.as_deref() == Some("alice")));
        assert_eq!(
            events[6].data.subject,
            Some(second.manifest.digest.to_string())
        );
        let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.event_id).collect();
        assert_eq!(ids.len(), events.len(), "every event has its own id");
        assert_eq!(meta.events_after(10, 100).await.unwrap().len(), 1);
    }
}
