//! What retention reads of a repository, and how it deletes without losing a push.

use async_trait::async_trait;

use crate::events::Journal;
use serde::Serialize;

use crate::meta::ProtectedTags;
use crate::{Digest, RepoName, StorageResult};

/// Every manifest of one repository with what retention decides on: its tags, its
/// edges, its push and pull times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub manifests: Vec<InventoryManifest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryManifest {
    pub digest: Digest,
    pub media_type: String,
    /// Unix seconds of the last push of the manifest itself.
    pub pushed_at: i64,
    /// Unix seconds of the last recorded pull, if any.
    pub pulled_at: Option<i64>,
    /// Every tag pointing at it (attachment tags included).
    pub tags: Vec<TagSeen>,
    /// Manifests it lists (an index's children).
    pub children: Vec<Digest>,
    /// It is an attachment of some subject, or carries attachments for one (a cosign
    /// signature manifest, a referrer, a referrers fallback index).
    pub is_attachment: bool,
    /// What is attached to it (attachment digests, atomic signatures included).
    pub attachments: Vec<String>,
}

/// A tag as it was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TagSeen {
    pub name: String,
    /// Unix seconds of the last time the tag was set.
    pub updated_at: i64,
}

/// A manifest as retention saw it when it planned: deleting it is safe only while it
/// is still so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSeen {
    pub pushed_at: i64,
    /// Sorted.
    pub tags: Vec<TagSeen>,
    /// Sorted.
    pub attachments: Vec<String>,
}

impl InventoryManifest {
    pub fn seen(&self) -> ManifestSeen {
        let mut tags = self.tags.clone();
        tags.sort();
        let mut attachments = self.attachments.clone();
        attachments.sort();
        ManifestSeen {
            pushed_at: self.pushed_at,
            tags,
            attachments,
        }
    }
}

/// What a conditional delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retired {
    /// Deleted, with these manifests (the first is the one asked for; then its
    /// attachments).
    Deleted(Vec<Digest>),
    /// Left alone: it changed since it was seen (pushed again, tagged, listed by an
    /// index, signed) or is gone; the reason says which.
    Changed(String),
}

/// What retention reads and writes.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Every manifest of `repo`; `None` when the repository does not exist.
    async fn inventory(&self, repo: &RepoName) -> StorageResult<Option<Inventory>>;

    /// Deletes `digest` with its attachments, as [`crate::meta::Manifests::delete_manifest`]
    /// does, but only if it is still as `seen` and no index lists it, checked in the
    /// deleting transaction. That transaction excludes pushes as a GC sweep does, so a
    /// push either lands before (and the manifest has changed) or after (and finds it gone).
    async fn retire_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        seen: &ManifestSeen,
        protected: ProtectedTags<'_>,
    ) -> StorageResult<Retired> {
        self.retire_manifest_journaled(repo, digest, seen, protected, Journal::OFF)
            .await
    }

    /// [`Retention::retire_manifest`], appending the events of the delete in its
    /// transaction when `journal` records them.
    async fn retire_manifest_journaled(
        &self,
        repo: &RepoName,
        digest: &Digest,
        seen: &ManifestSeen,
        protected: ProtectedTags<'_>,
        journal: Journal<'_>,
    ) -> StorageResult<Retired>;

    /// Records pulls (repository, manifest, unix seconds); a later time replaces an
    /// earlier one, and a manifest no longer stored is skipped.
    async fn record_pulls(&self, pulls: &[(String, Digest, i64)]) -> StorageResult<()>;
}
