//! Sync: mirror repositories of an upstream registry, byte for byte, with every
//! platform and every attachment a verifier needs.
//!
//! - [`job`]: the `[[sync.jobs]]` configuration and what a run reports;
//! - [`upstream`]: the upstream client (oci-client for the distribution API and its
//!   token flow; plain HTTP for the signatures extension);
//! - [`plan`]: which repositories, tags and platforms a job selects;
//! - [`runner`]: one run of a job against the stores;
//! - [`manager`]: runs inside the server (one at a time per job, schedule, cancel);
//! - [`api`]: the admin API over the manager;
//! - [`sealed`]: upstream passwords of API-created jobs, encrypted at rest.

pub mod api;
mod expiring;
pub mod job;
pub mod manager;
pub mod plan;
pub mod pull_through;
pub mod retry;
pub mod runner;
pub mod sealed;
pub mod source;
pub mod upstream;

pub use job::{SyncConfig, SyncJob, SyncReport};
pub use runner::run_job;
