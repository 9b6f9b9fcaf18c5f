//! The per-repository tables a repository's export carries: each table's name, its
//! columns (the repository id aside) with how each is read, and a stable order. The one
//! description of the schema that export and import (`sql/transfer.rs`) and `fsck`
//! read; they name tables and columns only through these constants.
//!
//! Tables come in import order (a row's foreign keys point at tables before it).
//! Atomic signatures keep the order they were added in: they are inserted in `seq` order
//! and the target assigns its own `seq`.

/// How a column is read back for an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    OptText,
    Bytes,
}

/// One exported table.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// Its `ORDER BY`.
    pub order: &'static str,
    /// The column naming the manifest a row belongs to (`None`: rows of the repository
    /// as a whole).
    pub owner: Option<&'static str>,
}

pub(crate) mod repository_blobs {
    pub const DIGEST: &str = "digest";
    pub const CREATED_AT: &str = "created_at";
}

pub(crate) mod manifests {
    pub const DIGEST: &str = "digest";
    pub const MEDIA_TYPE: &str = "media_type";
    pub const SIZE: &str = "size";
    pub const CONTENT: &str = "content";
    pub const ARTIFACT_TYPE: &str = "artifact_type";
    pub const SUBJECT: &str = "subject";
    pub const ANNOTATIONS: &str = "annotations";
    pub const CREATED_AT: &str = "created_at";
}

pub(crate) mod tags {
    pub const NAME: &str = "name";
    pub const DIGEST: &str = "digest";
    pub const UPDATED_AT: &str = "updated_at";
}

pub(crate) mod manifest_blobs {
    pub const MANIFEST: &str = "manifest_digest";
    pub const BLOB: &str = "blob_digest";
}

pub(crate) mod manifest_children {
    pub const INDEX: &str = "index_digest";
    pub const CHILD: &str = "child_digest";
}

pub(crate) mod atomic_signatures {
    pub const MANIFEST: &str = "manifest_digest";
    pub const ID: &str = "signature_id";
    pub const CONTENT: &str = "content";
    pub const CREATED_AT: &str = "created_at";
}

pub(crate) mod attachments {
    pub const SUBJECT: &str = "subject";
    pub const ATTACHMENT: &str = "attachment";
    pub const KIND: &str = "kind";
    pub const SOURCE: &str = "source";
    pub const FORMAT: &str = "format";
    pub const ARTIFACT_TYPE: &str = "artifact_type";
    pub const TAG: &str = "tag";
    pub const CARRIER: &str = "carrier";
    pub const CREATED_AT: &str = "created_at";
}

pub(crate) const REPOSITORY_BLOBS: Table = Table {
    name: "repository_blobs",
    columns: &[
        (repository_blobs::DIGEST, Kind::Text),
        (repository_blobs::CREATED_AT, Kind::Int),
    ],
    order: "digest",
    owner: None,
};

pub(crate) const MANIFESTS: Table = Table {
    name: "manifests",
    columns: &[
        (manifests::DIGEST, Kind::Text),
        (manifests::MEDIA_TYPE, Kind::Text),
        (manifests::SIZE, Kind::Int),
        (manifests::CONTENT, Kind::Bytes),
        (manifests::ARTIFACT_TYPE, Kind::OptText),
        (manifests::SUBJECT, Kind::OptText),
        (manifests::ANNOTATIONS, Kind::OptText),
        (manifests::CREATED_AT, Kind::Int),
    ],
    order: "digest",
    owner: Some(manifests::DIGEST),
};

pub(crate) const TAGS: Table = Table {
    name: "tags",
    columns: &[
        (tags::NAME, Kind::Text),
        (tags::DIGEST, Kind::Text),
        (tags::UPDATED_AT, Kind::Int),
    ],
    order: "name",
    owner: Some(tags::DIGEST),
};

pub(crate) const MANIFEST_BLOBS: Table = Table {
    name: "manifest_blobs",
    columns: &[
        (manifest_blobs::MANIFEST, Kind::Text),
        (manifest_blobs::BLOB, Kind::Text),
    ],
    order: "manifest_digest, blob_digest",
    owner: Some(manifest_blobs::MANIFEST),
};

pub(crate) const MANIFEST_CHILDREN: Table = Table {
    name: "manifest_children",
    columns: &[
        (manifest_children::INDEX, Kind::Text),
        (manifest_children::CHILD, Kind::Text),
    ],
    order: "index_digest, child_digest",
    owner: Some(manifest_children::INDEX),
};

pub(crate) const ATOMIC_SIGNATURES: Table = Table {
    name: "atomic_signatures",
    columns: &[
        (atomic_signatures::MANIFEST, Kind::Text),
        (atomic_signatures::ID, Kind::Text),
        (atomic_signatures::CONTENT, Kind::Bytes),
        (atomic_signatures::CREATED_AT, Kind::Int),
    ],
    order: "seq",
    owner: Some(atomic_signatures::MANIFEST),
};

pub(crate) const ATTACHMENTS: Table = Table {
    name: "attachments",
    columns: &[
        (attachments::SUBJECT, Kind::Text),
        (attachments::ATTACHMENT, Kind::Text),
        (attachments::KIND, Kind::Text),
        (attachments::SOURCE, Kind::Text),
        (attachments::FORMAT, Kind::Text),
        (attachments::ARTIFACT_TYPE, Kind::OptText),
        (attachments::TAG, Kind::OptText),
        (attachments::CARRIER, Kind::Text),
        (attachments::CREATED_AT, Kind::Int),
    ],
    order: "subject, attachment, source",
    owner: Some(attachments::CARRIER),
};

/// Every exported table, in import order.
pub(crate) const EXPORTED: [&Table; 7] = [
    &REPOSITORY_BLOBS,
    &MANIFESTS,
    &TAGS,
    &MANIFEST_BLOBS,
    &MANIFEST_CHILDREN,
    &ATOMIC_SIGNATURES,
    &ATTACHMENTS,
];
