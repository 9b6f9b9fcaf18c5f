//! The metadata store's traits, one per concern. [`super::MetadataStore`] is all of
//! them; a consumer takes the one it needs.

mod atomic_signatures;
mod blob_links;
mod collection;
mod events;
mod manifests;
mod repositories;
mod retention;
mod revoked_tokens;
mod sync_jobs;
mod transfer;
mod upload_sessions;
mod verdicts;

pub use atomic_signatures::AtomicSignatures;
pub use blob_links::BlobLinks;
pub use collection::Collection;
pub use events::Events;
pub use manifests::{Manifests, ProtectedTags};
pub use repositories::Repositories;
pub use retention::{Inventory, InventoryManifest, ManifestSeen, Retention, Retired, TagSeen};
pub use revoked_tokens::RevokedTokens;
pub use sync_jobs::SyncJobs;
pub use transfer::Transfer;
pub use upload_sessions::UploadSessions;
pub use verdicts::Verdicts;
