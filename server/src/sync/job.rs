//! A sync job as configured (`[[sync.jobs]]`), and the report of one run.

use serde::{Deserialize, Serialize};

use super::sealed::Sealer;

/// The `[sync]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    pub jobs: Vec<SyncJob>,
    /// Repository prefixes filled from an upstream when a pull misses.
    pub pull_through: Vec<super::pull_through::PullThroughConfig>,
    /// The key that seals the upstream passwords of jobs created through the admin API
    /// (a file of 64 hex characters, the same on every replica; see
    /// [`super::sealed`]). Empty: such jobs may not carry a password.
    pub secret_key_file: String,
    /// Whether jobs created through the admin API may name files on the server (a
    /// `ca_file`, a `file://` lookaside). Off: an API caller could otherwise read the
    /// server's files, or learn which exist, through the job's errors.
    pub api_jobs_may_read_files: bool,
}

impl SyncConfig {
    /// Hides upstream passwords (for `signet config`).
    pub fn redact(&mut self) {
        for job in &mut self.jobs {
            if !job.password.is_empty() {
                job.password = "***".into();
            }
        }
        for entry in &mut self.pull_through {
            if !entry.password.is_empty() {
                entry.password = "***".into();
            }
        }
    }

    pub fn job(&self, name: &str) -> Option<&SyncJob> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

impl SyncJob {
    /// The job as the metadata database keeps it: its password sealed.
    pub fn to_stored(&self, sealer: Option<&Sealer>) -> anyhow::Result<String> {
        let mut stored = self.clone();
        if !self.password.is_empty() {
            let sealer = sealer.ok_or_else(|| {
                anyhow::anyhow!(
                    "a job with a password needs [sync] secret_key_file, which seals it at rest"
                )
            })?;
            stored.password = sealer.seal(&self.name, &self.password)?;
        }
        Ok(serde_json::to_string(&stored)?)
    }

    /// A job the metadata database keeps, its password opened.
    pub fn from_stored(text: &str, sealer: Option<&Sealer>) -> anyhow::Result<SyncJob> {
        let mut job: SyncJob = serde_json::from_str(text)?;
        if super::sealed::is_sealed(&job.password) {
            let sealer = sealer.ok_or_else(|| {
                anyhow::anyhow!("its password is sealed and [sync] secret_key_file is not set")
            })?;
            job.password = sealer.open(&job.name, &job.password)?;
        }
        Ok(job)
    }

    /// The files on the server the job would read or write: its CA file, a `file://`
    /// lookaside, a layout it reads or writes.
    pub fn server_files(&self) -> Vec<&str> {
        let mut files = Vec::new();
        if let Some(layout) = self
            .upstream
            .strip_prefix("oci:")
            .or_else(|| self.upstream.strip_prefix("oci-archive:"))
        {
            files.push(layout);
        }
        if !self.destination_layout.is_empty() {
            files.push(self.destination_layout.as_str());
        }
        if !self.ca_file.is_empty() {
            files.push(self.ca_file.as_str());
        }
        if !self.lookaside.is_empty()
            && !self.lookaside.starts_with("http://")
            && !self.lookaside.starts_with("https://")
        {
            files.push(self.lookaside.as_str());
        }
        files
    }
}

/// One mirroring job. Its `Debug` hides the password.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyncJob {
    pub name: String,
    /// `http://host:port` or `https://host`; or an OCI layout on disk, `oci:/path` (a
    /// folder) or `oci-archive:/path.tar` (what `signet export` writes).
    pub upstream: String,
    /// For a layout upstream: the repository of entries that name none (a layout
    /// `skopeo copy ... oci:DIR:TAG` wrote).
    pub layout_repository: String,
    /// A PEM file of CA certificates trusted for an `https` upstream, besides the
    /// system's roots (an internal registry with its own CA).
    pub ca_file: String,
    /// Where atomic signatures live when the upstream has no signatures extension: a
    /// containers/image lookaside ("sigstore") base URL, `http(s)://...` or `file:///...`
    /// (`<base>/<repository>@<algorithm>=<hex>/signature-<n>`).
    pub lookaside: String,
    /// Basic credentials; also used for the bearer-token flow when the upstream
    /// challenges with `WWW-Authenticate: Bearer` (anonymous tokens without them).
    pub username: String,
    pub password: String,
    /// Repository names, or patterns (`*` within one path segment, `**` across them)
    /// matched against the upstream catalog.
    pub repositories: Vec<String>,
    /// Tags to mirror: regular expressions matching the whole tag; empty means all.
    pub tags_include: Vec<String>,
    /// Tags never mirrored (whole-tag regular expressions), applied after the includes.
    pub tags_exclude: Vec<String>,
    /// When set, of the selected tags that are semantic versions (`1.2.3`, `v1.2`,
    /// `1.2.3-rc.1`), only the N highest are mirrored; other selected tags (`latest`,
    /// `stable`) are unaffected: exclude them with `tags_exclude` if unwanted.
    pub tags_latest: usize,
    /// `os/arch[/variant]`; empty means every platform.
    pub platforms: Vec<String>,
    /// Which attachments to copy: `signature`, `attestation`, `sbom`, `other` (cosign
    /// tags and OCI referrers of that kind) and `atomic` (simple-signing signatures of
    /// the signatures extension); empty means all of them.
    pub attachments: Vec<String>,
    /// An OCI layout folder to write to instead of the store: each run adds what the
    /// folder lacks (every platform and attachment of the selected tags, under the
    /// upstream's repository names) and rewrites its index.json, for `signet import` on
    /// the other side of a gap. Empty: the job writes to the store.
    pub destination_layout: String,
    /// Prefix of the mirrored repositories' names (`mirror` puts `library/x` at
    /// `mirror/library/x`); empty keeps the upstream names.
    pub destination_prefix: String,
    /// Seconds between scheduled runs (from `signet serve`); 0 means on demand only.
    pub interval_secs: u64,
    /// Transfers in flight at once.
    pub concurrency: usize,
    /// Retries of a transient upstream failure (connection error, timeout, 5xx, 429)
    /// per request, with exponential backoff from `retry_base_ms` (capped at 10 s).
    pub retries: u32,
    pub retry_base_ms: u64,
    /// Verify on ingest even where the destination's trust policy is not `enforce`:
    /// a tag moves only when the mirrored manifest passes the policy's rules.
    pub verify: bool,
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.clone();
        if !shown.password.is_empty() {
            shown.password = "***".into();
        }
        f.debug_struct("SyncJob")
            .field("name", &shown.name)
            .field("upstream", &shown.upstream)
            .field("layout_repository", &shown.layout_repository)
            .field("ca_file", &shown.ca_file)
            .field("lookaside", &shown.lookaside)
            .field("username", &shown.username)
            .field("password", &shown.password)
            .field("repositories", &shown.repositories)
            .field("tags_include", &shown.tags_include)
            .field("tags_exclude", &shown.tags_exclude)
            .field("tags_latest", &shown.tags_latest)
            .field("platforms", &shown.platforms)
            .field("attachments", &shown.attachments)
            .field("destination_prefix", &shown.destination_prefix)
            .field("destination_layout", &shown.destination_layout)
            .field("interval_secs", &shown.interval_secs)
            .field("concurrency", &shown.concurrency)
            .field("retries", &shown.retries)
            .field("retry_base_ms", &shown.retry_base_ms)
            .field("verify", &shown.verify)
            .finish()
    }
}

