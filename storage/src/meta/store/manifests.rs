//! Manifests, their tags and edges, and the attachment index derived from them.

use async_trait::async_trait;

use crate::events::Journal;
use crate::meta::{AttachmentRecord, ManifestPut, Page, Referrer, StoredManifest, TagDetail};
use crate::{Digest, Reference, RepoName, StorageResult, Tag};

/// Which tags a delete must not remove (the immutable-tag rules' answer for one
/// repository); `&|_| false` protects none.
pub type ProtectedTags<'a> = &'a (dyn Fn(&str) -> bool + Send + Sync);

/// Manifests, their tags and edges, and the attachment index derived from them.
#[async_trait]
pub trait Manifests: Send + Sync {
    /// Stores a manifest, its edges and its tag in one transaction. Fails with
    /// [`crate::StorageError::MissingReferences`] when referenced blobs or children are absent.
    async fn put_manifest(&self, put: &ManifestPut) -> StorageResult<()> {
        self.put_manifest_journaled(put, Journal::OFF).await
    }

    /// [`Manifests::put_manifest`], appending the events it makes when `journal` records
    /// them, in the same transaction.
    async fn put_manifest_journaled(
        &self,
        put: &ManifestPut,
        journal: Journal<'_>,
    ) -> StorageResult<()>;

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<Option<StoredManifest>>;

    /// Deletes a manifest, the tags pointing at it and its edges, and with
    /// `with_attachments` its attachments (recursively), in one transaction. Returns
    /// what was deleted: empty when the manifest was absent. Nothing is deleted, and
    /// the answer is [`crate::StorageError::TagImmutable`], when a tag that would go
    /// is `protected`.
    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_attachments: bool,
        protected: ProtectedTags<'_>,
    ) -> StorageResult<Vec<Digest>> {
        self.delete_manifest_journaled(repo, digest, with_attachments, protected, Journal::OFF)
            .await
    }

    /// [`Manifests::delete_manifest`], appending its events as a put does.
    async fn delete_manifest_journaled(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_attachments: bool,
        protected: ProtectedTags<'_>,
        journal: Journal<'_>,
    ) -> StorageResult<Vec<Digest>>;

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<bool> {
        self.delete_tag_journaled(repo, tag, Journal::OFF).await
    }

    /// [`Manifests::delete_tag`], appending its event as a put does.
    async fn delete_tag_journaled(
        &self,
        repo: &RepoName,
        tag: &Tag,
        journal: Journal<'_>,
    ) -> StorageResult<bool>;

    /// Tags in lexical order; `None` when the repository does not exist.
    async fn list_tags(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> StorageResult<Option<Vec<String>>>;

    /// Like [`Manifests::list_tags`], each tag with its manifest and push time.
    async fn list_tag_details(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> StorageResult<Option<Vec<TagDetail>>>;

    /// Referrers of `subject`: manifests whose `subject` it is, entries of its fallback
    /// tag, and with `include_tag_attachments` its cosign tag attachments.
    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        include_tag_attachments: bool,
    ) -> StorageResult<Vec<Referrer>>;

    /// Every attachment of `subject`, however it arrived, oldest first.
    async fn list_attachments(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> StorageResult<Vec<AttachmentRecord>>;

    /// The manifests of the repository that `manifest` is an attachment of: subjects of
    /// the attachment rows it makes or carries (its `subject` field, a cosign tag, a
    /// referrers fallback index it is or holds), each of them a manifest present in the
    /// repository. Atomic signatures, which are not manifests, are left out.
    async fn attached_to(&self, repo: &RepoName, manifest: &Digest) -> StorageResult<Vec<Digest>>;

    /// Indexes in the repository that list `child` directly.
    async fn parents_of(&self, repo: &RepoName, child: &Digest) -> StorageResult<Vec<Digest>>;
}