impl Default for SyncJob {
    fn default() -> Self {
        Self {
            name: String::new(),
            upstream: String::new(),
            layout_repository: String::new(),
            ca_file: String::new(),
            lookaside: String::new(),
            username: String::new(),
            password: String::new(),
            repositories: Vec::new(),
            tags_include: Vec::new(),
            tags_exclude: Vec::new(),
            tags_latest: 0,
            platforms: Vec::new(),
            attachments: Vec::new(),
            destination_prefix: String::new(),
            destination_layout: String::new(),
            interval_secs: 0,
            concurrency: 4,
            retries: 5,
            retry_base_ms: 200,
            verify: false,
        }
    }
}

/// What one run did. Counters only grow; `errors` lists each item that failed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SyncReport {
    pub job: String,
    pub repositories: u64,
    /// Selected tags (attachment tags not included).
    pub tags: u64,
    /// Selected tags already pointing at the upstream digest.
    pub tags_unchanged: u64,
    pub manifests_copied: u64,
    /// Manifests already present (not fetched again).
    pub manifests_present: u64,
    /// Index children left out by the platform filter.
    pub platforms_skipped: u64,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blobs already in the destination repository.
    pub blobs_present: u64,
    /// Blobs already held by another repository, linked without a download.
    pub blobs_mounted: u64,
    /// Attachment manifests (cosign tags, referrers, fallback indexes) looked at.
    pub attachments: u64,
    pub atomic_signatures_copied: u64,
    pub atomic_signatures_present: u64,
    /// Tags moved after their manifest passed verification on ingest.
    pub tags_verified: u64,
    /// Tags not moved because their manifest failed verification (see `errors`).
    pub tags_refused: u64,
    /// Items (selected tags) finished, failed ones included, and known so far (the
    /// total grows as repositories are listed).
    pub items_done: u64,
    pub items_total: u64,
    /// Upstream requests retried after a transient failure.
    pub retries: u64,
    /// The run stopped early on request (`POST .../cancel`).
    pub cancelled: bool,
    pub errors: Vec<String>,
    pub seconds: f64,
    pub bytes_per_second: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        let mut config = crate::config::Config::default();
        config.sync.jobs.push(SyncJob {
            name: "j".into(),
            password: "s3cret".into(),
            ..Default::default()
        });
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!config.to_toml().contains("s3cret"));
        let text =
            "[[sync.jobs]]\nname = \"j\"\nupstream = \"http://h:1\"\nrepositories = [\"a\"]\n";
        let parsed: crate::config::Config = toml::from_str(text).unwrap();
        assert_eq!(parsed.sync.job("j").unwrap().concurrency, 4);
    }
}
